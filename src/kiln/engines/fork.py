"""ForkEngine: fresh state at warm speed.

A warm parent per Python environment (:mod:`kiln.engines.forkserver`) has IPython ready and
has imported the libraries notebooks import; every run is a child forked from it, so no run
sees another run's variables or module state, and no run pays for starting Python and IPython.

The supervisor side lives in Kiln's process: :class:`ForkPool` owns the warm parents
(:mod:`kiln.engines.forkcontrol`) and bounds the concurrent children; a :class:`ForkSession`
is one run: it gets a child forked, talks to it over its own socket
(:mod:`kiln.engines.forkrun`), and turns what it hears into the events every engine emits.

Every deadline is the supervisor's: ``timeout`` covers the warm parent's start and the
pre-imports too. A parent that stops answering is killed and replaced (the run retries on a
new one); a pre-import that hangs or starts a thread is not pre-imported again, and with
``engine="auto"`` the run moves to the kernel engine before any cell ran, as the same run (an
:class:`~kiln.engines.base.EngineSwitched` event tells the runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

from kiln import processes
from kiln.engines import forkproto as proto
from kiln.engines import outcomes
from kiln.engines.base import (
    EngineSession,
    EngineSwitched,
    EventSink,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
)
from kiln.engines.forkcontrol import ForkServer, ParentLost
from kiln.engines.forkrun import Conversation, RunChannel
from kiln.engines.forkserver import MARKER
from kiln.engines.imports import preloadable
from kiln.errors import EngineError

#: seconds one module's pre-import may take before the warm parent is deemed stuck in it
PRELOAD_TIMEOUT = 20.0
#: seconds the warm parent may take to answer a fork request
REPLY_TIMEOUT = 10.0
#: attempts at getting a run forked when warm parents keep getting lost
_ATTEMPTS = 3


class ForkUnsuitable(EngineError):
    """The fork engine cannot run this notebook after all (found before any cell ran)."""


class ForkPool:
    """Warm parents, one per Python executable, and a bound on concurrent children.

    The reusable piece for everything that runs many notebooks (sweeps, the server, the
    scheduler, pipelines): create one, run sessions through it, ``await close()``.
    """

    def __init__(
        self,
        *,
        max_children: int | None = None,
        preload_timeout: float = PRELOAD_TIMEOUT,
        start_timeout: float = 60.0,
        reply_timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.max_children = max_children or max(2, os.cpu_count() or 2)
        self.preload_timeout = preload_timeout
        self.start_timeout = start_timeout
        self.reply_timeout = reply_timeout
        self._servers: dict[str, ForkServer] = {}
        self._slots: asyncio.Semaphore | None = None
        #: runs holding a slot (forking or running)
        self.running = 0
        self._stopping: set[asyncio.Future[None]] = set()
        #: modules never pre-imported again, and why (a hang, a thread)
        self.refused_modules: dict[str, str] = {}
        #: (working directory, module) pairs found to be the project's own
        self._local: set[tuple[str, str]] = set()

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_children)
        return self._slots

    def server(self, python: str) -> ForkServer:
        """The warm parent for ``python``, launched (not yet ready) if needed; a broken one is
        replaced."""
        server = self._servers.get(python)
        if server is not None and server.broken:
            self._note_hang(server)
            stopping = asyncio.ensure_future(server.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            server = None
        if server is None:
            server = ForkServer(
                python,
                start_timeout=self.start_timeout,
                preload_timeout=self.preload_timeout,
                reply_timeout=self.reply_timeout,
            )
            server.launch()
            self._servers[python] = server
            reap_leftover_parents()  # while the new parent starts up
        return server

    async def preload(self, server: ForkServer, modules: list[str], cwd: str) -> None:
        """Pre-import what has not been tried yet for this working directory; remember the
        modules that must not be tried again (raises :class:`ParentLost` when the parent is
        replaced because of one)."""
        skip = self.refused_modules.keys() | server.tried
        wanted = [m for m in modules if m not in skip and (cwd, m) not in self._local]
        if not wanted:
            return
        safe_path = bool(os.environ.get("PYTHONSAFEPATH"))
        try:
            result = await server.preload(wanted, cwd, safe_path=safe_path)
        except ParentLost:
            self._note_hang(server)
            raise
        server.tried.update(result.loaded + list(result.failed))
        self._local.update((cwd, m) for m in result.local)
        if result.threaded:
            self.refused_modules[result.threaded] = (
                f"importing {result.threaded} started a thread in the fork engine's warm parent"
            )
            server.fail(f"importing {result.threaded} started a thread; the parent is replaced")
            raise ParentLost(str(server.broken))

    def _note_hang(self, server: ForkServer) -> None:
        if server.hung and server.hung not in self.refused_modules:
            self.refused_modules[server.hung] = str(server.broken)

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            await server.stop()
        for stopping in list(self._stopping):
            with contextlib.suppress(Exception):
                await stopping


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
        #: when the child started (epoch seconds, from /proc)
        self.started: float | None = None
        self.run_id: str | None = None
        self.server: ForkServer | None = None
        self.channel: RunChannel | None = None
        #: set when the child's process has ended
        self.exited: asyncio.Future[None] | None = None
        self._pidfd: int | None = None
        self._starting: asyncio.Task[None] | None = None
        self._phase = "start"
        self._slot = False
        self._done = False
        self._fallback: EngineSession | None = None

    async def start(self) -> None:
        """Launch the warm parent if needed; the fork itself happens in the background."""
        self.server = self.engine.pool.server(self.engine.python)
        self._starting = asyncio.ensure_future(self._fork())
        # one turn of the loop lets the task send its fork request (a warm parent that is
        # ready answers without waiting): the parent forks while the runner records the run
        await asyncio.sleep(0)

    async def _fork(self) -> None:
        pool, options = self.engine.pool, self.options
        wanted = preloadable(options.preload)
        cwd = str(options.cwd) if options.cwd else os.getcwd()
        for _attempt in range(_ATTEMPTS):
            server = self.server = pool.server(self.engine.python)
            self._phase = "start"
            try:
                await server.ready()
            except ParentLost as exc:
                raise EngineError(str(exc)) from None
            refused = [m for m in wanted if m in pool.refused_modules]
            if refused and options.kernel_fallback:
                raise ForkUnsuitable(pool.refused_modules[refused[0]])
            try:
                self._phase = "preload"
                await pool.preload(server, [m for m in wanted if m not in refused], cwd)
                if not self._slot:
                    self._phase = "slot"
                    await pool.slots.acquire()
                    self._slot = True
                    pool.running += 1
                self._phase = "fork"
                await self._fork_on(server)
                return
            except ParentLost:
                continue
        raise EngineError(f"the fork engine could not fork the run: {server.broken}")

    async def _fork_on(self, server: ForkServer) -> None:
        mine, theirs = RunChannel.pair()
        try:
            self.run_id, self.pid = await server.fork(theirs, others=self.engine.pool.running - 1)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        self.channel = RunChannel(mine)
        try:
            # opened before the pid is checked, so that what was checked is what is held
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._on_exit()
        except (AttributeError, OSError):  # no pidfds: the parent's report is the signal
            server.exit_future(self.run_id).add_done_callback(lambda _f: self._on_exit())
        else:
            loop.add_reader(self._pidfd, self._on_exit)
        try:
            self.started = server.check_child(self.pid)
        except ParentLost:
            self._forget_child()
            raise

    def _forget_child(self) -> None:
        """Let go of the run's channel and pidfd (the child is not, or no longer, ours)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self._pidfd is not None:
            self._on_exit()
            os.close(self._pidfd)
            self._pidfd = None
        if self.server is not None and self.run_id is not None:
            self.server.forget(self.run_id)

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(None)

    async def execute(self, nb: Any, emit: EventSink) -> ExecutionOutcome:
        if self._starting is None:
            await self.start()
        assert self._starting is not None
        deadline = self.options.deadline
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            if not self._starting.done():
                if left is None:  # nothing to time out: cancelling the run cancels the fork
                    await self._starting
                else:
                    await asyncio.wait_for(asyncio.shield(self._starting), left)
            self._starting.result()
        except asyncio.TimeoutError:
            return ExecutionOutcome(
                "timeout", outcomes.run_timed_out(during=self._during()), timeout_kind="run"
            )
        except ForkUnsuitable as exc:
            return await self._fall_back(str(exc), nb, emit)
        assert self.channel is not None and self.pid is not None and self.server is not None
        channel, options = self.channel, self.options
        conversation = Conversation(self, channel, options, nb, emit)
        channel.open(self.pid, conversation.wake)
        spec = proto.encode_line(self._spec(nb, self.server.env))
        await asyncio.get_running_loop().sock_sendall(channel.sock, spec)
        info = self.server.info
        emit(
            KernelReady(
                kernel_name=f"{options.kernel_name} (fork)",
                language="python",
                kernel_version=f"ipython {info.get(proto.IPYTHON)}",
                language_version=info.get(proto.PYTHON),
                pid=self.pid,
                started=self.started,
            )
        )
        outcome = await conversation.run()
        self._done = conversation.done
        return outcome

    def _during(self) -> str:
        """What the run was waiting for when its deadline passed before any cell ran."""
        importing = self.server.importing if self.server is not None else None
        return {
            "start": "the fork engine's warm parent was starting",
            "preload": f"the fork engine's warm parent was importing {importing}"
            if importing
            else "the fork engine's warm parent was pre-importing the notebook's imports",
            "slot": "it waited for one of the fork engine's concurrent runs to end",
            "fork": "the fork engine's warm parent was forking the run",
        }[self._phase]

    def _spec(self, nb: Any, base_env: dict[str, str]) -> dict[str, Any]:
        options = self.options
        changed, removed = run_env_changes(base_env, options.env or {})
        cells = []
        for i, c in enumerate(nb["cells"]):
            source = str(c["source"])
            tags = c.get("metadata", {}).get("tags", [])
            if c["cell_type"] == "code" and source.strip() and options.skip_tag not in tags:
                cells.append(
                    {proto.INDEX: i, proto.SOURCE: source, proto.RAISES: "raises-exception" in tags}
                )
        return {
            proto.KIND: proto.SPEC,
            proto.CELLS: cells,
            proto.ALLOW_ERRORS: options.allow_errors,
            proto.CWD: str(options.cwd) if options.cwd else None,
            proto.ENV_SET: changed,
            proto.ENV_UNSET: removed,
            proto.ARGV: list(options.argv) or [""],
            proto.MEMORY_LIMIT: options.memory_limit,
        }

    async def _fall_back(self, why: str, nb: Any, emit: EventSink) -> ExecutionOutcome:
        """Run on a kernel instead (``engine="auto"``): nothing has run yet."""
        from kiln.engines.kernel import KernelEngine

        await self._release()
        emit(EngineSwitched("kernel", f"using the kernel engine: {why}"))
        self._fallback = KernelEngine().session(self.options)
        await self._fallback.start()
        return await self._fallback.execute(nb, emit)

    def _alive(self) -> bool:
        if self.exited is not None and self.exited.done():
            return False
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], 0)
            return not readable
        return self.pid is not None and processes.pid_exists(self.pid)

    def kill(self) -> None:
        """Kill the child and every process the run started (its tree: see forkchild)."""
        if self.pid is None or not self._alive():
            return
        processes.kill_tree(self.pid)
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def exit_description(self) -> str:
        if self.server is None or self.run_id is None:
            return "the run process ended"
        info = await self.server.exit_of(self.run_id, timeout=1.0)
        if not info:
            return "the run process ended (the warm parent could not say how)"
        if info.get(proto.SIGNAL):
            return (
                f"the run process was killed by signal {info[proto.SIGNAL]} "
                f"({info[proto.SIGNAL_NAME]})"
            )
        return f"the run process exited with code {info.get(proto.CODE)}"

    async def _release(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        if self._done:
            # the child killed what the run started before it said so; make sure it ends
            if self._pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        elif self._alive():
            self.kill()
        elif self.server is not None and self.pid is not None:
            self.server.sweep()  # it died on its own: what it left went to the warm parent
        self._forget_child()
        if self._slot:
            self._slot = False
            self.engine.pool.running -= 1
            self.engine.pool.slots.release()

    async def close(self, *, graceful: bool) -> None:
        await self._release()
        if self._fallback is not None:
            await self._fallback.close(graceful=graceful)


_env_seen: tuple[dict[bytes, bytes], dict[str, str], tuple[dict[str, str], list[str]]] | None
_env_seen = None


def run_env_changes(
    base_env: dict[str, str], overrides: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """What a run's spec carries: how Kiln's environment with the run's ``overrides`` differs
    from ``base_env``, the warm parent's (see :func:`~kiln.engines.forkproto.env_changes`)."""
    changed, removed = _env_changes(base_env)
    for name, value in overrides.items():
        if base_env.get(name) != value:
            changed[name] = value
        else:  # Kiln's environment may differ from the parent's here: the run's value wins
            changed.pop(name, None)
        if name in removed:
            removed = [n for n in removed if n != name]
    return changed, removed


def _env_changes(base_env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """How Kiln's environment now differs from ``base_env`` (a warm parent's), computed again
    only when either changed: every run's spec needs it, and decoding ``os.environ`` costs
    more than the rest of the spec."""
    global _env_seen
    raw: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)  # CPython's bytes
    if raw is None:
        return proto.env_changes(base_env, dict(os.environ))
    seen = _env_seen
    if seen is None or seen[1] is not base_env or seen[0] != raw:
        seen = _env_seen = (dict(raw), base_env, proto.env_changes(base_env, dict(os.environ)))
    changed, removed = seen[2]
    return dict(changed), list(removed)


def reap_leftover_parents() -> list[int]:
    """Kill warm parents left by Kiln processes that are gone; return their pids.

    A warm parent dies with its supervisor (``PR_SET_PDEATHSIG``); this is for one that could
    not (its command line names its owner: pid and start time). Only this user's processes
    are considered, and only once per process.
    """
    global _leftovers_reaped
    if _leftovers_reaped:
        return []
    _leftovers_reaped = True
    uid, killed = os.getuid(), []
    comm = os.path.basename(sys.executable)[:15]
    for info in processes.proc_table().values():
        if info.comm != comm:
            continue
        argv = _cmdline(info.pid)
        if len(argv) != 7 or argv[1] != "-c" or argv[3] != MARKER or _uid(info.pid) != uid:
            continue
        try:
            owner = int(argv[5])
            owner_started = float(argv[6]) if argv[6] else None
        except ValueError:
            continue
        if processes.same_process(owner, owner_started) is False:
            processes.kill_tree(info.pid)
            killed.append(info.pid)
    return killed


_leftovers_reaped = False


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").split("\0")[:-1]


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
