"""Bring the runs database to the current schema, paying for Alembic only when needed.

Every CLI invocation opens the store, so the common case (database already at
:data:`~kiln.store.schema.SCHEMA_HEAD`) is one ``SELECT`` on ``alembic_version`` and no Alembic
import. A new or older database is upgraded under an exclusive file lock, so two processes
opening a brand-new home at the same moment cannot both create the tables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.store.schema import SCHEMA_HEAD

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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


def ensure_schema(engine: sa.Engine, lock_path: Path | None) -> None:
    """Upgrade the database to :data:`SCHEMA_HEAD` unless it is there already."""
    if schema_versions(engine) == {SCHEMA_HEAD}:
        return
    with _exclusive(lock_path):
        # Another process may have finished the upgrade while we waited for the lock.
        versions = schema_versions(engine)
        if versions != {SCHEMA_HEAD}:
            _upgrade(engine, versions)


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


def _upgrade(engine: sa.Engine, versions: set[str]) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = sorted(versions - known)
    if unknown:
        raise StoreError(
            f"the runs database {engine.url.render_as_string(hide_password=True)} has schema "
            f"version {', '.join(unknown)}, which this Kiln does not know (it expects "
            f"{SCHEMA_HEAD}): it was written by a newer Kiln; upgrade Kiln to use it"
        )
    try:
        # One write transaction (BEGIN IMMEDIATE on SQLite) around the whole upgrade.
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except (CommandError, sa.exc.SQLAlchemyError) as exc:
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
