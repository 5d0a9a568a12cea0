"""The audit log: who did what, to what, when, from where. Append-only.

Kiln only ever inserts into the ``audit`` table: no function here (or anywhere in Kiln)
updates or deletes an entry. Callers mask secret values in ``details`` before they append
(the server uses the secret scanner of :mod:`kiln.lint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.store.schema import audit

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: what an entry's ``outcome`` says
OUTCOMES: tuple[str, ...] = ("ok", "denied", "failed")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str | None
    action: str
    target: str | None
    outcome: str
    address: str | None
    details: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "address": self.address,
            "details": self.details,
        }


def append(
    store: RunStore,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    address: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Add one entry (its own transaction)."""
    append_many(store, [entry(actor, action, target, outcome, address, details, at)])


def entry(
    actor: str | None,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    address: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One entry as :func:`append_many` takes it (``at`` None: when it is written)."""
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "address": address,
        "details": details,
    }


def append_many(store: RunStore, entries: list[dict[str, Any]]) -> None:
    """Add entries in one transaction, in their order (each a mapping of :func:`append`'s
    arguments; ``at`` missing or None is now)."""
    if not entries:
        return
    now = datetime.now(timezone.utc)
    rows = []
    for entry in entries:
        outcome = entry.get("outcome", "ok")
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown audit outcome {outcome!r}")
        values = {
            "at": entry.get("at") or now,
            "actor": entry.get("actor"),
            "action": entry["action"],
            "target": entry.get("target"),
            "outcome": outcome,
            "address": entry.get("address"),
            "details": entry.get("details"),
        }
        # text columns cannot hold NUL on PostgreSQL (the same everywhere); ``details`` is JSON,
        # written by the store's serialiser, which already replaces NUL and NaN
        rows.append({k: _no_nul(v) for k, v in values.items()})
    with store._write() as conn:
        conn.execute(audit.insert(), rows)


def _no_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def entries(
    store: RunStore,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    before: int | None = None,
    limit: int | None = 100,
) -> list[AuditEntry]:
    """Entries, newest first; ``before`` (an entry id) pages back through older ones."""
    query = audit.select().order_by(audit.c.id.desc())
    if since is not None:
        when = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        query = query.where(audit.c.at >= when.astimezone(timezone.utc))
    if actor is not None:
        query = query.where(audit.c.actor == actor)
    if action is not None:
        query = query.where(audit.c.action == action)
    if before is not None:
        query = query.where(audit.c.id < before)
    if limit is not None:
        query = query.limit(limit)
    with store._read() as conn:
        return [_entry(row) for row in conn.execute(query)]


def _entry(row: Any) -> AuditEntry:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=timezone.utc)
    return AuditEntry(
        id=int(row.id),
        at=at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        address=row.address,
        details=row.details,
    )


def count(store: RunStore) -> int:
    with store._read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar() or 0)
