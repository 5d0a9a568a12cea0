"""Opening the runs database: an up-to-date SQLite file through ``sqlite3`` alone, anything
else through SQLAlchemy (created, upgraded or refused), and ``kiln store migrate``.

Importing SQLAlchemy and making its engine was the largest part of a cold ``kiln run``'s own
CPU time (~0.15-0.25 s of ~0.6 s). A SQLite file whose ``alembic_version`` is already
:data:`~kiln.store.version.SCHEMA_HEAD` needs none of it: :func:`open_lite` checks the
version on the connection the run's statements then use (:mod:`kiln.store.hotrow`), with
the engine's rules (WAL, busy timeout, foreign keys, ``synchronous=NORMAL``). A new, empty,
outdated or foreign file gets ``None`` and takes :func:`open_engine`, which creates or
upgrades it under the file lock as before; so do read-only, in-memory and PostgreSQL
databases. Nothing here imports SQLAlchemy until :func:`open_engine` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import StoreError
from kiln.store.hotrow import HotRows, hot_rows
from kiln.store.litedb import shown_url, sqlite_file, sqlite_url
from kiln.store.paths import database_url, default_home
from kiln.store.version import SCHEMA_HEAD

if TYPE_CHECKING:
    import sqlalchemy as sa

    from kiln.store.pgrow import PgRows


def open_lite(url: str) -> HotRows | None:
    """The run's statements on the SQLite file at ``url`` if it exists at
    :data:`SCHEMA_HEAD`; ``None`` (nothing kept open) for anything else."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None  # never let sqlite3 create it: a new history is SQLAlchemy's to set up
    hot = HotRows(path, shown_url(url))  # named as SQLAlchemy names it (a test compares)
    if hot.schema_version() != SCHEMA_HEAD:
        hot.close()
        return None
    return hot


def open_engine(
    url: str,
    home: Path,
    *,
    create: bool,
    read_only: bool,
    live_engine: Callable[[], sa.Engine],
) -> tuple[sa.Engine, str, HotRows | PgRows | None]:
    """SQLAlchemy's engine for ``url`` with the schema made current (SQLite: created or
    upgraded under the lock beside it; PostgreSQL: set up when empty, refused when behind),
    the URL as shown to people, and the run row's hot path (``None`` when read-only).
    ``live_engine``: the store's engine getter that drops a pool inherited across fork."""
    import sqlalchemy as sa

    from kiln.store.engine import lock_path, make_engine
    from kiln.store.migrate import ensure_schema, problem, where
    from kiln.store.pgrow import pg_rows

    engine = make_engine(url)
    shown = where(engine)
    hot: HotRows | PgRows | None = None
    if not read_only:
        plain = engine.url.render_as_string(hide_password=False)
        hot = hot_rows(plain, shown) or pg_rows(live_engine, engine.dialect.name, shown)
    try:
        ensure_schema(engine, lock_path(engine, home), create=create)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open the runs database {shown}: {problem(exc)}") from exc
    except BaseException:
        engine.dispose()
        raise
    return engine, shown, hot


def migrate_store(
    home: Path | str | None = None, *, url: str | None = None
) -> tuple[str, set[str], set[str]]:
    """Upgrade the runs database to this Kiln's schema, on purpose (``kiln store migrate``):
    returns the database (as shown to people) and its schema versions before and after."""
    import sqlalchemy as sa

    from kiln.store.engine import lock_path, make_engine
    from kiln.store.migrate import problem, upgrade, where

    folder = (Path(home).expanduser() if home is not None else default_home()).absolute()
    url = url or database_url()
    if url is None:
        try:
            (folder / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the Kiln home folder {folder}: {exc}") from exc
        url = sqlite_url(folder / "kiln.db")
    engine = make_engine(url)
    try:
        before, after = upgrade(engine, lock_path(engine, folder))
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"cannot open the runs database {where(engine)}: {problem(exc)}") from exc
    finally:
        engine.dispose()
    return where(engine), before, after
