"""Starting a warm parent (:mod:`kiln.engines.forkserver`): the process, its control channel
and the environment it started in, before any event loop exists.

:class:`~kiln.engines.forkcontrol.ForkServer` starts one through here when a pool needs it,
or adopts the one a command started early (:func:`start_early`). Kept apart from the
supervisor's asynchronous side so that starting a parent early imports neither asyncio nor
anything else the supervisor needs only later (~25 ms of a cold ``kiln run``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO

from kiln import processes
from kiln.engines.forkserver import BOOT, MARKER


@dataclass
class Spawned:
    """A warm parent's process, started and not yet followed by a ``ForkServer``."""

    proc: subprocess.Popen[bytes]
    #: the supervisor's end of the control channel
    ctl: socket.socket
    #: the environment it was started with (run specs carry changes to it)
    env: dict[str, str]
    stderr: IO[bytes]
    #: when it was started (``time.monotonic()``)
    at: float
    #: the working directory it was started in
    cwd: str


def spawn(python: str) -> Spawned:
    """Start a warm parent for ``python`` (no event loop needed)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = _start_env()
    owner_started = processes.start_time(os.getpid())
    stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the server)
    try:
        proc = subprocess.Popen(
            [
                python,
                "-c",
                BOOT,
                MARKER,
                str(child.fileno()),
                str(os.getpid()),
                str(owner_started if owner_started is not None else ""),
            ],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches Kiln, which decides
        )
    except BaseException:
        parent.close()
        stderr.close()
        raise
    finally:
        child.close()
    parent.setblocking(False)
    return Spawned(proc, parent, env, stderr, time.monotonic(), os.getcwd())


def _start_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    return env


#: warm parents started by :func:`start_early`, by Python executable, until a server adopts one
_early: dict[str, Spawned] = {}


def start_early(python: str) -> None:
    """Start the warm parent for ``python`` now, before any event loop exists: the next
    :class:`~kiln.engines.forkcontrol.ForkServer` for it adopts the process (in ``launch``)
    instead of starting one. A command that will probably run a notebook on the fork engine
    calls this as soon as it knows: the parent's start (Python and IPython, ~0.15 s of CPU)
    then overlaps the command's own imports and preparation instead of following them.

    Call it from the thread that will run the fork engine (a parent dies with the thread
    that started it). A parent is adopted only while this process's environment and working
    directory are still those it was started with (its ``sys.path`` and imports depend on
    them); one nobody adopts is stopped at exit."""
    spawned = _early.get(python)
    if spawned is not None:
        if _still_fits(spawned):
            return
        _discard(_early.pop(python))
    if not _early:
        atexit.register(_stop_early)
    _early[python] = spawn(python)


def take_early(python: str) -> Spawned | None:
    spawned = _early.pop(python, None)
    if spawned is not None and not _still_fits(spawned):
        _discard(spawned)
        return None
    return spawned


def _still_fits(spawned: Spawned) -> bool:
    """Alive, and started in this process's environment and working directory as they are."""
    try:
        here = os.getcwd()
    except OSError:
        return False
    return spawned.proc.poll() is None and spawned.cwd == here and spawned.env == _start_env()


def _discard(spawned: Spawned) -> None:
    spawned.ctl.close()  # the parent reads EOF and exits
    if spawned.proc.poll() is None:
        spawned.proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        spawned.proc.wait(timeout=5)
    spawned.stderr.close()


def _stop_early() -> None:
    while _early:
        _discard(_early.popitem()[1])
