"""A worker: claims queued runs and runs them through the one runner, N at a time.

One event loop, one :class:`kiln.runner.Runner` (so fork-engine runs share warm parents), up to
``concurrency`` runs at once. While runs go on, a heartbeat renews the worker's leases, looks
for cancel requests, and expires the leases of dead workers (crashing, or retrying, their
runs). SIGTERM (or SIGINT) drains: no new claims, running runs get ``grace`` seconds to
finish, then are cancelled and recorded as such; a second SIGINT cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.store import queue as runs_queue

_log = logging.getLogger("kiln.worker")

if TYPE_CHECKING:
    from kiln.runner import Runner
    from kiln.store.records import Run
    from kiln.store.sql import RunStore


class Worker:
    """Runs queued runs until stopped (:meth:`stop`, SIGTERM) or, with ``until_empty``,
    until the queue is empty."""

    def __init__(
        self,
        *,
        home: Path | None = None,
        concurrency: int = 1,
        lease: float = 30.0,
        poll: float = 0.5,
        grace: float = 30.0,
        name: str | None = None,
        checkout: Path | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("a worker runs at least one run at a time")
        self.home = home
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.grace = grace
        self.name = name or runs_queue.worker_id()
        if checkout is None:
            from kiln.project import find_project_file

            found = find_project_file()
            checkout = found.parent if found is not None else None
        #: this machine's copy of the project: a submitted run finds its helper files (and
        #: working directory) at the same place within it
        self.checkout = checkout
        self.active: dict[str, asyncio.Task[Run]] = {}
        self.finished: list[Run] = []
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._runner: Runner | None = None

    def wake(self) -> None:
        """Look for queued runs now rather than at the next poll (a run was just submitted)."""
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        """Claim nothing more; running runs finish (within ``grace``)."""
        if self._stopping is not None:
            self._stopping.set()
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, until_empty: bool = False) -> list[Run]:
        """Claim and run until stopped; returns the runs this worker ended."""
        from kiln.runner import Runner
        from kiln.store.sql import RunStore

        self._stopping, self._wake = asyncio.Event(), asyncio.Event()
        store = RunStore(self.home)
        runner = self._runner = Runner(store=store, handle_signals=False)
        restore = self._handle_signals()
        heartbeat = asyncio.ensure_future(self._heartbeat(store, runner))
        try:
            store.recover_orphans()
            runs_queue.expire(store)
            await self._claim_loop(store, runner, until_empty=until_empty)
            await self._drain(runner)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            restore()
            await runner.aclose_engines()
            store.close()
        return self.finished

    async def _claim_loop(self, store: RunStore, runner: Runner, *, until_empty: bool) -> None:
        from kiln.errors import StoreError
        from kiln.store import current_owner

        assert self._stopping is not None and self._wake is not None
        pid, host, started = current_owner()
        while not self._stopping.is_set():
            while len(self.active) < self.concurrency and not self._stopping.is_set():
                try:
                    claimed = runs_queue.claim(
                        store, self.name, lease=self.lease, pid=pid, host=host, started=started
                    )
                except StoreError as exc:  # the database is away: try again after a poll
                    _log.warning("worker %s: %s", self.name, exc.message)
                    claimed = None
                if claimed is None:
                    break
                self._start(runner, claimed)
            if until_empty and not self.active:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    def _start(self, runner: Runner, claimed: Run) -> None:
        task = asyncio.ensure_future(self._run_one(runner, claimed))
        self.active[claimed.id] = task

        def done(_: asyncio.Task[Run]) -> None:
            self.active.pop(claimed.id, None)
            if self._wake is not None:
                self._wake.set()

        task.add_done_callback(done)

    async def _run_one(self, runner: Runner, claimed: Run) -> Run:
        from kiln.errors import KilnError
        from kiln.queue.submit import request_of

        try:
            request, notes = request_of(claimed, self.checkout)
        except KilnError as exc:
            return runner.refuse(claimed, exc, check=False)
        run = await runner.arun(request, check=False, claimed=claimed, notes=notes)
        self.finished.append(run)
        return run

    async def _heartbeat(self, store: RunStore, runner: Runner) -> None:
        """Renew leases, pass on cancel requests, expire dead workers' leases."""
        from kiln.errors import StoreError

        every = max(0.2, min(self.lease / 3, 1.0))
        since_expiry = 0.0
        while True:
            await asyncio.sleep(every)
            try:
                if self.active:
                    runs_queue.renew(store, self.name, lease=self.lease)
                    for run_id in runs_queue.cancel_requests(store, self.name):
                        runner.cancel(run_id, "by request (kiln runs cancel, the API)")
                since_expiry += every
                if since_expiry >= self.lease / 2:
                    since_expiry = 0.0
                    runs_queue.expire(store)
            except StoreError as exc:
                # the database is away (a restart, the network): keep beating; the leases
                # are renewed when it answers again, or others expire them meanwhile
                _log.warning("worker %s: %s", self.name, exc.message)

    async def _drain(self, runner: Runner) -> None:
        """Let running runs finish within ``grace``, then cancel what is left."""
        if not self.active:
            return
        _done, pending = await asyncio.wait(list(self.active.values()), timeout=self.grace)
        for run_id in list(self.active):
            runner.cancel(run_id, f"by the worker's shutdown (grace of {self.grace:g}s over)")
        if pending:
            await asyncio.wait(pending)

    def _handle_signals(self) -> Callable[[], None]:
        """SIGTERM/SIGINT drain; a second SIGINT cancels the running runs at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        seen: list[int] = []

        def on_signal(signum: int) -> None:
            seen.append(signum)
            if len(seen) > 1 and signum == signal.SIGINT and self._runner is not None:
                for run_id in list(self.active):
                    self._runner.cancel(run_id, "by SIGINT")
            self.stop()

        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)

        def restore() -> None:
            for signum in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

        return restore
