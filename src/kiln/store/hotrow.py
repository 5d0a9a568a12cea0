"""A run row's own writes on SQLite (insert, update, end) through the standard library.

Every run writes its row twice (recorded, ended); through SQLAlchemy Core each write cost
about 1.2 ms of the supervisor's CPU, mostly statement and transaction machinery, through
``sqlite3`` with a cached statement about 0.2 ms. :class:`~kiln.store.sql.RunStore` sends
those writes here when its database is a SQLite file; everything else (reads, recovery,
the queue, PostgreSQL) stays on SQLAlchemy. The columns and their types come from
:data:`kiln.store.schema.runs` (the schema and the migrations stay the truth) and values are
stored exactly as SQLAlchemy stores them on SQLite: JSON through the store's serialiser (a
``None`` is SQL NULL or JSON ``null`` as the column says), times as UTC text. A test writes
the same runs both ways and compares the rows. The rules are RunStore's too: WAL, a busy
timeout, ``BEGIN IMMEDIATE`` for every write.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.store.engine import _BUSY_TIMEOUT_MS
from kiln.store.litedb import sqlite_file
from kiln.store.migrate import where
from kiln.store.schema import run_columns, runs
from kiln.store.values import TERMINAL, NotJson, dumps


def _datetime(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME text; column_values has already made the time UTC
    if isinstance(value, datetime):
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
        )
    return value


def _json(none_as_null: bool) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None if none_as_null else "null"
        if not value and (type(value) is list or type(value) is dict):
            return "[]" if type(value) is list else "{}"  # half a run's JSON values
        return dumps(value)

    return convert


def _converters() -> dict[str, Callable[[Any], Any] | None]:
    out: dict[str, Callable[[Any], Any] | None] = {}
    for column in runs.c:
        kind = column.type
        if isinstance(kind, sa.JSON):
            out[column.name] = _json(bool(kind.none_as_null))
        elif isinstance(kind, sa.DateTime):
            out[column.name] = _datetime
        else:
            out[column.name] = None
    return out


_CONVERT = _converters()
_NOT_ENDED = "state NOT IN ({})".format(", ".join(f"'{state}'" for state in TERMINAL))


class StateRow(NamedTuple):
    """A run's state as a read of the row gives it (``row.state``)."""

    state: str


def hot_rows(engine: sa.Engine) -> HotRows | None:
    """The hot path for the engine's database, if it is a SQLite file."""
    path = sqlite_file(engine.url.render_as_string(hide_password=False))
    return HotRows(path, where(engine)) if path is not None else None


class HotRows:
    """The run row's writes on one SQLite file, on a connection of their own (thread-safe;
    after a fork the child opens its own, never touching the parent's)."""

    def __init__(self, path: Path, where: str) -> None:
        self.path = path
        self.where = where
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._inherited: list[sqlite3.Connection] = []  # a parent's, kept open, never used
        self._sql: dict[tuple[Any, ...], str] = {}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            # closing the parent's connection here could checkpoint or unlock its files
            self._inherited.append(self._conn)
        conn = sqlite3.connect(
            str(self.path),
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
        )
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def insert(self, values: Mapping[str, Any]) -> None:
        """Add a row (``values``: column values from :func:`~kiln.store.values.column_values`);
        :class:`StoreError` when a run with this id exists."""
        columns = tuple(values)
        sql = self._sql.get(columns)
        if sql is None:
            names = ", ".join(run_columns(columns))
            sql = self._sql[columns] = (
                f"INSERT INTO runs ({names}) VALUES ({', '.join('?' * len(columns))})"
            )
        try:
            self._write(sql, _bound(values))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"run {values['id']} already exists in {self.where}") from exc

    def update(
        self, run_id: str, values: Mapping[str, Any], *, only_active: bool
    ) -> tuple[bool, str | None]:
        """Set columns of a run (``only_active``: unless it has ended). Returns whether the row
        changed and, when it did not, its state (``None``: no such run), read in the same
        transaction."""
        key = ("update", only_active, *values)
        sql = self._sql.get(key)
        if sql is None:
            sets = ", ".join(f"{name} = ?" for name in run_columns(tuple(values)))
            only = f" AND {_NOT_ENDED}" if only_active else ""
            sql = self._sql[key] = f"UPDATE runs SET {sets} WHERE id = ?{only}"
        return self._write(sql, (*_bound(values), run_id), run_id=run_id)

    def _write(
        self, sql: str, params: tuple[Any, ...], *, run_id: str | None = None
    ) -> tuple[bool, str | None]:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    changed = conn.execute(sql, params).rowcount > 0
                    state = None
                    if not changed and run_id is not None:
                        row = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,))
                        found = row.fetchone()
                        state = None if found is None else str(found[0])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError:
                raise
            except (sqlite3.InterfaceError, OverflowError, TypeError, ValueError) as exc:
                raise StoreError(f"cannot store the value: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"runs database {self.where}: {exc}") from exc
        return changed, state


def _bound(values: Mapping[str, Any]) -> tuple[Any, ...]:
    out = []
    try:
        for name, value in values.items():
            convert = _CONVERT[name]
            out.append(value if convert is None else convert(value))
    except NotJson as exc:
        raise StoreError(f"cannot store the value: {exc}") from exc
    return tuple(out)
