"""``kiln serve``: the API under uvicorn, and N worker processes it starts and watches.

One process serves the API (and endpoint calls); ``workers`` processes
(:mod:`kiln.server.workerproc`) claim and run queued runs. A worker that dies is started
again (its run is recovered by the queue: crashed, or retried). SIGTERM (or Ctrl-C) drains:
the API stops taking connections and finishes the requests it has, the workers get SIGTERM
and let their runs finish within ``grace``, then cancel them; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from kiln.server.settings import ServerSettings

log = logging.getLogger("kiln.server")

#: a worker that dies this soon after starting is started again only after a pause
_QUICK_DEATH = 5.0
_MAX_PAUSE = 30.0


class WorkerProcesses:
    """The worker processes of one server."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.wanted = settings.workers
        self.procs: list[tuple[subprocess.Popen[bytes], float]] = []
        self.stopping = False
        self._pause = 1.0
        #: the scheduler process, when kiln.yaml has schedules (restarted like a worker)
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.scheduler_started = 0.0
        self.schedules = settings.schedules
        #: judges the scheduler by its heartbeat (set by the server when it has a store)
        self.heartbeat: Any = None

    def alive(self) -> tuple[int, int]:
        return sum(1 for proc, _ in self.procs if proc.poll() is None), self.wanted

    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.procs if proc.poll() is None]

    def wake(self) -> None:
        """Tell the workers a run is waiting (they claim it now rather than at their poll)."""
        from kiln.server.workerproc import WAKE

        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, WAKE)

    def _spawn(self) -> None:
        # started from the event loop's (main) thread: PR_SET_PDEATHSIG fires when the thread
        # that forked the worker ends, so it must be one that lives as long as the server
        env = dict(os.environ, KILN_HOME=str(self.settings.home))
        argv = [
            sys.executable,
            "-m",
            "kiln.server.workerproc",
            "--parent",
            str(os.getpid()),
            "--grace",
            str(self.settings.grace),
            "--lease",
            str(self.settings.lease),
            "--poll",
            str(self.settings.poll),
        ]
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, cwd=self.settings.root)
        self.procs.append((proc, time.monotonic()))

    def _spawn_scheduler(self) -> None:
        env = dict(os.environ, KILN_HOME=str(self.settings.home))
        argv = [sys.executable, "-m", "kiln.server.schedulerproc", "--parent", str(os.getpid())]
        self.scheduler = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, cwd=self.settings.root
        )
        self.scheduler_started = time.time()

    def start(self) -> None:
        for _ in range(self.wanted):
            self._spawn()
        if self.schedules:
            self._spawn_scheduler()

    def _all(self) -> list[subprocess.Popen[bytes]]:
        extra = [self.scheduler] if self.scheduler is not None else []
        return [proc for proc, _ in self.procs] + extra

    async def watch(self) -> None:
        """Start again the workers that died (pausing when they die as soon as they start)."""
        checked = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(0.5)
            if (
                self.heartbeat is not None
                and self.scheduler is not None
                and self.scheduler.poll() is None
                and time.monotonic() - checked >= 1.0
            ):
                checked = time.monotonic()
                if await self.heartbeat.check(self.scheduler.pid, self.scheduler_started):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        await asyncio.to_thread(self.scheduler.wait, 10)
            if self.scheduler is not None and self.scheduler.poll() is not None:
                code = self.scheduler.poll()
                log.warning("the scheduler exited (code %s); starting another", code)
                await asyncio.sleep(self._pause)
                if not self.stopping:
                    self._spawn_scheduler()
            for proc, started in list(self.procs):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                self.procs.remove((proc, started))
                quick = time.monotonic() - started < _QUICK_DEATH
                log.warning(
                    "worker %d exited (code %s); starting another%s",
                    proc.pid,
                    code,
                    f" in {self._pause:g}s" if quick else "",
                )
                if quick:
                    await asyncio.sleep(self._pause)
                    self._pause = min(self._pause * 2, _MAX_PAUSE)
                else:
                    self._pause = 1.0
                if not self.stopping:
                    self._spawn()

    async def drain(self, grace: float) -> None:
        """SIGTERM every worker; wait for them (their runs have ``grace`` to finish, then
        are cancelled), then SIGKILL whatever is left."""
        self.stopping = True
        for proc in self._all():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 30.0
        while any(proc.poll() is None for proc in self._all()):
            if time.monotonic() >= deadline:
                for proc in self._all():
                    if proc.poll() is None:
                        log.warning("worker %d did not stop in time: killing it", proc.pid)
                        proc.kill()
                break
            await asyncio.sleep(0.1)
        for proc in self._all():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def interrupt(self) -> None:
        """A second Ctrl-C: the workers cancel their runs now."""
        for proc, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)


def serve(settings: ServerSettings, *, out: Callable[[str], None] = print) -> int:
    """Run the server until SIGTERM/SIGINT; the exit code."""
    from kiln.server import logs
    from kiln.server.accounts import ensure_first_admin
    from kiln.store.sql import RunStore

    logs.configure(settings.log_format)
    sock = listen(settings.host, settings.port)
    store = RunStore(settings.home)
    password = ensure_first_admin(store)
    if password is not None:
        out(f"admin password: {password}")
    return asyncio.run(_serve(settings, store, sock))


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a taken port is a clear error, not a trace."""
    from kiln.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # connections accepted from a socket handed to uvicorn keep Nagle's algorithm: a small
    # answer's body then waits for the client's delayed ACK, ~40 ms on every keep-alive
    # request. Accepted sockets inherit the option from the listening one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def _serve(settings: ServerSettings, store: Any, sock: socket.socket) -> int:
    from kiln.server.app import build_app

    workers = WorkerProcesses(settings)
    if settings.schedules:
        from kiln.server.heartbeat import HeartbeatWatch, project_of

        workers.heartbeat = HeartbeatWatch(project_of(settings.root), store)
    _app, asgi = build_app(settings, store=store, workers=workers.alive, wake=workers.wake)
    from kiln.server.quickack import protocol_class

    config = uvicorn.Config(
        asgi,
        http=protocol_class(),  # a request written in two pieces is not held back 40 ms
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.grace)),
        proxy_headers=True,
        server_header=False,
    )
    server = _Server(config)
    stop = asyncio.Event()
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if len(signals_seen) > 1 and signum == signal.SIGINT:
            server.force_exit = True
            workers.interrupt()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if serving.done():  # the app failed to start (uvicorn logged why)
        workers.stopping = True
        with contextlib.suppress(SystemExit):
            await serving
        print("kiln serve: could not start (see the log above)", file=sys.stderr)
        return 1
    workers.start()
    watching = asyncio.ensure_future(workers.watch())
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    log.info(
        "serving %s at http://%s:%s%s with %d worker(s), history in %s",
        settings.root,
        host,
        port,
        settings.root_path,
        settings.workers,
        settings.home,
    )
    print(
        f"kiln serve: listening on http://{host}:{port}{settings.root_path}",
        file=sys.stderr,
        flush=True,
    )
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping: running runs get %gs to finish", settings.grace)
    draining = asyncio.ensure_future(workers.drain(settings.grace))
    server.should_exit = True
    with contextlib.suppress(Exception, SystemExit):
        await serving
    await draining
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    stopped.cancel()
    store.close()
    log.info("stopped")
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling (``kiln serve`` drains its workers on
    the same signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
