"""The scheduler's step: fire due slots into the queue once, follow their runs, retry.

:meth:`Scheduler.tick` is everything a scheduler does at one moment (the clock is a
parameter, so tests and the benchmark drive it): it fires each schedule's due slot (a slot
row and its queued run in one transaction, keyed by (schedule, slot), so two schedulers fire
it once), records missed and skipped slots, follows the runs of open slots (a failed run is
queued again after a backoff while the schedule's retries last) and marks ended slots for
delivery. Runs are executed by the queue's workers, like every queued run.

A pipeline schedule's slot fires a ``queued`` build instead of a run (slot row and build row
in one transaction). The scheduler service claims it (a conditional UPDATE: one process wins)
and runs it with :func:`kiln.pipeline.build.run_build`, each task a recorded run of the one
runner; the slot follows the build's end as a run's (a build whose scheduler died is marked
``crashed`` by :meth:`~kiln.store.builds.BuildStore.recover_orphan_builds` at the next step,
and the slot fails or is retried).

Catch-up policy. A slot is on time while less than the schedule's ``grace`` has passed since
it. Slots that passed while no scheduler ran (or while the schedule was paused) are missed:
with ``catchup: skip`` they are recorded ``missed`` and not run; with ``catchup: latest`` the
latest of them runs once (the earlier ones are recorded ``missed``). At most
:data:`MAX_MISSED` missed slots are recorded per schedule per step.

Concurrency policy. When a slot comes while an earlier slot of the schedule is still open
(its run queued or running, or waiting for a retry): ``skip`` records the new slot
``skipped``; ``queue`` records it ``waiting`` and runs it when the earlier one has ended.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kiln.store import slots as store_slots
from kiln.store.records import RunState

if TYPE_CHECKING:
    from kiln.scheduler.model import Schedule
    from kiln.store.builds import BuildStore
    from kiln.store.records import Run
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.scheduler")

#: missed slots recorded per schedule per step (the latest ones)
MAX_MISSED = 100
#: how far back a step looks for missed slots (a scheduler down longer misses the rest
#: without a row each)
LOOKBACK = timedelta(days=31)

_FAILED_RUN = frozenset({RunState.FAILED.value, RunState.TIMED_OUT.value, RunState.CRASHED.value})
#: the ends of a build (its states share the names of the run states they mean)
_BUILD_ENDS = frozenset({"succeeded", "failed", "cancelled", "crashed"})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TickResult:
    """What one step did (for logs, tests and the benchmark)."""

    fired: list[tuple[str, datetime, str]] = field(default_factory=list)  # name, slot, run/build
    missed: list[tuple[str, datetime]] = field(default_factory=list)
    skipped: list[tuple[str, datetime]] = field(default_factory=list)
    retried: list[tuple[str, datetime, str]] = field(default_factory=list)
    ended: list[tuple[str, datetime, str]] = field(default_factory=list)  # name, slot, state
    refused: list[tuple[str, datetime, str]] = field(default_factory=list)  # name, slot, why


class Scheduler:
    """Fires the schedules of one project into one history's queue."""

    def __init__(
        self,
        schedules: dict[str, Schedule],
        store: RunStore,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.schedules = schedules
        self.store = store
        self.clock = clock
        self._builds: BuildStore | None = None

    @property
    def builds(self) -> BuildStore:
        """The builds of the history (pipeline schedules)."""
        if self._builds is None:
            from kiln.store.builds import BuildStore

            self._builds = BuildStore(self.store)
        return self._builds

    def close(self) -> None:
        if self._builds is not None:
            self._builds.close()
            self._builds = None

    # -- one step ---------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickResult:
        """Fire what is due at ``now``, follow open slots; returns what was done."""
        now = now or self.clock()
        result = TickResult()
        states = store_slots.ensure_states(
            self.store, {name: s.section.paused for name, s in self.schedules.items()}, now=now
        )
        if any(s.pipeline is not None for s in self.schedules.values()):
            # a build whose scheduler died is crashed now, so its slot ends (or retries) below
            self.builds.recover_orphan_builds()
        self._follow(now, result)  # first: a slot whose run just ended is no longer busy
        latest = store_slots.latest_slots(self.store)
        open_slots = store_slots.slots(self.store, states=store_slots.OPEN)
        busy = {slot.schedule for slot in open_slots}
        for name, schedule in self.schedules.items():
            state = states.get(name)
            if state is None or state.paused:
                continue
            since = max(state.first_seen, state.updated_at, now - LOOKBACK)
            if name in latest:
                since = max(since, latest[name])
            due = schedule.cron.between(since, now, limit=MAX_MISSED)
            if due:
                self._due(schedule, due, now, name in busy, result)
        return result

    def _due(
        self, schedule: Schedule, due: list[datetime], now: datetime, busy: bool, out: TickResult
    ) -> None:
        section = schedule.section
        last = due[-1]
        late = now - last > timedelta(seconds=section.grace)
        missed = due[:-1] if (not late or section.catchup == "latest") else due
        for slot in missed:
            why = f"missed: no scheduler ran at {slot:%Y-%m-%d %H:%M} UTC"
            if store_slots.fire(
                self.store, schedule.name, slot, state=store_slots.MISSED, reason=why, now=now
            ):
                out.missed.append((schedule.name, slot))
        if late and section.catchup == "skip":
            return
        reason = None
        if late:
            reason = f"caught up {now - last} after its time (catch-up: latest)"
        self._fire(schedule, last, now, busy=busy, out=out, reason=reason)

    def _fire(
        self,
        schedule: Schedule,
        slot: datetime,
        now: datetime,
        *,
        busy: bool,
        out: TickResult,
        manual: bool = False,
        reason: str | None = None,
    ) -> str | None:
        name = schedule.name
        if busy and not manual:
            if schedule.section.concurrency == "skip":
                why = "skipped: the previous slot's run was still going (concurrency: skip)"
                if store_slots.fire(
                    self.store, name, slot, state=store_slots.SKIPPED, reason=why, now=now
                ):
                    out.skipped.append((name, slot))
                return None
            store_slots.fire(
                self.store, name, slot, state=store_slots.WAITING, reason=reason, now=now
            )
            return None
        if schedule.pipeline is not None:
            build = self.queued_build(schedule, slot)
            if store_slots.fire(
                self.store,
                name,
                slot,
                state=store_slots.QUEUED,
                build=build,
                manual=manual,
                reason=reason,
                now=now,
            ):
                out.fired.append((name, slot, build.id))
                log.info("schedule %s: slot %s fired build %s", name, slot.isoformat(), build.id)
                return build.id
            return None
        try:
            run = self.queued_run(schedule, slot, now, attempt=1)
        except Exception as exc:  # a refused request ends the slot; the scheduler goes on
            why = _refusal(exc)
            if store_slots.fire(
                self.store,
                name,
                slot,
                state=store_slots.FAILED,
                reason=why,
                manual=manual,
                now=now,
            ):
                store_slots.settle(
                    self.store,
                    store_slots.Slot(name, slot, store_slots.FAILED, manual, now),
                    store_slots.FAILED,
                    delivery=store_slots.PENDING,
                )
                out.refused.append((name, slot, why))
                log.warning("schedule %s: slot %s refused: %s", name, slot, why)
            return None
        if store_slots.fire(
            self.store,
            name,
            slot,
            state=store_slots.QUEUED,
            run=run,
            manual=manual,
            reason=reason,
            now=now,
        ):
            out.fired.append((name, slot, run.id))
            log.info("schedule %s: slot %s fired run %s", name, slot.isoformat(), run.id)
            return run.id
        self._discard(run)  # another scheduler fired this slot first
        return None

    def run_now(self, name: str, *, by: str | None = None) -> str | None:
        """Fire ``name`` at once (a manual slot keyed by this instant); its run id (a
        pipeline schedule: its build id), or None when the request was refused (the reason
        is on the slot)."""
        now = self.clock()
        out = TickResult()
        run_id = self._fire(self.schedules[name], now, now, busy=False, out=out, manual=True)
        if run_id is None and out.refused:
            from kiln.errors import UsageError

            raise UsageError(f"schedule {name}: {out.refused[0][2]}")
        return run_id

    # -- following open slots ---------------------------------------------------------------

    def _follow(self, now: datetime, out: TickResult) -> None:
        open_slots = store_slots.slots(self.store, states=store_slots.OPEN)
        if not open_slots:
            return
        run_states = store_slots.run_states(
            self.store, [s.run_id for s in open_slots if s.run_id is not None]
        )
        build_states = store_slots.build_states(
            self.store, [s.build_id for s in open_slots if s.build_id is not None]
        )
        # a schedule's slots take turns, oldest first: a waiting slot starts only when no
        # earlier slot of its schedule is still open
        blocked: set[str] = set()
        for slot in sorted(open_slots, key=lambda s: s.slot):
            schedule = self.schedules.get(slot.schedule)
            if slot.state == store_slots.QUEUED and (slot.run_id or slot.build_id):
                if slot.build_id is not None:
                    state, ends = build_states.get(slot.build_id), _BUILD_ENDS
                else:
                    state, ends = run_states.get(slot.run_id or ""), _TERMINAL
                if state is None or state not in ends:
                    blocked.add(slot.schedule)
                elif self._ended(schedule, slot, state, now, out):
                    blocked.add(slot.schedule)  # waiting for its retry
                continue
            if slot.state != store_slots.WAITING:
                continue
            if schedule is None:
                store_slots.settle(
                    self.store, slot, store_slots.CANCELLED, reason="the schedule was removed"
                )
                continue
            if slot.schedule in blocked or (slot.next_at is not None and slot.next_at > now):
                blocked.add(slot.schedule)
                continue
            blocked.add(slot.schedule)
            if schedule.pipeline is not None:
                build = self.queued_build(schedule, slot.slot)
                if store_slots.start_waiting(self.store, slot, build=build):
                    out.retried.append((slot.schedule, slot.slot, build.id))
                continue
            try:
                run = self.queued_run(schedule, slot.slot, now, attempt=slot.attempts + 1)
            except Exception as exc:
                store_slots.settle(
                    self.store,
                    slot,
                    store_slots.FAILED,
                    reason=_refusal(exc),
                    delivery=store_slots.PENDING,
                )
                continue
            if store_slots.start_waiting(self.store, slot, run):
                out.retried.append((slot.schedule, slot.slot, run.id))
            else:
                self._discard(run)

    def _ended(
        self,
        schedule: Schedule | None,
        slot: store_slots.Slot,
        state: str,
        now: datetime,
        out: TickResult,
    ) -> bool:
        """Settle a slot whose run ended; True when it waits for a retry."""
        retries = schedule.section.retries if schedule is not None else 0
        if state in _FAILED_RUN and slot.attempts <= retries:
            assert schedule is not None
            wait = schedule.section.retry_delay * 2 ** (slot.attempts - 1)
            what = f"run {slot.run_id}" if slot.build_id is None else f"build {slot.build_id}"
            if store_slots.settle(
                self.store,
                slot,
                store_slots.WAITING,
                next_at=now + timedelta(seconds=wait),
                reason=f"{what} {state}; retry {slot.attempts} of {retries} in {wait:g}s",
            ):
                log.info("schedule %s: %s %s, retrying", slot.schedule, what, state)
            return True
        final = {
            RunState.SUCCEEDED.value: store_slots.SUCCEEDED,
            RunState.CANCELLED.value: store_slots.CANCELLED,
        }.get(state, store_slots.FAILED)
        if store_slots.settle(self.store, slot, final, delivery=store_slots.PENDING):
            out.ended.append((slot.schedule, slot.slot, final))
        return False

    # -- runs -------------------------------------------------------------------------------

    def queued_run(self, schedule: Schedule, slot: datetime, now: datetime, *, attempt: int) -> Run:
        """The queued run of ``slot`` (checked as any run is; nothing inserted yet)."""
        from dataclasses import replace

        from kiln.project import run_defaults
        from kiln.queue.submit import queued_run
        from kiln.request import RunRequest
        from kiln.scheduler.model import SCHEDULE_TAG, SLOT_TAG

        section = schedule.section
        assert schedule.notebook is not None  # a pipeline schedule fires a build
        options: dict[str, Any] = {"cwd": str(schedule.project.root)}
        if section.timeout is not None:
            options["timeout"] = section.timeout
        if section.engine is not None:
            options["engine"] = section.engine
        request = RunRequest.build(
            schedule.notebook,
            parameters=schedule.parameters_for(slot, now),
            defaults=run_defaults(schedule.project),
            **options,
        )
        if section.secrets:
            request = replace(request, secrets=dict(section.secrets))
        run = queued_run(
            request,
            self.store,
            submitted_by=f"schedule:{schedule.name}",
            tags={SCHEDULE_TAG: schedule.name, SLOT_TAG: slot.isoformat()},
        )
        folder = self.store.run_folder(run.id)
        folder.mkdir(parents=True, exist_ok=True)
        return replace(run, run_dir=str(folder), attempt=attempt)

    def queued_build(self, schedule: Schedule, slot: datetime) -> store_slots.QueuedBuild:
        """The queued build of a pipeline schedule's ``slot`` (nothing inserted yet)."""
        from kiln.store import new_run_id

        assert schedule.pipeline is not None
        return store_slots.QueuedBuild(
            id=new_run_id(),
            project=schedule.pipeline.key,
            pipeline=schedule.pipeline.name,
            options=build_options(schedule, slot).to_json(),
        )

    def _discard(self, run: Run) -> None:
        if run.run_dir:
            shutil.rmtree(run.run_dir, ignore_errors=True)

    # -- what is next -----------------------------------------------------------------------

    def next_wake(self, now: datetime) -> datetime | None:
        """The earliest next slot of any active schedule (None: nothing scheduled)."""
        soonest: datetime | None = None
        with contextlib.suppress(StopIteration):
            for schedule in self.schedules.values():
                slot = schedule.cron.next_after(now)
                if soonest is None or slot < soonest:
                    soonest = slot
        return soonest


_TERMINAL = frozenset(
    state.value
    for state in RunState
    if state.terminal and state is not RunState.PREPARED  # a queued run is never prepare-only
)


def build_options(schedule: Schedule, slot: datetime) -> Any:
    """The options of a scheduled build: the whole pipeline, what is not up to date (every
    task with ``force``), each task's run tagged with the schedule and the slot."""
    from kiln.pipeline.check import BuildOptions
    from kiln.scheduler.model import SCHEDULE_TAG, SLOT_TAG

    return BuildOptions(
        force=schedule.section.force,
        tags={SCHEDULE_TAG: schedule.name, SLOT_TAG: slot.isoformat()},
    )


def _refusal(exc: BaseException) -> str:
    from kiln.errors import KilnError

    if isinstance(exc, KilnError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
