"""Runs left queued or running by a Kiln process that died are found and marked crashed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.store import Run, RunStore, current_owner, process_start_time
from kiln.store.process import pid_exists, same_process

MakeRun = Callable[..., Run]

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="process start times come from /proc"
)
HOST = socket.gethostname()


def _spawn_waiting(*, new_session: bool = False) -> subprocess.Popen[bytes]:
    """A process that lives until its stdin closes."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        start_new_session=new_session,
    )


def _end(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.fixture
def dead_owner() -> tuple[int, float | None]:
    """The pid and start time of a process that has exited (and been reaped)."""
    proc = _spawn_waiting()
    started = process_start_time(proc.pid)
    _end(proc)
    return proc.pid, started


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    proc = _spawn_waiting()
    yield proc
    _end(proc)


def test_current_owner_describes_this_process() -> None:
    pid, host, started = current_owner()
    assert pid == os.getpid()
    assert host == socket.gethostname()
    if Path("/proc/self/stat").exists():
        assert started is not None
        assert started <= time.time()


@needs_proc
def test_process_start_time(live_process: subprocess.Popen[bytes]) -> None:
    started = process_start_time(live_process.pid)
    assert started is not None
    assert abs(started - time.time()) < 60
    assert process_start_time(live_process.pid) == started  # stable between readings
    assert process_start_time(os.getpid()) is not None
    assert process_start_time(os.getpid()) <= started  # type: ignore[operator]


def test_a_gone_pid_has_no_start_time(dead_owner: tuple[int, float | None]) -> None:
    pid, _ = dead_owner
    assert not pid_exists(pid)
    assert process_start_time(pid) is None


@needs_proc
@pytest.mark.parametrize("state", ["running", "queued"])
def test_run_of_a_dead_owner_is_marked_crashed(
    store: RunStore, make_run: MakeRun, dead_owner: tuple[int, float | None], state: str
) -> None:
    pid, started = dead_owner
    run = make_run(state=state, owner_pid=pid, owner_host=HOST, owner_started=started)
    recovered = store.recover_orphans()
    assert [r.id for r in recovered] == [run.id]
    got = store.get_run(run.id)
    assert got.state == "crashed"
    assert got.ended_at is not None
    assert got.reason == (
        f"Kiln process {pid} on host {HOST} exited while the run was {state} "
        f"(found by pid {os.getpid()})"
    )
    assert recovered[0] == got
    assert store.recover_orphans() == []  # exactly once


def test_dead_owner_without_start_time_is_marked_crashed(
    store: RunStore, make_run: MakeRun, dead_owner: tuple[int, float | None]
) -> None:
    pid, _ = dead_owner
    run = make_run(state="running", owner_pid=pid, owner_host=HOST)
    assert [r.id for r in store.recover_orphans()] == [run.id]


@needs_proc
def test_runs_of_live_owners_are_untouched(
    store: RunStore, make_run: MakeRun, live_process: subprocess.Popen[bytes]
) -> None:
    pid, host, started = current_owner()
    mine = make_run(state="running", owner_pid=pid, owner_host=host, owner_started=started)
    child_started = process_start_time(live_process.pid)
    theirs = make_run(
        state="running", owner_pid=live_process.pid, owner_host=HOST, owner_started=child_started
    )
    unknown_start = make_run(state="queued", owner_pid=live_process.pid, owner_host=HOST)
    assert store.recover_orphans() == []
    for run in (mine, theirs, unknown_start):
        assert store.get_run(run.id).state == run.state


@needs_proc
def test_reused_pid_counts_as_gone(
    store: RunStore, make_run: MakeRun, live_process: subprocess.Popen[bytes]
) -> None:
    # The recorded owner had this pid but started long ago: the pid now belongs to another
    # process, so the owner is gone.
    started = process_start_time(live_process.pid)
    assert started is not None
    run = make_run(
        state="running",
        owner_pid=live_process.pid,
        owner_host=HOST,
        owner_started=started - 1000,
    )
    assert [r.id for r in store.recover_orphans()] == [run.id]
    got = store.get_run(run.id)
    assert got.state == "crashed"
    assert got.reason is not None
    assert f"Kiln process {live_process.pid} on host {HOST} exited" in got.reason
    assert "now belongs to another process" in got.reason
    assert live_process.poll() is None  # the unrelated process is left alone


def test_other_hosts_and_unowned_runs_are_untouched(
    store: RunStore, make_run: MakeRun, dead_owner: tuple[int, float | None]
) -> None:
    pid, started = dead_owner
    elsewhere = make_run(
        state="running", owner_pid=pid, owner_host=HOST + "-other", owner_started=started
    )
    unowned = make_run(state="queued")
    finished = make_run(state="running", owner_pid=pid, owner_host=HOST, owner_started=started)
    assert store.finish_run(finished.id, "succeeded")
    assert store.recover_orphans() == []
    assert store.get_run(elsewhere.id).state == "running"
    assert store.get_run(unowned.id).state == "queued"
    assert store.get_run(finished.id).state == "succeeded"


KERNEL = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _spawn_kernel(*, new_session: bool) -> tuple[subprocess.Popen[str], int]:
    """A stand-in kernel with a subprocess of its own; returns it and the subprocess pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KERNEL],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not pid_exists(pid):
            return True
        time.sleep(0.05)
    return False


@needs_proc
def test_leftover_kernel_of_a_crashed_run_is_killed(store: RunStore, make_run: MakeRun) -> None:
    owner = _spawn_waiting()
    owner_started = process_start_time(owner.pid)
    kernel, grandchild = _spawn_kernel(new_session=True)
    try:
        _end(owner)
        run = make_run(
            state="running",
            owner_pid=owner.pid,
            owner_host=HOST,
            owner_started=owner_started,
            kernel_pid=kernel.pid,
            kernel_started=process_start_time(kernel.pid),
        )
        assert [r.id for r in store.recover_orphans()] == [run.id]
        assert kernel.wait(timeout=10) == -signal.SIGKILL
        assert _gone_soon(grandchild)  # the whole process group went
        reason = store.get_run(run.id).reason
        assert reason is not None
        assert f"killed the leftover kernel's process group {kernel.pid}" in reason
    finally:
        for pid in (kernel.pid, grandchild):
            if pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
        kernel.wait(timeout=10)
        assert kernel.stdout is not None
        kernel.stdout.close()


@needs_proc
@pytest.mark.parametrize("case", ["our-process-group", "pid-reused"])
def test_kernel_pid_that_may_not_be_the_kernel_is_spared(
    store: RunStore, make_run: MakeRun, dead_owner: tuple[int, float | None], case: str
) -> None:
    pid, owner_started = dead_owner
    kernel, grandchild = _spawn_kernel(new_session=case != "our-process-group")
    try:
        kernel_started = process_start_time(kernel.pid)
        assert kernel_started is not None
        if case == "pid-reused":
            kernel_started -= 1000
        run = make_run(
            state="running",
            owner_pid=pid,
            owner_host=HOST,
            owner_started=owner_started,
            kernel_pid=kernel.pid,
            kernel_started=kernel_started,
        )
        assert [r.id for r in store.recover_orphans()] == [run.id]
        time.sleep(0.2)
        assert kernel.poll() is None
        assert pid_exists(grandchild)
        assert "killed" not in (store.get_run(run.id).reason or "")
    finally:
        os.kill(grandchild, signal.SIGKILL)
        kernel.kill()
        kernel.wait(timeout=10)
        assert kernel.stdout is not None
        kernel.stdout.close()


def test_a_run_claimed_by_a_live_worker_meanwhile_is_not_crashed(
    store: RunStore,
    make_run: MakeRun,
    dead_owner: tuple[int, float | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kiln.store import recovery

    pid, started = dead_owner
    run = make_run(state="queued", owner_pid=pid, owner_host=HOST, owner_started=started)
    judge = same_process

    def claimed_then_judged(owner_pid: int, owner_started: float | None) -> bool | None:
        # A worker picks the queued run up between the recoverer's read and its write.
        me, _, my_start = current_owner()
        store.update_run(run.id, state="running", owner_pid=me, owner_started=my_start)
        return judge(owner_pid, owner_started)

    monkeypatch.setattr(recovery, "same_process", claimed_then_judged)
    assert store.recover_orphans() == []
    got = store.get_run(run.id)
    assert (got.state, got.owner_pid, got.reason) == ("running", os.getpid(), None)
