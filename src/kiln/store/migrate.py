"""Bring the runs database to the current schema, paying for Alembic only when needed.

Every CLI invocation opens the store, so the common case (database already at
:data:`~kiln.store.schema.SCHEMA_HEAD`) is one ``SELECT`` on ``alembic_version`` and no Alembic
import. What happens otherwise depends on the database:

- **SQLite** (a private file in the home): created and upgraded on open, under an exclusive
  file lock, so two processes opening a brand-new home at the same moment cannot both create
  the tables. A brand-new file is created at the newest schema directly (no Alembic, no
  replay of every migration); one that is behind is upgraded by Alembic.
- **PostgreSQL** (shared by a team, perhaps by workers running other Kiln versions): an empty
  database is set up on open, but one that is behind is never upgraded as a side effect;
  opening it refuses and names ``kiln store migrate``, which upgrades on purpose
  (:func:`upgrade`). Both hold a transaction-scoped advisory lock, and PostgreSQL's DDL is
  transactional, so concurrent set-ups wait for each other and an upgrade lands whole or not
  at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from kiln.errors import HomeNotFound, StoreError, StoreOutdated
from kiln.store.schema import SCHEMA_HEAD

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: ``pg_advisory_xact_lock`` key that serialises Kiln's schema changes on one database
#: (the bytes of "kilnschm"; any constant works, it only has to be the same everywhere).
ADVISORY_LOCK_KEY = int.from_bytes(b"kilnschm", "big") & 0x7FFF_FFFF_FFFF_FFFF

MIGRATE_COMMAND = "kiln store migrate"


def schema_versions(engine: sa.Engine) -> set[str]:
    """The revisions recorded in ``alembic_version``; empty for a database Kiln never set up."""
    with engine.connect() as conn:
        conn.execution_options(kiln_read_only=True)
        try:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            # No such table (PostgreSQL aborts the transaction; leaving the block rolls back).
            return set()
    return {str(row[0]) for row in rows}


def ensure_schema(engine: sa.Engine, lock_path: Path | None, *, create: bool = True) -> None:
    """Make sure the database is at :data:`SCHEMA_HEAD`: upgrade SQLite, set up an empty
    PostgreSQL database when ``create``, refuse one that is behind (:class:`StoreOutdated`)."""
    versions = schema_versions(engine)
    if versions == {SCHEMA_HEAD}:
        return
    if engine.dialect.name == "sqlite":
        with _exclusive(lock_path):
            # Another process may have finished the upgrade while we waited for the lock.
            versions = schema_versions(engine)
            if versions != {SCHEMA_HEAD}:
                _upgrade(engine, versions)
        return
    if versions:
        _check_known(engine, versions)
        raise StoreOutdated(
            f"the runs database {where(engine)} has schema version {', '.join(sorted(versions))}"
            f" and this Kiln needs {SCHEMA_HEAD}: run `{MIGRATE_COMMAND}` to upgrade it (once, "
            "when no worker of an older Kiln still uses it)"
        )
    if not create:
        raise HomeNotFound(
            f"no Kiln history in {where(engine)}: the database has no Kiln tables yet; run "
            f"`{MIGRATE_COMMAND}` to set it up (or record a run)",
            home=where(engine),
        )
    upgrade(engine, lock_path, only_if_empty=True)


def upgrade(
    engine: sa.Engine, lock_path: Path | None = None, *, only_if_empty: bool = False
) -> tuple[set[str], set[str]]:
    """Upgrade the database to the newest schema; returns the versions it had and has now.

    Serialised across processes: a file lock beside a SQLite database, a transaction-scoped
    advisory lock on PostgreSQL. ``only_if_empty`` sets up a new database and leaves one
    that somebody else set up meanwhile as it is."""
    if engine.dialect.name == "sqlite":
        with _exclusive(lock_path):
            before = schema_versions(engine)
            if before != {SCHEMA_HEAD}:
                _upgrade(engine, before)
        return before, {SCHEMA_HEAD}
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
            before = _versions_in(conn)
            if before == {SCHEMA_HEAD} or (only_if_empty and before):
                return before, before
            _migrate(engine, conn, before)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            f"could not upgrade the runs database {where(engine)}: {problem(exc)}"
        ) from exc
    return before, {SCHEMA_HEAD}


def where(engine: sa.Engine) -> str:
    """The database's URL as shown to people (no password)."""
    return engine.url.render_as_string(hide_password=True)


def problem(exc: BaseException) -> str:
    """What the database (or its driver) said, without SQLAlchemy's wrapping and links."""
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).strip()


def alembic_config() -> Config:
    """An Alembic configuration pointing at Kiln's migrations (no ``alembic.ini`` needed)."""
    from alembic.config import Config

    config = Config()
    # Config values go through ConfigParser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def script_head() -> str | None:
    """The newest revision among the migration scripts, as Alembic sees it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _versions_in(conn: sa.Connection) -> set[str]:
    """``alembic_version`` read inside a transaction that must not fail (no table: empty)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return set()
    rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return {str(row[0]) for row in rows}


def _check_known(engine: sa.Engine, versions: set[str]) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = sorted(versions - known)
    if unknown:
        raise StoreError(
            f"the runs database {where(engine)} has schema version {', '.join(unknown)}, which "
            f"this Kiln does not know (it expects {SCHEMA_HEAD}): it was written by a newer "
            "Kiln; upgrade Kiln to use it"
        )


def _upgrade(engine: sa.Engine, versions: set[str]) -> None:
    try:
        # One write transaction (BEGIN IMMEDIATE on SQLite) around the whole upgrade.
        with engine.begin() as conn:
            if not versions and _no_tables(conn):
                _create_at_head(conn)
            else:
                _migrate(engine, conn, versions)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            f"could not upgrade the runs database {where(engine)}: {problem(exc)}"
        ) from exc


def _no_tables(conn: sa.Connection) -> bool:
    """A brand-new SQLite file: no table at all (not even somebody else's)."""
    found = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
    return not found.scalar_one()


def _create_at_head(conn: sa.Connection) -> None:
    """Set up a new SQLite history directly at :data:`SCHEMA_HEAD`, without Alembic.

    Importing Alembic and replaying every migration cost the first command in a new home
    ~0.2 s (more than the rest of a cold ``kiln run``). The tables come from the schema's
    declaration, which a test keeps identical to what the migrations build (columns, types,
    defaults, keys, indexes); the one thing the declaration leaves out, the claimable
    index's condition, is added as migration 0010 adds it. ``alembic_version`` is the table
    Alembic itself creates, so later migrations apply to this database as to any other.
    """
    from kiln.store.schema import CLAIMABLE, metadata

    metadata.create_all(conn)
    conn.exec_driver_sql("DROP INDEX ix_runs_claimable")
    conn.exec_driver_sql(
        f"CREATE INDEX ix_runs_claimable ON runs (created_at, id) WHERE {CLAIMABLE}"
    )
    conn.exec_driver_sql(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
    conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_HEAD,))


def _migrate(engine: sa.Engine, conn: sa.Connection, versions: set[str]) -> None:
    from alembic import command
    from alembic.util import CommandError

    _check_known(engine, versions)
    config = alembic_config()
    config.attributes["connection"] = conn
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        raise StoreError(f"could not upgrade the runs database schema: {exc}") from exc


@contextlib.contextmanager
def _exclusive(lock_path: Path | None) -> Iterator[None]:
    if lock_path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: rely on the database's own locking
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
