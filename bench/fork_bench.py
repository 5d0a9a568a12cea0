"""The fork engine against papermill: throughput, marginal cost, cold start. One process run.

Scenarios (figures quoted in the README come from this script):
  trivial-100    100 runs of a 3-cell notebook, 2 at a time:
                 `kiln run NB --sweep grid.yaml -j 2` (one CLI process, cold start included)
                 vs papermill's execute_notebook in a multiprocessing pool of 2
                 vs a papermill CLI loop (100 sequential `papermill` commands)
  pandas-100     100 runs of a notebook that imports pandas/numpy and builds a 1,000-row
                 DataFrame, `-j 2` vs papermill's pool of 2
  marginal       the wall time of one more run on a warm pool (Python API, sequential runs
                 after a warm-up; median)
  CPU per run    Kiln's own process (process_time over 100 warm runs), and the run processes
                 (the warm parent's fork and the child, from the pool's reaped CPU): each the
                 median of 3 rounds, with their spread
  cold           one `kiln run` (fork engine) vs one `papermill` CLI run, alternating

Usage: python bench/fork_bench.py [--runs 100] [--cold-reps 7] [--skip-cli-loop] [--marginal-only]
  --marginal-only  only the warm-pool figures (marginal and CPU per run): seconds, not minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

BIN = Path(sys.executable).parent
KILN, PAPERMILL = str(BIN / "kiln"), str(BIN / "papermill")
META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def notebooks(folder: Path) -> dict[str, Path]:
    trivial = new_notebook(
        cells=[
            new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("y = x * 2"),
            new_code_cell("print(y)"),
        ],
        metadata=META,
    )
    pandas_nb = new_notebook(
        cells=[
            new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("import numpy as np\nimport pandas as pd"),
            new_code_cell(
                "df = pd.DataFrame({'a': np.arange(1000), 'b': np.random"
                ".default_rng(x).normal(size=1000)})\ndf['c'] = df.a * df.b\n"
                "df.describe()"
            ),
        ],
        metadata=META,
    )
    paths = {"trivial": folder / "trivial.ipynb", "pandas": folder / "pandas.ipynb"}
    nbformat.write(trivial, paths["trivial"])
    nbformat.write(pandas_nb, paths["pandas"])
    return paths


def _pm_one(args: tuple[str, str, int]) -> None:
    import papermill

    nb, out, x = args
    try:
        papermill.execute_notebook(nb, out, parameters={"x": x}, progress_bar=False)
    except RuntimeError:
        # seen here: two papermill kernels starting at once on TCP ports, one "died before
        # replying to kernel_info"; retry once so the peer's figure counts a finished run
        papermill.execute_notebook(nb, out, parameters={"x": x}, progress_bar=False)


def papermill_pool(nb: Path, out: Path, runs: int) -> float:
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_pm_one, [(str(nb), str(out / f"{i}.ipynb"), i) for i in range(runs)])
    return time.perf_counter() - t0


def papermill_cli_loop(nb: Path, out: Path, runs: int, env: dict[str, str]) -> float:
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for i in range(runs):
        subprocess.run(
            [PAPERMILL, str(nb), str(out / f"{i}.ipynb"), "-p", "x", str(i), "--no-progress-bar"],
            check=True,
            capture_output=True,
            env=env,
        )
    return time.perf_counter() - t0


def kiln_sweep(nb: Path, work: Path, runs: int, env: dict[str, str]) -> float:
    grid = work / f"grid-{nb.stem}.yaml"
    grid.write_text("x: [" + ", ".join(str(i) for i in range(runs)) + "]\n")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [KILN, "run", str(nb), "--sweep", str(grid), "-j", "2", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kiln sweep failed:\n{proc.stderr[-2000:]}")
    return took


def marginal(nb: Path, home: Path, runs: int) -> list[float]:
    from kiln.runner import Runner, RunRequest

    async def main() -> list[float]:
        runner = Runner(home=home)
        times = []
        try:
            for i in range(runs + 5):
                t0 = time.perf_counter()
                run = await runner.arun(RunRequest(notebook=nb, parameters={"x": i}, engine="fork"))
                assert run.state == "succeeded"
                if i >= 5:  # the first runs warm the parent and the store
                    times.append(time.perf_counter() - t0)
        finally:
            await runner.aclose_engines()
            runner.close()
        return times

    return asyncio.run(main())


def cold(nb: Path, work: Path, reps: int, env: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"kiln": [], "papermill": []}
    for rep in range(reps):
        for tool in ("kiln", "papermill") if rep % 2 == 0 else ("papermill", "kiln"):
            out = work / f"cold-{tool}-{rep}.ipynb"
            cmd = (
                [KILN, "run", str(nb), str(out), "-p", "x", "3", "-q"]
                if tool == "kiln"
                else [PAPERMILL, str(nb), str(out), "-p", "x", "3", "--no-progress-bar"]
            )
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            times[tool].append(time.perf_counter() - t0)
    return times


def _pairs(nb: Path, work: Path, runs: int, env: dict[str, str], pairs: int) -> dict[str, Any]:
    """``pairs`` alternating (kiln, papermill pool) measurements of ``runs`` runs; the median
    ratio and its spread (the machine is shared: one pair proves little)."""
    kiln_s: list[float] = []
    peer_s: list[float] = []
    for i in range(pairs):
        order = ("kiln", "peer") if i % 2 == 0 else ("peer", "kiln")
        for tool in order:
            if tool == "kiln":
                kiln_s.append(kiln_sweep(nb, work, runs, env))
            else:
                peer_s.append(papermill_pool(nb, work / f"pm-{nb.stem}-{i}", runs))
    ratios = sorted(p / k for k, p in zip(kiln_s, peer_s, strict=True))
    return {
        "kiln_s": kiln_s,
        "peer_s": peer_s,
        "ratio_median": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
    }


def supervisor_cpu(nb: Path, home: Path, runs: int, rounds: int = 3) -> list[float]:
    """CPU seconds Kiln's own process spends per run (the children's work excluded), in
    ``rounds`` measurements of ``runs`` runs each (one busy moment of a shared machine
    weighs on one of them, not on their median)."""
    from kiln.runner import Runner, RunRequest

    async def main() -> list[float]:
        runner = Runner(home=home)
        try:
            for i in range(5):
                await runner.arun(RunRequest(notebook=nb, parameters={"x": i}, engine="fork"))
            out = []
            for _ in range(rounds):
                start = time.process_time()
                for i in range(runs):
                    await runner.arun(RunRequest(notebook=nb, parameters={"x": i}, engine="fork"))
                out.append((time.process_time() - start) / runs)
            return out
        finally:
            await runner.aclose_engines()
            runner.close()

    return asyncio.run(main())


def _ms(samples: list[float]) -> str:
    """The median of CPU samples in ms, with their spread."""
    ms = sorted(s * 1000 for s in samples)
    if len(ms) == 1:
        return f"{ms[0]:.2f} ms"
    return f"{statistics.median(ms):.2f} ms ({ms[0]:.2f}-{ms[-1]:.2f})"


def run_processes_cpu(nb: Path, home: Path, runs: int, rounds: int = 3) -> list[float]:
    """CPU seconds the run processes spend per run: the warm parent's fork and each forked
    child, from start to exit. Measured as the difference between a pool that ran 5 runs
    and one that ran ``5 + runs`` (a warm parent's CPU, its reaped children's included,
    reaches this process when the pool closes and the parent is reaped), so the parent's
    start-up cancels out."""
    import resource

    from kiln.runner import Runner, RunRequest

    def pool_of(n: int) -> float:
        async def main() -> None:
            runner = Runner(home=home)
            try:
                for i in range(n):
                    await runner.arun(RunRequest(notebook=nb, parameters={"x": i}, engine="fork"))
            finally:
                await runner.aclose_engines()
                runner.close()

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        asyncio.run(main())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    return [(pool_of(5 + runs) - pool_of(5)) / runs for _ in range(rounds)]


def warm_only(nb: Path, home: Path, runs: int) -> int:
    """The warm-pool figures alone: the marginal run's wall time and the CPU per run."""
    marg = marginal(nb, home, runs)
    cpu = supervisor_cpu(nb, home, runs)
    child_cpu = run_processes_cpu(nb, home, runs)
    ordered = sorted(marg)
    print(
        f"marginal run on a warm pool ({runs} runs): median "
        f"{statistics.median(marg) * 1000:.1f} ms, p10 {ordered[len(ordered) // 10] * 1000:.1f}"
        f" ms, p90 {ordered[int(len(ordered) * 0.9)] * 1000:.1f} ms"
    )
    print(
        f"CPU per warm run (median of 3 rounds, spread): supervisor {_ms(cpu)}; run processes "
        f"(warm parent's forks and the children) {_ms(child_cpu)}"
    )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


def _byte_compile_kiln() -> None:
    """Kiln as pip installs it, byte-compiled like papermill beside it: an editable install
    under PYTHONDONTWRITEBYTECODE would compile its modules in every cold command."""
    import compileall

    import kiln

    compileall.compile_dir(Path(kiln.__file__).parent, quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs per scenario")
    parser.add_argument("--cold-reps", type=int, default=7)
    parser.add_argument("--skip-cli-loop", action="store_true")
    parser.add_argument(
        "--marginal-only", action="store_true", help="only the marginal run and CPU per run"
    )
    args = parser.parse_args()
    _byte_compile_kiln()
    work = Path(tempfile.mkdtemp(prefix="kiln-fork-bench-"))
    env = dict(os.environ, KILN_HOME=str(work / ".kiln"), PYTHONWARNINGS="ignore")
    nbs = notebooks(work)
    subprocess.run(
        [KILN, "run", str(nbs["trivial"]), str(work / "warm.ipynb"), "-q"], check=True, env=env
    )  # create the database and warm the file cache
    n = args.runs
    print(f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.marginal_only:
        return warm_only(nbs["trivial"], work / ".kiln", n)
    results: dict[str, Any] = {
        f"trivial-{n} -j 2 vs papermill pool(2)": _pairs(nbs["trivial"], work, n, env, args.pairs),
        f"pandas-{n} -j 2 vs papermill pool(2)": _pairs(nbs["pandas"], work, n, env, args.pairs),
    }
    if not args.skip_cli_loop:
        k = kiln_sweep(nbs["trivial"], work, n, env)
        loop = papermill_cli_loop(nbs["trivial"], work / "pm-loop", n, env)
        results[f"trivial-{n} vs papermill CLI loop"] = {
            "kiln_s": [k], "peer_s": [loop], "ratio_median": loop / k,
            "ratio_min": loop / k, "ratio_max": loop / k,
        }  # fmt: skip
    times = cold(nbs["trivial"], work, args.cold_reps, env)
    marg = marginal(nbs["trivial"], work / ".kiln", 50)
    cpu = supervisor_cpu(nbs["trivial"], work / ".kiln", 100)
    child_cpu = run_processes_cpu(nbs["trivial"], work / ".kiln", 100)

    print(
        f"\nFork engine vs papermill on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({n} runs; {args.pairs} alternating pairs; "
        f"cold = median of {args.cold_reps})"
    )
    print(f"{'scenario':<40} {'kiln (s)':>9} {'peer (s)':>9} {'ratio':>7}  spread")
    for name, r in results.items():
        print(
            f"{name:<40} {statistics.median(r['kiln_s']):>9.2f} "
            f"{statistics.median(r['peer_s']):>9.2f} {r['ratio_median']:>6.1f}x  "
            f"{r['ratio_min']:.1f}x-{r['ratio_max']:.1f}x"
        )
    cold_k, cold_p = statistics.median(times["kiln"]), statistics.median(times["papermill"])
    print(
        f"cold single run: kiln {cold_k:.2f}s, papermill {cold_p:.2f}s: "
        f"{cold_k / cold_p:.2f}x papermill's wall time"
    )
    print(
        f"marginal cost of one more run on a warm pool: median "
        f"{statistics.median(marg) * 1000:.1f} ms (p90 "
        f"{sorted(marg)[int(len(marg) * 0.9)] * 1000:.1f} ms)"
    )
    print(
        f"CPU per warm run (median of 3 rounds of 100, spread): Kiln's own process (the "
        f"supervisor) {_ms(cpu)}; the run processes (the warm parent's fork and the forked "
        f"child) {_ms(child_cpu)}"
    )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "fork-latest.json").write_text(
        json.dumps(
            {
                "results": results,
                "cold_samples": times,
                "marginal_s": marg,
                "supervisor_cpu_s": cpu,
                "run_processes_cpu_s": child_cpu,
                "load_average_end": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
