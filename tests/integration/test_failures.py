"""Kernel death, timeouts, cancellation and killed Kiln processes: reported, never a hang,
nothing left running, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kilntest import KILN, read_nb, stream_text, wait_for, wait_for_run_state

pytestmark = pytest.mark.kernel


@pytest.fixture(params=["fork", "kernel"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every failure mode is checked on both engines."""
    return str(request.param)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers signal 0; it is gone for every practical purpose
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "cell",
    [
        "import os\nos._exit(1)",
        "import ctypes\nctypes.string_at(0)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    ],
    ids=["os-exit", "segfault", "sigkill-oom-like"],
)
def test_kernel_death_is_reported_as_crashed_within_seconds(
    make_nb, kiln_cli, tmp_path, cell, engine
):
    nb = make_nb(["print('before')", cell, "print('never')"])
    out = tmp_path / "o.ipynb"
    t0 = time.monotonic()
    res = kiln_cli("run", str(nb), str(out), "--json", "--engine", engine, timeout=60)
    took = time.monotonic() - t0
    assert res.returncode == 1, res.stderr
    assert took < 15, f"took {took:.1f}s"
    run = json.loads(res.stdout)
    assert run["state"] == "crashed"
    assert "died" in run["reason"]
    assert _wait_gone(run["kernel_pid"])
    cells = read_nb(out).cells
    assert "crashed" in cells[0].source and stream_text(cells[1]) == "before\n"


def test_cell_timeout_kills_the_kernel_and_its_children(make_nb, kiln_cli, tmp_path, engine):
    nb = make_nb(
        [
            "import subprocess, kiln\nchild = subprocess.Popen(['sleep', '300'])\n"
            "kiln.record('child', child.pid)",
            "import time\ntime.sleep(60)",
        ]
    )
    t0 = time.monotonic()
    res = kiln_cli(
        "run",
        str(nb),
        str(tmp_path / "o.ipynb"),
        "--cell-timeout",
        "1.5",
        "--json",
        "--engine",
        engine,
    )
    took = time.monotonic() - t0
    assert res.returncode == 1
    run = json.loads(res.stdout)
    assert run["state"] == "timed_out" and "cell timeout" in run["reason"]
    assert took < 20
    assert _wait_gone(run["kernel_pid"]) and _wait_gone(run["records"]["child"])


def test_whole_run_timeout(make_nb, kiln_cli, tmp_path, engine):
    nb = make_nb(["import time\ntime.sleep(0.8)"] * 10)
    t0 = time.monotonic()
    res = kiln_cli("run", str(nb), "--timeout", "3", "--json", "--engine", engine)
    assert res.returncode == 1
    assert json.loads(res.stdout)["state"] == "timed_out"
    # the run's reason names the option by its API name, on both engines
    assert "time limit (timeout)" in json.loads(res.stdout)["reason"]
    assert time.monotonic() - t0 < 15


def test_background_subprocess_does_not_outlive_a_successful_run(make_nb, kiln_cli, engine):
    nb = make_nb(
        [
            "import subprocess, kiln\nchild = subprocess.Popen(['sleep', '300'])\n"
            "kiln.record('child', child.pid)"
        ]
    )
    res = kiln_cli("run", str(nb), "--json", "--engine", engine)
    assert res.returncode == 0, res.stderr
    assert _wait_gone(json.loads(res.stdout)["records"]["child"])


def _start_kiln(args: list[str], home: Path, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, KILN_HOME=str(home))
    return subprocess.Popen(
        [KILN, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _cell_done(out: Path, index: int) -> bool:
    try:
        nb = read_nb(out)
    except Exception:
        return False
    return len(nb.cells) > index and nb.cells[index].get("execution_count") is not None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_cancels_the_run(make_nb, home, tmp_path, kiln_cli, sig, engine):
    nb = make_nb(["print('first')", "import time\ntime.sleep(120)", "print('never')"])
    out = tmp_path / "o.ipynb"
    proc = _start_kiln(["run", str(nb), str(out), "--engine", engine], home, tmp_path)
    wait_for(lambda: _cell_done(out, 0), what="the first cell saved")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    show = json.loads(kiln_cli("runs", "show", "last", "--json").stdout)
    assert show["state"] == "cancelled"
    assert _wait_gone(show["kernel_pid"])
    cells = read_nb(out).cells
    assert "cancelled" in cells[0].source and stream_text(cells[1]) == "first\n"


def test_killed_kiln_leaves_complete_output_and_is_marked_crashed(
    make_nb, home, tmp_path, kiln_cli, engine
):
    nb = make_nb(["print('first')", "print('second')", "import time\ntime.sleep(120)"])
    out = tmp_path / "o.ipynb"
    proc = _start_kiln(["run", str(nb), str(out), "--engine", engine], home, tmp_path)
    wait_for(lambda: _cell_done(out, 1), what="the second cell saved")
    wait_for_run_state(home, {"running"})  # its kernel is in the history
    proc.kill()
    proc.communicate(timeout=10)
    saved = read_nb(out)  # a complete, valid notebook: the last atomic save
    assert stream_text(saved.cells[1]) == "second\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    listing = kiln_cli("runs", "list", "--json")
    run = json.loads(listing.stdout)[0]
    assert run["state"] == "crashed"
    assert str(proc.pid) in run["reason"]
    # the orphaned kernel does not keep running
    assert _wait_gone(run["kernel_pid"], seconds=10)


def test_concurrent_runs_share_one_history(make_nb, home, tmp_path, kiln_cli):
    nb = make_nb([("x = 0", ["parameters"]), "import kiln\nkiln.record('x', x)"])
    procs = [_start_kiln(["run", str(nb), "-p", "x", str(i)], home, tmp_path) for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "locked" not in err
    runs = json.loads(kiln_cli("runs", "list", "--json").stdout)
    assert sorted(r["records"]["x"] for r in runs) == [0, 1, 2, 3]


def test_atomic_save_never_leaves_partial_files(make_nb, kiln_cli, tmp_path):
    nb = make_nb([f"print({i})" for i in range(30)])
    out = tmp_path / "sub" / "o.ipynb"
    assert kiln_cli("run", str(nb), str(out)).returncode == 0
    assert [p.name for p in out.parent.iterdir()] == ["o.ipynb"]
    assert stream_text(read_nb(out).cells[29]) == "29\n"


def test_python_executable_is_this_environment(make_nb, kiln_cli):
    nb = make_nb(["import sys, kiln\nkiln.record('exe', sys.executable)"])
    res = kiln_cli("run", str(nb), "--json")
    assert res.returncode == 0, res.stderr
    assert Path(json.loads(res.stdout)["records"]["exe"]).parent == Path(sys.executable).parent
