"""The scheduler process: ``kiln scheduler`` (and the one ``kiln serve`` starts).

One event loop: a step (:meth:`Scheduler.tick`) at each slot time and at least every
``poll`` seconds, a heartbeat in the history, and the delivery of ended slots' reports (in a
thread, one at a time, so a slow mail server never delays a fire). With ``workers`` > 0 a
:class:`kiln.queue.Worker` runs the queued runs in the same process, so ``kiln scheduler``
alone runs a project's schedules; with 0, other workers (``kiln worker``, ``kiln serve``) do.
The builds that pipeline schedules fire are claimed and run by the service itself, in threads
(at most ``max(1, workers)`` at once; see :mod:`kiln.scheduler.pipelines` for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.scheduler.core import Scheduler, utcnow
from kiln.store import slots as store_slots

if TYPE_CHECKING:
    from kiln.project import Project
    from kiln.scheduler.model import Schedule
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.scheduler")

#: how often the heartbeat is written
BEAT_EVERY = 5.0
#: how long a delivery may take before another scheduler may take it over
DELIVERY_LEASE = 600.0


@dataclass
class SchedulerService:
    """Runs a project's schedules until :meth:`stop`."""

    project: Project
    home: Path | None = None
    workers: int = 1
    poll: float = 1.0
    deliver: bool = True
    clock: Callable[[], datetime] = utcnow
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    on_tick: Callable[[str], None] | None = None
    _stop: asyncio.Event | None = None
    _background: set[asyncio.Future[Any]] = field(default_factory=set)
    #: running builds -> how to cancel each (from another thread)
    _building: dict[str, Callable[[], None] | None] = field(default_factory=dict)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        from kiln.scheduler.model import load_schedules
        from kiln.store.sql import RunStore

        self._stop = asyncio.Event()
        schedules = load_schedules(self.project)
        store = RunStore(self.home)
        scheduler = Scheduler(schedules, store, clock=self.clock)
        worker_task: asyncio.Task[object] | None = None
        worker = None
        if self.workers > 0:
            from kiln.queue import Worker

            worker = Worker(home=store.home, concurrency=self.workers, poll=0.2)
            worker_task = asyncio.ensure_future(worker.run())
            await asyncio.sleep(0)  # the worker installs its signal handlers first...
        restore = self._handle_signals(worker)  # ...which these replace
        started = utcnow()
        try:
            await self._loop(scheduler, store, schedules, started)
        finally:
            await self._stop_builds()
            scheduler.close()
            restore()
            if worker is not None and worker_task is not None:
                worker.stop()
                await worker_task
            with contextlib.suppress(Exception):
                store_slots.forget_beat(store, self.name)
            store.close()

    async def _loop(
        self,
        scheduler: Scheduler,
        store: RunStore,
        schedules: dict[str, Schedule],
        started: datetime,
    ) -> None:
        assert self._stop is not None
        last_beat: datetime | None = None
        delivering: asyncio.Future[None] | None = None
        while not self._stop.is_set():
            now = self.clock()
            if last_beat is None or (now - last_beat).total_seconds() >= BEAT_EVERY:
                store_slots.beat(store, self.name, host=socket.gethostname(), pid=os.getpid(),
                                 started=started)  # fmt: skip
                last_beat = now
            try:
                result = scheduler.tick(now)
            except Exception as exc:  # a database hiccup: log it, try again next step
                log.error("scheduler step failed: %s", exc)
                result = None
            if result is not None and self.on_tick is not None:
                for name, slot, run_id in result.fired:
                    what = "build" if schedules[name].pipeline is not None else "run"
                    self.on_tick(f"{name}: slot {slot.isoformat()} -> {what} {run_id}")
            if result is not None and result.missed and self.project.config.alerts is not None:
                from kiln.report.alerts import missed_alert

                # only the scheduler whose insert recorded a slot missed tells of it: once
                alerting = asyncio.ensure_future(
                    asyncio.to_thread(missed_alert, self.project, list(result.missed))
                )
                self._background.add(alerting)
                alerting.add_done_callback(self._background.discard)
            if result is not None:
                self._start_builds(scheduler, store, schedules)
            if self.deliver and (delivering is None or delivering.done()):
                delivering = asyncio.ensure_future(self._deliver_one(store, schedules))
            wake = scheduler.next_wake(now)
            wait = self.poll
            if wake is not None:
                wait = max(0.0, min(wait, (wake - self.clock()).total_seconds()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
        await self._stop_builds()
        if delivering is not None and not delivering.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(delivering), 30)
        if self._background:
            await asyncio.wait(list(self._background), timeout=30)

    def _start_builds(
        self, scheduler: Scheduler, store: RunStore, schedules: dict[str, Schedule]
    ) -> None:
        """Claim queued builds of this project's pipeline schedules and run each in a thread."""
        limit = max(1, self.workers)
        if len(self._building) >= limit:
            return
        names = [name for name, s in schedules.items() if s.pipeline is not None]
        if not names:
            return
        try:
            queued = store_slots.queued_builds(store, names)
        except Exception as exc:
            log.error("reading the queued builds failed: %s", exc)
            return
        for build_id in queued:
            if len(self._building) >= limit:
                break
            if not scheduler.builds.claim_build(build_id):
                continue  # another scheduler took it
            slot = store_slots.slot_of_build(store, build_id)
            schedule = schedules.get(slot.schedule) if slot is not None else None
            if slot is None or schedule is None:
                scheduler.builds.finish_build(build_id, "cancelled", reason="no schedule")
                continue
            self._building[build_id] = None
            running = asyncio.ensure_future(
                asyncio.to_thread(self._execute, schedule, slot, build_id, store.home)
            )
            self._background.add(running)
            running.add_done_callback(self._background.discard)
            running.add_done_callback(self._ended_build(build_id))
            if self.on_tick is not None:
                self.on_tick(f"{schedule.name}: build {build_id} started")

    def _ended_build(self, build_id: str) -> Callable[[asyncio.Future[str]], None]:
        def ended(_: asyncio.Future[str]) -> None:
            self._building.pop(build_id, None)

        return ended

    def _execute(self, schedule: Schedule, slot: store_slots.Slot, build_id: str,
                 home: Path | None) -> str:  # fmt: skip
        from kiln.scheduler.pipelines import execute_build

        def on_start(cancel: Callable[[], None]) -> None:
            self._building[build_id] = cancel
            if self._stop is not None and self._stop.is_set():
                cancel()

        return execute_build(schedule, slot, build_id, home, on_start)

    async def _stop_builds(self) -> None:
        """Cancel the running builds (each ends ``cancelled``, its runs ended properly)."""
        if not self._building:
            return
        for cancel in list(self._building.values()):
            if cancel is not None:
                cancel()
        running = [f for f in self._background if not f.done()]
        if running:
            await asyncio.wait(running, timeout=60)

    async def _deliver_one(self, store: RunStore, schedules: dict[str, Schedule]) -> None:
        slot = store_slots.claim_delivery(store, self.name, lease=DELIVERY_LEASE)
        if slot is None:
            return
        from kiln.scheduler.deliver import deliver_slot

        try:
            results = await asyncio.to_thread(
                deliver_slot, store, schedules.get(slot.schedule), slot
            )
        except Exception as exc:  # never lose the slot: record why nothing was delivered
            log.error("delivery of %s %s failed: %s", slot.schedule, slot.slot, exc)
            results = [{"kind": "report", "ok": False, "error": f"{type(exc).__name__}: {exc}"}]
        store_slots.finish_delivery(store, slot, self.name, results)

    def _handle_signals(self, worker: object) -> Callable[[], None]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            self.stop()
            stop = getattr(worker, "stop", None)
            if stop is not None:
                stop()

        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, on_signal)
                installed.append(signum)

        def restore() -> None:
            for signum in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

        return restore


def heartbeat_age(store: RunStore) -> timedelta | None:
    """How long ago any scheduler of this history beat (None: none ever did, or all
    stopped cleanly)."""
    last = store_slots.last_beat(store)
    return None if last is None else utcnow() - last
