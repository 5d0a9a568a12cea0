"""The run row's writes and the claim on PostgreSQL (kiln.store.pgrow): the same rows as
SQLAlchemy writes, one round trip and one commit each, and a lost connection survived."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rowcases import lifecycle, refuses_what_sqlalchemy_refuses

from kiln.errors import StoreError
from kiln.store import Run, RunStore
from kiln.store import queue as runs_queue
from kiln.store.pgrow import PgRows

from kilnpg import wire

MakeRun = Callable[..., Run]


@pytest.fixture
def pg(home: Path, postgres_url: str) -> Any:
    with RunStore(home, url=postgres_url) as store:
        assert isinstance(store._hot, PgRows)
        yield store


def _rows(store: RunStore, run_id: str) -> dict[str, Any]:
    # the columns as the server holds them: JSON as its text, times as UTC text
    with store._engine.connect() as conn:
        conn.exec_driver_sql("SET TIME ZONE 'UTC'")
        row = conn.exec_driver_sql(
            "SELECT * FROM (SELECT r.*, r.parameters::text AS p, r.records::text AS rec,"
            " r.error::text AS err, r.tags::text AS t, r.request::text AS req,"
            " r.created_at::text AS c, r.ended_at::text AS e FROM runs r) AS x WHERE id = %(id)s",
            {"id": run_id},
        ).one()
    return dict(row._mapping)


def test_the_hot_path_writes_the_same_rows_as_sqlalchemy(pg: RunStore) -> None:
    lifecycle(pg, "20240101-000000-hot")
    hot_path, pg._hot = pg._hot, None  # the same writes through SQLAlchemy
    lifecycle(pg, "20240101-000000-sqla")
    pg._hot = hot_path
    hot, alchemy = (pg.get_run_exact(f"20240101-000000-{k}") for k in ("hot", "sqla"))
    raw_hot, raw_alchemy = _rows(pg, hot.id), _rows(pg, alchemy.id)
    raw_hot.pop("id"), raw_alchemy.pop("id")
    assert raw_hot == raw_alchemy
    assert raw_hot["c"] == "2024-05-06 05:08:09.123456+00"
    assert raw_hot["origin"] is None and raw_hot["error"] is not None  # SQL NULL, JSON value
    assert raw_hot["req"] == '{"notebook": "report.ipynb", "options": {"b": 1, "a": 2}}'
    assert hot == dataclasses.replace(alchemy, id=hot.id)


def test_the_hot_path_refuses_what_sqlalchemy_refuses(pg: RunStore) -> None:
    refuses_what_sqlalchemy_refuses(pg)
    # the pool's connections came back out of autocommit, usable by SQLAlchemy's transactions
    with pg._write() as conn:
        assert not conn.connection.driver_connection.autocommit


def _submit(store: RunStore, count: int) -> list[Run]:
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [
        store.create_run(
            Run(
                id=f"20250101-000000-{i:04d}",
                notebook_path="q.ipynb",
                notebook_sha256="x",
                state="queued",
                request={"options": {}},
                created_at=base + timedelta(seconds=i),
            )
        )
        for i in range(count)
    ]


def _queue_work(store: RunStore) -> str:
    claimed = runs_queue.claim(store, "w", lease=30, pid=1, host="h")
    assert claimed is not None
    store.update_run(claimed.id, started_at=datetime.now(timezone.utc))
    assert store.finish_run(claimed.id, "succeeded")
    return claimed.id


def test_a_queued_runs_store_work_is_three_round_trips_and_three_commits(
    pg: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # claim, running write, end: each one statement, its own transaction (it was BEGIN,
    # statement, COMMIT each: nine round trips)
    _submit(pg, 2)
    _queue_work(pg)  # statements are prepared on first use (a round trip each, once)
    sent: list[str] = []
    execute = PgRows._run

    def record(self: PgRows, conn: Any, sql: str, params: tuple[Any, ...]) -> Any:
        sent.append(sql)
        return execute(self, conn, sql, params)

    monkeypatch.setattr(PgRows, "_run", record)
    with wire(pg._engine) as traced:
        _queue_work(pg)
    (seen,) = traced
    assert seen.round_trips == 3, seen.lines
    assert seen.commits == 3
    claim, running, end = sent
    assert "FOR UPDATE SKIP LOCKED" in claim and "RETURNING" in claim
    assert "ORDER BY created_at, id" in claim
    assert running.startswith("UPDATE runs SET started_at") and "state NOT IN" not in running
    assert end.startswith("UPDATE runs SET state") and "state NOT IN" in end


def test_the_first_use_on_a_connection_prepares_once(pg: RunStore) -> None:
    _submit(pg, 1)
    with wire(pg._engine) as traced:
        _queue_work(pg)
    (seen,) = traced
    assert seen.round_trips == 6  # each statement parsed once on the server, then executed
    assert seen.commits == 3


def test_the_claim_reads_the_queues_own_index(pg: RunStore) -> None:
    # 2,000 finished runs before the queued one: the claim must not read through them
    # (ix_runs_claimable holds the claimable rows alone)
    _submit(pg, 2001)
    for _ in range(2000):
        _queue_work(pg)
    from kiln.store.pgrow import CLAIM

    subquery = CLAIM.split("WHERE id = (", 1)[1].split(") AND state", 1)[0]
    with pg._engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE runs")
        plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {subquery}").scalars())
    assert "ix_runs_claimable" in plan, plan
    assert "Rows Removed by Filter" not in plan, plan
    assert "Sort" not in plan, plan


def test_a_connection_lost_between_writes_is_replaced(pg: RunStore) -> None:
    # the server ends the pooled connection (a restart, an idle timeout): the next write
    # finds it broken, drops it from the pool and succeeds on a new one
    (run,) = _submit(pg, 1)
    claimed = runs_queue.claim(pg, "w", lease=30)
    assert claimed is not None and claimed.id == run.id
    other = sa.create_engine(pg.url, poolclass=sa.NullPool)
    with other.connect() as conn:
        killed = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).all()
    other.dispose()
    assert killed == [(True,)]  # the pooled connection the claim used
    pg.update_run(run.id, started_at=datetime.now(timezone.utc))
    assert pg.finish_run(run.id, "succeeded")
    assert pg.get_run_exact(run.id).state == "succeeded"


def test_an_unreachable_server_is_a_store_error_that_the_writes_wait_out(
    home: Path, postgres_url: str
) -> None:
    url = sa.make_url(postgres_url).set(port=1)  # nothing listens there
    with RunStore(home, url=postgres_url) as store:
        (run,) = _submit(store, 1)
        store._engine.dispose()
        store._alchemy = sa.create_engine(url, connect_args={"connect_timeout": 2})
        store.patience = 0.5
        with pytest.raises(StoreError, match="runs database") as raised:
            store.update_run(run.id, reason="x")
        from kiln.store.sql import _unreachable

        assert _unreachable(raised.value.__cause__)  # so _patiently waited, then gave up
        with pytest.raises(StoreError, match="runs database"):
            runs_queue.claim(store, "w", lease=30)


def test_a_connection_that_prepares_nothing_is_respected(pg: RunStore) -> None:
    # behind PgBouncer's transaction pooling a connection is made with prepare_threshold=None:
    # a prepared statement could land on another server connection
    def no_prepared(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.prepare_threshold = None

    sa.event.listen(pg._engine, "connect", no_prepared)
    pg._engine.dispose()
    _submit(pg, 2)
    with wire(pg._engine) as traced:
        _queue_work(pg)
        _queue_work(pg)
    (seen,) = traced
    parsed = [line for line in seen.lines if line[:1] == ["F"] and line[2] == "Parse"]
    assert parsed and all(line[3].strip().startswith('"" ') for line in parsed)  # unnamed
    assert seen.round_trips == 6 and seen.commits == 6
