"""ForkEngine: fresh state at warm speed.

A warm parent per Python environment (:mod:`kiln.engines.forkserver`) has IPython ready and
has imported what notebooks import; every run is a child forked from it, so no run sees
another run's variables or module state, and no run pays for starting Python and IPython.

The supervisor side (this module) lives in Kiln's process: it owns the warm parents
(:class:`ForkPool`, bounded number of concurrent children, clean shutdown), talks to each
child over its own socket, enforces timeouts by killing the child's process group, and turns
what it hears into the engine events every engine emits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Any

from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    EventSink,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
    is_clean_exit,
)
from kiln.engines.imports import preloadable
from kiln.errors import CellFailure, EngineError

#: the longest line a child may send (a cell's outputs, images included)
_LINE_LIMIT = 512 * 1024 * 1024


class ForkServer:
    """One warm parent process and the messages it sends back."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: socket.socket | None = None
        self.info: dict[str, Any] = {}
        self.preloaded: set[str] = set()
        self.failed: set[str] = set()
        self.broken: str | None = None
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._waiters: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the server)

    def launch(self) -> None:
        """Start the process (returns at once; :meth:`ready` waits for it)."""
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env.pop("PYTHONSTARTUP", None)
        self.proc = subprocess.Popen(
            [self.python, "-m", "kiln.engines.forkserver", str(child.fileno())],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches Kiln, which decides
        )
        child.close()
        parent.setblocking(False)
        self.ctl = parent
        self._hello = loop.create_future()
        loop.add_reader(parent.fileno(), self._on_message)

    async def ready(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self._hello is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._hello), timeout)
        except asyncio.TimeoutError:
            raise EngineError(
                f"the fork engine's warm parent did not start in {timeout:g}s"
            ) from None

    def _on_message(self) -> None:
        assert self.ctl is not None
        while True:
            try:
                data = self.ctl.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._gone()
                return
            message = json.loads(data)
            kind = message.get("t")
            if kind == "hello":
                self.info = message
                if self._hello is not None and not self._hello.done():
                    self._hello.set_result(message)
            elif kind == "exit":
                self._exits[str(message.get("id"))] = message
                self._resolve(("exit", str(message.get("id"))), message)
            elif kind in ("forked", "refused"):
                self._resolve(("forked", str(message.get("id"))), message)
            elif kind == "preloaded":
                self._resolve(("preloaded", ""), message)

    def _resolve(self, key: tuple[str, str], message: dict[str, Any]) -> None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def _gone(self) -> None:
        detail = self.stderr_tail()
        self.broken = "the fork engine's warm parent exited" + (f": {detail}" if detail else "")
        loop = asyncio.get_running_loop()
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.ctl.fileno())
        error = EngineError(self.broken)
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return " | ".join(lines[-3:])
        return ""

    async def _request(
        self, key: tuple[str, str], message: dict[str, Any], fds: list[int] | None = None
    ) -> dict[str, Any]:
        if self.broken or self.ctl is None:
            raise EngineError(self.broken or "the fork engine's warm parent is not running")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        payload = json.dumps(message).encode("utf-8")
        socket.send_fds(self.ctl, [payload], fds or [])
        return await waiter

    async def preload(self, modules: list[str]) -> None:
        """Import modules in the warm parent (once each; failures are the child's business)."""
        wanted = [m for m in modules if m not in self.preloaded and m not in self.failed]
        if not wanted:
            return
        async with self._lock:
            reply = await self._request(("preloaded", ""), {"cmd": "preload", "modules": wanted})
        self.preloaded.update(reply.get("loaded", []))
        self.failed.update(reply.get("failed", {}))
        if reply.get("threads", 1) > 1:
            self.broken = f"importing {', '.join(wanted)} started a thread in the warm parent"

    async def fork(self, run_sock: socket.socket) -> tuple[str, int]:
        run_id = uuid.uuid4().hex
        async with self._lock:
            reply = await self._request(
                ("forked", run_id), {"cmd": "run", "id": run_id}, [run_sock.fileno()]
            )
        if reply.get("t") == "refused":
            self.broken = str(reply.get("error"))
            raise EngineError(f"the fork engine refused the run: {reply.get('error')}")
        return run_id, int(reply["pid"])

    async def exit_of(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        if run_id in self._exits:
            return self._exits.pop(run_id)
        if self.broken:
            return None
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[("exit", run_id)] = waiter
        with contextlib.suppress(asyncio.TimeoutError, EngineError):
            return await asyncio.wait_for(waiter, timeout)
        return None

    def forget(self, run_id: str) -> None:
        self._exits.pop(run_id, None)
        self._waiters.pop(("exit", run_id), None)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.ctl.fileno())
            with contextlib.suppress(OSError):
                self.ctl.send(json.dumps({"cmd": "stop"}).encode())
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.01)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self._stderr.close()


class ForkPool:
    """Warm parents, one per Python executable, and a bound on concurrent children.

    The reusable piece for everything that runs many notebooks (sweeps, the server, the
    scheduler, pipelines): create one, run sessions through it, ``await close()``.
    """

    def __init__(self, *, max_children: int | None = None) -> None:
        self.max_children = max_children or max(2, os.cpu_count() or 2)
        self._servers: dict[str, ForkServer] = {}
        self._slots: asyncio.Semaphore | None = None
        self._stopping: set[asyncio.Future[None]] = set()
        self.refused_modules: set[str] = set()

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_children)
        return self._slots

    def server(self, python: str) -> ForkServer:
        """The warm parent for ``python``, launched (not yet ready) if needed."""
        server = self._servers.get(python)
        if server is not None and server.broken:
            stopping = asyncio.ensure_future(server.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            server = None
        if server is None:
            server = ForkServer(python)
            server.launch()
            self._servers[python] = server
        return server

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            await server.stop()


class ForkEngine:
    """Run each notebook in a child forked from a warm parent (Linux, Python kernels)."""

    name = "fork"

    def __init__(self, pool: ForkPool | None = None, *, python: str | None = None) -> None:
        self.pool = pool or ForkPool()
        self._owns_pool = pool is None
        self.python = python or sys.executable

    def session(self, options: ExecuteOptions) -> ForkSession:
        return ForkSession(self, options)

    async def aclose(self) -> None:
        if self._owns_pool:
            await self.pool.close()


class ForkSession:
    """One run: a child forked from the warm parent."""

    def __init__(self, engine: ForkEngine, options: ExecuteOptions) -> None:
        self.engine = engine
        self.options = options
        self.pid: int | None = None
        self.run_id: str | None = None
        self.server: ForkServer | None = None
        self.sock: socket.socket | None = None
        self._starting: asyncio.Task[None] | None = None
        self._slot = False
        self._done = False

    async def start(self) -> None:
        """Launch the warm parent if needed; the fork itself happens in the background."""
        self.server = self.engine.pool.server(self.engine.python)
        self._starting = asyncio.ensure_future(self._fork())

    async def _fork(self) -> None:
        assert self.server is not None
        server = self.server
        await server.ready(timeout=self.options.startup_timeout)
        await server.preload(preloadable(self.options.preload))
        await self.engine.pool.slots.acquire()
        self._slot = True
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.run_id, self.pid = await server.fork(theirs)
        finally:
            theirs.close()
        self.sock = mine

    async def execute(self, nb: Any, emit: EventSink) -> ExecutionOutcome:
        if self._starting is None:
            await self.start()
        assert self._starting is not None and self.server is not None
        await self._starting
        assert self.sock is not None
        reader, writer = await asyncio.open_unix_connection(sock=self.sock, limit=_LINE_LIMIT)
        options = self.options
        cells = [
            {
                "index": i,
                "source": str(c.source),
                "raises": "raises-exception" in c.get("metadata", {}).get("tags", []),
            }
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code"
            and str(c.source).strip()
            and options.skip_tag not in c.get("metadata", {}).get("tags", [])
        ]
        env = dict(os.environ) | dict(options.env or {})
        spec = {
            "cells": cells,
            "allow_errors": options.allow_errors,
            "cwd": str(options.cwd) if options.cwd else None,
            "env": env,
            "argv": list(options.argv) or [""],
            "memory_limit": options.memory_limit,
        }
        writer.write((json.dumps(spec) + "\n").encode("utf-8"))
        await writer.drain()
        info = self.server.info
        emit(
            KernelReady(
                kernel_name=f"{options.kernel_name} (fork)",
                language="python",
                kernel_version=f"ipython {info.get('ipython')}",
                language_version=info.get("python"),
                pid=self.pid,
            )
        )
        try:
            return await _Conversation(self, nb, emit, reader).run()
        finally:
            writer.close()

    def kill(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    async def exit_description(self) -> str:
        if self.server is None or self.run_id is None:
            return "the run process ended"
        info = await self.server.exit_of(self.run_id, timeout=2.0)
        if not info:
            return "the run process ended without reporting"
        if info.get("signal"):
            return f"the run process was killed by signal {info['signal']} ({info['signal_name']})"
        return f"the run process exited with code {info.get('code')}"

    async def close(self, *, graceful: bool) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        self.kill()  # the child exits by itself; this reaches what it left running
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.server is not None and self.run_id is not None:
            self.server.forget(self.run_id)
        if self._slot:
            self._slot = False
            self.engine.pool.slots.release()


class _Conversation:
    """Reads a child's messages, applies them to the notebook, enforces the time limits."""

    def __init__(
        self, session: ForkSession, nb: Any, emit: EventSink, reader: asyncio.StreamReader
    ) -> None:
        self.session = session
        self.options = session.options
        self.nb = nb
        self.emit = emit
        self.reader = reader
        self.current: int | None = None
        self.cell_started = 0.0
        self.allowed: list[CellFailure] = []

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
        while True:
            left, kind = self._limit()
            try:
                line = await asyncio.wait_for(self.reader.readline(), left)
            except asyncio.TimeoutError:
                return self._timed_out(kind)
            except (ValueError, asyncio.LimitOverrunError):
                self.session.kill()
                return ExecutionOutcome(
                    "dead",
                    "a cell produced more output than Kiln accepts "
                    f"in one message ({_LINE_LIMIT // 2**20} MiB)",
                    failed_cell=self.current,
                    allowed_errors=self.allowed,
                )
            if not line:
                return await self._died()
            outcome = self._handle(json.loads(line))
            if outcome is not None:
                return outcome

    def _handle(self, message: dict[str, Any]) -> ExecutionOutcome | None:
        kind = message.get("t")
        if kind == "start":
            self.current = int(message["cell"])
            self.cell_started = time.monotonic()
            cell = self.nb.cells[self.current]
            cell.outputs = []
            cell.execution_count = None
            self.emit(CellStarted(self.current))
        elif kind == "out":
            node = _node(message["o"])
            cell = self.nb.cells[int(message["cell"])]
            _append(cell.outputs, node)
            self.emit(CellOutput(int(message["cell"]), node))
        elif kind == "set":
            self.nb.cells[int(message["cell"])].outputs = [_node(o) for o in message["outputs"]]
        elif kind == "end":
            return self._end(message)
        elif kind == "done":
            return ExecutionOutcome("ok", allowed_errors=self.allowed)
        elif kind == "fatal":
            self.session.kill()
            return ExecutionOutcome(
                "dead",
                f"the run process failed: {message.get('error')}",
                failed_cell=self.current,
                allowed_errors=self.allowed,
            )
        return None

    def _end(self, message: dict[str, Any]) -> ExecutionOutcome | None:
        index = int(message["cell"])
        cell = self.nb.cells[index]
        cell.outputs = [_node(o) for o in message.get("outputs", [])]
        cell.execution_count = message.get("count")
        duration = time.monotonic() - self.cell_started
        self.current = None
        error = message.get("error")
        if not error:
            self.emit(CellFinished(index, duration, "ok"))
            return None
        failure = CellFailure(
            cell_index=index,
            execution_count=cell.execution_count,
            ename=str(error.get("ename")),
            evalue=str(error.get("evalue", "")),
            traceback=[str(t) for t in error.get("traceback", [])],
            source=str(cell.source),
        )
        if is_clean_exit(failure):
            self.emit(CellFinished(index, duration, "ok"))
            self.session.kill()
            return ExecutionOutcome(
                "ok", f"stopped early by SystemExit in cell {index}", allowed_errors=self.allowed
            )
        self.emit(CellFinished(index, duration, "error"))
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            return None  # the cell is expected to raise (nbclient's convention)
        if self.options.memory_limit and failure.ename == "MemoryError":
            self.session.kill()
            return ExecutionOutcome(
                "dead",
                _memory_message(self.options, index),
                failed_cell=index,
                failure=failure,
                allowed_errors=self.allowed,
            )
        if self.options.allow_errors:
            self.allowed.append(failure)
            return None
        return ExecutionOutcome(
            "error",
            f"cell {index} raised {failure.ename}: {failure.evalue}",
            failed_cell=index,
            failure=failure,
            allowed_errors=self.allowed,
        )

    def _timed_out(self, kind: str) -> ExecutionOutcome:
        self.session.kill()
        index = self.current
        if index is not None:
            self.emit(CellFinished(index, time.monotonic() - self.cell_started, "error"))
        if kind == "cell":
            message = (
                f"cell {index} did not finish within the cell timeout of "
                f"{self.options.cell_timeout:g}s"
            )
        else:
            message = "the run did not finish within its time limit (--timeout)"
        return ExecutionOutcome(
            "timeout",
            message,
            failed_cell=index,
            timeout_kind="cell" if kind == "cell" else "run",
            allowed_errors=self.allowed,
        )

    async def _died(self) -> ExecutionOutcome:
        index = self.current
        how = await self.session.exit_description()
        if index is not None:
            self.emit(CellFinished(index, time.monotonic() - self.cell_started, "error"))
        where = f" while running cell {index}" if index is not None else ""
        if self.options.memory_limit and any(
            s in how for s in ("SIGKILL", "SIGSEGV", "SIGABRT", "SIGBUS")
        ):
            return ExecutionOutcome(
                "dead",
                _memory_message(self.options, index),
                failed_cell=index,
                allowed_errors=self.allowed,
            )
        return ExecutionOutcome(
            "dead", f"the kernel died{where}: {how}", failed_cell=index, allowed_errors=self.allowed
        )


def _memory_message(options: ExecuteOptions, index: int | None) -> str:
    limit = options.memory_limit or 0
    where = f" in cell {index}" if index is not None else ""
    return (
        f"the run was stopped for memory: it went over its memory limit of "
        f"{_human_bytes(limit)}{where}"
    )


def _human_bytes(n: int) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:g}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def _node(output: Mapping[str, Any]) -> Any:
    from nbformat import from_dict

    return from_dict(dict(output))


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
