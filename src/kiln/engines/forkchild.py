"""The forked child: one run, in a fresh copy of the warm parent, then ``os._exit``.

The child reads its run spec (cells, working directory, environment, argv, memory limit)
from the socket it inherited, executes the cells in the pre-made IPython shell and reports
each cell's start, outputs and end as JSON lines. It puts itself in a new session (its own
process group, so a timeout kills the cell's subprocesses too), captures what is written to
file descriptors 1 and 2 (subprocesses, C libraries) as well as ``sys.stdout``/``sys.stderr``,
and never returns to the parent's code.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import signal
import socket
import sys
import threading
from typing import Any, NoReturn

from kiln.engines import forkshell
from kiln.engines.forkshell import Channel, KilnShell, Outputs, StreamFile, Streams


class FdCapture:
    """Route file descriptors 1 and 2 into the cell's streams (an IO thread reads them)."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.fds: dict[int, str] = {}
        self.decoders: dict[int, Any] = {}
        self.lock = threading.Lock()
        for target, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, target)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self.fds[read_end] = name
            self.decoders[read_end] = codecs.getincrementaldecoder("utf-8")("replace")
        self.thread = threading.Thread(target=self._loop, name="kiln-io", daemon=True)
        self.thread.start()

    def _read_available(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            self.streams.write(self.fds[fd], self.decoders[fd].decode(data))

    def _loop(self) -> None:
        fds = list(self.fds)
        while True:
            ready, _, _ = select.select(fds, [], [], 0.1)
            with self.lock:
                for fd in ready:
                    self._read_available(fd)
            self.streams.flush()

    def pull(self) -> None:
        """What subprocesses already wrote goes first: called before each Python-level write
        so that ``print``, ``os.system``, ``print`` keeps its order."""
        with self.lock:
            for fd in self.fds:
                self._read_available(fd)

    def drain(self) -> None:
        """Everything written to fds 1/2 so far, into the streams (called at cell end)."""
        _flush_c_stdio()
        with self.lock:
            for fd in self.fds:
                self._read_available(fd)
        self.streams.flush()


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None)
    except (OSError, AttributeError):
        return None


_LIBC = _libc()  # loaded once in the warm parent, not in every child


def _flush_c_stdio() -> None:
    if _LIBC is not None:
        with contextlib.suppress(AttributeError, OSError):
            _LIBC.fflush(None)


def _stdin_unavailable(prompt: object = "") -> str:
    from IPython.core.error import StdinNotImplementedError

    raise StdinNotImplementedError(
        "input() was called, but a Kiln run has no one to answer it; pass the value as a "
        "parameter instead"
    )


def _apply_spec(spec: dict[str, Any]) -> None:
    limit = spec.get("memory_limit")
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    env = spec.get("env")
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    # what ipykernel does: figures are shown inline unless the run chose a backend
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    sys.argv = list(spec.get("argv") or [""])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def child_main(sock_fd: int, shell: KilnShell) -> NoReturn:
    """Run one notebook's cells and exit; never returns."""
    status = 0
    channel: Channel | None = None
    try:
        os.setsid()
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        channel = Channel(socket.socket(fileno=sock_fd))
        spec = channel.receive()
        _apply_spec(spec)
        _run_cells(channel, shell, spec)
    except BaseException as exc:  # report anything that breaks the child itself
        status = 1
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.send({"t": "fatal", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _run_cells(channel: Channel, shell: KilnShell, spec: dict[str, Any]) -> None:
    import builtins

    outputs = Outputs(channel)
    streams = Streams(outputs)
    forkshell._outputs = outputs
    capture = FdCapture(streams)
    streams.before_write = capture.pull
    sys.stdout = StreamFile(streams, "stdout", 1)
    sys.stderr = StreamFile(streams, "stderr", 2)
    builtins.input = _stdin_unavailable
    channel.send({"t": "ready", "pid": os.getpid()})
    allow_errors = bool(spec.get("allow_errors"))
    for cell in spec["cells"]:
        index = int(cell["index"])
        outputs.begin(index)
        count = shell.execution_count
        shell.last_error = None
        channel.send({"t": "start", "cell": index, "count": count})
        result = shell.run_cell(cell["source"], store_history=True)
        capture.drain()
        error = None
        if not result.success:
            error = shell.last_error or _error_from(result)
        channel.send(
            {
                "t": "end",
                "cell": index,
                "count": count,
                "outputs": outputs.cells.get(index, []),
                "error": error,
            }
        )
        if error is not None and not allow_errors and not cell.get("raises"):
            break
    capture.drain()
    channel.send({"t": "done"})


def _error_from(result: Any) -> dict[str, Any]:
    exc = result.error_in_exec or result.error_before_exec
    return {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
