"""SQLite is set up for many writers: WAL, a busy timeout, and BEGIN IMMEDIATE for writes.

SQLite only: these are the SQLite engine's own settings (PostgreSQL has row locks and MVCC
instead; its concurrency is tested by the parametrised store and queue tests).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from kiln.store import Run, RunStore

MakeRun = Callable[..., Run]


@pytest.fixture
def database_url() -> None:
    """SQLite only (see the module's docstring): no PostgreSQL variant."""
    return None


def test_database_is_in_wal_mode(store: RunStore, home: Path) -> None:
    raw = sqlite3.connect(home / "kiln.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_connection_pragmas(store: RunStore) -> None:
    with store._engine.connect() as conn:
        pragma = conn.exec_driver_sql
        assert pragma("PRAGMA busy_timeout").scalar() == 30000
        assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
    # the run row's own writes go through a sqlite3 connection of their own: the same rules
    assert store._hot is not None
    hot = store._hot._connection()
    assert hot.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert hot.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert hot.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert hot.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writes_begin_immediate_and_reads_do_not(store: RunStore, make_run: MakeRun) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("BEGIN"):
            statements.append(statement)

    event.listen(store._engine, "before_cursor_execute", record)
    assert store._hot is not None  # the run row's writes: sqlite3, same rule
    store._hot._connection().set_trace_callback(
        lambda sql: statements.append(sql) if sql.startswith("BEGIN") else None
    )
    try:
        run = make_run()
        store.update_run(run.id, state="running")
        store.finish_run(run.id, "succeeded")
        assert statements == ["BEGIN IMMEDIATE"] * 3
        statements.clear()
        store.get_run(run.id)
        store.list_runs()
        assert statements == ["BEGIN"] * 2
    finally:
        event.remove(store._engine, "before_cursor_execute", record)


def test_a_writer_waits_for_the_lock_instead_of_failing(
    store: RunStore, make_run: MakeRun, home: Path
) -> None:
    run = make_run(state="running")
    holder = sqlite3.connect(home / "kiln.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    errors: list[BaseException] = []
    waited: list[float] = []

    def write() -> None:
        started = time.perf_counter()
        try:
            store.finish_run(run.id, "succeeded")
        except BaseException as exc:  # reported below
            errors.append(exc)
        waited.append(time.perf_counter() - started)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(1.0)
    # While the lock is held, the writer is still waiting and readers are not blocked (WAL).
    assert writer.is_alive()
    # a blocked read would wait for a COMMIT that only comes after it, then fail (busy)
    assert store.get_run(run.id).state == "running"
    holder.execute("COMMIT")
    holder.close()
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert errors == []
    assert waited[0] >= 0.9
    assert store.get_run(run.id).state == "succeeded"


def test_an_id_prefix_lookup_searches_the_index(store: RunStore, make_run: MakeRun) -> None:
    # `kiln runs show 2026…`, `kiln runs compare A B`: a scan of every run would cost 10 ms
    # per 100,000 runs and lookup
    run = make_run()
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        statements.append((statement, params))

    event.listen(store._engine, "before_cursor_execute", seen)
    try:
        assert store.get_run(run.id[:-2]).id == run.id
    finally:
        event.remove(store._engine, "before_cursor_execute", seen)
    statement, params = next((s, p) for s, p in statements if "SELECT runs.id " in s)
    with store._engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH" in details and "SCAN" not in details, details


class _LockedCursor:
    """A cursor whose WAL switch is refused as "locked" a few times, as SQLite refuses it
    (without calling the busy handler) while other processes open a brand-new database."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.mode = "delete"
        self.statements: list[str] = []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)
        if sql == "PRAGMA journal_mode=WAL":
            if self.refusals:
                self.refusals -= 1
                raise sqlite3.OperationalError("database is locked")
            self.mode = "wal"

    def fetchone(self) -> tuple[str]:
        return (self.mode,)


def test_the_wal_switch_is_retried_while_the_new_database_is_locked() -> None:
    from kiln.store.litedb import use_wal

    cursor = _LockedCursor(refusals=3)
    use_wal(cursor)
    assert cursor.mode == "wal"
    assert cursor.statements.count("PRAGMA journal_mode=WAL") == 4


def test_a_database_already_in_wal_is_not_switched_again() -> None:
    from kiln.store.litedb import use_wal

    cursor = _LockedCursor(refusals=0)
    cursor.mode = "wal"
    use_wal(cursor)
    assert cursor.statements == ["PRAGMA journal_mode"]


def test_other_errors_of_the_wal_switch_are_not_retried() -> None:
    from kiln.store.litedb import use_wal

    class Broken(_LockedCursor):
        def execute(self, sql: str) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        use_wal(Broken(refusals=0))
