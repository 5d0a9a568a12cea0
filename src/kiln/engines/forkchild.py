"""The forked child: one run, in a fresh copy of the warm parent, then ``os._exit``.

The child reads its run spec (cells, working directory, environment, argv, memory limit)
from the socket it inherited, executes the cells in the pre-made IPython shell and reports
each cell's start, outputs and end (messages in :mod:`kiln.engines.forkproto`). It captures
what is written to file descriptors 1 and 2 (subprocesses, C libraries) as well as
``sys.stdout``/``sys.stderr``, and never returns to the parent's code.

What it sets up first, and why:

* the name ``kiln-run`` (``PR_SET_NAME``), so ``ps``, ``top`` and ``perf`` tell it from the
  warm parent;
* a new session (its own process group), so a timeout's kill reaches the cell's subprocesses;
* a child subreaper (``PR_SET_CHILD_SUBREAPER``): processes the run starts in a new session,
  or daemonises by double-forking, re-parent to the child instead of init, so the run's end
  finds and kills them (:func:`kiln.processes.kill_tree`) before it reports ``done``;
* dumpable again: it inherits the warm parent's non-dumpable flag, which would hide its own
  ``/proc/self/environ`` and ``/proc/self/io`` from it as a non-root user, and block debuggers
  and core dumps a kernel would allow. The parent stays protected: ptrace checks look at the
  *target's* flag, and the parent's stays off;
* only its own socket: the parent's control socket and wake-up pipe are closed, and the run's
  socket is close-on-exec, so commands the cells run do not inherit it. A process the run
  forks without exec (``os.fork``, multiprocessing) drops the socket too and writes to the
  captured file descriptors instead (``_detach``). The supervisor accepts the run's messages
  from this process only (it checks the sender of each chunk).

If the supervisor goes away (its end of the socket closes), the child kills what it started
and exits: a run does not outlive its Kiln process.

A child is either forked for its run (:func:`child_main`) or forked ahead as the warm parent's
spare (:func:`spare_main`), which does the set-up above and (unless runs are coming back to
back) a warm-up before any run exists, then waits to be handed one.
"""

from __future__ import annotations

import _signal
import _thread
import codecs
import contextlib
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Any, NoReturn

from kiln import processes
from kiln.engines import forkproto as proto
from kiln.engines import forkshell
from kiln.engines.forkshell import Channel, KilnShell, Outputs, StreamFile, Streams
from kiln.engines.imports import run_sys_path, shadowed
from kiln.engines.outcomes import error_output

#: what ``ps``, ``top`` and ``perf`` call a run's process (and a spare), unlike the warm parent
RUN_PROCESS_NAME = "kiln-run"

#: this run's channel (None in processes the run's code forks: see ``_detach``)
_channel: Channel | None = None


class FdCapture:
    """Route file descriptors 1 and 2 into the cell's streams (an IO thread reads them; it
    also watches the run's socket for the supervisor going away)."""

    def __init__(self, streams: Streams, channel: Channel) -> None:
        self.streams = streams
        self.channel = channel
        #: the run's socket, watched for the supervisor's end closing
        self.watch: int | None = channel.sock.fileno()
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
        # started without waiting for it to run (threading.Thread.start would): the cells
        # need it only once they write to the file descriptors or run long
        _thread.start_new_thread(self._loop, ())

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
        while True:
            fds = list(self.fds) + ([self.watch] if self.watch is not None else [])
            ready, _, _ = select.select(fds, [], [], 0.1)
            if self.watch is not None and self.watch in ready:
                self._check_supervisor()
            try:
                with self.lock:
                    for fd in ready:
                        if fd in self.fds:
                            self._read_available(fd)
                self.streams.flush()
            except OSError:
                # the run's channel broke while output was on its way: the supervisor went
                # away between the select and the send. This thread is the run's only watch
                # on its supervisor, so it must not end with the error: the run ends instead
                _supervisor_gone()

    def _check_supervisor(self) -> None:
        """The supervisor sends nothing after the spec: readable means its end closed."""
        try:
            data = self.channel.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.watch = None  # unexpected, but not a hang-up: stop watching
            return
        _supervisor_gone()

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


def _supervisor_gone() -> NoReturn:
    """Kill what the run started and exit: nobody is left to report to."""
    processes.kill_tree(os.getpid(), include_root=False)
    os._exit(1)


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


def _apply_spec(
    spec: dict[str, Any],
    base_path: list[str],
    shadowable: Iterable[str],
    base_env: dict[str, str],
) -> None:
    limit = spec.get(proto.MEMORY_LIMIT)
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    if spec.get(proto.CWD):
        os.chdir(spec[proto.CWD])
    proto.apply_env(
        os.environ, base_env, spec.get(proto.ENV_SET) or {}, spec.get(proto.ENV_UNSET) or []
    )
    # what ipykernel does: figures are shown inline unless the run chose a backend
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    _kernel_imports(base_path, shadowable)
    sys.argv = list(spec.get(proto.ARGV) or [""])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _kernel_imports(base_path: list[str], shadowable: Iterable[str]) -> None:
    """Imports resolve as in a kernel started in the run's working directory: the kernel's
    ``sys.path``, and no pre-imported library that a module of that directory shadows."""
    cwd = os.getcwd()
    sys.path[:] = run_sys_path(base_path, safe_path=bool(os.environ.get("PYTHONSAFEPATH")))
    sys.path_importer_cache.pop(cwd, None)  # the parent's listing of this folder may be stale
    for top in shadowed(shadowable, cwd):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]


def _detach() -> None:
    """In a process the run's code forked (not exec'd): it is not the run. It drops the run's
    socket, so it cannot hold the channel open or write to it, and prints to file
    descriptors 1 and 2, which the run captures as the cell's output."""
    global _channel
    forkshell._outputs = None
    if _channel is not None:
        with contextlib.suppress(OSError):
            _channel.sock.close()
        _channel = None
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def child_main(
    sock_fd: int,
    shell: KilnShell,
    parent_fds: Iterable[int],
    base_path: list[str],
    shadowable: Iterable[str],
    base_env: dict[str, str],
) -> NoReturn:
    """Run one notebook's cells and exit; never returns. ``base_env`` is the environment the
    warm parent was started with: the spec says how the run's differs from it."""
    try:
        _prepare(parent_fds)
    except BaseException:
        os._exit(1)
    _run(sock_fd, shell, base_path, shadowable, base_env)


def spare_main(
    spare: socket.socket,
    parent_pid: int,
    shell: KilnShell,
    parent_fds: Iterable[int],
    base_path: list[str],
    shadowable: Iterable[str],
    base_env: dict[str, str],
    warm_up: bool = True,
) -> NoReturn:
    """A child forked before its run: prepared, it waits on ``spare`` for the run's socket
    (then runs it as :func:`child_main` would) or for the warm parent to let it go.

    ``warm_up``: copy the pages a first cell writes before the claim (:func:`_warm_up`). That
    takes a run's first cell ~1 ms off its critical path but costs the spare ~2 ms of CPU,
    which the warm parent does not spend when other runs are running (the CPU is busy, and
    the claim would often come during the warm-up and wait for it).

    Until it has a run it dies with the warm parent (``PR_SET_PDEATHSIG``, and the end of
    ``spare`` closing): an unclaimed spare never outlives its parent. Once claimed it is a
    run's child like any other, which outlives a lost parent (its session watches it).
    Nothing of a run reaches it before the claim: the run's spec (working directory,
    environment, argv, memory limit) comes over the run's socket afterwards. The random
    module's state was drawn when it was forked (``random`` reseeds in every forked child)
    and each spare runs at most one run, so no two runs share it.
    """
    try:
        processes.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(0)  # the parent died before the signal was armed
        _prepare(parent_fds)
        if warm_up:
            _warm_up(shell, base_env)
        sock_fd = _claim(spare)
        if sock_fd is None:
            os._exit(0)  # let go: the parent discarded this spare, exited or died
        processes.set_parent_death_signal(0)
    except BaseException:
        os._exit(1)
    _run(sock_fd, shell, base_path, shadowable, base_env)


def _claim(spare: socket.socket) -> int | None:
    """Wait for the run's socket; None when the parent's end closes instead."""
    try:
        _data, fds, _flags, _addr = socket.recv_fds(spare, 16, 1)
    except OSError:
        fds = []
    spare.close()
    return fds[0] if fds else None


def _warm_up(shell: KilnShell, base_env: dict[str, str]) -> None:
    """Before the claim, do what every run does first and copy its pages on write now, off
    the run's critical path: the environment made the parent's starting one (the run's
    spec applies its changes to it again after the claim) and an empty cell run silently,
    as the parent did once (:func:`kiln.engines.forkshell.rewarm`). A warm-up that fails
    costs the run only its speed."""
    with contextlib.suppress(Exception):
        proto.apply_env(os.environ, base_env, {}, [])
        forkshell.rewarm(shell)


def _prepare(parent_fds: Iterable[int]) -> None:
    """What every child sets up before its run, whichever run it will be (see module doc)."""
    processes.set_name(RUN_PROCESS_NAME)
    os.setsid()
    processes.set_child_subreaper()
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    # SIGPIPE stays ignored, as in any Python process (a kernel's too): a write to a
    # closed pipe raises BrokenPipeError. _signal, not signal: signal.signal wraps the
    # handler it replaces in an enum, and failing to for the parent's function raises and
    # formats a ValueError: pages copied on write in every child, for a value nobody reads
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        _signal.signal(int(signum), int(signal.SIG_DFL))
    for fd in parent_fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _run(
    sock_fd: int,
    shell: KilnShell,
    base_path: list[str],
    shadowable: Iterable[str],
    base_env: dict[str, str],
) -> NoReturn:
    global _channel
    status = 0
    try:
        # dumpable only now that it is a run's: a spare waiting for the next run stays as
        # closed to the running runs as the warm parent is (no run can write what a later
        # run will execute in)
        processes.set_dumpable(True)
        _signal.signal(int(signal.SIGINT), signal.default_int_handler)
        os.set_inheritable(sock_fd, False)
        _channel = Channel(socket.socket(fileno=sock_fd))
        os.register_at_fork(after_in_child=_detach)
        spec = _channel.receive()
        _apply_spec(spec, base_path, shadowable, base_env)
        _run_cells(_channel, shell, spec)
        _end_processes()
        _channel.send({proto.KIND: proto.DONE})
        _channel.release()  # the last cell's end and DONE, in one write
    except BaseException as exc:  # report anything that breaks the child itself
        status = 1
        if _channel is not None:
            with contextlib.suppress(Exception):
                error = f"{type(exc).__name__}: {exc}"
                _channel.send({proto.KIND: proto.FATAL, proto.ERROR: error})
                _channel.release()
        with contextlib.suppress(Exception):
            _end_processes()  # the run is over, whatever broke: what it started goes too
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _end_processes() -> None:
    """Kill what the run started and left running: as a subreaper, the child has every such
    process below it. Most runs have no child left at all, which one syscall tells."""
    if processes.has_children():
        processes.kill_tree(os.getpid(), include_root=False)


def _run_cells(channel: Channel, shell: KilnShell, spec: dict[str, Any]) -> None:
    import builtins

    outputs = Outputs(channel)
    streams = Streams(outputs)
    forkshell._outputs = outputs
    capture = FdCapture(streams, channel)
    streams.before_write = capture.pull
    sys.stdout = StreamFile(streams, "stdout", 1)
    sys.stderr = StreamFile(streams, "stderr", 2)
    builtins.input = _stdin_unavailable
    allow_errors = bool(spec.get(proto.ALLOW_ERRORS))
    for cell in spec[proto.CELLS]:
        index = int(cell[proto.INDEX])
        outputs.begin(index)
        count = shell.execution_count
        shell.last_error = None
        channel.send({proto.KIND: proto.CELL_START, proto.CELL: index, proto.COUNT: count})
        # what was held since the previous cell ended goes out with this start, in one write
        # (one wake-up of the supervisor per cell, not one per message)
        channel.release()
        result = shell.run_cell(cell[proto.SOURCE], store_history=True)
        channel.hold()
        capture.drain()
        cell_outputs = outputs.cells.get(index, [])
        error = _cell_error(shell, result, cell_outputs)
        channel.send(
            {
                proto.KIND: proto.CELL_END,
                proto.CELL: index,
                proto.COUNT: count,
                proto.OUTPUT_LIST: cell_outputs,
                proto.ERROR: error,
            }
        )
        if error is not None and not allow_errors and not cell.get(proto.RAISES):
            break
    capture.drain()  # still held: the caller's DONE goes with the last cell's end


def _cell_error(
    shell: KilnShell, result: Any, cell_outputs: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The cell's error as a kernel would report it. An error shown after the cell's code ran
    (a post-execute callback) counts too: the cell's outputs hold it."""
    if shell.last_error is not None:
        return shell.last_error
    if not result.success:
        return _error_from(result)
    shown = error_output(cell_outputs)
    if shown is not None:
        return {k: shown.get(k) for k in ("ename", "evalue", "traceback")}
    return None


def _error_from(result: Any) -> dict[str, Any]:
    exc = result.error_in_exec or result.error_before_exec
    return {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
