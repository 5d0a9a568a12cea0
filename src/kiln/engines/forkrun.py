"""The supervisor's end of one fork-engine run: its channel and the conversation on it.

The run's end is the child's end as a *process*: the supervisor holds a pidfd of the child
(and the warm parent reports the exit too), so a daemon a cell started that kept the run's
socket open cannot delay the verdict. Messages are trusted only from the socket pair the
supervisor created for the run, and only from the child itself: the socket has
``SO_PASSCRED``, so the kernel attaches the writer's pid to every chunk read, and a chunk from
any other process is a protocol error.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kiln.engines import forkproto as proto
from kiln.engines import outcomes
from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    EventSink,
    ExecuteOptions,
    ExecutionOutcome,
    is_clean_exit,
)
from kiln.errors import CellFailure

#: the longest message a child may send (a cell's outputs, images included)
LINE_LIMIT = 512 * 1024 * 1024
_CHUNK = 256 * 1024
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


class RunChannel:
    """Lines from one child, read as they come; each chunk's writer is checked."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid: int | None = None
        self.lines: deque[bytes] = deque()
        self.error: str | None = None
        self.eof = False
        self._buf = bytearray()
        self._scan = 0
        self._chunk = bytearray(_CHUNK)
        self._wake: Callable[[], None] | None = None

    @staticmethod
    def pair() -> tuple[socket.socket, socket.socket]:
        """The supervisor's end (credentials on) and the child's end."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if hasattr(socket, "SO_PASSCRED"):
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        mine.setblocking(False)
        return mine, theirs

    def open(self, pid: int, wake: Callable[[], None]) -> None:
        self.pid = pid
        self._wake = wake
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        self._stop_reading()
        self._wake = None
        self.sock.close()

    def _stop_reading(self) -> None:
        if self._wake is not None and self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def _readable(self) -> None:
        self.read_available()
        if self.eof or self.error is not None:
            self._stop_reading()  # an ended socket stays readable: stop being called for it
        if self._wake is not None:
            self._wake()

    def read_available(self) -> None:
        """What the socket holds now (never waits). A read that does not fill the buffer took
        all there was: the next one would only say so (one system call fewer per wake-up),
        and anything written meanwhile makes the socket readable again."""
        while not self.eof and self.error is None:
            try:
                size, ancillary, _flags, _addr = self.sock.recvmsg_into(
                    [self._chunk], socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error = f"the run's channel failed: {exc}"
                return
            if size == 0:
                self.eof = True
                return
            sender = _sender(ancillary)
            if sender is not None and sender != self.pid:
                self.error = (
                    f"process {sender}, not the run's child {self.pid}, wrote to the run's "
                    "channel (it was refused)"
                )
                return
            self._take(memoryview(self._chunk)[:size])
            if size < len(self._chunk):
                return

    def _take(self, data: memoryview) -> None:
        buf = self._buf
        buf += data
        start = 0
        while (newline := buf.find(b"\n", max(start, self._scan))) >= 0:
            self.lines.append(bytes(buf[start:newline]))
            start = newline + 1
        if start:
            del buf[:start]
        self._scan = len(buf)
        if len(buf) > LINE_LIMIT:
            self.error = (
                "a cell produced more output than Kiln accepts in one message "
                f"({LINE_LIMIT // 2**20} MiB)"
            )


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == getattr(socket, "SCM_CREDENTIALS", -1):
            return int(_UCRED.unpack(data[: _UCRED.size])[0])
    return None


class Conversation:
    """Reads a child's messages, applies them to the notebook, enforces the time limits.

    ``session`` gives the run's process: ``exited`` (a future set when the child's process
    ends), ``kill()`` and ``exit_description()``.
    """

    def __init__(
        self,
        session: Any,
        channel: RunChannel,
        options: ExecuteOptions,
        nb: Any,
        emit: EventSink,
    ) -> None:
        self.session = session
        self.channel = channel
        self.options = options
        self.nb = nb
        self.emit = emit
        self.current: int | None = None
        self.cell_started = 0.0
        self.allowed: list[CellFailure] = []
        self.done = False
        self._wakeup: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _limit(self) -> tuple[float | None, str]:
        now = time.monotonic()
        limits: list[tuple[float, str]] = []
        if self.options.deadline is not None:
            limits.append((self.options.deadline - now, "run"))
        if self.current is not None and self.options.cell_timeout is not None:
            limits.append((self.cell_started + self.options.cell_timeout - now, "cell"))
        if not limits:
            return None, ""
        left, kind = min(limits)
        return max(0.0, left), kind

    async def run(self) -> ExecutionOutcome:
        channel, loop = self.channel, asyncio.get_running_loop()
        self.session.exited.add_done_callback(lambda _f: self.wake())
        while True:
            while channel.lines:
                try:
                    message = proto.decode(channel.lines.popleft(), proto.FROM_CHILD, "run's child")
                except proto.ProtocolError as exc:
                    return self._broken(str(exc))
                outcome = self._handle(message)
                if outcome is not None:
                    return outcome
            if channel.error is not None:
                return self._broken(channel.error)
            if self.session.exited.done():
                channel.read_available()  # all the child wrote before it ended is here now
                if channel.lines or channel.error is not None:
                    continue
                return await self._died()
            left, kind = self._limit()
            if left is not None and left <= 0:
                return self._timed_out(kind)
            # one future that the channel, the child's exit and the time limit all set: a
            # wait costs a future, not asyncio.wait's tasks and callbacks
            self._wakeup = loop.create_future()
            timer = loop.call_later(left, self.wake) if left is not None else None
            try:
                await self._wakeup
            finally:
                self._wakeup = None
                if timer is not None:
                    timer.cancel()

    def _handle(self, message: dict[str, Any]) -> ExecutionOutcome | None:
        kind = message[proto.KIND]
        if kind == proto.CELL_START:
            self.current = int(message[proto.CELL])
            self.cell_started = time.monotonic()
            cell = self.nb["cells"][self.current]
            _put(cell, "outputs", [])
            _put(cell, "execution_count", None)
            self.emit(CellStarted(self.current))
        elif kind == proto.OUTPUT:
            node = _node(message[proto.OUTPUT_NODE])
            index = int(message[proto.CELL])
            _append(self.nb["cells"][index]["outputs"], node)
            self.emit(CellOutput(index, node))
        elif kind == proto.OUTPUTS:
            outputs = [_node(o) for o in message[proto.OUTPUT_LIST]]
            _put(self.nb["cells"][int(message[proto.CELL])], "outputs", outputs)
        elif kind == proto.CELL_END:
            return self._end(message)
        elif kind == proto.DONE:
            self.done = True
            return ExecutionOutcome("ok", allowed_errors=self.allowed)
        elif kind == proto.FATAL:
            return self._stop("dead", f"the run process failed: {message.get(proto.ERROR)}")
        return None

    def _stop(self, status: Any, message: str, **fields: Any) -> ExecutionOutcome:
        self.session.kill()
        fields.setdefault("failed_cell", self.current)
        return ExecutionOutcome(status, message, allowed_errors=self.allowed, **fields)

    def _broken(self, why: str) -> ExecutionOutcome:
        self._finish_cell()
        return self._stop("dead", f"the fork engine's run channel broke its protocol: {why}")

    def _finish_cell(self) -> None:
        if self.current is not None:
            self.emit(CellFinished(self.current, time.monotonic() - self.cell_started, "error"))

    def _end(self, message: dict[str, Any]) -> ExecutionOutcome | None:
        index = int(message[proto.CELL])
        cell = self.nb["cells"][index]
        _put(cell, "outputs", [_node(o) for o in message.get(proto.OUTPUT_LIST) or []])
        _put(cell, "execution_count", message.get(proto.COUNT))
        duration = time.monotonic() - self.cell_started
        self.current = None
        error = message.get(proto.ERROR)
        if not error:
            self.emit(CellFinished(index, duration, "ok"))
            return None
        failure = CellFailure(
            cell_index=index,
            execution_count=cell["execution_count"],
            ename=str(error.get("ename")),
            evalue=str(error.get("evalue", "")),
            traceback=[str(t) for t in error.get("traceback") or []],
            source=str(cell["source"]),
        )
        if is_clean_exit(failure):
            self.emit(CellFinished(index, duration, "ok"))
            return self._stop("ok", outcomes.stopped_early(index), failed_cell=None)
        self.emit(CellFinished(index, duration, "error"))
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            return None  # the cell is expected to raise (nbclient's convention)
        if self.options.memory_limit and failure.ename == "MemoryError":
            text = outcomes.out_of_memory(self.options.memory_limit, index)
            return self._stop("dead", text, failed_cell=index, failure=failure)
        if self.options.allow_errors:
            self.allowed.append(failure)
            return None
        return ExecutionOutcome(
            "error",
            outcomes.cell_raised(index, failure.ename, failure.evalue),
            failed_cell=index,
            failure=failure,
            allowed_errors=self.allowed,
        )

    def _timed_out(self, kind: str) -> ExecutionOutcome:
        self.session.kill()
        index = self.current
        self._finish_cell()
        if kind == "cell":
            text = outcomes.cell_timed_out(index, self.options.cell_timeout)
        else:
            text = outcomes.run_timed_out()
        return ExecutionOutcome(
            "timeout",
            text,
            failed_cell=index,
            timeout_kind="cell" if kind == "cell" else "run",
            allowed_errors=self.allowed,
        )

    async def _died(self) -> ExecutionOutcome:
        index = self.current
        how = await self.session.exit_description()
        self._finish_cell()
        if self.options.memory_limit and any(s in how for s in outcomes.MEMORY_DEATHS):
            text = outcomes.out_of_memory(self.options.memory_limit, index)
        else:
            text = outcomes.kernel_died(index, how)
        return ExecutionOutcome("dead", text, failed_cell=index, allowed_errors=self.allowed)


def _node(output: Mapping[str, Any]) -> dict[str, Any]:
    """An output as the notebook keeps it: a plain dict (readers use item access; nbformat's
    NotebookNode conversion cost a copy of every output, on the supervisor's hot path)."""
    return dict(output)


def _put(cell: Any, key: str, value: Any) -> None:
    """Set a cell's field as given (a NotebookNode's own ``__setitem__`` would convert every
    dict inside ``value`` to a NotebookNode again)."""
    dict.__setitem__(cell, key, value)


def _append(outputs: list[Any], node: Any) -> None:
    """Partial outputs as the child sends them (stream chunks merged like a frontend)."""
    if (
        node.get("output_type") == "stream"
        and outputs
        and outputs[-1].get("output_type") == "stream"
        and outputs[-1].get("name") == node.get("name")
    ):
        outputs[-1]["text"] += node["text"]
    else:
        outputs.append(node)
