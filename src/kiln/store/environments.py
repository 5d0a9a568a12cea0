"""Environments in the history: stored once per distinct environment, named by their hash.

A run row holds only ``environment_hash``; the distributions live in ``environments``, one
row per hash, so 10,000 runs in one venv store the package list once. A process remembers
the hashes it has stored, so a run in a known environment costs no database write. On a
SQLite file a run stores its environment through ``sqlite3`` (:mod:`kiln.store.hotrow`): no
SQLAlchemy for a ``kiln run``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kiln.provenance import Environment
from kiln.store.hotrow import HotRows

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: (database URL, hash) pairs this process stored or found stored
_stored: set[tuple[str, str]] = set()


def environment_saved(store: RunStore, env: Environment) -> bool:
    """Whether :func:`save_environment` stored ``env`` already (no write needed)."""
    return (store.url, env.hash) in _stored


def save_environment(store: RunStore, env: Environment) -> str:
    """Store ``env`` unless its hash is stored already; returns the hash."""
    key = (store.url, env.hash)
    if key in _stored:
        return env.hash
    values = _row(env)
    if isinstance(store._hot, HotRows):
        store._hot.save_environment(values)
    else:
        import sqlalchemy as sa

        from kiln.store.schema import environments

        with store._write() as conn:
            found = conn.execute(
                sa.select(environments.c.hash).where(environments.c.hash == env.hash)
            ).first()
            if found is None:
                conn.execute(environments.insert(), values)
    _stored.add(key)
    return env.hash


def _row(env: Environment) -> dict[str, Any]:
    return {
        "hash": env.hash,
        "created_at": datetime.now(timezone.utc),
        "language": env.language,
        "version": env.version,
        "implementation": env.implementation,
        "os": env.os,
        "machine": env.machine,
        "packages": [list(p) for p in env.packages],
    }


def get_environments(store: RunStore, hashes: Iterable[str | None]) -> dict[str, Environment]:
    """The stored environments with these hashes (missing ones are left out)."""
    wanted = sorted({h for h in hashes if h})
    if not wanted:
        return {}
    from kiln.store.schema import environments

    with store._read() as conn:
        rows = conn.execute(environments.select().where(environments.c.hash.in_(wanted))).all()
    out = {}
    for row in rows:
        data = dict(row._mapping)
        out[str(data["hash"])] = Environment.from_json(data)
    return out


def count_environments(store: RunStore) -> int:
    import sqlalchemy as sa

    from kiln.store.schema import environments

    with store._read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(environments)).scalar_one())


def prune_environments(store: RunStore) -> int:
    """Drop environments no run refers to any more; returns how many."""
    import sqlalchemy as sa

    from kiln.store.schema import environments, runs

    used = sa.select(runs.c.environment_hash).where(runs.c.environment_hash.is_not(None))
    with store._write() as conn:
        done = conn.execute(environments.delete().where(environments.c.hash.not_in(used))).rowcount
    _stored.difference_update({k for k in _stored if k[0] == store.url})
    return int(done or 0)
