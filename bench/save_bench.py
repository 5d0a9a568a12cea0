"""How saving the output notebook scales: many cells, one huge output, SIGTERM. One process run.

Each scenario is a fresh `kiln run` CLI process (what scripts and cron call), timed from the
outside; every run's own `--home` keeps the histories apart.

  cells      N trivial cells on the fork engine (default 20,000): wall time, cells per second
  kernel     2,000 and 4,000 trivial cells on the kernel engine: the ratio of the two wall
             times (2.0 is linear, 4.0 quadratic)
  big        a cell printing 100 MB (1M lines of 100 bytes) alone, then followed by 50
             trivial cells: the ratio of the two wall times (1.0: the 50 cells cost nothing)
  sigterm    SIGTERM to `kiln run` mid-run, the delay until the process exits, whether the
             run ended `cancelled` and how many cells its saved output holds: on a
             20,000-cell notebook (signal after cell --term-after), right after a cell
             printed 100 MB (the final save has to serialise it) and 3 s after (saved)

A run that goes over --cap seconds is stopped there and reported as such, with the number of
cells its log shows done. Usage:
  python bench/save_bench.py [--only cells,kernel,big,sigterm] [--cells 20000] [--cap 600]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

KILN = str(Path(sys.executable).parent / "kiln")
META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
#: 1M lines of 99 characters and a newline: 100 MB of stdout in one cell
BIG_CELL = "print('\\n'.join(f'{i:>98}|' for i in range(1_000_000)))"


def write_nb(path: Path, sources: list[str]) -> Path:
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources], metadata=META), path)
    return path


def trivial(n: int) -> list[str]:
    return [f"x = {i}" for i in range(n)]


@dataclass
class Timed:
    seconds: float
    code: int | None  # None: stopped at the cap
    cells_done: int
    #: a run stopped at the cap: seconds from its SIGTERM to its exit
    stop_s: float = 0.0


def cells_done(home: Path) -> int:
    """Cells the run's log says finished (the newest run in ``home``)."""
    logs = sorted(home.glob("runs/*/run.log"))
    if not logs:
        return 0
    text = logs[-1].read_text(encoding="utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if " ok in " in line or " error in " in line)


def run_kiln(nb: Path, work: Path, name: str, cap: float, *extra: str) -> Timed:
    home = work / f"home-{name}"
    cmd = [KILN, "--home", str(home), "run", str(nb), str(work / f"out-{name}.ipynb"), "-q", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code: int | None = proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        done = cells_done(home)
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        return Timed(cap, None, done, time.perf_counter() - t1)
    return Timed(time.perf_counter() - t0, code, cells_done(home))


def show(label: str, t: Timed) -> str:
    if t.code is None:
        return (
            f"{label:<44} over the {t.seconds:.0f}s cap ({t.cells_done:,} cells done; the "
            f"SIGTERM then took {t.stop_s:.1f}s to end it)"
        )
    return f"{label:<44} {t.seconds:8.2f}s  (exit {t.code}, {t.cells_done:,} cells done)"


def scenario_cells(work: Path, n: int, cap: float) -> dict[str, object]:
    nb = write_nb(work / f"cells-{n}.ipynb", trivial(n))
    t = run_kiln(nb, work, f"cells-{n}", cap, "--engine", "fork")
    print(show(f"{n:,} trivial cells, fork engine", t))
    if t.code is not None:
        print(f"{'':<44} {n / t.seconds:8.0f} cells/s")
    return {
        "cells": n,
        "seconds": t.seconds,
        "capped": t.code is None,
        "done": t.cells_done,
        "sigterm_at_cap_s": t.stop_s,
    }


def scenario_kernel(work: Path, cap: float) -> dict[str, object]:
    times = {}
    for n in (2000, 4000):
        nb = write_nb(work / f"kernel-{n}.ipynb", trivial(n))
        t = run_kiln(nb, work, f"kernel-{n}", cap, "--engine", "kernel")
        print(show(f"{n:,} trivial cells, kernel engine", t))
        times[n] = t.seconds
    ratio = times[4000] / times[2000]
    print(f"{'4,000 / 2,000 cells (2.0 = linear)':<44} {ratio:8.2f}x")
    return {"seconds": times, "ratio": ratio}


def scenario_big(work: Path, cap: float) -> dict[str, object]:
    alone = write_nb(work / "big-alone.ipynb", [BIG_CELL])
    more = write_nb(work / "big-more.ipynb", [BIG_CELL, *trivial(50)])
    a = run_kiln(alone, work, "big-alone", cap, "--engine", "fork")
    print(show("100 MB output alone", a))
    b = run_kiln(more, work, "big-more", cap, "--engine", "fork")
    print(show("100 MB output + 50 trivial cells", b))
    ratio = b.seconds / a.seconds
    print(f"{'(+50 cells) / alone':<44} {ratio:8.2f}x")
    return {"alone_s": a.seconds, "more_s": b.seconds, "ratio": ratio}


def sigterm(
    nb: Path, work: Path, name: str, label: str, after_cell: int, cap: float
) -> dict[str, object]:
    """Start a run, send SIGTERM once its log shows ``after_cell`` finished, time the exit."""
    home = work / f"home-{name}"
    out = work / f"out-{name}.ipynb"
    cmd = [KILN, "--home", str(home), "run", str(nb), str(out), "-q", "--engine", "fork"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = f" cell {after_cell} ok in "
    deadline = time.monotonic() + cap
    seen = False
    log: Path | None = None
    offset = 0
    while not seen and time.monotonic() < deadline and proc.poll() is None:
        if log is None:
            logs = sorted(home.glob("runs/*/run.log"))
            log = logs[-1] if logs else None
        if log is not None:
            with open(log, encoding="utf-8", errors="replace") as fh:
                fh.seek(offset)
                chunk = fh.read()
            cut = chunk.rfind("\n") + 1
            offset += len(chunk[:cut].encode("utf-8"))
            seen = wanted in chunk[:cut]
        time.sleep(0.02)
    if not seen:
        proc.kill()
        proc.wait()
        print(f"{label}: cell {after_cell} not reached within {cap:.0f}s")
        return {"reached": False}
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    delay = time.perf_counter() - t0
    shown = subprocess.run(
        [KILN, "--home", str(home), "runs", "show", "last", "--json"],
        capture_output=True,
        text=True,
    )
    state = json.loads(shown.stdout)["state"] if shown.returncode == 0 else "?"
    saved = nbformat.read(out, as_version=4)
    executed = sum(1 for c in saved.cells if c.get("execution_count"))
    print(
        f"{label:<44} {delay:8.2f}s from SIGTERM to exit (exit {code}, {state}, "
        f"{executed:,} executed cells saved)"
    )
    return {"delay_s": delay, "exit": code, "state": state, "saved": executed}


def scenario_sigterm(work: Path, n: int, after: int, cap: float) -> dict[str, object]:
    many = write_nb(work / "term-cells.ipynb", trivial(n))
    slow = ["import time", BIG_CELL, *["time.sleep(0.01)"] * 2000]
    big = write_nb(work / "term-big.ipynb", slow)
    return {
        "cells": sigterm(
            many, work, "term-cells", f"SIGTERM, {n:,} cells, after {after:,}", after, cap
        ),
        "big": sigterm(big, work, "term-big", "SIGTERM right after a 100 MB output", 2, cap),
        "big-saved": sigterm(
            big, work, "term-big-saved", "SIGTERM 3 s after a 100 MB output", 300, cap
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="cells,kernel,big,sigterm")
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--term-after", type=int, default=10000, help="cell to SIGTERM after")
    parser.add_argument("--cap", type=float, default=600.0, help="seconds before a run is cut")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="kiln-save-bench-"))
    os.environ["PYTHONWARNINGS"] = "ignore"
    print(
        f"Saving benchmark on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} (work folder {work})"
    )
    # warm the page cache and the warm parent's imports, as a second run would see them
    run_kiln(write_nb(work / "warm.ipynb", trivial(3)), work, "warm", args.cap)
    results: dict[str, object] = {}
    if "cells" in wanted:
        results["cells"] = scenario_cells(work, args.cells, args.cap)
    if "kernel" in wanted:
        results["kernel"] = scenario_kernel(work, args.cap)
    if "big" in wanted:
        results["big"] = scenario_big(work, args.cap)
    if "sigterm" in wanted:
        results["sigterm"] = scenario_sigterm(work, args.cells, args.term_after, args.cap)
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "save_latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
