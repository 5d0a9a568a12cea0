"""Plain SQL on the history's database, through the standard library or SQLAlchemy.

:class:`Sqlite` opens a home's ``kiln.db`` with ``sqlite3`` alone (no SQLAlchemy import: what
makes an up-to-date pipeline check fast) and keeps the rules of
:class:`~kiln.store.sql.RunStore`: WAL, a busy timeout, ``BEGIN IMMEDIATE`` for every write.
:class:`Alchemy` runs the same statements (named parameters, ``:name``) through an open
``RunStore``'s engine, so they also run on any database SQLAlchemy supports.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kiln.errors import StoreError

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: keys per statement when looking up many at once (SQLite's variable limit is 32766)
CHUNK = 500
#: how long a SQLite statement waits for another process's write lock
BUSY_TIMEOUT_MS = 30_000
_BUSY_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000

Params = Mapping[str, Any]


class Database(Protocol):
    """Runs plain SQL statements: reads, and writes in one transaction."""

    def read(self, sql: str, params: Params = ...) -> list[tuple[Any, ...]]: ...

    def write(self, statements: Sequence[tuple[str, Sequence[Params]]]) -> int: ...

    def close(self) -> None: ...


class Sqlite:
    """The home's SQLite file through the standard library (the rules of RunStore: WAL, a busy
    timeout, BEGIN IMMEDIATE for writes)."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        self.sqlite3 = sqlite3
        self.path = path
        # a history on a read-only place is read as it is (writes then fail: StoreError)
        writable = os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)
        target = str(path) if writable else f"file:{path}?mode=ro&immutable=1"
        try:
            self.conn = sqlite3.connect(
                target,
                uri=not writable,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            self.conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            if writable:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the runs database {path}: {exc}") from exc

    def read(self, sql: str, params: Params = {}) -> list[tuple[Any, ...]]:  # noqa: B006
        try:
            return list(self.conn.execute(sql, bind(params)))
        except self.sqlite3.Error as exc:
            raise StoreError(f"runs database {self.path}: {exc}") from exc

    def write(self, statements: Sequence[tuple[str, Sequence[Params]]]) -> int:
        changed = 0
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    changed += self.conn.executemany(sql, [bind(r) for r in rows]).rowcount
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except self.sqlite3.Error as exc:
            raise StoreError(f"runs database {self.path}: {exc}") from exc
        return changed

    def close(self) -> None:
        self.conn.close()


class Alchemy:
    """The same statements through an open RunStore's SQLAlchemy engine."""

    def __init__(self, store: RunStore, *, owned: bool = False) -> None:
        self.store = store
        self.owned = owned  # opened for this BuildStore: closed with it

    def read(self, sql: str, params: Params = {}) -> list[tuple[Any, ...]]:  # noqa: B006
        import sqlalchemy as sa

        with self.store._read() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), bind(params, native=True))]

    def write(self, statements: Sequence[tuple[str, Sequence[Params]]]) -> int:
        import sqlalchemy as sa

        changed = 0
        with self.store._write() as conn:
            for sql, rows in statements:
                bound = [bind(r, native=True) for r in rows]
                changed += conn.execute(sa.text(sql), bound).rowcount or 0
        return changed

    def close(self) -> None:
        if self.owned:
            self.store.close()


def bind(params: Params, *, native: bool = False) -> dict[str, Any]:
    """Values as the database takes them: JSON as text; times in UTC, as SQLAlchemy writes
    them on SQLite (text) unless ``native`` (the driver converts them)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, default=str)
        elif isinstance(value, datetime):
            value = value.astimezone(timezone.utc)
            if not native:
                value = value.strftime("%Y-%m-%d %H:%M:%S.%f")
        out[key] = value
    return out


def when(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (text on SQLite, a datetime elsewhere)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a time, got {value!r}")
    return (
        value.replace(tzinfo=timezone.utc)
        if value.tzinfo is None
        else value.astimezone(timezone.utc)
    )


def from_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def configure(dbapi_connection: Any) -> None:
    """The rules of every connection to a SQLite history (the SQLAlchemy engine's and the
    ``sqlite3`` paths'): a busy timeout, WAL, ``synchronous=NORMAL``, foreign keys."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: the next may wait
        use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def use_wal(cursor: Any) -> None:
    """Put the database in WAL mode unless it is already."""
    import sqlite3

    # WAL is a property of the file: set once, every later connection finds it. Switching needs
    # an exclusive lock, and SQLite answers "database is locked" without calling the busy
    # handler when processes open a brand-new database at once (5 of 320 such opens failed
    # here), so the switch is retried until the busy timeout is spent.
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite:///PATH`` naming the database file at ``path``: the characters a URL would
    read as an escape or the start of its query (``%``, ``?``, ``#``) are percent-encoded, so
    a home named ``a%40b`` is not opened as ``a@b``."""
    return "sqlite:///" + _escaped(os.fspath(path))


def sqlite_read_only_url(path: str | os.PathLike[str]) -> str:
    """A URL that reads the database file at ``path`` as it is (``immutable``: no ``-wal`` or
    ``-shm`` made beside it, for a read-only folder). SQLite reads the ``file:`` part as a URI
    of its own, so the path is escaped for it, then for the URL."""
    return f"sqlite:///file:{_escaped(_escaped(os.fspath(path)))}?mode=ro&immutable=1&uri=true"


def _escaped(text: str) -> str:
    return text.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def sqlite_file(url: str) -> Path | None:
    """The file behind a plain ``sqlite:///PATH`` URL (read-only URI forms excluded): the
    path percent-decoded, as SQLAlchemy reads it (``a%40b`` is ``a@b``)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or url[len(prefix) :].startswith("file:"):
        return None
    from urllib.parse import unquote

    return Path(unquote(url[len(prefix) :]))


def shown_url(url: str) -> str:
    """A plain ``sqlite:///PATH`` URL as SQLAlchemy shows it (its path percent-encoded but
    for spaces, ``+`` and ``/``): the same name in messages whichever path opened it."""
    from urllib.parse import quote, unquote

    prefix = "sqlite:///"
    return prefix + quote(unquote(url[len(prefix) :]), safe=" +/")


def schema_version(db_file: Path) -> str | None:
    """The schema version of the database file ``db_file``, read on a read-only connection
    of its own (see :func:`version_of`)."""
    import sqlite3

    try:
        conn = sqlite3.connect(
            f"file:{_escaped(os.fspath(db_file))}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S
        )
    except sqlite3.Error:
        return None
    try:
        return version_of(conn)
    finally:
        conn.close()


def version_of(conn: Any) -> str | None:
    """The database's one schema version (``alembic_version``); ``None`` when it has none,
    several, or cannot be read (a new or foreign file)."""
    import sqlite3

    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None
