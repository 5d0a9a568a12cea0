"""A run row's own writes and the queue's claim on PostgreSQL: one round trip each.

Every queued run costs the store a claim, a few writes of its row (running, its details)
and its end. Each is one statement, so each runs in autocommit: the statement is its own
transaction, and the server commits it (waiting for its WAL flush, durability unchanged)
before it answers. Through SQLAlchemy's transactions each took three round trips (``BEGIN``,
the statement, ``COMMIT``) and about 0.2 ms of the worker's CPU in statement machinery; here
it is one round trip, with the statement prepared on the server (parsed and planned once per
connection), and about 0.06 ms of CPU. :class:`~kiln.store.sql.RunStore` sends those writes
here on PostgreSQL, as it sends them to :mod:`kiln.store.hotrow` on a SQLite file;
everything else stays on SQLAlchemy.

Connections come from the store's SQLAlchemy pool (so its ping of idle connections, its
disposal after a fork and its size still hold) and go back to it out of autocommit. The
columns come from :data:`kiln.store.schema.runs` and values are bound as SQLAlchemy binds
them: JSON as the store's serialiser writes it (a ``None`` is SQL NULL or JSON ``null`` as
the column says), times as aware datetimes. A test writes the same runs both ways and
compares the rows. A lost connection is dropped from the pool and reported as SQLAlchemy
reports it, so the store's patience with an unreachable server applies here too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from kiln.errors import StoreError
from kiln.store.schema import CLAIMABLE, run_columns, runs
from kiln.store.values import TERMINAL, NotJson, dumps

_COLUMNS = tuple(column.name for column in runs.c)
#: how each column's value is bound: JSON as text (cast by the statement), others as they are
_JSON = {
    column.name: bool(column.type.none_as_null)
    for column in runs.c
    if isinstance(column.type, sa.JSON)
}
_NOT_ENDED = "state NOT IN ({})".format(", ".join(f"'{state}'" for state in TERMINAL))
#: the claim: lock the oldest claimable row nobody holds (ix_runs_claimable), take it, return
#: it. The conditions are literals, not parameters, so the prepared plan uses the partial
#: index; the outer ``state`` check holds if the row moved between the lock and the update.
CLAIM = (
    "UPDATE runs SET state = 'running', lease_owner = %s, lease_expires = %s, owner_pid = %s,"
    " owner_host = %s, owner_started = %s"
    f" WHERE id = (SELECT id FROM runs WHERE {CLAIMABLE}"
    " ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    f" AND state = 'queued' RETURNING {', '.join(_COLUMNS)}"
)


def pg_rows(engine: Callable[[], sa.Engine], name: str, where: str) -> PgRows | None:
    """The hot path for a PostgreSQL database (``name``: the engine's dialect), else None.
    ``engine`` gives the store's live engine (a new pool after a fork)."""
    return PgRows(engine, where) if name == "postgresql" else None


class PgRows:
    """The run row's writes and the claim, on connections of the store's pool."""

    def __init__(self, engine: Callable[[], sa.Engine], where: str) -> None:
        self._engine = engine
        self.where = where

    def close(self) -> None:
        """Nothing of its own to close: the connections are the pool's."""

    def insert(self, values: Mapping[str, Any]) -> None:
        """Add a row (``values``: column values from :func:`~kiln.store.values.column_values`);
        :class:`StoreError` when a run with this id exists."""
        import psycopg

        try:
            self._execute(_insert(tuple(values)), _bound(values))
        except StoreError as exc:
            if isinstance(getattr(exc.__cause__, "orig", None), psycopg.errors.UniqueViolation):
                raise StoreError(f"run {values['id']} already exists in {self.where}") from exc
            raise

    def update(
        self, run_id: str, values: Mapping[str, Any], *, only_active: bool
    ) -> tuple[bool, str | None]:
        """Set columns of a run (``only_active``: unless it has ended). Returns whether the row
        changed and, when it did not, its state (``None``: no such run)."""
        sql = _update(tuple(values), only_active)
        with self._connection() as conn:
            if self._run(conn, sql, (*_bound(values), run_id)).rowcount:
                return True, None
            # rare (an ended run, a wrong id): a second statement, after the first committed
            found = self._run(conn, "SELECT state FROM runs WHERE id = %s", (run_id,)).fetchone()
        return False, None if found is None else str(found[0])

    def claim(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """Take the oldest claimable run (``values``: lease_owner, lease_expires, owner_pid,
        owner_host, owner_started); its row as columns, or None when the queue is empty."""
        order = ("lease_owner", "lease_expires", "owner_pid", "owner_host", "owner_started")
        with self._connection() as conn:
            row = self._run(conn, CLAIM, tuple(values[name] for name in order)).fetchone()
        return None if row is None else dict(zip(_COLUMNS, row, strict=True))

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._connection() as conn:
            self._run(conn, sql, params)

    @contextmanager
    def _connection(self) -> Iterator[Any]:  # Any: psycopg.Connection, imported lazily
        import psycopg

        try:
            pooled = self._engine().raw_connection()
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            raise self._problem(exc) from _wrapped(exc)
        try:
            conn: Any = pooled.driver_connection  # psycopg.Connection
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.autocommit = False  # as the pool and SQLAlchemy expect it back
        except psycopg.Error as exc:
            lost = conn.closed or conn.broken
            if lost:  # never hand a broken connection out again
                pooled.invalidate(exc)
            raise self._problem(exc) from _wrapped(exc, lost)
        finally:
            pooled.close()

    def _run(self, conn: Any, sql: str, params: tuple[Any, ...]) -> Any:
        # prepared at first use, not after psycopg's default five: a worker's connection
        # runs these statements all day. psycopg still prepares nothing on a connection made
        # with prepare_threshold=None (behind PgBouncer's transaction pooling, say).
        return conn.execute(sql, params, prepare=True)

    def _problem(self, exc: BaseException) -> StoreError:
        original = getattr(exc, "orig", None) or exc
        return StoreError(f"runs database {self.where}: {str(original).strip()}")


def _wrapped(exc: BaseException, lost: bool = False) -> BaseException:
    """The driver's error as SQLAlchemy would raise it (the store judges SQLAlchemy's)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return exc
    import psycopg

    return sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=lost)


@functools.lru_cache(maxsize=64)
def _insert(columns: tuple[str, ...]) -> str:
    names = ", ".join(run_columns(columns))
    return f"INSERT INTO runs ({names}) VALUES ({', '.join(_slot(name) for name in columns)})"


@functools.lru_cache(maxsize=64)
def _update(columns: tuple[str, ...], only_active: bool) -> str:
    sets = ", ".join(f"{name} = {_slot(name)}" for name in run_columns(columns))
    only = f" AND {_NOT_ENDED}" if only_active else ""
    return f"UPDATE runs SET {sets} WHERE id = %s{only}"


def _slot(name: str) -> str:
    return "%s::json" if name in _JSON else "%s"


def _bound(values: Mapping[str, Any]) -> tuple[Any, ...]:
    out = []
    try:
        for name, value in values.items():
            if name not in _JSON:
                out.append(value)
            elif value is None:
                out.append(None if _JSON[name] else "null")
            else:
                out.append(dumps(value))
    except NotJson as exc:
        raise StoreError(f"cannot store the value: {exc}") from exc
    return tuple(out)
