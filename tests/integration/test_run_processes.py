"""What a run starts ends with it, on both engines: processes in a new session, double-forked
daemons, daemons holding the run's sockets; and a crash is reported without waiting for them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kilntest import KILN, read_nb

pytestmark = pytest.mark.kernel


@pytest.fixture(params=["fork", "kernel"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


#: a cell that leaves three processes behind, none in the run's process group, and records them
DAEMONS = """\
import os, subprocess, sys, kiln
new_session = subprocess.Popen(['sleep', '300'], start_new_session=True)
def is_socket(fd):
    try:
        return os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')
    except OSError:  # the descriptor listdir itself used
        return False
sockets = [int(fd) for fd in os.listdir('/proc/self/fd') if is_socket(fd)]
holder = subprocess.Popen(['sleep', '300'], start_new_session=True, pass_fds=sockets)
r, w = os.pipe()
code = ('import os, sys, time\\n'
        'if os.fork(): os._exit(0)\\n'
        'os.setsid()\\n'
        'if os.fork(): os._exit(0)\\n'
        'os.write(int(sys.argv[1]), str(os.getpid()).encode())\\n'
        'time.sleep(300)')
subprocess.run([sys.executable, '-c', code, str(w)], pass_fds=[w], check=True)
os.close(w)
kiln.record('daemons', [new_session.pid, holder.pid, int(os.read(r, 32))])
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """The pids still alive after waiting up to ``seconds`` (killed at the end regardless)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def _records(out: Path) -> dict:
    found = {}
    for cell in read_nb(out).cells:
        for output in cell.get("outputs", []):
            record = output.get("data", {}).get("application/vnd.kiln.record+json")
            if record:
                found[record["name"]] = record["value"]
    return found


def test_daemons_do_not_outlive_a_successful_run(make_nb, kiln_cli, engine):
    nb = make_nb([DAEMONS, "print('done')"])
    res = kiln_cli("run", str(nb), "--json", "--engine", engine)
    assert res.returncode == 0, res.stderr
    assert _wait_gone(json.loads(res.stdout)["records"]["daemons"]) == []


def test_daemons_do_not_outlive_a_timed_out_run(make_nb, kiln_cli, engine):
    nb = make_nb([DAEMONS, "import time\ntime.sleep(300)"])
    res = kiln_cli("run", str(nb), "--json", "--engine", engine, "--cell-timeout", "3")
    run = json.loads(res.stdout)
    assert run["state"] == "timed_out", res.stderr
    assert _wait_gone(run["records"]["daemons"]) == []


def test_a_crash_is_reported_without_waiting_for_daemons_and_they_go(
    make_nb, kiln_cli, tmp_path, engine
):
    # the daemons hold every socket of the run's process, the fork engine's channel included;
    # they live a few seconds before the crash, as a cell's helpers would
    out = tmp_path / "o.ipynb"
    nb = make_nb([DAEMONS, "import os, time\ntime.sleep(3)\nos._exit(1)"])
    res = kiln_cli("run", str(nb), str(out), "--json", "--engine", engine, timeout=120)
    run = json.loads(res.stdout)
    assert run["state"] == "crashed" and "died while running cell 1" in run["reason"]
    assert _wait_gone(_records(out)["daemons"]) == []


def test_recovery_kills_a_dead_kernels_process_group(make_nb, home, tmp_path, kiln_cli):
    # Kiln is killed, then its kernel exits (ipykernel follows its parent): the cell's
    # subprocess is left, in the kernel's process group, until the next command
    out = tmp_path / "o.ipynb"
    nb = make_nb(
        [
            "import os, subprocess, kiln\np = subprocess.Popen(['sleep', '300'])\n"
            "kiln.record('sleep', p.pid)\nkiln.record('kernel', os.getpid())",
            "import time\ntime.sleep(300)",
        ]
    )
    env = dict(os.environ, KILN_HOME=str(home))
    proc = subprocess.Popen(
        [KILN, "run", str(nb), str(out), "--engine", "kernel"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 60
        records: dict = {}
        while time.monotonic() < end and len(records) < 2:
            time.sleep(0.1)
            try:
                records = _records(out)
            except Exception:
                continue
        assert len(records) == 2, "the first cell did not finish"
    finally:
        proc.kill()
        proc.wait()
    os.kill(records["kernel"], signal.SIGKILL)
    assert _wait_gone([records["kernel"]], seconds=5) == []
    assert _alive(records["sleep"])
    listing = json.loads(kiln_cli("runs", "list", "--json").stdout)
    assert listing[0]["state"] == "crashed"
    assert "process group" in listing[0]["reason"]
    assert _wait_gone([records["sleep"]], seconds=5) == []
