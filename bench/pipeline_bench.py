"""Pipelines: `kiln build` against `ploomber build` on the same pipeline, and the cost of
checking a big pipeline whose tasks are all up to date.

    python bench/pipeline_bench.py              # everything (installs ploomber the first time)
    python bench/pipeline_bench.py --no-ploomber

1. The fork engine's per-run floor here: `kiln run --sweep` of the same small notebook at
   -j 2, 2N runs minus N runs (the marginal cost of a run with nothing around it); the
   pipeline's marginal cost of a task is measured the same way (100 tasks minus 50).
2. A 50-task pipeline (10 chains of 5 small notebooks, each reading its upstream product and
   writing its own): a fresh `kiln build -j 2` and a fresh `ploomber build` of the same
   pipeline; then each tool's all-up-to-date rebuild (alternating, median of 5). Every figure is
   a whole CLI call, the way people run them. Ploomber 0.23.3 runs in its own virtualenv,
   created here under ~/.cache/kiln/bench-venvs/ (never in Kiln's).
3. A 500-task pipeline, built once: `kiln status` and `kiln build` with every task up to
   date (median of 5 calls each).

Prints wall time and CPU time (of the CLI call and every process it waited for: kernels,
forked children; it moves less than wall time on a loaded machine) and the ratios; a ratio
above 1 means Kiln is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

KILN = str(Path(sys.executable).with_name("kiln"))
PLOOMBER_VERSION = "0.23.3"
VENVS = Path.home() / ".cache" / "kiln" / "bench-venvs"

#: the same small notebook for both tools: read the upstream products, write its own
CELLS = [
    ("upstream = None\nproduct = None", ["parameters"]),
    "import json\n"
    "value = 0\n"
    "for products in (upstream or {}).values():\n"
    "    with open(products['data']) as f:\n"
    "        value += json.load(f)['value']\n"
    "with open(product['data'], 'w') as f:\n"
    "    json.dump({'value': value + 1}, f)",
]


def write_notebook(path: Path) -> None:
    cells = [
        new_code_cell(c[0], metadata={"tags": c[1]}) if isinstance(c, tuple) else new_code_cell(c)
        for c in CELLS
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernel}), path)


def task_names(chains: int, steps: int) -> list[tuple[str, str | None]]:
    return [
        (f"c{c}_s{s}", f"c{c}_s{s - 1}" if s else None) for c in range(chains) for s in range(steps)
    ]


def kiln_project(root: Path, chains: int, steps: int) -> Path:
    root.mkdir(parents=True)
    (root / "out").mkdir()
    write_notebook(root / "task.ipynb")
    lines = ["pipelines:", "  bench:", "    tasks:"]
    for name, up in task_names(chains, steps):
        upstream = f", upstream: [{up}]" if up else ""
        lines.append(
            f"      {name}: {{notebook: task.ipynb{upstream}, products: {{data: out/{name}.json}}}}"
        )
    (root / "kiln.yaml").write_text("\n".join(lines) + "\n")
    return root


def ploomber_project(root: Path, chains: int, steps: int, jobs: int) -> Path:
    root.mkdir(parents=True)
    (root / "out").mkdir()
    write_notebook(root / "task.ipynb")
    lines = ["meta:", "  extract_upstream: false", "  extract_product: false"]
    if jobs > 1:
        lines += [
            "executor:",
            "  dotted_path: ploomber.executors.Parallel",
            f"  processes: {jobs}",
        ]
    lines.append("tasks:")
    for name, up in task_names(chains, steps):
        lines += [
            "  - source: task.ipynb",
            f"    name: {name}",
            f"    product: {{nb: out/{name}.ipynb, data: out/{name}.json}}",
        ]
        if up:
            lines.append(f"    upstream: [{up}]")
    (root / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    return root


@dataclass(frozen=True)
class Took:
    """One CLI call: wall seconds, and CPU seconds of it and every process it waited for
    (kernels, forked children): the CPU figure moves less with the machine's load."""

    wall: float
    cpu: float


def timed(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Took:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Took(wall, cpu)


def median(values: list[Took]) -> Took:
    return Took(statistics.median(t.wall for t in values), statistics.median(t.cpu for t in values))


def kiln_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KILN_HOME", None)  # .kiln beside the project's kiln.yaml
    return env


def ploomber_python() -> tuple[Path | None, str]:
    """Ploomber's own virtualenv (created the first time), or why there is none."""
    venv = VENVS / f"ploomber-{PLOOMBER_VERSION}"
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run([python, "-c", "import ploomber"], capture_output=True, text=True)
        if check.returncode == 0:
            return python, ""
    print(f"creating {venv} with ploomber=={PLOOMBER_VERSION} (once) ...", flush=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    made = subprocess.run(
        [base, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True
    )
    if made.returncode != 0:
        return None, f"python -m venv failed: {made.stderr.strip()[-500:]}"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, f"ploomber=={PLOOMBER_VERSION}", "ipykernel"], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None, f"pip install ploomber=={PLOOMBER_VERSION} failed: {done.stderr[-1500:]}"
    return python, ""


def fork_floor(work: Path, runs: int) -> Took:
    """The fork engine's marginal cost of a run: `kiln run --sweep` of 2N runs minus N runs
    (-j 2, one CLI call each), over N; start-up and the CLI's own cost cancel out. The median
    of 3 rounds."""
    root = work / "floor"
    root.mkdir()
    cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]}), new_code_cell("y = x + 1")]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernel}), root / "nb.ipynb")
    env = dict(kiln_env(root), KILN_HOME=str(root / ".kiln"))
    margins: list[Took] = []
    for _ in range(3):
        took = {}
        for count in (runs, 2 * runs):
            (root / "grid.yaml").write_text(json.dumps({"x": list(range(count))}))
            command = [KILN, "run", "nb.ipynb", "--sweep", "grid.yaml", "-j", "2"]
            took[count] = timed(command, root, env)
        margins.append(_margin(took[2 * runs], took[runs], runs))
    return median(margins)


def _margin(more: Took, fewer: Took, count: int) -> Took:
    return Took((more.wall - fewer.wall) / count, (more.cpu - fewer.cpu) / count)


def ms(took: Took) -> str:
    return f"{took.wall * 1000:.1f} ms wall, {took.cpu * 1000:.1f} ms CPU"


def secs(took: Took) -> str:
    return f"{took.wall:6.2f} s ({took.cpu:5.2f} s CPU)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--big", type=int, default=500, help="tasks of the up-to-date check")
    parser.add_argument("--no-ploomber", action="store_true")
    parser.add_argument(
        "--ploomber-jobs",
        type=int,
        default=1,
        help="ploomber's executor: 1 serial (its default), 2 its Parallel executor",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-pipeline-bench-"))
    tasks = args.chains * args.steps
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; work in {work}")
    try:
        floor = fork_floor(work, tasks)
        print(f"fork engine floor (kiln run --sweep -j 2, marginal, median of 3): {ms(floor)}/run")

        python, why = (None, "--no-ploomber") if args.no_ploomber else ploomber_python()
        if python is None:
            print(f"ploomber: not measured: {why}")
        # fresh builds, one each, kiln first
        kroot = kiln_project(work / "kiln", args.chains, args.steps)
        kiln_fresh = timed([KILN, "build", "-j", "2"], kroot, kiln_env(kroot))
        ploomber_fresh: Took | None = None
        cmd: list[str] = []
        if python is not None:
            proot = ploomber_project(work / "ploomber", args.chains, args.steps, args.ploomber_jobs)
            cmd = [str(python.with_name("ploomber")), "build", "--entry-point", "pipeline.yaml"]
            ploomber_fresh = timed(cmd, proot)
        values = [
            json.loads((kroot / f"out/c{c}_s{args.steps - 1}.json").read_text())
            for c in range(args.chains)
        ]
        assert all(v == {"value": args.steps} for v in values), values
        # the all-up-to-date rebuilds: alternating, median of 5 each
        kiln_agains: list[Took] = []
        ploomber_agains: list[Took] = []
        for _ in range(5):
            kiln_agains.append(timed([KILN, "build", "-j", "2"], kroot, kiln_env(kroot)))
            if python is not None:
                ploomber_agains.append(timed(cmd, proot))
        kiln_again = median(kiln_agains)

        print(f"\n{tasks}-task pipeline ({args.chains} chains of {args.steps}), kiln -j 2:")
        print(f"  fresh build:       kiln {secs(kiln_fresh)}", end="")
        if ploomber_fresh is not None:
            print(
                f"   ploomber {secs(ploomber_fresh)}   ratio "
                f"{ploomber_fresh.wall / kiln_fresh.wall:5.1f}x wall, "
                f"{ploomber_fresh.cpu / kiln_fresh.cpu:5.1f}x CPU"
            )
        else:
            print()
        print(f"  up-to-date build:  kiln {secs(kiln_again)}", end="")
        if ploomber_agains:
            ploomber_again = median(ploomber_agains)
            print(
                f"   ploomber {secs(ploomber_again)}   ratio "
                f"{ploomber_again.wall / kiln_again.wall:5.1f}x wall, "
                f"{ploomber_again.cpu / kiln_again.cpu:5.1f}x CPU"
            )
            walls = ", ".join(f"{t.wall:.2f}" for t in ploomber_agains)
            print(f"    ploomber walls: {walls}")
        else:
            print()
        print(
            f"    (medians of 5, alternating; kiln walls: "
            f"{', '.join(f'{t.wall:.2f}' for t in kiln_agains)})"
        )

        # the marginal cost of a task: fresh builds of twice the tasks minus this many
        margins = []
        for round_ in range(3):
            small = kiln_project(work / f"m{round_}-small", args.chains, args.steps)
            large = kiln_project(work / f"m{round_}-large", 2 * args.chains, args.steps)
            few = timed([KILN, "build", "-j", "2"], small, kiln_env(small))
            more = timed([KILN, "build", "-j", "2"], large, kiln_env(large))
            margins.append(_margin(more, few, tasks))
        per_task = median(margins)
        print(
            f"  kiln per task (fresh builds of {2 * tasks} minus {tasks} tasks, median of 3): "
            f"{ms(per_task)}; the fork floor above: {ms(floor)}"
        )

        big = kiln_project(work / "big", args.big // 5, 5)
        built = timed([KILN, "build", "-j", "2"], big, kiln_env(big))
        statuses = [timed([KILN, "status"], big, kiln_env(big)) for _ in range(5)]
        builds = [timed([KILN, "build"], big, kiln_env(big)) for _ in range(5)]
        print(f"\n{args.big}-task pipeline, built once in {built.wall:.1f} s; all up to date:")
        print(
            f"  kiln status: median {secs(median(statuses))} (walls: "
            f"{', '.join(f'{t.wall:.2f}' for t in statuses)})"
        )
        print(
            f"  kiln build:  median {secs(median(builds))} (walls: "
            f"{', '.join(f'{t.wall:.2f}' for t in builds)})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
