"""The runs table as a queue (``kiln.store.queue``), on SQLite and on PostgreSQL: claims,
leases, expiry and retries, cancel requests, and many processes claiming at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kiln.store import Run, RunStore
from kiln.store import queue as runs_queue

from kilntest import start_barrier

MakeRun = Callable[..., Run]
BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def statements(store: RunStore) -> Iterator[list[str]]:
    """The SQL the store sends, as sent."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(store._engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(store._engine, "before_cursor_execute", record)


def _queued(make_run: MakeRun, count: int, **fields: Any) -> list[Run]:
    return [
        make_run(created_at=BASE + timedelta(seconds=i), request={"options": {}}, **fields)
        for i in range(count)
    ]


def test_claims_take_the_oldest_queued_run_each_once(store: RunStore, make_run: MakeRun) -> None:
    runs = _queued(make_run, 3)
    make_run(state="running", created_at=BASE - timedelta(days=1))  # not queued: never claimed
    before = datetime.now(timezone.utc)
    first = runs_queue.claim(store, "w1", lease=30, pid=123, host="h1", started=1.5)
    assert first is not None and first.id == runs[0].id
    assert (first.state, first.lease_owner, first.owner_pid, first.owner_host) == (
        "running",
        "w1",
        123,
        "h1",
    )
    assert first.owner_started == 1.5
    assert first.lease_expires is not None
    assert timedelta(seconds=29) < first.lease_expires - before < timedelta(seconds=40)
    assert store.get_run(first.id) == first
    claimed = [runs_queue.claim(store, "w2", lease=30) for _ in range(3)]
    assert [c.id if c else None for c in claimed] == [runs[1].id, runs[2].id, None]


def test_claim_locks_with_skip_locked_on_postgresql(
    store: RunStore, make_run: MakeRun, statements: list[str]
) -> None:
    _queued(make_run, 1)
    statements.clear()
    assert runs_queue.claim(store, "w", lease=30) is not None
    if store.backend == "postgresql":  # one statement, through psycopg (test_store_pgrow)
        assert statements == []
    else:  # SQLite has no row locks: the claim's transaction holds the write lock
        select = next(s for s in statements if s.lstrip().startswith("SELECT runs.id"))
        assert "ORDER BY runs.created_at, runs.id" in select
        assert "FOR UPDATE" not in select
        assert statements[0] == "BEGIN IMMEDIATE"


def test_a_claim_skips_a_row_another_worker_holds(
    store: RunStore, make_run: MakeRun, home: Path, database_url: str | None
) -> None:
    if database_url is None:
        pytest.skip("SQLite has no row locks: its writers take turns (BEGIN IMMEDIATE)")
    runs = _queued(make_run, 2)
    other = sa.create_engine(database_url, poolclass=sa.NullPool)
    # a claim that waited for the row lock would fail after 2 s instead of taking the next row
    impatient = RunStore(home, url=f"{database_url}?options=-clock_timeout%3D2000")
    with other.connect() as holder:  # a worker in the middle of claiming the oldest run
        holder.exec_driver_sql(
            "SELECT id FROM runs WHERE id = %(id)s FOR UPDATE", {"id": runs[0].id}
        )
        claimed = runs_queue.claim(impatient, "w", lease=30)
        assert claimed is not None and claimed.id == runs[1].id
        assert runs_queue.claim(impatient, "w", lease=30) is None  # the held one is skipped
        holder.rollback()
    other.dispose()
    again = runs_queue.claim(impatient, "w", lease=30)
    assert again is not None and again.id == runs[0].id
    impatient.close()


def test_renew_extends_the_owners_leases(store: RunStore, make_run: MakeRun) -> None:
    _queued(make_run, 3)
    mine = [runs_queue.claim(store, "me", lease=5) for _ in range(2)]
    theirs = runs_queue.claim(store, "them", lease=5)
    assert runs_queue.renew(store, "me", lease=600) == 2
    for run in mine:
        assert run is not None and run.lease_expires is not None
        renewed = store.get_run(run.id).lease_expires
        assert renewed is not None and renewed > run.lease_expires + timedelta(seconds=500)
    assert theirs is not None
    assert store.get_run(theirs.id).lease_expires == theirs.lease_expires
    assert runs_queue.renew(store, "nobody", lease=600) == 0


def test_release_gives_an_unstarted_claim_back(store: RunStore, make_run: MakeRun) -> None:
    (run,) = _queued(make_run, 1)
    claimed = runs_queue.claim(store, "w", lease=30)
    assert claimed is not None
    assert not runs_queue.release(store, run.id, "someone-else")
    assert runs_queue.release(store, run.id, "w")
    back = store.get_run(run.id)
    assert (back.state, back.lease_owner, back.lease_expires) == ("queued", None, None)
    started = runs_queue.claim(store, "w", lease=30)
    assert started is not None
    store.update_run(run.id, started_at=datetime.now(timezone.utc))
    assert not runs_queue.release(store, run.id, "w")  # it has started: it is not given back


def test_an_expired_lease_crashes_the_run_and_queues_its_retry(
    store: RunStore, make_run: MakeRun
) -> None:
    (run,) = _queued(make_run, 1, max_retries=1, attempt=1, parameters={"n": 1}, tags={"t": "x"})
    claimed = runs_queue.claim(store, "dead", lease=1)
    assert claimed is not None and claimed.lease_expires is not None
    assert runs_queue.expire(store, now=claimed.lease_expires - timedelta(seconds=0.5)) == []
    later = claimed.lease_expires + timedelta(seconds=1)
    (crashed,) = runs_queue.expire(store, now=later)
    assert crashed.id == run.id and crashed.state == "crashed"
    assert crashed.reason is not None and "worker dead stopped renewing" in crashed.reason
    stored = store.get_run(run.id)
    assert (stored.state, stored.lease_expires) == ("crashed", None)
    (retry,) = store.list_runs(state="queued")
    assert (retry.retry_of, retry.attempt, retry.max_retries) == (run.id, 2, 1)
    assert (retry.parameters, retry.tags, retry.request) == ({"n": 1}, {"t": "x"}, run.request)
    assert runs_queue.expire(store, now=later) == []  # exactly once
    second = runs_queue.claim(store, "dead-too", lease=1)
    assert second is not None and second.id == retry.id and second.lease_expires is not None
    assert len(runs_queue.expire(store, now=second.lease_expires + timedelta(seconds=1))) == 1
    assert store.list_runs(state="queued") == []  # its retries are used up


def test_cancel_requests(store: RunStore, make_run: MakeRun) -> None:
    _, running, done = _queued(make_run, 3)
    assert runs_queue.claim(store, "w", lease=30) is not None  # takes `queued`
    claimed = runs_queue.claim(store, "w", lease=30)  # takes `running`
    assert claimed is not None and claimed.id == running.id
    assert runs_queue.claim(store, "w", lease=30) is not None
    assert store.finish_run(done.id, "succeeded")
    fresh = make_run(request={"options": {}})

    cancelled = runs_queue.request_cancel(store, fresh.id, reason="by request")
    assert (cancelled.state, cancelled.reason) == ("cancelled", "by request")
    flagged = runs_queue.request_cancel(store, running.id, reason="by request")
    assert flagged.state == "running" and flagged.cancel_requested is not None
    assert runs_queue.cancel_requests(store, "w") == [running.id]
    assert runs_queue.cancel_requests(store, "other") == []
    untouched = runs_queue.request_cancel(store, done.id, reason="by request")
    assert untouched.state == "succeeded" and untouched.cancel_requested is None


CLAIMER = """
import sys, time
from pathlib import Path
from kiln.store import RunStore
from kiln.store import queue as runs_queue

home, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
store = RunStore(home)
(go.parent / f"ready-{name}").touch()
while not go.exists():
    time.sleep(0.001)
while (run := runs_queue.claim(store, name, lease=60)) is not None:
    print(run.id, flush=True)
"""


def test_eight_processes_claim_every_run_exactly_once(
    store: RunStore, home: Path, tmp_path: Path
) -> None:
    ids = []
    for i in range(400):
        run = Run(
            id=f"q-{i:04d}",
            notebook_path="n.ipynb",
            notebook_sha256="x",
            state="queued",
            request={"options": {}},
        )
        ids.append(store.create_run(run).id)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(home), f"w{n}", str(tmp_path / "go")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    start_barrier(tmp_path, len(procs))
    claimed: dict[str, list[str]] = {}
    for n, proc in enumerate(procs):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        claimed[f"w{n}"] = out.split()
    every = [run_id for taken in claimed.values() for run_id in taken]
    assert sorted(every) == ids  # none lost, none claimed twice
    assert sum(1 for taken in claimed.values() if taken) > 1  # they did run side by side
    holders = {run.id: run.lease_owner for run in store.list_runs(limit=None)}
    for name, taken in claimed.items():
        assert all(holders[run_id] == name for run_id in taken)
    assert {run.state for run in store.list_runs(limit=None)} == {"running"}


def test_sqlites_claim_reads_only_queued_rows(store: RunStore) -> None:
    # through an index of queued rows (ix_runs_claimable, or the state index): a claim never
    # reads through the finished history (PostgreSQL's claim: test_store_pgrow)
    if store.backend != "sqlite":
        pytest.skip("PostgreSQL claims through kiln.store.pgrow")
    from sqlalchemy.dialects import sqlite

    query = runs_queue._oldest().compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
    )
    with store._engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))
    assert "SEARCH runs USING INDEX" in plan and "SCAN" not in plan, plan
