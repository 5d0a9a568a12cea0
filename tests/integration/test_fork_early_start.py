"""``kiln run`` starts the fork engine's warm parent as soon as it knows the run may use it:
the run adopts that very process, a run that will not fork starts none, and one that no run
adopts never outlives the command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from kiln.engines import forkspawn
from kiln.engines.forkserver import MARKER
from kiln.runner import Runner, RunRequest

pytestmark = pytest.mark.kernel

PARENT_PID = "import os, kiln\nkiln.record('parent', os.getppid())"


def _watching(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose warm parents write their pid to a file as they start (a
    sitecustomize on PYTHONPATH), and that file."""
    site = tmp_path / "watch"
    site.mkdir()
    started = tmp_path / "parents.txt"
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"if {MARKER!r} in sys.argv:\n"
        f"    with open({str(started)!r}, 'a') as fh:\n"
        "        fh.write(f'{os.getpid()}\\n')\n"
    )
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}, started


def _parents(started: Path) -> list[int]:
    return [int(line) for line in started.read_text().split()] if started.exists() else []


def _gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_the_run_adopts_the_parent_the_command_started_early(tmp_path, make_nb, kiln_cli):
    env, started = _watching(tmp_path)
    nb = make_nb([PARENT_PID])
    res = kiln_cli("run", str(nb), str(tmp_path / "out.ipynb"), "--json", env=env)
    assert res.returncode == 0, res.stderr
    # one warm parent only, and it is the one the run was forked from
    assert _parents(started) == [json.loads(res.stdout)["records"]["parent"]]


def test_a_sweep_adopts_the_parent_the_command_started_early(tmp_path, make_nb, kiln_cli):
    env, started = _watching(tmp_path)
    nb = make_nb([("x = 0", ["parameters"]), PARENT_PID])
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1, 2, 3]\n")
    res = kiln_cli("run", str(nb), "--sweep", str(grid), "-j", "2", "--json", env=env)
    assert res.returncode == 0, res.stderr
    parents = {run["records"]["parent"] for run in json.loads(res.stdout)}
    assert _parents(started) == list(parents)


def test_a_parent_no_run_adopts_does_not_outlive_the_command(tmp_path, make_nb, kiln_cli):
    env, started = _watching(tmp_path)
    nb = make_nb([("x = 0", ["parameters"]), PARENT_PID])
    # refused after the parent was started: the notebook declares no such parameter
    res = kiln_cli("run", str(nb), "-p", "undeclared", "1", env=env)
    assert res.returncode == 2, res.stderr
    assert "undeclared" in res.stderr and "Traceback" not in res.stderr
    [pid] = _parents(started)
    assert _gone(pid), "the unused warm parent outlived the command"


@pytest.mark.parametrize(
    "flags", [("--engine", "kernel"), ("--prepare-only",)], ids=["kernel", "prepare-only"]
)
def test_a_run_that_will_not_fork_starts_no_parent(tmp_path, make_nb, kiln_cli, flags):
    env, started = _watching(tmp_path)
    nb = make_nb(["x = 1"])
    res = kiln_cli("run", str(nb), str(tmp_path / "out.ipynb"), *flags, env=env)
    assert res.returncode == 0, res.stderr
    assert _parents(started) == []


def _parent_of_a_run(nb: Path, home: Path) -> int:
    async def main() -> int:
        runner = Runner(home=home)
        try:
            run = await runner.arun(RunRequest(notebook=nb, engine="fork"))
            return int(run.records["parent"])
        finally:
            await runner.aclose_engines()
            runner.close()

    return asyncio.run(main())


def test_an_early_parent_is_adopted_in_the_same_process(make_nb, home):
    nb = make_nb([PARENT_PID])
    forkspawn.start_early(sys.executable)
    early = forkspawn._early[sys.executable].proc
    assert _parent_of_a_run(nb, home) == early.pid
    assert sys.executable not in forkspawn._early
    assert _gone(early.pid)  # stopped with the runner's engines


def test_an_early_parent_started_in_another_environment_is_not_adopted(make_nb, home, monkeypatch):
    nb = make_nb([PARENT_PID])
    forkspawn.start_early(sys.executable)
    early = forkspawn._early[sys.executable].proc
    # its sys.path and imports came from the environment it started in: a changed one
    # (here a new variable) gets a parent of its own, and the stale one is stopped
    monkeypatch.setenv("KILN_TEST_CHANGED", "1")
    assert _parent_of_a_run(nb, home) != early.pid
    assert _gone(early.pid)
