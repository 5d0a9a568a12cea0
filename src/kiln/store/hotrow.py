"""A run's own statements on a SQLite history through the standard library: its row's
writes (insert, update, end), the schema check on open, the look for orphaned runs, its
environment's row.

Every run writes its row twice (recorded, ended); through SQLAlchemy Core each write cost
about 1.2 ms of the supervisor's CPU, mostly statement and transaction machinery, through
``sqlite3`` with a cached statement about 0.2 ms. Importing SQLAlchemy and making its engine
cost a cold ``kiln run`` ~0.15-0.25 s more: on a SQLite file already at the schema's head,
:class:`~kiln.store.sql.RunStore` opens with :meth:`HotRows.schema_version` and sends a run's
statements here, and SQLAlchemy is only loaded by what else the store is asked (reads,
listing, the queue, recovering an actual orphan; PostgreSQL always). This module does not
import it. The columns and their kinds come from :mod:`kiln.store.columns` (a test keeps it
equal to :data:`kiln.store.schema.runs`) and values are stored and read back exactly as
SQLAlchemy stores and reads them on SQLite: JSON through the store's serialiser (a ``None``
is SQL NULL or JSON ``null`` as the column says), times as UTC text. Tests write and read
the same rows both ways and compare them. The rules are RunStore's too: WAL, a busy timeout,
``BEGIN IMMEDIATE`` for every write.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from kiln.errors import StoreError
from kiln.store.columns import ENVIRONMENTS, RUNS, Column, run_columns
from kiln.store.litedb import BUSY_TIMEOUT_MS, configure, sqlite_file, version_of
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


def _converters(table: Mapping[str, Column]) -> dict[str, Callable[[Any], Any] | None]:
    out: dict[str, Callable[[Any], Any] | None] = {}
    for name, column in table.items():
        if column.kind in ("json", "json_or_null"):
            out[name] = _json(column.kind == "json_or_null")
        elif column.kind == "time":
            out[name] = _datetime
        else:
            out[name] = None
    return out


def _from_json(value: Any) -> Any:
    return None if value is None else json.loads(value)


def _from_datetime(value: Any) -> Any:
    # SQLAlchemy reads SQLite's DATETIME text back as a naive datetime (UTC by the store's rule)
    return None if value is None else datetime.fromisoformat(value)


_CONVERT = _converters(RUNS)
_CONVERT_ENVIRONMENT = _converters(ENVIRONMENTS)
_READERS: dict[str, Callable[[Any], Any]] = {
    "json": _from_json,
    "json_or_null": _from_json,
    "time": _from_datetime,
}
#: a stored run's column values as SQLAlchemy gives them back (None: as sqlite3 reads them)
_READ = {name: _READERS.get(column.kind) for name, column in RUNS.items()}
_NOT_ENDED = "state NOT IN ({})".format(", ".join(f"'{state}'" for state in TERMINAL))


class StateRow(NamedTuple):
    """A run's state as a read of the row gives it (``row.state``)."""

    state: str


def hot_rows(url: str, where: str) -> HotRows | None:
    """The hot path for the database at ``url`` (``where``: as shown to people), if it is a
    SQLite file."""
    path = sqlite_file(url)
    return HotRows(path, where) if path is not None else None


class HotRows:
    """A run's statements on one SQLite file, on a connection of their own (thread-safe;
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
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
        )
        try:
            configure(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def schema_version(self) -> str | None:
        """The database's one schema version; ``None`` when it has none, several, or cannot
        be read (a new or foreign file: the caller takes SQLAlchemy's path, which says why).
        Opening the connection for it also sets the file up as RunStore's engine does."""
        with self._lock:
            try:
                conn = self._connection()
            except sqlite3.Error:
                return None
            return version_of(conn)

    def select_runs(self, condition: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        """``SELECT * FROM runs WHERE condition``: each row's columns by name, with the values
        SQLAlchemy's ``runs`` table gives back (JSON decoded, times as naive UTC datetimes)."""
        with self._lock:
            try:
                cursor = self._connection().execute(f"SELECT * FROM runs WHERE {condition}", params)
                names = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"runs database {self.where}: {exc}") from exc
        readers = [_READ.get(name) for name in names]
        return [
            {
                name: value if read is None else read(value)
                for name, read, value in zip(names, readers, row, strict=True)
            }
            for row in rows
        ]

    def save_environment(self, values: Mapping[str, Any]) -> None:
        """Add a row to ``environments`` unless one has this ``hash`` (the write lock is only
        taken when it is missing: once per environment, ever)."""
        find = "SELECT 1 FROM environments WHERE hash = ?"
        key = (values["hash"],)
        with self._lock:
            try:
                conn = self._connection()
                if conn.execute(find, key).fetchone() is not None:
                    return
            except sqlite3.Error as exc:
                raise StoreError(f"runs database {self.where}: {exc}") from exc
        values = {**values, "created_at": values["created_at"].astimezone(timezone.utc)}
        names = ", ".join(values)
        params = _bound(values, _CONVERT_ENVIRONMENT)
        insert = f"INSERT INTO environments ({names}) VALUES ({', '.join('?' * len(values))})"
        try:
            self._write(insert, params, unless=(find, key))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"runs database {self.where}: {exc}") from exc

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
        self,
        sql: str,
        params: tuple[Any, ...],
        *,
        run_id: str | None = None,
        unless: tuple[str, tuple[Any, ...]] | None = None,
    ) -> tuple[bool, str | None]:
        # unless: a query that, finding a row inside the transaction, cancels the write
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if unless is not None and conn.execute(*unless).fetchone() is not None:
                        changed = False
                    else:
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


def _bound(values: Mapping[str, Any], converters: Mapping[str, Any] = _CONVERT) -> tuple[Any, ...]:
    """A row's values as ``sqlite3`` parameters, each through its column's converter."""
    out = []
    try:
        for name, value in values.items():
            convert = converters[name]
            out.append(value if convert is None else convert(value))
    except NotJson as exc:
        raise StoreError(f"cannot store the value: {exc}") from exc
    return tuple(out)
