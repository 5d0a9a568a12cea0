"""``kiln serve`` killed, drained and loaded: nothing lost, nothing run twice at once."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from server_util import Server, admin_client, running, wait_state, write_notebook

from kilntest import pid_alive, process_report, wait_for, wait_gone

pytestmark = pytest.mark.kernel


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    write_notebook(
        project / "work.ipynb",
        [
            ("n = 1\nsleep = 0.0\nmarker = ''\nhold = ''", ["parameters"]),
            "import time, os, kiln\n"
            "if marker:\n"
            "    with open(marker, 'a') as fh:\n"
            "        fh.write(f'{n} {os.getpid()}\\n')\n"
            "if hold and not os.path.exists(hold):  # only the first attempt holds\n"
            "    open(hold, 'w').close()\n"
            "    time.sleep(120)\n"
            "time.sleep(sleep)\n"
            "kiln.record('n', n)",
        ],
    )
    return project


def _marks(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    return [(int(a), int(b)) for a, b in (line.split() for line in path.read_text().splitlines())]


def _all_runs(client: Any) -> list[dict[str, Any]]:
    return list(client.get("/api/v1/runs", params={"limit": 500}).json()["items"])


def test_a_server_killed_mid_run_loses_nothing_and_runs_nothing_twice(
    project: Path, tmp_path: Path, database_url: str | None
) -> None:
    home, marker, hold = tmp_path / "home", tmp_path / "ran.txt", tmp_path / "held"
    server = Server(project, home, "--workers", "1")
    password = server.password
    try:
        admin = admin_client(server)
        first = admin.post(
            "/api/v1/runs",
            json={
                "notebook": "work.ipynb",
                "retries": 1,
                "parameters": {"n": 0, "marker": str(marker), "hold": str(hold)},
            },
        ).json()
        queued = [
            admin.post(
                "/api/v1/runs",
                json={"notebook": "work.ipynb", "parameters": {"n": n, "marker": str(marker)}},
            ).json()["id"]
            for n in range(1, 5)
        ]
        wait_for(hold.exists, what="the first run to start")
        (child,) = [pid for n, pid in _marks(marker) if n == 0]
    finally:
        server.kill()  # SIGKILL: no drain, nothing recorded
    # the worker dies with its server, and the run's process with the worker
    assert wait_gone(child, timeout=30), "the run's process outlived its killed server: " + (
        process_report(child)
    )
    with running(project, home, "--workers", "1") as again:
        assert again.password is None  # the accounts survived; no new admin
        admin = admin_client(again, password)
        retried = wait_for(
            lambda: [r for r in _all_runs(admin) if r["retry_of"] == first["id"]],
            what="the retry of the interrupted run",
        )
        for run_id in [*queued, retried[0]["id"]]:
            assert wait_state(admin, run_id, {"succeeded", "failed", "crashed"})["state"] == (
                "succeeded"
            )
        runs = {r["id"]: r for r in _all_runs(admin)}
    crashed = runs[first["id"]]
    assert crashed["state"] == "crashed" and "exited" in crashed["reason"]
    assert retried[0]["attempt"] == 2
    assert len(runs) == 6  # 5 submitted + 1 retry: none lost, none added twice
    ran = sorted(n for n, _ in _marks(marker))
    assert ran == [0, 0, 1, 2, 3, 4]  # the interrupted one again (its retry), the rest once
    assert (home / "kiln.db").exists() == (database_url is None)  # the backend under test


@pytest.mark.parametrize(("grace", "state"), [("60s", "succeeded"), ("0.5s", "cancelled")])
def test_sigterm_drains_within_the_grace(
    project: Path, tmp_path: Path, grace: str, state: str
) -> None:
    server = Server(project, tmp_path / "home", "--workers", "1", "--grace", grace)
    try:
        admin = admin_client(server)
        run = admin.post(
            "/api/v1/runs", json={"notebook": "work.ipynb", "parameters": {"sleep": 3}}
        ).json()
        wait_state(admin, run["id"], {"running"})
        wait_for(
            lambda: (
                "started" in admin.get(f"/api/v1/runs/{run['id']}/log").text
                or "cell 1 started" in admin.get(f"/api/v1/runs/{run['id']}/log").text
            ),
            what="the cell to start",
        )
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=90) == 0, server.log()
    finally:
        server.stop()
    done = server.kiln("runs", "show", run["id"], "--json")
    data = json.loads(done.stdout)
    assert data["state"] == state, data
    if state == "cancelled":
        assert "shutdown" in data["reason"]


def test_endpoint_calls_answered_before_a_sigterm_are_all_audited(
    project: Path, tmp_path: Path
) -> None:
    # the calls' entries are appended by a writer thread a moment after the answers (the
    # shutdown writes any still pending); another process reads them without asking the server
    (project / "kiln.yaml").write_text(
        "endpoints:\n  work: {notebook: work.ipynb, timeout: 30s, concurrency: 2}\n"
    )
    server = Server(project, tmp_path / "home", "--workers", "0")
    try:
        admin = admin_client(server)
        for n in range(5):
            answer = admin.post("/api/v1/endpoints/work", json={"n": n})
            assert answer.status_code == 200, answer.text
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=90) == 0, server.log()
    finally:
        server.stop()
    shown = server.kiln("audit", "--json", "--action", "endpoint.call", "-n", "0")
    assert shown.returncode == 0, shown.stderr
    calls = json.loads(shown.stdout)
    assert sorted(e["details"]["parameters"]["n"] for e in calls) == [0, 1, 2, 3, 4]
    assert {e["actor"] for e in calls} == {"admin"}


def test_runs_submitted_at_once_each_run_once(
    project: Path, tmp_path: Path, database_url: str | None
) -> None:
    marker = tmp_path / "ran.txt"
    with running(project, tmp_path / "home", "--workers", "2") as server:
        admin = admin_client(server)
        token = admin.post("/api/v1/tokens", json={}).json()["token"]
        ids: list[str] = []
        lock = threading.Lock()

        def send(start: int) -> None:
            client = server.client(token)
            for n in range(start, 40, 4):
                answer = client.post(
                    "/api/v1/runs",
                    json={"notebook": "work.ipynb", "parameters": {"n": n, "marker": str(marker)}},
                )
                assert answer.status_code == 202, answer.text
                with lock:
                    ids.append(answer.json()["id"])

        senders = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert len(set(ids)) == 40
        for run_id in ids:
            assert wait_state(admin, run_id, {"succeeded", "failed", "crashed"})["state"] == (
                "succeeded"
            )
        metrics = admin.get("/metrics").text
    assert sorted(n for n, _ in _marks(marker)) == list(range(40))
    assert 'kiln_runs{notebook="work.ipynb",state="succeeded"} 40.0' in metrics
    assert (tmp_path / "home" / "kiln.db").exists() == (database_url is None)


def test_a_dead_worker_is_started_again(project: Path, tmp_path: Path) -> None:
    with running(project, tmp_path / "home", "--workers", "1") as server:
        admin = admin_client(server)
        health = admin.get("/health").json()
        assert health["workers"] == {"alive": 1, "wanted": 1}
        metrics = admin.get("/metrics").text
        assert "kiln_workers 1.0" in metrics
        workers = _children(server.proc.pid)
        assert workers and all(pid_alive(pid) for pid in workers)
        os.kill(workers[0], signal.SIGKILL)
        wait_for(
            lambda: (
                admin.get("/health").json()["workers"]["alive"] == 1
                and workers[0] not in _children(server.proc.pid)
            ),
            timeout=60,
            what="a new worker",
        )
        run = admin.post("/api/v1/runs", json={"notebook": "work.ipynb"}).json()
        assert wait_state(admin, run["id"], {"succeeded", "failed"})["state"] == "succeeded"


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_a_taken_port_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    import socket
    import subprocess

    from kilntest import KILN

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        done = subprocess.run(
            [KILN, "serve", "--port", str(port), "--workers", "0"],
            cwd=project,
            env={**env, "KILN_HOME": str(tmp_path / "h")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "admin password" not in done.stdout  # nothing was set up


def test_a_worker_claims_a_run_when_woken_not_at_its_poll(tmp_path: Path) -> None:
    """The server wakes its workers when a run is submitted (an app's answer waits for the
    claim): a worker polling every 10 minutes still claims a new run at once."""
    import subprocess
    import sys

    from kiln.queue import submit
    from kiln.request import RunRequest
    from kiln.server.workerproc import WAKE
    from kiln.store.sql import RunStore

    nb = write_notebook(tmp_path / "w.ipynb", [("x = 1", ["parameters"]), "print(x)"])
    home = tmp_path / "home"
    store = RunStore(home)
    first = submit(RunRequest.build(nb), store=store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kiln.server.workerproc",
            "--parent",
            str(os.getpid()),
            "--poll",
            "600",
        ],
        env=env,
        cwd=tmp_path,
    )
    try:

        def ended(run_id: str) -> bool:
            return store.get_run(run_id).finished

        wait_for(lambda: ended(first.id), timeout=120, what="the first run (claimed at start)")
        second = submit(RunRequest.build(nb), store=store)

        def woken() -> bool:
            os.kill(worker.pid, WAKE)  # again until the worker is back in its wait
            return store.get_run(second.id).state.value != "queued"

        wait_for(woken, timeout=60, interval=0.2, what="the second run to be claimed")
        wait_for(lambda: ended(second.id), timeout=120, what="the second run")
        assert store.get_run(second.id).state.value == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        store.close()
