"""Kiln's kernel engine vs papermill, same notebooks, same machine, one run, alternating.

Scenarios (each a fresh CLI process per run, the way scripts and cron call these tools):
  trivial     one cold `kiln run` / `papermill` of a 3-cell notebook
  pandas      one cold run of a notebook that imports pandas/numpy and builds a DataFrame
  seq20       20 sequential CLI runs of the trivial notebook (total wall time)

Prints medians and the ratio papermill / kiln (above 1 means Kiln is faster), and writes
bench/results/latest.json. Usage: python bench/run_bench.py [--reps N] [--seq N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

BIN = Path(sys.executable).parent
KILN = str(BIN / "kiln")
PAPERMILL = str(BIN / "papermill")


def write_notebooks(folder: Path) -> dict[str, Path]:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    trivial = new_notebook(
        cells=[
            new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("y = x * 2"),
            new_code_cell("print(y)"),
        ],
        metadata=meta,
    )
    pandas_nb = new_notebook(
        cells=[
            new_code_cell("rows = 1000", metadata={"tags": ["parameters"]}),
            new_code_cell("import numpy as np\nimport pandas as pd"),
            new_code_cell(
                "df = pd.DataFrame({'a': np.arange(rows), 'b': np.random.default_rng(0)"
                ".normal(size=rows)})\ndf['c'] = df.a * df.b\ndf.describe()"
            ),
        ],
        metadata=meta,
    )
    paths = {"trivial": folder / "trivial.ipynb", "pandas": folder / "pandas.ipynb"}
    nbformat.write(trivial, paths["trivial"])
    nbformat.write(pandas_nb, paths["pandas"])
    return paths


def command(tool: str, nb: Path, out: Path, name: str, value: str) -> list[str]:
    if tool == "kiln":
        # kernel against kernel: the fork engine has its own benchmark (fork_bench.py)
        return [KILN, "run", str(nb), str(out), "-p", name, value, "-q", "--engine", "kernel"]
    return [PAPERMILL, str(nb), str(out), "-p", name, value, "--no-progress-bar"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="runs per tool for single runs")
    parser.add_argument("--seq", type=int, default=20, help="runs in the sequential scenario")
    parser.add_argument("--seq-reps", type=int, default=2, help="repetitions of the seq loop")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    env = dict(os.environ, KILN_HOME=str(work / ".kiln"), PYTHONWARNINGS="ignore")
    nbs = write_notebooks(work)
    tools = ("kiln", "papermill")
    # warm the OS file cache and create Kiln's database once, untimed
    for tool in tools:
        timed(command(tool, nbs["trivial"], work / f"warm-{tool}.ipynb", "x", "1"), env)
    results: dict[str, dict[str, list[float]]] = {}
    for scenario, nb, pname, value in (
        ("trivial", nbs["trivial"], "x", "3"),
        ("pandas", nbs["pandas"], "rows", "1000"),
    ):
        times: dict[str, list[float]] = {t: [] for t in tools}
        for rep in range(args.reps):
            order = tools if rep % 2 == 0 else tools[::-1]
            for tool in order:
                out = work / f"{scenario}-{tool}-{rep}.ipynb"
                times[tool].append(timed(command(tool, nb, out, pname, value), env))
        results[scenario] = times
    seq: dict[str, list[float]] = {t: [] for t in tools}
    for rep in range(args.seq_reps):
        order = tools if rep % 2 == 0 else tools[::-1]
        for tool in order:
            t0 = time.perf_counter()
            for i in range(args.seq):
                out = work / f"seq-{tool}-{rep}-{i}.ipynb"
                timed(command(tool, nbs["trivial"], out, "x", str(i)), env)
            seq[tool].append(time.perf_counter() - t0)
    results[f"seq{args.seq}"] = seq

    print(
        f"\nKiln vs papermill on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} (medians; ratio = papermill / kiln)"
    )
    print(f"{'scenario':<10} {'kiln (s)':>10} {'papermill (s)':>14} {'ratio':>7}")
    summary = {}
    for scenario, times in results.items():
        k, p = statistics.median(times["kiln"]), statistics.median(times["papermill"])
        summary[scenario] = {
            "kiln_s": round(k, 3),
            "papermill_s": round(p, 3),
            "ratio": round(p / k, 2),
            "samples": times,
        }
        print(f"{scenario:<10} {k:>10.3f} {p:>14.3f} {p / k:>6.2f}x")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(summary, indent=2))
    print(f"\nraw samples: {out_dir / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
