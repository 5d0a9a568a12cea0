"""Is the Kiln process that owns a run still alive?

A run row carries its owner's pid, host name and process start time. The start time is what
tells a live owner from an unrelated process that was later given the same pid: pids are
recycled, start times are not. Linux exposes it in ``/proc``; elsewhere only "does the pid
exist" can be answered, which is what the fallback does.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
from pathlib import Path

#: ``/proc/stat``'s ``btime`` is whole seconds and can move by one when the clock is adjusted,
#: so two readings of one process's start time may differ by up to a second.
START_TIME_TOLERANCE = 1.0

_PROC = Path("/proc")


@functools.lru_cache(maxsize=1)
def _boot_time() -> float | None:
    try:
        with open(_PROC / "stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after ``comm``, which may hold spaces and parens)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    _, sep, rest = raw.rpartition(")")
    if not sep:
        return None
    return rest.split()


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; ``None`` if unknown.

    ``None`` means the process does not exist or this system has no ``/proc``.
    """
    fields = _proc_stat_fields(pid)
    boot = _boot_time()
    if fields is None or boot is None or len(fields) < 20:
        return None
    try:
        ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
        hertz = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return None
    return round(boot + ticks / hertz, 2)


def current_owner() -> tuple[int, str, float | None]:
    """``(pid, host, start time)`` of this process, as stored in a run's owner columns."""
    pid = os.getpid()
    return pid, socket.gethostname(), process_start_time(pid)


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone: it has exited)."""
    if pid <= 0:
        return False
    fields = _proc_stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def same_process(pid: int, started: float | None) -> bool | None:
    """Whether ``pid`` is still the process that started at ``started``.

    ``False`` when the pid is gone or now belongs to a process with another start time,
    ``True`` when it matches, ``None`` when the pid exists but the start time cannot be compared
    (no ``/proc``, or no start time was recorded).
    """
    if not pid_exists(pid):
        return False
    if started is None:
        return None
    now = process_start_time(pid)
    if now is None:
        return None
    return abs(now - started) <= START_TIME_TOLERANCE


def kill_leftover(
    pid: int, *, started: float | None = None, not_before: float | None = None
) -> str | None:
    """SIGKILL a kernel left behind by a dead run; return what was done, or ``None``.

    The kernel's whole process group goes when the kernel leads its own group (kernels and fork
    children are started in a new session), so the cell's own subprocesses go too. A process in
    our own group is never touched, and one that leads no group is killed alone.

    Two checks guard against pid reuse: ``started`` (the kernel's recorded start time) must match
    when given, and a kernel cannot have started before its run's owner (``not_before``).
    """
    if pid <= 1 or pid == os.getpid() or not pid_exists(pid):
        return None
    now = process_start_time(pid)
    if now is not None:
        if started is not None and abs(now - started) > START_TIME_TOLERANCE:
            return None
        if not_before is not None and now < not_before - START_TIME_TOLERANCE:
            return None
    try:
        pgid = os.getpgid(pid)
        if pgid == os.getpgrp():
            return None
        if pgid == pid:
            os.killpg(pgid, signal.SIGKILL)
            return f"killed the leftover kernel's process group {pgid}"
        os.kill(pid, signal.SIGKILL)
        return f"killed the leftover kernel process {pid}"
    except OSError:
        return None
