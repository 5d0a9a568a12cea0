"""Is the Kiln process that owns a run still alive?

A run row carries its owner's pid, host name and process start time. The start time is what
tells a live owner from an unrelated process that was later given the same pid: pids are
recycled, start times are not. Linux exposes it in ``/proc``; elsewhere only "does the pid
exist" can be answered, which is what the fallback does.
"""

from __future__ import annotations

import os
import socket

from kiln.processes import (
    START_TIME_TOLERANCE,
    kill_members,
    kill_tree,
    pid_exists,
    same_process,
    start_time,
)

__all__ = [
    "START_TIME_TOLERANCE",
    "current_owner",
    "kill_leftover",
    "pid_exists",
    "process_start_time",
    "same_process",
]


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; ``None`` if unknown.

    ``None`` means the process does not exist or this system has no ``/proc``.
    """
    return start_time(pid)


def current_owner() -> tuple[int, str, float | None]:
    """``(pid, host, start time)`` of this process, as stored in a run's owner columns
    (read once per process: every run records it)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:  # a forked child is another owner
        _owner = (pid, socket.gethostname(), process_start_time(pid))
    return _owner


_owner: tuple[int, str, float | None] | None = None


def kill_leftover(
    pid: int, *, started: float | None = None, not_before: float | None = None
) -> str | None:
    """SIGKILL what a dead run left running; return what was done, or ``None``.

    ``pid`` is the run's kernel (or fork child). Kernels and fork children start a new session,
    so ``pid`` is also the id of the run's process group and session. While the kernel lives,
    it goes with every process below it (a subreaper, it holds even the cell's daemons) and the
    members of its group. When it has exited already, the members of its group and session
    that remain (a cell's ``sleep 300``) still go. A process in our own group is never touched.

    Two checks guard against pid reuse: ``started`` (the kernel's recorded start time) must match
    when given, and a kernel cannot have started before its run's owner (``not_before``).
    """
    if pid <= 1 or pid == os.getpid():
        return None
    if not pid_exists(pid):
        # the group id stays reserved while a member lives: members found are the kernel's
        killed = kill_members([pid], not_before=started if started is not None else not_before)
        if not killed:
            return None
        return (
            f"killed {len(killed)} leftover process(es) of the exited kernel's process group {pid}"
        )
    now = start_time(pid)
    if now is not None:
        if started is not None and abs(now - started) > START_TIME_TOLERANCE:
            return None
        if not_before is not None and now < not_before - START_TIME_TOLERANCE:
            return None
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return None
    if pgid == os.getpgrp():
        return None
    kill_tree(pid)
    if pgid == pid:
        kill_members([pid], not_before=now)
        return f"killed the leftover kernel's process group {pgid}"
    return f"killed the leftover kernel process {pid}"
