"""The history and the queue on SQLite and PostgreSQL, side by side, in one run.

Scenarios:
  per-run   what every run pays the store: create + running update + finish (median, p95)
  queue     the queue's own overhead per run: claim + running update + finish (median, p95)
  drain     4 worker processes drain queued runs: runs/s, the queue's overhead per run under
            contention (median, p95), and every run claimed and ended exactly once
  history   1,000,000 runs on PostgreSQL: the query behind
            `kiln runs list --notebook X --state failed` (p50, p95) with its plan, and a run
            id prefix lookup (`kiln runs show 2025...`), and the API's run list (GET
            /api/v1/runs: its first page, a notebook's failed runs, the 20th page by cursor)

Without --url a throwaway PostgreSQL server is started (tests/kilnpg.py; as root through
runuser) with the server's own durability (each commit waits for its WAL flush, as in
production; --fast-server turns fsync off, as the tests do). On PostgreSQL the queue
scenario also counts, from libpq's trace of the protocol, the round trips and the commits of
one run: figures the machine's load does not change. Each figure is printed
with the load average before and after. Prints the figures and writes
bench/results/store.json.
Usage: python bench/store_bench.py [--runs N] [--drain N] [--history N] [--url URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kiln.store import Record, Run, RunStore
from kiln.store import queue as runs_queue

RESULTS = Path(__file__).resolve().parent / "results"


def ms(seconds: list[float]) -> dict[str, float]:
    """The median and the spread (p10, p90, p95, max) in milliseconds."""
    ordered = sorted(seconds)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    return {"median_ms": statistics.median(ordered) * 1000, "p10_ms": at(0.10),
            "p90_ms": at(0.90), "p95_ms": at(0.95), "max_ms": ordered[-1] * 1000}  # fmt: skip


def per_run(store: RunStore, runs: int, tag: str) -> dict[str, float]:
    took = []
    for i in range(runs):
        run_id = f"{tag}-{i:06d}"
        started = time.perf_counter()
        store.create_run(
            Run(id=run_id, notebook_path="/srv/project/report.ipynb", notebook_sha256="ab" * 32,
                state="queued", parameters={"n": i, "region": "eu"})
        )  # fmt: skip
        store.update_run(run_id, state="running", started_at=datetime.now(timezone.utc))
        store.finish_run(
            run_id, "succeeded", records_list=[Record("n", "json", i)], cell_durations=[0.01]
        )
        took.append(time.perf_counter() - started)
    return ms(took)


def queue_overhead(store: RunStore, runs: int, tag: str) -> dict[str, float]:
    for i in range(runs):
        store.create_run(
            Run(id=f"{tag}-{i:06d}", notebook_path="q.ipynb", notebook_sha256="x",
                state="queued", request={"options": {}})
        )  # fmt: skip
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        assert _queue_step(store, "bench") is not None
        took.append(time.perf_counter() - started)
    assert runs_queue.claim(store, "bench", lease=30) is None
    return ms(took)


def round_trips(url: str, home: Path, sample: int = 50) -> dict[str, float]:
    """Load-independent: what one run of the queue scenario (claim, running write, end)
    exchanges with the server, from libpq's trace of the protocol: round trips, and commits
    (each waits for its WAL flush)."""
    from kilnpg import wire

    with RunStore(home, url=url) as store:
        for i in range(sample + 10):
            store.create_run(
                Run(id=f"rt-{i:06d}", notebook_path="q.ipynb", notebook_sha256="x",
                    state="queued", request={"options": {}})
            )  # fmt: skip
        for _ in range(10):  # the steady state: statements prepared on the connection
            assert _queue_step(store, "bench") is not None
        with wire(store._engine) as traced:
            for _ in range(sample):
                assert _queue_step(store, "bench") is not None
    (seen,) = traced
    return {
        "round_trips_per_run": seen.round_trips / sample,
        "commits_per_run": seen.commits / sample,
    }


def _queue_step(store: RunStore, owner: str) -> str | None:
    """The queue's own work for one run: claim, the running write, the end (None: the
    queue is empty)."""
    claimed = runs_queue.claim(store, owner, lease=30, pid=1, host=owner)
    if claimed is None:
        return None
    store.update_run(claimed.id, started_at=datetime.now(timezone.utc))
    store.finish_run(claimed.id, "succeeded")
    return claimed.id


def _drainer(home: str, url: str | None, name: str, out: Any, ready: Any, go: Any) -> None:
    store = RunStore(home, url=url)
    ready.release()
    go.wait()
    mine, took = [], []
    cpu = time.process_time()
    while True:
        started = time.perf_counter()
        done = _queue_step(store, name)
        if done is None:
            break
        took.append(time.perf_counter() - started)
        mine.append(done)
    cpu = time.process_time() - cpu
    store.close()
    out.put((mine, took, cpu))


def drain(home: Path, url: str | None, runs: int, workers: int = 4) -> dict[str, float]:
    with RunStore(home, url=url) as store:
        for i in range(runs):
            store.create_run(
                Run(id=f"drain-{i:06d}", notebook_path="d.ipynb", notebook_sha256="x",
                    state="queued", request={"options": {}})
            )  # fmt: skip
    context = multiprocessing.get_context("spawn")
    out, ready, go = context.Queue(), context.Semaphore(0), context.Event()
    procs = [
        context.Process(target=_drainer, args=(str(home), url, f"w{n}", out, ready, go))
        for n in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:  # every worker has imported Kiln and opened the store
        ready.acquire(timeout=120)
    started = time.perf_counter()
    go.set()
    parts = [out.get(timeout=1800) for _ in procs]
    elapsed = time.perf_counter() - started
    claimed = [run_id for mine, _, _ in parts for run_id in mine]
    took = [t for _, times, _ in parts for t in times]
    cpu = sum(spent for _, _, spent in parts)
    for proc in procs:
        proc.join()
    assert sorted(claimed) == [f"drain-{i:06d}" for i in range(runs)], "lost or doubled runs"
    with RunStore(home, url=url) as store:  # and each ended once, in the history
        ended = [r for r in store.list_runs(state="succeeded", limit=None) if r.id[:6] == "drain-"]
    assert len(ended) == runs, f"{len(ended)} of {runs} runs succeeded"
    # the queue's own overhead per run (claim + running write + end), under 4-way contention
    # and the workers' own CPU per run (Python, driver, sockets), which load barely changes
    return {"runs": runs, "workers": workers, "runs_per_s": runs / elapsed, **ms(took),
            "worker_cpu_ms_per_run": cpu / runs * 1000,
            "per_worker": [len(mine) for mine, _, _ in parts]}  # fmt: skip


FILL = """
INSERT INTO runs (id, notebook_path, notebook_name, notebook_sha256, state, parameters,
                  created_at, started_at, ended_at, cell_durations, records, engine, reason)
SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYYMMDD-HH24MISS') || '-' || lpad(to_hex(g), 8, '0'),
       '/srv/project/reports/' || nb,
       nb,
       repeat('ab', 32),
       CASE WHEN (g / 200) % 100 < 85 THEN 'succeeded' WHEN (g / 200) % 100 < 95 THEN 'failed'
            WHEN (g / 200) % 100 < 98 THEN 'crashed' ELSE 'cancelled' END,
       json_build_object('n', g % 1000, 'region', 'eu'),
       ts, ts, ts + interval '2 seconds', '[0.5, 1.25]', '[]', 'fork',
       CASE WHEN (g / 200) % 100 BETWEEN 85 AND 94 THEN 'cell 3 raised ValueError' END
FROM (SELECT g, timestamptz '2025-01-01 00:00:00+00' + g * interval '30 seconds' AS ts,
             CASE WHEN g <= 20000 AND g % 2 = 0 THEN 'old.ipynb'
                  WHEN g % 10 < 3 THEN 'big.ipynb'
                  ELSE 'nb' || lpad((g % 200)::text, 3, '0') || '.ipynb' END AS nb
      FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g) AS s
"""
#: 30% of the runs are of one notebook (big.ipynb), 1% of one that stopped running long ago
#: (old.ipynb: the planner's worst case, its newest runs are the oldest of the history), the
#: rest spread over 200 (nbNNN.ipynb); 10% of each notebook's runs failed


def history(url: str, total: int, queries: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from kiln.store.pages import runs_page

    with tempfile.TemporaryDirectory() as tmp, RunStore(tmp, url=url) as store:
        engine = store._engine
        started = time.perf_counter()
        step = 100_000
        for first in range(1, total + 1, step):
            with engine.begin() as conn:
                conn.execute(sa.text(FILL), {"first": first, "last": min(total, first + step - 1)})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE runs"
            )
        filled = time.perf_counter() - started
        rng = random.Random(7)
        cases: dict[str, Callable[[int], Any]] = {
            "name": lambda k: store.list_runs(notebook=f"nb{k:03d}.ipynb", state="failed"),
            "path": lambda k: store.list_runs(
                notebook=f"/srv/project/reports/nb{k:03d}.ipynb", state="failed"
            ),
            "big": lambda k: store.list_runs(notebook="big.ipynb", state="failed"),
            "old": lambda k: store.list_runs(notebook="old.ipynb", state="failed"),
            # the API's run list (GET /api/v1/runs): its query, server time
            "api_all": lambda k: runs_page(store)[0],
            "api_name_failed": lambda k: runs_page(
                store, notebook_name=f"nb{k:03d}.ipynb", states=["failed"]
            )[0],
            "api_big_page_20": lambda k: runs_page(store, notebook_name="big.ipynb", after=deep)[0],
        }
        deep = None
        for _ in range(20):  # the cursor of the 20th page of big.ipynb's runs
            deep = runs_page(store, notebook_name="big.ipynb", after=deep)[1]
        figures: dict[str, Any] = {"runs": total, "fill_s": filled}
        for label, query in cases.items():
            for k in range(5):  # warm the cache as a live server's would be
                query(k)
            took = []
            for _ in range(queries):
                k = rng.choice([n for n in range(200) if n % 10 >= 3])  # the ones with runs
                t = time.perf_counter()
                found = query(k)
                took.append(time.perf_counter() - t)
                assert found
                assert label.startswith("api_") or {r.state for r in found} == {"failed"}
            figures[f"list_{label}"] = ms(took)
        took = []
        with engine.connect() as conn:
            some = (
                conn.exec_driver_sql("SELECT id FROM runs TABLESAMPLE SYSTEM (1) LIMIT 200")
                .scalars()
                .all()
            )
        for run_id in some[:queries]:
            t = time.perf_counter()
            store.get_run(run_id[:-2])
            took.append(time.perf_counter() - t)
        figures["prefix_lookup"] = ms(took)
        from sqlalchemy.dialects import postgresql

        from kiln.store.schema import runs
        from kiln.store.sql import _notebook_filter

        figures["plan"] = []
        for notebook in ("big.ipynb", "old.ipynb"):
            query = (
                runs.select()
                .where(_notebook_filter(notebook), runs.c.state.in_(["failed"]))
                .order_by(runs.c.created_at.desc(), runs.c.id.desc())
                .limit(50)
            )
            sql = str(
                query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
            )
            with engine.connect() as conn:
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql).scalars().all()
            figures["plan"] += [f"-- {notebook}", *plan]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="runs for per-run and queue")
    parser.add_argument("--drain", type=int, default=2000, help="runs drained by 4 workers")
    parser.add_argument("--history", type=int, default=1_000_000, help="runs in the history")
    parser.add_argument("--queries", type=int, default=200, help="list queries timed")
    parser.add_argument("--url", help="an existing, empty PostgreSQL database to use")
    parser.add_argument("--only", choices=("backends", "history"), help="one part only")
    parser.add_argument(
        "--fast-server",
        action="store_true",
        help="start PostgreSQL with fsync and synchronous_commit off (not how a team runs it: "
        "the default server waits for each commit's WAL flush, as production does)",
    )
    args = parser.parse_args()

    server = None
    if args.url is None:
        from kilnpg import PostgresServer

        server = PostgresServer.start(durable=not args.fast_server)
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "postgresql_server": "given" if args.url else "fast" if args.fast_server else "durable",
        "backends": {},
    }
    try:
        for backend in ("sqlite", "postgresql") if args.only != "history" else ():
            with tempfile.TemporaryDirectory() as tmp:
                url = None
                if backend == "postgresql":
                    url = args.url or server.create_database("bench")  # type: ignore[union-attr]
                figures: dict[str, Any] = {"load_before": os.getloadavg()[0]}
                with RunStore(Path(tmp) / "home", url=url) as store:
                    figures |= {
                        "per_run": per_run(store, args.runs, "p"),
                        "queue": queue_overhead(store, args.runs, "q"),
                    }
                figures["drain"] = drain(Path(tmp) / "home", url, args.drain)
                if backend == "postgresql" and url is not None:
                    figures["queue"].update(round_trips(url, Path(tmp) / "home"))
                figures["load_after"] = os.getloadavg()[0]
                results["backends"][backend] = figures
                if backend == "postgresql" and server is not None and url is not None:
                    server.drop_database(url)
                print(backend, json.dumps(figures, indent=1), flush=True)
        if args.history and args.only != "backends":
            url = args.url or server.create_database("history")  # type: ignore[union-attr]
            results["history"] = history(url, args.history, args.queries)
            shown = {k: v for k, v in results["history"].items() if k != "plan"}
            print("history (postgresql)", json.dumps(shown, indent=1))
            print("\n".join(results["history"]["plan"]))
    finally:
        if server is not None:
            server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
