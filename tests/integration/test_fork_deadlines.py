"""Every deadline holds whatever the fork engine's warm parent does: hangs in an import, never
starts, gets stopped by a run, or outlives its Kiln process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.engines.fork import ForkEngine, ForkPool
from kiln.engines.forkserver import MARKER
from kiln.runner import Runner, RunRequest, RunWarning

from kilntest import KILN, read_nb

pytestmark = pytest.mark.kernel


def _library(tmp_path: Path, **modules: str) -> dict[str, str]:
    """Modules in a folder named site-packages on PYTHONPATH: libraries the warm parent
    imports ahead (the environment for the `kiln` subprocess)."""
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(site)) if p)
    return {"PYTHONPATH": path}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


#: hangs when imported anywhere but a kernel (a kernel's environment holds the run id)
HANGS_OUTSIDE_A_RUN = (
    "import os, time\nif not os.environ.get('KILN_RUN_ID'):\n    time.sleep(3600)\nVALUE = 1\n"
)


def test_a_hanging_import_cannot_outlast_the_run_timeout(tmp_path, make_nb, kiln_cli):
    env = _library(tmp_path, hangs="import time\ntime.sleep(3600)\n")
    nb = make_nb(["import hangs", "print('never')"])
    res = kiln_cli("run", str(nb), "--engine", "fork", "--timeout", "5", "--json", env=env)
    assert res.returncode == 1, res.stderr
    run = json.loads(res.stdout)
    assert run["state"] == "timed_out"
    assert "time limit (timeout)" in run["reason"] and "importing hangs" in run["reason"]


def test_a_warm_parent_that_never_starts_cannot_outlast_the_run_timeout(
    tmp_path, make_nb, kiln_cli
):
    # sitecustomize runs in every Python of this environment: it wedges any that is neither
    # the kiln command nor a run's kernel, which leaves the warm parent
    env = _library(
        tmp_path,
        sitecustomize=(
            "import os, sys, time\n"
            "if not os.environ.get('KILN_RUN_ID') and not sys.argv[0].endswith('kiln'):\n"
            "    time.sleep(3600)\n"
        ),
    )
    nb = make_nb(["print('never')"])
    res = kiln_cli("run", str(nb), "--engine", "fork", "--timeout", "5", "--json", env=env)
    assert res.returncode == 1, res.stderr
    run = json.loads(res.stdout)
    assert run["state"] == "timed_out" and "warm parent was starting" in run["reason"]


def test_auto_moves_to_the_kernel_when_a_pre_import_starts_a_thread(
    tmp_path, make_nb, kiln_cli, home
):
    env = _library(
        tmp_path,
        threads=(
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\nVALUE = 2\n"
        ),
    )
    nb = make_nb(
        [("n = 0", ["parameters"]), "import threads, kiln\nkiln.record('v', threads.VALUE)"]
    )
    (tmp_path / "grid.yaml").write_text("n: [1, 2, 3]\n")
    res = kiln_cli("run", str(nb), "--sweep", "grid.yaml", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("using the kernel engine: importing threads started a thread") == 1
    runs = json.loads(kiln_cli("runs", "list", "--json").stdout)
    assert len(runs) == 3  # one row per run, fallback or not
    assert {r["engine"] for r in runs} == {"kernel"} and {r["state"] for r in runs} == {"succeeded"}
    forced = kiln_cli("run", str(nb), "--engine", "fork", "--json", env=env)
    assert forced.returncode == 0, forced.stderr  # the run's child imports it instead
    assert json.loads(forced.stdout)["engine"] == "fork"


@pytest.mark.timeout(180)
def test_auto_moves_to_the_kernel_when_a_pre_import_hangs(tmp_path, make_nb, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _library(tmp_path, hangs=HANGS_OUTSIDE_A_RUN)["PYTHONPATH"])
    nb = make_nb(["import hangs, kiln\nkiln.record('v', hangs.VALUE)"])
    warnings: list[str] = []

    async def main() -> list:
        pool = ForkPool(preload_timeout=2.0)
        runner = Runner(
            home=tmp_path / "home",
            engines={"fork": ForkEngine(pool)},
            observers=[lambda e: warnings.append(e.text) if isinstance(e, RunWarning) else None],
        )
        try:
            return [
                await runner.arun(RunRequest(notebook=nb, timeout=120), check=False)
                for _ in range(2)
            ]
        finally:
            await pool.close()
            runner.close()

    runs = asyncio.run(main())
    assert [(r.state, r.engine, r.records) for r in runs] == [("succeeded", "kernel", {"v": 1})] * 2
    assert len(warnings) == 2 and all("importing hangs" in w for w in warnings)
    assert "did not finish within 2s" in warnings[0]


def test_a_run_that_stops_the_warm_parent_does_not_hang_the_sweep(
    tmp_path, make_nb, kiln_cli, home
):
    nb = make_nb(
        [
            ("n = 0", ["parameters"]),
            "import os, signal, kiln\nkiln.record('parent', os.getppid())\n"
            "if n == 2:\n    os.kill(os.getppid(), signal.SIGSTOP)",
        ]
    )
    (tmp_path / "grid.yaml").write_text("n: [1, 2, 3, 4]\n")
    res = kiln_cli(
        "run", str(nb), "--sweep", "grid.yaml", "-j", "1", "--timeout", "20", "--json", timeout=120
    )
    assert res.returncode == 0, res.stderr
    runs = sorted(json.loads(kiln_cli("runs", "list", "--json").stdout), key=lambda r: r["id"])
    by_n = {r["parameters"]["n"]: r for r in runs}
    assert {r["state"] for r in runs} == {"succeeded"}
    parents = [by_n[n]["records"]["parent"] for n in (1, 2, 3, 4)]
    assert parents[0] == parents[1] != parents[2] == parents[3]  # a new parent after the stop
    assert _wait_gone(parents[0])  # the stopped one was killed, not left behind


def _start_kiln(args: list[str], home: Path, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, KILN_HOME=str(home))
    return subprocess.Popen(
        [KILN, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _records_so_far(out: Path) -> dict:
    try:
        nb = read_nb(out)
    except Exception:
        return {}
    found = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            record = output.get("data", {}).get("application/vnd.kiln.record+json")
            if record:
                found[record["name"]] = record["value"]
    return found


def _wait_for(predicate, seconds: float = 60.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_a_stopped_warm_parent_does_not_outlive_a_killed_kiln(make_nb, home, tmp_path):
    nb = make_nb(
        [
            "import os, kiln\nkiln.record('parent', os.getppid())\n"
            "kiln.record('child', os.getpid())",
            "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)",
            "import time\ntime.sleep(300)",
        ]
    )
    out = tmp_path / "o.ipynb"
    proc = _start_kiln(["run", str(nb), str(out), "--engine", "fork"], home, tmp_path)
    try:
        records = _wait_for(lambda: len(_records_so_far(out)) == 2 and _records_so_far(out))
        _wait_for(lambda: _stopped(records["parent"]))
        proc.kill()
        proc.communicate(timeout=30)
        assert _wait_gone(records["parent"]), "the stopped warm parent outlived Kiln"
        assert _wait_gone(records["child"]), "the run's child outlived Kiln"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "T"
    except FileNotFoundError:
        return False


def test_the_next_command_kills_a_warm_parent_whose_kiln_is_gone(make_nb, kiln_cli):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # what a leftover warm parent looks like to the next command: its mark and its owner
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", MARKER, "0", str(gone.pid), ""],
        start_new_session=True,
    )
    try:
        nb = make_nb(["print(1)"])
        assert kiln_cli("run", str(nb), "--engine", "fork").returncode == 0
        assert leftover.wait(timeout=10) == -signal.SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


#: a forked run's IO thread whose channel breaks while output is on its way (the supervisor
#: died between the thread's select and its send); the supervisor's end stays open, so the
#: hang-up check alone never fires
_BROKEN_CHANNEL = """
import os, socket, time
from kiln.engines.forkchild import FdCapture
from kiln.engines.forkshell import Channel, Outputs, Streams

class Broken(Channel):
    def send(self, message):
        raise BrokenPipeError(32, "Broken pipe")

supervisor_end, run_end = socket.socketpair()
channel = Broken(run_end)
capture = FdCapture(Streams(Outputs(channel)), channel)
os.write(1, b"output on its way\\n")
time.sleep(300)
os._exit(0)
"""


def test_a_run_ends_when_its_channel_breaks_under_output(tmp_path):
    # regression: the send's BrokenPipeError ended the IO thread, the run's only watch on its
    # supervisor, and the run then outlived a killed Kiln (seen as a notebook process alive
    # 30 s after `kiln serve` was SIGKILLed)
    proc = subprocess.Popen(
        [sys.executable, "-c", _BROKEN_CHANNEL], cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        _out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the run kept going after its channel broke") from None
    assert proc.returncode == 1, err
