"""Many processes write to one store at once and none fails (on SQLite: no "database is
locked"; on PostgreSQL: no deadlock or lost update), on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from kiln.store import RunStore

from kilntest import start_barrier

WORKERS = 8
RUNS_EACH = 30
FINAL_STATES = ("succeeded", "failed", "timed_out", "cancelled", "crashed")

WORKER = """
import sys, time
from datetime import datetime, timezone
from pathlib import Path
from kiln.store import Record, Run, RunStore
import alembic.command  # loaded before the start line so every process starts together

home, worker, go, runs_each = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
finals = ("succeeded", "failed", "timed_out", "cancelled", "crashed")
(go.parent / f"ready-{worker}").touch()
while not go.exists():
    time.sleep(0.001)
store = RunStore(home)  # the home is brand new: this races the migration too
for i in range(runs_each):
    run_id = f"w{worker:02d}-{i:03d}"
    store.create_run(Run(id=run_id, notebook_path=f"nb{worker}.ipynb", notebook_sha256="x",
                         state="queued", parameters={"worker": worker, "i": i}))
    store.update_run(run_id, state="running", started_at=datetime.now(timezone.utc))
    store.update_run(run_id, records_list=[Record("i", "json", i)], cell_durations=[0.01])
    assert store.finish_run(run_id, finals[i % len(finals)], reason=f"worker {worker}")
    assert not store.finish_run(run_id, "crashed")
    store.list_runs(limit=5)
print("ok")
"""


def test_concurrent_writers_never_fail(tmp_path: Path, database_url: str | None) -> None:
    home = tmp_path / "shared"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home), str(n), str(go), str(RUNS_EACH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    start_barrier(tmp_path, WORKERS)
    results = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert "locked" not in err and "deadlock" not in err
        assert proc.returncode == 0, err
        assert out.strip() == "ok"

    with RunStore(home) as store:
        runs = store.list_runs(limit=None)
        assert len(runs) == WORKERS * RUNS_EACH
        by_id = {run.id: run for run in runs}
        for worker in range(WORKERS):
            for i in range(RUNS_EACH):
                run = by_id[f"w{worker:02d}-{i:03d}"]
                assert run.state == FINAL_STATES[i % len(FINAL_STATES)]
                assert run.reason == f"worker {worker}"
                assert run.parameters == {"worker": worker, "i": i}
                assert run.records == {"i": i}
                assert run.started_at is not None
                assert run.ended_at is not None
        assert len(store.list_runs(notebook="nb3.ipynb", limit=None)) == RUNS_EACH


def test_threads_storing_the_same_input_at_once_all_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server submits from several threads of one process: two submissions of the same
    notebook write their copies side by side and both renames succeed."""
    from kiln.store import files

    both_written = threading.Barrier(2, timeout=10)
    real_replace = os.replace

    def replace_together(src: Any, dst: Any) -> None:
        both_written.wait()  # both threads have written their copy before either renames
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace_together)
    errors: list[BaseException] = []
    stored: list[Path] = []

    def store() -> None:
        try:
            stored.append(files.store_input(tmp_path, "ab" * 32, b"{}", files.file_modes()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=store) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stored) == 2 and stored[0].read_bytes() == b"{}"
    assert [p.name for p in (tmp_path / "inputs").iterdir()] == [stored[0].name]
