"""Runs as experiments: what environment capture adds to a fork-engine run, and the queries
behind `kiln runs compare` and `kiln runs list --records` on a history of 100,000 runs.

Scenarios:
  capture   fork-engine runs (Python API, warm parent, sequential) with the capture on and
            off, in alternating blocks: the median wall time per run of each and the
            difference (target: under 5 ms added); then what the capture itself costs on its
            worker thread: the first lookup of a process (package scan, git) and every later
            one (cached lookups), in a git repository with a declared input file
  history   100,000 runs (records, metrics, tags, 20 environments) in one store, then
            in-process: `runs compare A B C` (3 runs by id prefix, their environments, the
            comparison), `runs list --records total,label` (newest 20, and newest 20 of one
            notebook), `runs list --tag team=t3` and a tag only 1 run in 10,000 has
            (p50, p95; target under 50 ms)

SQLite by default; --postgres also starts a throwaway PostgreSQL (tests/kilnpg.py) and runs
the history there. Prints the figures and writes bench/results/tracking.json.
Usage: python bench/tracking_bench.py [--runs 200] [--history 100000] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

RESULTS = Path(__file__).resolve().parent / "results"
META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"median_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000}


# -- capture -------------------------------------------------------------------------------------


def _project(folder: Path) -> Path:
    """A git repository with kiln.yaml declaring an input, and a 3-cell notebook."""
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("a,b\n" + "1,2\n" * 10_000)
    (folder / "kiln.yaml").write_text("inputs:\n  - data.csv\n")
    nb = new_notebook(
        cells=[
            new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("y = x * 2"),
            new_code_cell("print(y)"),
        ],
        metadata=META,
    )
    nbformat.write(nb, folder / "nb.ipynb")
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.org"}
    env.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.org")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "one"]):
        subprocess.run(
            ["git", "-C", str(folder), *args], check=True, env={**env, "PATH": "/usr/bin:/bin"}
        )
    return folder / "nb.ipynb"


def capture(runs: int, blocks: int) -> dict[str, Any]:
    from kiln import capture as capture_module
    from kiln.runner import Runner, RunRequest

    with tempfile.TemporaryDirectory() as tmp:
        nb = _project(Path(tmp) / "proj")
        home = Path(tmp) / "home"
        real_start = capture_module.RunCapture.start

        def off(self: Any) -> None:  # no lookup at all: the run records no provenance
            return None

        async def main() -> dict[str, list[float]]:
            runner = Runner(home=home)
            times: dict[str, list[float]] = {"on": [], "off": [], "cpu_on": [], "cpu_off": []}
            try:
                for i in range(10):  # warm the parent, the store and the caches
                    await runner.arun(RunRequest(notebook=nb, parameters={"x": i}, engine="fork"))
                for block in range(blocks * 2):
                    mode = ("on", "off")[(block + block // 2) % 2]
                    capture_module.RunCapture.start = real_start if mode == "on" else off  # type: ignore[method-assign]
                    for i in range(runs // blocks):
                        t0, c0 = time.perf_counter(), time.process_time()
                        run = await runner.arun(
                            RunRequest(notebook=nb, parameters={"x": i}, engine="fork")
                        )
                        times[mode].append(time.perf_counter() - t0)
                        # the supervisor's own CPU (threads included): less noisy than wall
                        # time on a shared machine
                        times[f"cpu_{mode}"].append(time.process_time() - c0)
                        assert run.state == "succeeded"
                        assert (run.environment_hash is not None) == (mode == "on")
            finally:
                capture_module.RunCapture.start = real_start  # type: ignore[method-assign]
                await runner.aclose_engines()
                runner.close()
            return times

        times = asyncio.run(main())
        lookups = _lookup_costs(nb, home)
    on, off_ = statistics.median(times["on"]), statistics.median(times["off"])
    return {
        "runs_each": len(times["on"]),
        "run_on": ms(times["on"]),
        "run_off": ms(times["off"]),
        "added_ms": (on - off_) * 1000,
        "cpu_on": ms(times["cpu_on"]),
        "cpu_off": ms(times["cpu_off"]),
        "cpu_added_ms": (statistics.mean(times["cpu_on"]) - statistics.mean(times["cpu_off"]))
        * 1000,
        **lookups,
    }


_LOOKUP = """
import json, sys, time
from pathlib import Path
from kiln.capture import RunCapture
from kiln.request import RunRequest, prepare
from kiln.store import RunStore
nb, home = Path(sys.argv[1]), Path(sys.argv[2])
prepared = prepare(RunRequest(notebook=nb, engine="fork"))
with RunStore(home) as store:
    took = []
    for i in range(201):
        t = time.perf_counter()
        RunCapture(prepared, "fork", store, "x")._lookup()
        took.append(time.perf_counter() - t)
print(json.dumps(took))
"""


def _lookup_costs(nb: Path, home: Path) -> dict[str, Any]:
    """The capture's own work (on its thread), in a fresh process: first call, then cached."""
    done = subprocess.run(
        [sys.executable, "-c", _LOOKUP, str(nb), str(home)],
        capture_output=True,
        text=True,
        check=True,
    )
    took = json.loads(done.stdout)
    return {"lookup_first_ms": took[0] * 1000, "lookup_cached": ms(took[1:])}


# -- history -------------------------------------------------------------------------------------


def _fill(store: Any, total: int) -> float:
    from kiln.provenance import Environment
    from kiln.store import Record, Run
    from kiln.store.environments import save_environment
    from kiln.store.schema import runs
    from kiln.store.values import column_values

    envs = []
    for k in range(20):
        packages = tuple((f"pkg{p:03d}", f"1.{(p + k) % 7}") for p in range(200))
        env = Environment("python", "3.11.7", "CPython", "Linux-x", "x86_64", packages)
        envs.append(save_environment(store, env))
    started = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=timezone.utc)
    batch: list[dict[str, Any]] = []
    for g in range(total):
        when = base + timedelta(seconds=30 * g)
        notebook = "big.ipynb" if g % 10 < 3 else f"nb{g % 200:03d}.ipynb"
        run = Run(
            id=f"{when:%Y%m%d-%H%M%S}-{g:08x}",
            notebook_path=f"/srv/project/{notebook}",
            notebook_sha256="ab" * 32,
            state="succeeded" if g % 10 else "failed",
            parameters={"n": g % 1000, "region": "eu"},
            created_at=when,
            started_at=when,
            ended_at=when + timedelta(seconds=2),
            cell_durations=[0.5, 1.25, 0.01],
            records_list=[
                Record("total", "json", g * 1.5),
                Record("label", "json", f"l{g % 7}"),
                Record("rows", "json", g % 5000),
            ],
            engine="fork",
            run_dir=f"/srv/home/runs/{g}",
            tags={"team": f"t{g % 10}", **({"release": "yes"} if g % 10_000 == 0 else {})},
            environment_hash=envs[g % 20],
            git={"commit": "c" * 40, "dirty": False, "diff_sha256": None},
            metrics=[{"name": "loss", "value": 1 / (e + 1), "step": e} for e in range(10)],
        )
        fields = {name: getattr(run, name) for name in _RUN_FIELDS}
        batch.append(column_values(fields))
        if len(batch) == 5000 or g == total - 1:
            with store._write() as conn:
                conn.execute(runs.insert(), batch)
            batch = []
    if store.backend == "postgresql":
        with store._engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    else:
        with store._engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


_RUN_FIELDS: tuple[str, ...] = ()


def history(url: str | None, total: int, queries: int) -> dict[str, Any]:
    global _RUN_FIELDS
    from kiln.store import RunStore
    from kiln.store.schema import runs
    from kiln.store.values import RUN_FIELDS
    from kiln.tracking.compare import load_comparison
    from kiln.tracking.history import record_cell

    _RUN_FIELDS = tuple(RUN_FIELDS)
    with tempfile.TemporaryDirectory() as tmp, RunStore(tmp, url=url) as store:
        filled = _fill(store, total)
        with store._read() as conn:
            ids = list(conn.execute(runs.select().with_only_columns(runs.c.id)).scalars())
        rng = random.Random(11)

        def compare(_: int) -> Any:
            keys = [run_id[:-2] for run_id in rng.sample(ids, 3)]  # unique prefixes
            return load_comparison(store, keys)

        def list_records(notebook: str | None) -> Callable[[int], Any]:
            def query(_: int) -> Any:
                found = store.list_runs(notebook=notebook, limit=20)
                return [[record_cell(r, n) for n in ("total", "label")] for r in found]

            return query

        def by_tag(_: int) -> Any:
            return store.list_runs(tags={"team": "t3"}, limit=20)

        def by_rare_tag(_: int) -> Any:  # 1 run in 10,000: every row is looked at
            return store.list_runs(tags={"release": "yes"}, limit=20)

        cases: dict[str, Callable[[int], Any]] = {
            "compare_3": compare,
            "list_records": list_records(None),
            "list_records_notebook": list_records("nb007.ipynb"),
            "list_records_big_notebook": list_records("big.ipynb"),
            "list_tag": by_tag,
            "list_tag_rare": by_rare_tag,
        }
        figures: dict[str, Any] = {"runs": total, "fill_s": filled}
        for label, query in cases.items():
            for k in range(5):
                query(k)
            took = []
            for k in range(queries):
                t = time.perf_counter()
                found = query(k)
                took.append(time.perf_counter() - t)
                assert found
            figures[label] = ms(took)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="fork-engine runs per mode")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks per mode")
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--postgres", action="store_true", help="the history on PostgreSQL too")
    parser.add_argument("--only", choices=("capture", "history"))
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version()}
    if args.only != "history":
        results["capture"] = figures = capture(args.runs, args.blocks)
        print(
            f"capture: fork-engine run {figures['run_on']['median_ms']:.2f} ms with, "
            f"{figures['run_off']['median_ms']:.2f} ms without ({figures['runs_each']} runs "
            f"each): {figures['added_ms']:+.2f} ms per run (target < 5 ms)"
        )
        print(
            f"capture: supervisor CPU per run {figures['cpu_on']['median_ms']:.2f} ms with, "
            f"{figures['cpu_off']['median_ms']:.2f} ms without: "
            f"{figures['cpu_added_ms']:+.2f} ms per run (means)"
        )
        print(
            f"capture: lookup on its thread: first in a process "
            f"{figures['lookup_first_ms']:.1f} ms, then {figures['lookup_cached']['median_ms']:.3f}"
            f" ms (p95 {figures['lookup_cached']['p95_ms']:.3f} ms)"
        )
    if args.only != "capture":
        backends: list[tuple[str, str | None]] = [("sqlite", None)]
        server = None
        if args.postgres:
            from kilnpg import PostgresServer

            server = PostgresServer.start()
            backends.append(("postgresql", server.create_database()))
        try:
            for name, url in backends:
                results[f"history_{name}"] = figures = history(url, args.history, args.queries)
                filled = f"{figures['runs']:,} runs filled in {figures['fill_s']:.1f} s"
                print(f"history on {name}: {filled}")
                for label, value in figures.items():
                    if isinstance(value, dict):
                        print(
                            f"  {label:<27} p50 {value['median_ms']:7.2f} ms  "
                            f"p95 {value['p95_ms']:7.2f} ms  (target < 50 ms)"
                        )
        finally:
            if server is not None:
                server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracking.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
