"""The supervisor's handle on one warm parent (:mod:`kiln.engines.forkserver`).

It launches the process, sends it requests (pre-import, fork, sweep, stop) over the control
channel and reads what it reports. The parent answers requests one at a time, in order, so
answers are matched to requests by position; a request whose waiter gave up (its run timed
out) still gets its answer, which is then dropped.

Every wait has a clock in this process: a parent that does not start, hangs in an import, or
stops answering (stopped by a signal, held by a tracer, wedged) is killed and marked broken,
and whoever waited gets :class:`ParentLost` with the reason; the pool then starts a new parent
for the next run. Children already running are not touched: their sessions watch them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

from kiln import processes
from kiln.engines import forkproto as proto
from kiln.engines import forkspawn

#: how often, while requests are pending, the parent is checked for being able to answer
_WATCH_EVERY = 0.25
#: how long a parent asked to stop may take to exit before it is killed (seconds)
_STOP_GRACE = 2.0


class ParentLost(Exception):
    """The warm parent died, stopped answering, or broke the protocol (the reason is the text)."""


@dataclass
class Preloaded:
    """What a pre-import did."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: the project's own modules: each child imports them
    local: list[str] = field(default_factory=list)
    #: the module whose import started a thread (the parent is replaced)
    threaded: str | None = None


class ForkServer:
    """One warm parent process and the messages it sends back."""

    def __init__(
        self,
        python: str,
        *,
        start_timeout: float,
        preload_timeout: float,
        reply_timeout: float,
    ) -> None:
        self.python = python
        self.start_timeout = start_timeout
        self.preload_timeout = preload_timeout
        self.reply_timeout = reply_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: socket.socket | None = None
        self.info: dict[str, Any] = {}
        #: the environment the parent was started with (run specs carry changes to it)
        self.env: dict[str, str] = {}
        self.broken: str | None = None
        #: the module being pre-imported, while one is
        self.importing: str | None = None
        #: modules this parent imported, or failed to import (a child imports those itself)
        self.tried: set[str] = set()
        #: the module whose import the parent was killed in, if that is how it was lost
        self.hung: str | None = None
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        #: requests sent and not answered yet, oldest first: (answer, what the parent is doing)
        self._pending: deque[tuple[asyncio.Future[dict[str, Any]], str]] = deque()
        #: when the oldest pending request must have been answered (or progressed) by
        self._budget_end = 0.0
        self._watch: asyncio.TimerHandle | None = None
        self._exits: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: numbers the runs forked by this parent (ids between the two processes only)
        self._forks = itertools.count(1)
        self._start_timer: asyncio.TimerHandle | None = None
        #: the parent's standard error (a temporary file, from launch until stop)
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def launch(self) -> None:
        """Start the process, or adopt the one :func:`start_early` started for this Python
        (returns at once; :meth:`ready` waits for it)."""
        loop = asyncio.get_running_loop()
        spawned = forkspawn.take_early(self.python) or forkspawn.spawn(self.python)
        self.proc, self.env = spawned.proc, spawned.env
        self._stderr = spawned.stderr
        self.ctl = spawned.ctl
        self._hello = loop.create_future()
        loop.add_reader(self.ctl.fileno(), self._on_readable)
        # the clock started with the process (an early one has been starting for a while)
        left = self.start_timeout - (time.monotonic() - spawned.at)
        self._start_timer = loop.call_later(max(left, 0.0), self._start_expired)

    def _start_expired(self) -> None:
        if self._hello is not None and not self._hello.done():
            self.fail(f"the fork engine's warm parent did not start within {self.start_timeout:g}s")

    async def ready(self) -> dict[str, Any]:
        """Wait until the parent said hello; :class:`ParentLost` if it never will (a parent
        lost after its hello fails the requests made to it instead)."""
        assert self._hello is not None
        return await asyncio.shield(self._hello)

    # -- reading ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self.ctl is not None
        while self.ctl is not None:
            try:
                data = self.ctl.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                detail = self.stderr_tail()
                why = f": {detail}" if detail else ""
                self.fail(f"the fork engine's warm parent exited{why}")
                return
            try:
                self._dispatch(proto.decode(data, proto.FROM_PARENT, "fork engine's warm parent"))
            except proto.ProtocolError as exc:
                self.fail(f"protocol error: {exc}")
                return

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg[proto.KIND]
        if kind == proto.HELLO:
            self.info = msg
            if self._start_timer is not None:
                self._start_timer.cancel()
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(msg)
        elif kind == proto.IMPORTING:
            self.importing = str(msg.get(proto.MODULE))
            self._budget_end = time.monotonic() + self.preload_timeout
        elif kind == proto.EXITED:
            # only runs still followed (a forgotten run's report is dropped)
            waiter = self._exits.get(str(msg.get(proto.RUN_ID)))
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
        elif not self._pending:
            self.fail(f"protocol error: an answer ({kind}) to no request")
        else:  # PRELOADED, FORKED, REFUSED: the answer to the oldest request
            if kind == proto.PRELOADED:
                self.importing = None
            answer, _ = self._pending.popleft()
            if not answer.done():
                answer.set_result(msg)
            self._budget_end = time.monotonic() + self.reply_timeout  # the next one's turn

    def _check(self) -> None:
        """While requests are pending: is the parent able to answer, and in time?"""
        self._watch = None
        if not self._pending or self.proc is None or self.broken:
            return
        _, doing = self._pending[0]
        if self.importing:
            doing = f"importing {self.importing}"
        if processes.is_stopped(self.proc.pid):
            self.fail(f"the fork engine's warm parent was stopped (by a signal?) while {doing}")
        elif time.monotonic() > self._budget_end:
            if self.importing:
                self.hung = self.importing
                self.fail(
                    f"importing {self.importing} in the fork engine's warm parent did not "
                    f"finish within {self.preload_timeout:g}s"
                )
            else:
                self.fail(f"the fork engine's warm parent stopped answering while {doing}")
        else:
            self._watch = asyncio.get_running_loop().call_later(_WATCH_EVERY, self._check)

    def exit_future(self, run_id: str) -> asyncio.Future[dict[str, Any]]:
        """Set to the parent's report when it reaps child ``run_id`` (followed from its fork
        until :meth:`forget`)."""
        waiter = self._exits.get(run_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            waiter.cancel()  # not followed: nothing will come
        return waiter

    # -- failing ---------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Give up on this parent: kill it and tell everyone waiting why."""
        if self.broken is None:
            self.broken = reason
        for timer in (self._start_timer, self._watch):
            if timer is not None:
                timer.cancel()
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.ctl.fileno())
            self.ctl.close()
            self.ctl = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # its children are left to their sessions
        error = ParentLost(self.broken)
        waiters = [self._hello, *(answer for answer, _ in self._pending)]
        self._pending.clear()
        for waiter in waiters:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: nobody may be waiting any more
        for exit_waiter in self._exits.values():
            exit_waiter.cancel()
        self._exits.clear()

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return " | ".join(lines[-3:])
        return ""

    # -- requests --------------------------------------------------------------------------

    async def _request(
        self, msg: dict[str, Any], doing: str, fds: list[int] | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its answer (:class:`ParentLost` if it never comes)."""
        if self.broken or self.ctl is None:
            raise ParentLost(self.broken or "the fork engine's warm parent is not running")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        if not self._pending:
            self._budget_end = time.monotonic() + self.reply_timeout
        self._pending.append((answer, doing))
        if self._watch is None:
            self._watch = loop.call_later(_WATCH_EVERY, self._check)
        socket.send_fds(self.ctl, [proto.encode(msg)], fds or [])
        # awaited directly: a cancelled wait cancels ``answer``, which the reader then skips
        # (a shield would cost the loop two more callbacks per request)
        return await answer

    async def preload(self, modules: list[str], cwd: str, *, safe_path: bool) -> Preloaded:
        """Pre-import ``modules`` as a run in ``cwd`` resolves them (see
        :mod:`kiln.engines.imports`). A module whose import outlasts ``preload_timeout`` gets
        the parent killed; :class:`ParentLost` says which one (:attr:`importing`)."""
        reply = await self._request(
            {
                proto.KIND: proto.PRELOAD,
                proto.MODULES: modules,
                proto.CWD: cwd,
                proto.SAFE_PATH: safe_path,
            },
            "pre-importing",
        )
        return Preloaded(
            loaded=list(reply.get(proto.LOADED) or []),
            failed=dict(reply.get(proto.FAILED) or {}),
            local=list(reply.get(proto.LOCAL) or []),
            threaded=reply.get(proto.THREADED),
        )

    async def fork(self, run_sock: socket.socket, *, others: int = 0) -> tuple[str, int]:
        """Fork a child for a run that talks over ``run_sock``; its run id and pid. ``others``:
        how many other runs are forking or running (the parent warms a spare up only when
        none is).

        The pid is checked: it must be this parent's child (or already gone).
        """
        run_id = f"run-{next(self._forks)}"
        reply = await self._request(
            {proto.KIND: proto.RUN, proto.RUN_ID: run_id, proto.OTHERS: others},
            "forking a run",
            [run_sock.fileno()],
        )
        if reply[proto.KIND] != proto.FORKED or reply.get(proto.RUN_ID) != run_id:
            self.fail(f"the fork engine's warm parent refused the run: {reply.get(proto.ERROR)}")
            raise ParentLost(str(self.broken))
        self._exits[run_id] = asyncio.get_running_loop().create_future()
        return run_id, int(reply[proto.PID])

    def check_child(self, pid: int) -> float | None:
        """A reported child must be this parent's (or already gone): else the parent is lost.
        Returns when the child started (None once it is gone), from the same reading."""
        info = processes.proc_info(pid)
        if info is not None and info.ppid != self.pid:
            self.fail(f"the fork engine's warm parent reported pid {pid}, which is not its child")
            raise ParentLost(str(self.broken))
        return None if info is None else processes.ticks_to_epoch(info.start_ticks)

    def sweep(self) -> None:
        """Ask the parent to kill what dead children left re-parented to it (no answer)."""
        if self.ctl is not None and not self.broken:
            with contextlib.suppress(OSError):
                self.ctl.send(proto.encode({proto.KIND: proto.SWEEP}))

    async def exit_of(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """How child ``run_id`` exited, as the parent reaped it (None if it cannot say)."""
        if self.broken:
            return None
        waiter = self.exit_future(run_id)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            return None
        except asyncio.CancelledError:
            if waiter.cancelled():  # the parent was lost meanwhile
                return None
            raise

    def forget(self, run_id: str) -> None:
        waiter = self._exits.pop(run_id, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for timer in (self._start_timer, self._watch):
            if timer is not None:
                timer.cancel()
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.ctl.fileno())
            with contextlib.suppress(OSError):
                self.ctl.send(proto.encode({proto.KIND: proto.STOP}))
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
            await _exit_of(self.proc, _STOP_GRACE)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()


async def _exit_of(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``proc`` has exited, at most ``timeout`` seconds: woken by its pidfd the
    moment it does (a command's last act is stopping its warm parent, which takes a few
    milliseconds; polling added up to one interval to every command), else by polling."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfds here, or the process is gone already
        end = loop.time() + timeout
        while proc.poll() is None and loop.time() < end:
            await asyncio.sleep(0.01)
        return
    gone: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await asyncio.wait_for(gone, timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.poll()  # reap it
