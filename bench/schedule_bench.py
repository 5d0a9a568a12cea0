"""Schedules and reports: how late a fire starts its run, how fast schedules load, how fast
a report renders.

Scenarios:
  load      1,000 schedules (50 distinct cron expressions, 20 time zones) read from kiln.yaml,
            checked, and their next fire times computed: in a fresh process, wall time
  fire      20 fires of an every-minute schedule with a controllable clock (after each fire
            the clock jumps so the next slot is 2 s ahead): slot time -> run claimed and
            started, through the real queue and a worker in the scheduler's process
  pipeline  10 fires of an every-minute pipeline schedule (two tasks) with the same clock:
            slot time -> build fired, first task's run started, build ended
  realclock one fire on the real clock (waits for the next minute)
  report    the example report (a DataFrame record, a matplotlib figure, text) to HTML and
            to PDF, first (cold) and warm

Prints the figures and writes bench/results/schedules.json.
Usage: python bench/schedule_bench.py [--fires N] [--no-realclock]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney",
         "Europe/London", "America/Los_Angeles", "Asia/Kolkata", "Africa/Cairo",
         "America/Sao_Paulo", "Europe/Paris", "Asia/Singapore", "Pacific/Auckland",
         "America/Chicago", "Europe/Moscow", "Asia/Shanghai", "America/Toronto",
         "Europe/Madrid", "Asia/Dubai", "Europe/Helsinki"]  # fmt: skip


def notebook(folder: Path) -> Path:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb = new_notebook(
        cells=[
            new_code_cell("day = '2026-11-29'\nrows = 200", metadata={"tags": ["parameters"]}),
            new_code_cell(
                "import numpy as np, pandas as pd, kiln\n"
                "rng = np.random.default_rng(0)\n"
                "df = pd.DataFrame({'region': rng.choice(['EU', 'US', 'APAC'], rows),"
                " 'amount': rng.gamma(2.0, 50.0, rows).round(2)})\n"
                "totals = df.groupby('region').amount.agg(['count', 'sum', 'mean']).round(2)\n"
                "kiln.record('totals', totals)\n"
                "print(f'sales on {day}: {df.amount.sum():,.2f}')"
            ),
            new_code_cell(
                "import matplotlib.pyplot as plt\n"
                "fig, ax = plt.subplots(figsize=(6, 3))\n"
                "totals['sum'].plot.bar(ax=ax, title=f'Sales by region, {day}')\n"
                "plt.show()"
            ),
            new_code_cell("totals"),
        ],
        metadata=meta,
    )
    path = folder / "sales.ipynb"
    nbformat.write(nb, path)
    return path


def bench_load(folder: Path, count: int = 1000) -> dict[str, float]:
    project = folder / "load"
    project.mkdir()
    notebook(project)
    crons = [f"{m} {m % 24} * * {d}" for m, d in zip(range(50), ["*", "1-5"] * 25, strict=True)]
    lines = ["schedules:"]
    for i in range(count):
        lines += [
            f"  s{i}:",
            "    notebook: sales.ipynb",
            f"    cron: '{crons[i % len(crons)]}'",
            f"    timezone: {ZONES[i % len(ZONES)]}",
            "    parameters: {day: '{{ yesterday }}'}",
        ]
    (project / "kiln.yaml").write_text("\n".join(lines) + "\n")
    code = (
        "import time; t = time.perf_counter()\n"
        "from datetime import datetime, timezone\n"
        "from kiln.project import load_project\n"
        "from kiln.scheduler.model import load_schedules\n"
        "s = load_schedules(load_project())\n"
        "now = datetime.now(timezone.utc)\n"
        "nexts = [x.next_fires(now, 1)[0] for x in s.values()]\n"
        "print(len(nexts), time.perf_counter() - t)\n"
    )
    walls = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        assert int(out[0]) == count
        walls.append(float(out[1]))
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("kiln")), "schedules", "list", "--json",
                    "-n", "1"], cwd=project, capture_output=True, check=True,
                   env={**os.environ, "KILN_HOME": str(folder / "load-home")})  # fmt: skip
    return {
        "schedules": count,
        "load_and_next_s_median": statistics.median(walls),
        "kiln_schedules_list_wall_s": time.perf_counter() - started,
    }


def bench_fire(folder: Path, fires: int) -> dict[str, float]:
    """Slot -> claimed and slot -> started, over ``fires`` slots of a controllable clock."""
    from kiln.project import load_project
    from kiln.scheduler.service import SchedulerService
    from kiln.store import RunStore
    from kiln.store import slots as store_slots

    project = folder / "fire"
    project.mkdir()
    nb = new_notebook(
        cells=[new_code_cell("n = 0", metadata={"tags": ["parameters"]}), new_code_cell("n")],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, project / "nb.ipynb")
    (project / "kiln.yaml").write_text(
        "schedules:\n  tick:\n    notebook: nb.ipynb\n    cron: '* * * * *'\n"
    )
    home = folder / "fire-home"
    os.environ["KILN_HOME"] = str(home)
    # the clock: real time plus an offset that puts the next slot 2 s ahead, bumped per fire
    start = datetime.now(timezone.utc)
    first = (start + timedelta(minutes=1)).replace(second=0, microsecond=0)
    offset = [first - start - timedelta(seconds=2)]
    with RunStore(home) as store:
        store_slots.ensure_states(store, {"tick": False}, now=start + offset[0])
    service = SchedulerService(
        load_project(project), home=home, workers=1,
        clock=lambda: datetime.now(timezone.utc) + offset[0],
    )  # fmt: skip
    lateness: list[tuple[float, float]] = []

    def watch() -> None:
        with RunStore(home) as store:
            seen = 0
            while seen < fires:
                done = [s for s in store_slots.slots(store) if s.run_id and s.state != "queued"]
                runs = {r.id: r for r in store.list_runs(limit=None)}
                fresh = [s for s in done if runs.get(str(s.run_id)) and runs[str(s.run_id)]
                         .started_at is not None]  # fmt: skip
                if len(fresh) > seen:
                    slot = max(fresh, key=lambda s: s.slot)
                    run = runs[str(slot.run_id)]
                    real_slot = slot.slot - offset[0]
                    claimed = (slot.fired_at - offset[0] - real_slot).total_seconds()
                    assert run.started_at is not None
                    lateness.append((claimed, (run.started_at - real_slot).total_seconds()))
                    seen = len(fresh)
                    now = datetime.now(timezone.utc) + offset[0]
                    upcoming = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
                    offset[0] += upcoming - now - timedelta(seconds=2)
                time.sleep(0.05)
        service.stop()

    watcher = threading.Thread(target=watch)
    watcher.start()

    async def main() -> None:
        task = asyncio.ensure_future(service.run())
        while not task.done():
            await asyncio.sleep(0.1)
        await task

    asyncio.run(main())
    watcher.join()
    fired = [f for f, _s in lateness]
    started = [s for _f, s in lateness]
    return {
        "fires": len(lateness),
        "fired_after_slot_s_median": statistics.median(fired),
        "fired_after_slot_s_max": max(fired),
        "run_started_after_slot_s_median": statistics.median(started),
        "run_started_after_slot_s_max": max(started),
    }


def bench_realclock(folder: Path) -> dict[str, float]:
    project = folder / "real"
    project.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell("1")], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}),
        project / "nb.ipynb")  # fmt: skip
    (project / "kiln.yaml").write_text(
        "schedules:\n  tick:\n    notebook: nb.ipynb\n    cron: '* * * * *'\n"
    )
    home = folder / "real-home"
    env = {**os.environ, "KILN_HOME": str(home)}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("kiln")), "scheduler"],
                            cwd=project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    from kiln.store import RunStore
    from kiln.store import slots as store_slots

    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not (home / "kiln.db").exists():
                continue
            with RunStore(home) as store:
                ran = [s for s in store_slots.slots(store) if s.run_id]
                if not ran:
                    continue
                run = store.get_run_exact(str(ran[0].run_id))
                if run.started_at is None:
                    continue
                return {"run_started_after_slot_s": (run.started_at - ran[0].slot).total_seconds()}
        raise RuntimeError("no fire within 150 s")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def bench_report(folder: Path) -> dict[str, float]:
    from kiln.report.pdf import html_to_pdf
    from kiln.report.render import render_report

    project = folder / "report"
    project.mkdir()
    path = notebook(project)
    out = project / "out.ipynb"
    subprocess.run([str(Path(sys.executable).with_name("kiln")), "run", str(path), str(out)],
                   check=True, capture_output=True,
                   env={**os.environ, "KILN_HOME": str(folder / "report-home")})  # fmt: skip
    nb = nbformat.read(out, as_version=4)
    figures: dict[str, float] = {}
    for label in ("cold", "warm"):
        started = time.perf_counter()
        page = render_report(nb, hide_code=True)
        figures[f"html_{label}_s"] = time.perf_counter() - started
        started = time.perf_counter()
        pdf = html_to_pdf(page)
        figures[f"pdf_{label}_s"] = time.perf_counter() - started
    figures["html_kb"] = len(page) / 1024
    figures["pdf_kb"] = len(pdf) / 1024
    return figures


def bench_pipeline(folder: Path, fires: int) -> dict[str, float]:
    """A pipeline schedule (two tasks, one after the other) over ``fires`` slots of a
    controllable clock: slot -> build fired, -> its first task's run started, -> build ended
    (the scheduler claims the queued build and runs it in its own process)."""
    from kiln.project import load_project
    from kiln.scheduler.service import SchedulerService
    from kiln.store import RunStore
    from kiln.store import slots as store_slots
    from kiln.store.builds import BuildStore

    project = folder / "pipeline"
    project.mkdir()
    nb = new_notebook(
        cells=[new_code_cell("n = 0", metadata={"tags": ["parameters"]}), new_code_cell("n")],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, project / "nb.ipynb")
    (project / "kiln.yaml").write_text(
        "pipelines:\n  etl:\n    tasks:\n      a: {notebook: nb.ipynb}\n"
        "      b: {notebook: nb.ipynb, parameters: {n: 1}, upstream: [a]}\n"
        "schedules:\n  nightly:\n    pipeline: etl\n    cron: '* * * * *'\n    force: true\n"
    )
    home = folder / "pipeline-home"
    os.environ["KILN_HOME"] = str(home)
    start = datetime.now(timezone.utc)
    first = (start + timedelta(minutes=1)).replace(second=0, microsecond=0)
    offset = [first - start - timedelta(seconds=2)]
    with RunStore(home) as store:
        store_slots.ensure_states(store, {"nightly": False}, now=start + offset[0])
    service = SchedulerService(
        load_project(project), home=home, workers=1,
        clock=lambda: datetime.now(timezone.utc) + offset[0],
    )  # fmt: skip
    seen_at: list[tuple[float, float, float]] = []

    def watch() -> None:
        try:
            follow()
        finally:
            service.stop()

    def follow() -> None:
        with RunStore(home) as store, BuildStore(store) as builds:
            done: set[str] = set()
            while len(seen_at) < fires:
                ended = [s for s in store_slots.slots(store) if s.build_id and s.state != "queued"]
                for slot in ended:
                    if str(slot.build_id) in done:
                        continue
                    done.add(str(slot.build_id))
                    build = builds.get_build(str(slot.build_id))
                    runs = [r for r in store.list_runs(limit=None)
                            if r.tags.get("kiln.build") == build.id and r.started_at]  # fmt: skip
                    real_slot = slot.slot - offset[0]
                    fired = (slot.fired_at - offset[0] - real_slot).total_seconds()
                    started = min(r.started_at for r in runs if r.started_at) - real_slot
                    assert build.ended_at is not None
                    took = (build.ended_at - real_slot).total_seconds()
                    seen_at.append((fired, started.total_seconds(), took))
                    now = datetime.now(timezone.utc) + offset[0]
                    upcoming = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
                    offset[0] += upcoming - now - timedelta(seconds=2)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()

    async def run() -> None:
        task = asyncio.ensure_future(service.run())
        while not task.done():
            await asyncio.sleep(0.1)
        await task

    asyncio.run(run())
    watcher.join()
    return {
        "fires": len(seen_at),
        "fired_after_slot_s_median": statistics.median(f for f, _s, _e in seen_at),
        "first_task_started_after_slot_s_median": statistics.median(s for _f, s, _e in seen_at),
        "first_task_started_after_slot_s_max": max(s for _f, s, _e in seen_at),
        "build_ended_after_slot_s_median": statistics.median(e for _f, _s, e in seen_at),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fires", type=int, default=20)
    parser.add_argument("--pipeline-fires", type=int, default=10)
    parser.add_argument("--no-realclock", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["load"] = bench_load(folder)
        print("load", json.dumps(results["load"]), flush=True)
        results["report"] = bench_report(folder)
        print("report", json.dumps(results["report"]), flush=True)
        results["fire"] = bench_fire(folder, args.fires)
        print("fire", json.dumps(results["fire"]), flush=True)
        results["pipeline"] = bench_pipeline(folder, args.pipeline_fires)
        print("pipeline", json.dumps(results["pipeline"]), flush=True)
        if not args.no_realclock:
            results["realclock"] = bench_realclock(folder)
            print("realclock", json.dumps(results["realclock"]), flush=True)
    target = Path(__file__).parent / "results" / "schedules.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
