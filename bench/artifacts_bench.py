"""What run artefacts on an S3-compatible server add to a trivial run.

A moto S3 server on 127.0.0.1 (tests/kilnmoto.py) and one warm fork engine; trivial runs go
through the one runner alternately with and without ``KILN_ARTIFACTS`` (the same process,
the same warm parent, the same history), and every artefact call a run makes is timed too:
storing the input (a HEAD, and a PUT the first time), starting the periodic copier, and the
last copy before the run's end is written (output notebook and log, one PUT each). Prints
the medians and p95s and writes bench/results/artifacts.json.
Usage: python bench/artifacts_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

RESULTS = Path(__file__).resolve().parent / "results"


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {"median_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000}


def timed(owner: Any, name: str, into: list[float]) -> None:
    """Wrap ``owner.name`` so that each call's duration is appended to ``into``."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - started)

    setattr(owner, name, wrapper)


async def alternate(folder: Path, url: str, runs: int) -> dict[str, Any]:
    import nbformat

    from kiln.runner import Runner, RunRequest
    from kiln.store.artifacts import ArtifactStore, RunUpload, artifact_store
    from kiln.store.sql import RunStore

    from kilntest import build_notebook

    notebook = folder / "trivial.ipynb"
    nbformat.write(build_notebook([("n = 1", ["parameters"]), "x = n * 2"]), notebook)
    calls: dict[str, list[float]] = {"input": [], "start": [], "last_copy": []}
    timed(ArtifactStore, "ensure_input", calls["input"])
    timed(RunUpload, "start", calls["start"])
    timed(RunUpload, "settle", calls["last_copy"])
    engines: dict[str, Any] = {}
    store = RunStore(folder / "home")
    plain = Runner(store=store, engines=engines, handle_signals=False)
    plain._artifacts, plain._artifacts_known = None, True
    remote = Runner(store=store, engines=engines, handle_signals=False)
    remote._artifacts, remote._artifacts_known = artifact_store(url), True
    took: dict[str, list[float]] = {"local": [], "s3": []}
    cpu: dict[str, list[float]] = {"local": [], "s3": []}
    try:
        for i in range(runs + 5):  # the first runs warm the engine, imports and connections
            for label, runner in (("local", plain), ("s3", remote)):
                request = RunRequest(notebook=notebook, parameters={"n": i}, engine="fork")
                started, used = time.perf_counter(), time.process_time()
                run = await runner.arun(request)
                if i >= 5:
                    took[label].append(time.perf_counter() - started)
                    cpu[label].append(time.process_time() - used)
                assert run.state.ok, run.reason
            if i == 4:
                for values in calls.values():
                    values.clear()
        assert str(run.output_path).startswith(url)
        objects = artifact_store(url)
        assert objects is not None
        puts = []
        for n in range(50):  # the server's own latency: one small PUT
            started = time.perf_counter()
            objects.put_bytes(f"{url}/probe/{n}", b"x" * 2048)
            puts.append(time.perf_counter() - started)
    finally:
        await plain.aclose_engines()
        store.close()
    local, s3 = ms(took["local"]), ms(took["s3"])
    return {
        "runs": runs,
        "run_local": local,
        "run_s3": s3,
        "added_median_ms": s3["median_ms"] - local["median_ms"],
        "added_cpu_median_ms": (statistics.median(cpu["s3"]) - statistics.median(cpu["local"]))
        * 1000,
        "one_put": ms(puts),
        "calls": {name: ms(values) for name, values in calls.items()},
        "calls_total_median_ms": statistics.median(
            a + b + c for a, b, c in zip(*calls.values(), strict=True)
        )
        * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs of each kind")
    args = parser.parse_args()

    from kilnmoto import MotoServer

    server = MotoServer.start()
    try:
        os.environ.update(server.env)
        url = f"s3://{server.bucket()}/kiln"
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(alternate(Path(tmp), url, args.runs))
    finally:
        server.stop()
    print(json.dumps(figures, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "artifacts.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
