"""The durable queue with real workers: submit, claim, run, retry, cancel, drain, kill -9 —
every test on SQLite and on PostgreSQL (the ``database_url`` fixture sets KILN_DATABASE_URL,
which the `kiln` subprocesses inherit)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilntest import KILN, build_notebook, wait_for, wait_for_run_state

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("database_url")]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    if os.environ.get("KILN_DATABASE_URL"):  # the PostgreSQL variant
        env["KILN_DATABASE_URL"] = os.environ["KILN_DATABASE_URL"]
    return env


def _kiln(
    *args: str, home: Path, cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KILN, *args], capture_output=True, text=True, env=_env(home), cwd=cwd,
                          timeout=timeout)  # fmt: skip


def _runs(home: Path, cwd: Path) -> list[dict[str, Any]]:
    done = _kiln("runs", "list", "--json", "--limit", "0", home=home, cwd=cwd)
    assert done.returncode == 0, done.stderr
    if os.environ.get("KILN_DATABASE_URL"):  # the history really is on PostgreSQL
        assert not (home / "kiln.db").exists()
    runs: list[dict[str, Any]] = json.loads(done.stdout)
    return runs


@pytest.fixture
def project(tmp_path: Path) -> Path:
    nbformat.write(
        build_notebook(
            [
                ("n = 1\nsleep = 0.0\nmarker = ''", ["parameters"]),
                "import time, os, kiln\n"
                "if marker:\n"
                "    with open(marker, 'a') as fh:\n"
                "        fh.write(f'{n} {os.getpid()}\\n')\n"
                "time.sleep(sleep)\n"
                "kiln.record('n', n)",
            ]
        ),
        tmp_path / "nb.ipynb",
    )
    return tmp_path


def test_submit_then_a_worker_runs_it(project: Path) -> None:
    home = project / "home"
    submitted = _kiln(
        "run", "nb.ipynb", "out.ipynb", "-p", "n", "7", "--queue", home=home, cwd=project
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    queued = _kiln("queue", "--json", home=home, cwd=project)
    assert [r["id"] for r in json.loads(queued.stdout)] == [run_id]
    assert not (project / "out.ipynb").exists()
    worked = _kiln("worker", "--until-empty", home=home, cwd=project)
    assert worked.returncode == 0, worked.stderr
    (run,) = _runs(home, project)
    assert run["id"] == run_id and run["state"] == "succeeded" and run["records"] == {"n": 7}
    assert (project / "out.ipynb").exists()
    assert "Nothing queued" in _kiln("queue", home=home, cwd=project).stderr


def test_refused_at_submission_writes_nothing(project: Path) -> None:
    home = project / "home"
    done = _kiln("run", "nb.ipynb", "-p", "nope", "1", "--queue", home=home, cwd=project)
    assert done.returncode == 2 and "unknown parameter 'nope'" in done.stderr
    assert _runs(home, project) == []


def test_the_submitted_bytes_run_even_if_the_file_changed(project: Path) -> None:
    home = project / "home"
    _kiln("run", "nb.ipynb", "-p", "n", "3", "--queue", home=home, cwd=project)
    nbformat.write(build_notebook([("n = 1", ["parameters"]), "raise SystemExit(3)"]),
                   project / "nb.ipynb")  # fmt: skip
    _kiln("worker", "--until-empty", home=home, cwd=project)
    (run,) = _runs(home, project)
    assert run["state"] == "succeeded" and run["records"] == {"n": 3}


def test_two_workers_run_every_run_exactly_once(project: Path) -> None:
    home = project / "home"
    marker = project / "ran.txt"
    for n in range(12):
        done = _kiln("run", "nb.ipynb", "-p", "n", str(n), "-p", "marker", str(marker),
                     "--queue", home=home, cwd=project)  # fmt: skip
        assert done.returncode == 0, done.stderr
    workers = [
        subprocess.Popen(
            [KILN, "worker", "--until-empty", "-c", "2"],
            env=_env(home),
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.communicate(timeout=240)
        assert worker.returncode == 0
    lines = marker.read_text().split()
    ran = sorted(int(n) for n in lines[::2])
    assert ran == list(range(12))  # each once: no run lost, none run twice
    runs = _runs(home, project)
    assert len(runs) == 12 and {r["state"] for r in runs} == {"succeeded"}


def test_a_killed_worker_is_found_and_its_run_retried_once(project: Path) -> None:
    home = project / "home"
    marker = project / "ran.txt"
    submitted = _kiln("run", "nb.ipynb", "-p", "sleep", "60", "-p", "marker", str(marker),
                      "--queue", "--retries", "1", home=home, cwd=project)  # fmt: skip
    first_id = submitted.stdout.strip()
    worker = subprocess.Popen([KILN, "worker"], env=_env(home), cwd=project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # the line is written in pieces: wait for the whole of it
        wait_for(lambda: marker.exists() and marker.read_text().endswith("\n"),
                 what="the run to start")  # fmt: skip
        child = int(marker.read_text().split()[1])
    finally:
        worker.kill()  # SIGKILL: no chance to record anything
        worker.wait()
    with contextlib.suppress(ProcessLookupError):  # the run dies with its worker's engine
        os.kill(child, signal.SIGKILL)
    listed = _kiln("queue", "--json", home=home, cwd=project)  # recovery happens here
    queued = json.loads(listed.stdout)
    assert len(queued) == 1 and queued[0]["retry_of"] == first_id and queued[0]["attempt"] == 2
    runs = {r["id"]: r for r in _runs(home, project)}
    assert runs[first_id]["state"] == "crashed" and "exited" in runs[first_id]["reason"]
    cancel = _kiln("runs", "cancel", queued[0]["id"], home=home, cwd=project)
    assert cancel.returncode == 0
    again = {r["id"]: r for r in _runs(home, project)}
    assert again[queued[0]["id"]]["state"] == "cancelled"
    assert _kiln("queue", "--json", home=home, cwd=project).stdout.strip() == "[]"


def test_cancel_a_running_run_through_its_worker(project: Path) -> None:
    home = project / "home"
    run_id = _kiln("run", "nb.ipynb", "-p", "sleep", "60", "--queue", home=home,
                   cwd=project).stdout.strip()  # fmt: skip
    worker = subprocess.Popen([KILN, "worker", "--until-empty"], env=_env(home), cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for_run_state(home, {"running"})
        assert _kiln("runs", "cancel", run_id, home=home, cwd=project).returncode == 0
        worker.communicate(timeout=60)
    finally:
        worker.kill()
        worker.wait()
    (run,) = _runs(home, project)
    assert run["state"] == "cancelled" and "by request" in run["reason"]


@pytest.mark.parametrize(("grace", "state"), [("60s", "succeeded"), ("0.5s", "cancelled")])
def test_sigterm_drains_within_the_grace(project: Path, grace: str, state: str) -> None:
    home = project / "home"
    _kiln("run", "nb.ipynb", "-p", "sleep", "3", "--queue", home=home, cwd=project)
    worker = subprocess.Popen([KILN, "worker", "--grace", grace], env=_env(home), cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for_run_state(home, {"running"})
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
        assert worker.returncode == 0
    finally:
        worker.kill()
        worker.wait()
    (run,) = _runs(home, project)
    assert run["state"] == state
