"""Processes on Linux: start times, process trees, and the ``prctl`` switches runs rely on.

Shared by the engines (a run's processes are found and killed as a tree when it ends) and by
the store's recovery (what a killed Kiln process left running). It reads ``/proc`` and calls
``prctl(2)`` through ctypes; where either is missing every function answers "unknown" or does
nothing, and callers fall back to what plain signals can do.

Why trees and not process groups: a cell's ``subprocess.Popen(..., start_new_session=True)``
or a double-forked daemon leaves the run's process group and session, so killing the group
misses it. A run's top process is made a *child subreaper* instead (``PR_SET_CHILD_SUBREAPER``):
whatever its descendants orphan is re-parented to it rather than to init, so every process the
run started stays in its tree, where :func:`kill_tree` finds it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: ``/proc/stat``'s ``btime`` is whole seconds and can move by one when the clock is adjusted,
#: so two readings of one process's start time may differ by up to a second.
START_TIME_TOLERANCE = 1.0

_SLACK = START_TIME_TOLERANCE
_PROC = "/proc"
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


# -- prctl ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError, ImportError):
        return None


def prctl(option: int, value: int | bytes) -> bool:
    """``prctl(option, value, 0, 0, 0)`` (bytes go as a C string); False where it is
    unavailable or refused."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def set_name(name: str) -> bool:
    """Name this thread (``comm``: what ``ps``, ``top`` and ``perf`` show; 15 bytes kept)."""
    return prctl(PR_SET_NAME, name.encode()[:15])


def set_parent_death_signal(signum: int) -> bool:
    """Receive ``signum`` when the thread that started this process ends."""
    return prctl(PR_SET_PDEATHSIG, signum)


def set_dumpable(dumpable: bool) -> bool:
    """Non-dumpable: no ptrace, ``/proc/<pid>/mem`` or ``pidfd_getfd`` by other processes of
    the same user (root with CAP_SYS_PTRACE still passes), and no core dumps."""
    return prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_child_subreaper() -> bool:
    """Orphaned descendants re-parent to this process instead of init (see module doc)."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


# -- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    """One line of ``/proc/<pid>/stat``, the fields Kiln uses."""

    pid: int
    #: the executable's name, cut to 15 characters by the kernel
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    #: clock ticks after boot (compare with :func:`start_time` for epoch seconds)
    start_ticks: int


def proc_info(pid: int) -> ProcInfo | None:
    """What ``/proc`` says about ``pid``; None when it does not exist (or there is no /proc)."""
    try:  # os-level: three system calls, not a buffered file's eight (a run checks its child)
        fd = os.open(f"{_PROC}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, 4096)  # one line of a few hundred bytes, read whole at once
        finally:
            os.close(fd)
    except OSError:
        return None
    head, sep, rest = raw.rpartition(b")")  # comm may hold spaces and parentheses
    fields = rest.split()
    if not sep or len(fields) < 20:
        return None
    try:
        return ProcInfo(
            pid=pid,
            comm=head.partition(b"(")[2].decode("utf-8", "replace"),
            state=fields[0].decode("ascii", "replace"),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            start_ticks=int(fields[19]),
        )
    except ValueError:
        return None


def proc_table() -> dict[int, ProcInfo]:
    """Every process this system shows in ``/proc`` (empty without /proc)."""
    table: dict[int, ProcInfo] = {}
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return table
    for entry in entries:
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None:
                table[info.pid] = info
    return table


@functools.lru_cache(maxsize=1)
def _boot_time() -> float | None:
    try:
        with open(f"{_PROC}/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def ticks_to_epoch(ticks: int) -> float | None:
    boot = _boot_time()
    if boot is None:
        return None
    try:
        hertz = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return None
    return round(boot + ticks / hertz, 2)


def start_time(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch; None if unknown or gone."""
    info = proc_info(pid)
    return None if info is None else ticks_to_epoch(info.start_ticks)


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone: it has exited)."""
    if pid <= 0:
        return False
    info = proc_info(pid)
    if info is not None:
        return info.state not in ("Z", "X")
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
    now = start_time(pid)
    if now is None:
        return None
    return abs(now - started) <= START_TIME_TOLERANCE


def is_stopped(pid: int) -> bool:
    """Stopped by a signal (``SIGSTOP``) or held by a tracer: it cannot answer anyone."""
    info = proc_info(pid)
    return info is not None and info.state in ("T", "t")


def has_children() -> bool:
    """Whether this process has any child, running or not yet reaped (one cheap syscall)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


# -- trees ----------------------------------------------------------------------------------


def descendants(root: int, table: dict[int, ProcInfo] | None = None) -> list[int]:
    """Pids below ``root`` (children first), from one reading of ``/proc``."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in found or pid == root:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_tree(root: int, *, include_root: bool = True, rounds: int = 8) -> list[int]:
    """SIGKILL ``root``'s descendants (and ``root``); return the pids signalled.

    The tree is frozen first (SIGSTOP, repeated until a reading of ``/proc`` finds nothing new)
    so that nothing in it can fork a new process between the reading and the kill.
    """
    if root <= 1 or (root == os.getpid() and include_root):
        return []
    frozen: list[int] = []
    if include_root:
        _signal(root, signal.SIGSTOP)
        frozen.append(root)
    for _ in range(rounds):
        new = [pid for pid in descendants(root) if pid not in frozen]
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        frozen.extend(new)
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    return frozen


def kill_members(ids: Iterable[int], *, not_before: float | None = None) -> list[int]:
    """SIGKILL every process whose process group or session is one of ``ids``.

    A process group or session id stays reserved while any process carries it, so members
    found after their leader died still belong to it; ``not_before`` (epoch seconds) spares
    anything that started before the group did, as a guard against a recycled id.
    """
    wanted = {i for i in ids if i > 1} - {os.getpgrp(), os.getsid(0)}
    killed = []
    for info in proc_table().values():
        if info.pgid not in wanted and info.sid not in wanted:
            continue
        if info.pid == os.getpid() or info.state in ("Z", "X"):
            continue
        started = ticks_to_epoch(info.start_ticks)
        if not_before is not None and started is not None and started < not_before - _SLACK:
            continue
        _signal(info.pid, signal.SIGKILL)
        killed.append(info.pid)
    return killed
