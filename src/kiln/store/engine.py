"""Connecting to the runs database: SQLite set up for many writers, PostgreSQL through
psycopg 3; anything else is refused with what to do.

SQLite: WAL (readers never wait for the writer), a 30 s busy timeout, and every write in a
``BEGIN IMMEDIATE`` transaction, so a writer takes the lock when its transaction starts, waits
its turn if another holds it, and never fails half-way with "database is locked".
PostgreSQL: a small pool whose connections are checked before use when they sat idle for a
while (a server restart or an idle timeout is survived; a busy worker does not pay a round
trip per transaction for it); ``postgresql://`` means psycopg 3, the driver of Kiln's extra.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.store.litedb import configure
from kiln.store.values import dumps

BACKENDS = ("sqlite", "postgresql")
_DRIVER_HINT = (
    "install Kiln's PostgreSQL driver (psycopg 3): pip install 'kiln-notebooks[postgres]'"
)


def lock_path(engine: sa.Engine, home: Path) -> Path | None:
    """The file that serialises schema changes of a SQLite database (None elsewhere)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return home / "kiln.db.lock"
    return Path(f"{database}.lock")


def make_engine(url: str) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL; StoreError (with what to do) otherwise."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"cannot use the runs database URL {url!r}: {exc}") from exc
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise StoreError(
            f"cannot use the runs database URL {shown!r}: Kiln keeps its history in SQLite or "
            "PostgreSQL (postgresql+psycopg://USER@HOST/DATABASE)"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver of Kiln's extra
    try:
        if backend == "postgresql":
            engine = sa.create_engine(
                parsed,
                json_serializer=dumps,
                pool_size=2,
                max_overflow=4,
                connect_args={"application_name": "kiln", "connect_timeout": 10},
            )
            sa.event.listen(engine, "checkin", _returned)
            sa.event.listen(engine, "checkout", _ping_if_idle)
            return engine
        return _sqlite_engine(parsed)
    except ImportError as exc:
        hint = _DRIVER_HINT
        if parsed.get_driver_name() != "psycopg":
            hint = f"use postgresql+psycopg://... and {hint}"
        raise StoreError(
            f"cannot use the runs database URL {shown!r}: its driver is missing ({exc}); {hint}"
        ) from exc
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"cannot use the runs database URL {shown!r}: {exc}") from exc


#: a pooled PostgreSQL connection idle longer than this (seconds) is pinged before use
PING_AFTER = 2.0


def _returned(_dbapi_connection: Any, record: Any) -> None:
    record.info["kiln_idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    # SQLAlchemy's pessimistic disconnect recipe, for idle connections only: raising
    # DisconnectionError makes the pool drop this connection and open a new one
    since = record.info.get("kiln_idle_since")
    if since is None or time.monotonic() - since < PING_AFTER:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        raise sa.exc.DisconnectionError(f"the pooled connection was lost: {exc}") from exc


def _sqlite_engine(parsed: sa.URL) -> sa.Engine:
    memory = parsed.database in (None, "", ":memory:")
    engine = sa.create_engine(
        parsed,
        json_serializer=dumps,
        # One shared connection for an in-memory database (else each connection is a new,
        # empty database). For a file, a small pool: reopening a connection (and its PRAGMAs)
        # for every write cost ~20 ms per write; RunStore drops the pool after a fork.
        poolclass=sa.StaticPool if memory else sa.QueuePool,
        connect_args={"check_same_thread": False} if memory else {},
    )
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy's documented pysqlite recipe: stop the driver from emitting its own
    # (deferred) BEGIN so that _sqlite_on_begin decides how each transaction starts.
    dbapi_connection.isolation_level = None
    configure(dbapi_connection)


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # A write takes the database's write lock when its transaction starts: if another writer
    # holds it, this waits (busy_timeout) instead of failing later on lock upgrade.
    read_only = conn.get_execution_options().get("kiln_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
