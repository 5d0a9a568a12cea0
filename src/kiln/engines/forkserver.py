"""The warm parent: a small process that has IPython ready and forks a child per run.

Started by the supervisor (:mod:`kiln.engines.fork`) as ``python -c BOOT MARKER FD OWNER
OWNER_START``: ``-c`` rather than ``-m`` because ``-m`` would put the supervisor's working
directory first on ``sys.path``, where a ``helpers.py`` would shadow the notebook's own; BOOT
removes the ``''`` that ``-c`` puts there instead. Each child sets the path a kernel would have.

It talks to its supervisor over a SOCK_SEQPACKET socket (messages in
:mod:`kiln.engines.forkproto`; a run request carries the run's socket as an SCM_RIGHTS file
descriptor), pre-imports the libraries notebooks import, forks a child per run (see
:mod:`kiln.engines.forkchild`), reaps every child and reports how it exited.

Once it has served a run it keeps a **spare child**: forked ahead of the next run request,
prepared and waiting, so that the request is answered by handing the run's socket to a
process that exists (the fork and the child's set-up leave the run's critical path). What a
run changes in its child (working directory, environment, argv, memory limit) comes with the
run's spec, after the claim; what changes the parent itself (a pre-import) discards the
spare, and the next one is forked from the new state. A spare runs at most one run.

It stays single-threaded with no event loop, so forking it is safe; after each pre-import it
checks that the import started no thread. It protects itself and follows its supervisor:

* non-dumpable (``PR_SET_DUMPABLE`` 0): a run's code, running as the same user, cannot read
  or write its memory through ``/proc/<ppid>/mem``, ptrace it, or take its control socket with
  ``pidfd_getfd``, so no run can change what later runs start from (root still can: see
  ``docs/fork-engine-threat-model.md``);
* a child subreaper: what a crashed child leaves behind re-parents here and is killed when the
  supervisor asks for a :data:`~kiln.engines.forkproto.SWEEP`;
* ``PR_SET_PDEATHSIG`` SIGKILL: it dies with the supervisor's thread that started it, even
  when it is stopped; its command line names its owner, so a Kiln command that finds one whose
  owner is gone kills it (:func:`kiln.engines.fork.reap_leftover_parents`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import sys
import threading
from typing import Any

from kiln import processes
from kiln.engines import forkproto as proto
from kiln.engines.imports import is_library, library_dirs, run_sys_path, shadowable

#: the command line's mark, so that a leftover parent can be recognised (and its owner read)
MARKER = "kiln-fork-parent"
BOOT = (
    "import sys\n"
    "if sys.path and sys.path[0] == '': del sys.path[0]\n"
    "from kiln.engines.forkserver import main\n"
    "main()"
)

#: library warm-ups run once in the parent after the module is imported: lazy imports and
#: caches every child would otherwise fill again (no user code, nothing in the user's
#: namespace; only module-level caches change)
WARMERS = {
    "pandas": (
        "import numpy as _np, pandas as _pd\n"
        "_f = _pd.DataFrame({'a': _np.arange(3), 'b': _np.linspace(0.0, 1.0, 3)})\n"
        "_f['c'] = _f.a * _f.b\n"
        "_f.describe()._repr_html_(); repr(_f)"
    ),
}


class WarmParent:
    """The warm parent's state: its control socket, its children, what it pre-imported."""

    def __init__(self, ctl: socket.socket, base_env: dict[str, str]) -> None:
        from kiln.engines.forkchild import child_main, spare_main  # here, not in every child
        from kiln.engines.forkshell import make_shell

        self.child_main = child_main
        self.spare_main = spare_main
        #: the environment this process was started with (a run spec says how a run's differs)
        self.base_env = base_env
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self.ctl = ctl
        self.shell = make_shell()
        #: the sys.path every child starts from (a kernel's, minus its working directory)
        self.base_path = list(sys.path)
        self.libraries = library_dirs()
        #: pre-imported top-level modules a file in a run's working directory could shadow
        self.shadowable: set[str] = set()
        self.children: dict[int, str] = {}
        #: the spare child (pid, this end of its socket): forked ahead of the next run
        self.spare: tuple[int, socket.socket] | None = None
        #: keep a spare ready (from the first run on: a parent that never runs forks none)
        self.keep_spare = False
        #: whether the last run request came alone: the next spare warms up then. With other
        #: runs going on, runs come back to back: the CPU is busy, the claim often comes during
        #: the warm-up, and the warm-up costs more than it saves
        self.quiet = True
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.ctl.send(proto.encode(msg))

    def own_fds(self) -> list[int]:
        """File descriptors no child may keep: its own channel to the supervisor, and the
        spare's socket (a spare must see its end close when this process dies)."""
        fds = [self.ctl.fileno(), self.wake_r, self.wake_w]
        if self.spare is not None:
            fds.append(self.spare[1].fileno())
        return fds

    def serve(self) -> None:
        self.send(
            {
                proto.KIND: proto.HELLO,
                proto.PID: os.getpid(),
                proto.PYTHON: sys.version.split()[0],
                proto.IPYTHON: _ipython_version(),
            }
        )
        try:
            while True:
                if self.keep_spare and self.spare is None:
                    self.fork_spare()
                ready, _, _ = select.select([self.ctl.fileno(), self.wake_r], [], [])
                if self.wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self.reap()
                if self.ctl.fileno() in ready and not self.handle():
                    return
        finally:
            self.discard_spare()
            for pid in list(self.children):
                processes.kill_tree(pid)
            self.sweep()

    def handle(self) -> bool:
        """One request from the supervisor; False when it is time to exit."""
        data, fds, _flags, _addr = socket.recv_fds(self.ctl, 1 << 20, 4)
        if not data:
            return False  # the supervisor is gone
        try:
            msg = proto.decode(data, proto.FROM_SUPERVISOR, "supervisor")
        except proto.ProtocolError:
            for fd in fds:
                os.close(fd)
            return False  # not our supervisor's words: stop rather than guess
        kind = msg[proto.KIND]
        if kind == proto.PRELOAD:
            self.preload(msg)
        elif kind == proto.RUN:
            self.quiet = not msg.get(proto.OTHERS)
            self.fork(str(msg[proto.RUN_ID]), fds)
        elif kind == proto.SWEEP:
            self.sweep()
        elif kind == proto.STOP:
            return False
        return True

    def preload(self, msg: dict[str, Any]) -> None:
        cwd = str(msg.get(proto.CWD) or os.getcwd())
        path = run_sys_path(self.base_path, safe_path=bool(msg.get(proto.SAFE_PATH)))
        loaded: list[str] = []
        failed: dict[str, str] = {}
        local: list[str] = []
        threaded = None
        changed = False  # whether what a child starts from changed (the spare is stale)
        for name in msg.get(proto.MODULES, []):
            top = name.partition(".")[0]
            if top not in sys.modules and not is_library(top, path, cwd, self.libraries):
                local.append(name)  # the project's own module: each child imports it
                continue
            # an import that fails may still have changed things: attempted is enough
            changed = changed or name not in sys.modules or name in WARMERS
            self.send({proto.KIND: proto.IMPORTING, proto.MODULE: name})
            try:
                importlib.import_module(name)
                warmer = WARMERS.get(name)
                if warmer:
                    exec(compile(warmer, f"<kiln warm-up {name}>", "exec"), {})
                loaded.append(name)
            except BaseException as exc:  # a module may raise anything, SystemExit included
                failed[name] = f"{type(exc).__name__}: {exc}"[:300]
            if shadowable(top, path) and top not in self.shadowable:
                self.shadowable.add(top)
                changed = True
            if threading.active_count() > 1:
                threaded = name  # this parent cannot fork safely any more: it will be replaced
                break
        if changed:
            # forked before: without these modules. The loop forks the next spare with them
            self.discard_spare()
        self.send(
            {
                proto.KIND: proto.PRELOADED,
                proto.LOADED: loaded,
                proto.FAILED: failed,
                proto.LOCAL: local,
                proto.THREADED: threaded,
            }
        )

    def fork(self, run_id: str, fds: list[int]) -> None:
        """A child for run ``run_id``: the spare, claimed, or one forked now."""
        if not fds or threading.active_count() > 1:
            for fd in fds:
                os.close(fd)
            why = "no socket came with the request" if not fds else "the warm parent has threads"
            self.send({proto.KIND: proto.REFUSED, proto.RUN_ID: run_id, proto.ERROR: why})
            return
        for extra in fds[1:]:
            os.close(extra)
        self.keep_spare = True
        pid = self.claim_spare(fds[0])
        if pid is None:
            self.freeze()
            pid = os.fork()
            if pid == 0:
                self.child_main(
                    fds[0], self.shell, self.own_fds(), self.base_path, self.shadowable,
                    self.base_env,
                )  # fmt: skip
        os.close(fds[0])
        self.children[pid] = run_id
        self.send({proto.KIND: proto.FORKED, proto.RUN_ID: run_id, proto.PID: pid})

    @staticmethod
    def freeze() -> None:
        # what exists now is the children's to read, not to collect: frozen, a child's
        # garbage collections never walk it (each object walked is a page copied on write)
        gc.freeze()

    def fork_spare(self) -> None:
        """Fork the next run's child now, off the run's critical path (see
        :func:`kiln.engines.forkchild.spare_main`)."""
        if threading.active_count() > 1:
            return  # the next run will be refused anyway
        self.freeze()
        try:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            self.keep_spare = False  # out of descriptors: runs get a child forked for them
            return
        parent_fds = [*self.own_fds(), mine.fileno()]
        me = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # out of processes or memory: not this process's end
            mine.close()
            theirs.close()
            self.keep_spare = False
            return
        if pid == 0:
            self.spare_main(
                theirs, me, self.shell, parent_fds, self.base_path, self.shadowable,
                self.base_env, warm_up=self.quiet,
            )  # fmt: skip
        theirs.close()
        self.spare = (pid, mine)

    def claim_spare(self, run_fd: int) -> int | None:
        """Hand the run's socket to the spare; its pid, or None when there is no spare or it
        cannot take the run (it died: it is discarded)."""
        if self.spare is None:
            return None
        pid, sock = self.spare
        self.spare = None
        try:
            socket.send_fds(sock, [b"run"], [run_fd])
        except OSError:
            self._let_go(pid, sock)
            return None
        sock.close()
        return pid

    def discard_spare(self) -> None:
        """Kill the spare (its parent's state changed, or the parent is exiting)."""
        if self.spare is not None:
            pid, sock = self.spare
            self.spare = None
            self._let_go(pid, sock)

    @staticmethod
    def _let_go(pid: int, sock: socket.socket) -> None:
        sock.close()
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # reaped as any child: unknown to the supervisor

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare[0]:
                # it died unclaimed (killed from outside? broken?): the next run forks its
                # own child, and a spare again after it, so spares that keep dying cost one
                # fork per run, never a loop. Not _let_go: once reaped, the pid may be reused
                self.spare[1].close()
                self.spare = None
                self.keep_spare = False
            run_id = self.children.pop(pid, None)
            if run_id is not None:  # else: something a dead child left, re-parented here
                self.send(
                    {proto.KIND: proto.EXITED, proto.RUN_ID: run_id, proto.PID: pid}
                    | _exit_info(status)
                )

    def sweep(self) -> None:
        """Kill what dead children left behind: every process re-parented to this one (a
        subreaper) that is not a run's child."""
        me = os.getpid()
        spare = self.spare[0] if self.spare is not None else None
        for info in processes.proc_table().values():
            if info.ppid == me and info.pid not in self.children and info.pid != spare:
                processes.kill_tree(info.pid)
        self.reap()


def _exit_info(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return {proto.SIGNAL: sig, proto.SIGNAL_NAME: name, proto.CODE: None}
    return {proto.SIGNAL: None, proto.SIGNAL_NAME: None, proto.CODE: os.WEXITSTATUS(status)}


def _ipython_version() -> str:
    import IPython

    return str(IPython.__version__)


def main() -> None:
    """Entry point (see BOOT): ``sys.argv`` is ``['-c', MARKER, FD, OWNER, OWNER_START]``."""
    base_env = dict(os.environ)  # as the supervisor started it, before anything changes it
    fd, owner = int(sys.argv[2]), int(sys.argv[3])
    processes.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != owner:
        os._exit(0)  # the supervisor died before we could follow it
    processes.set_dumpable(False)
    processes.set_child_subreaper()
    os.set_inheritable(fd, False)
    ctl = socket.socket(fileno=fd)
    try:
        WarmParent(ctl, base_env).serve()
    finally:
        os._exit(0)
