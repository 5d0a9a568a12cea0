"""Running a planned sweep: N runs at a time through one Runner, and what came of each set.

Each set is a normal ``Runner.arun`` in one event loop, so the runs share the runner's engines
(the fork engine's warm parent serves them all). A run's events reach the sweep's observer
tagged with the set (a context variable follows each run's task).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Literal

from kiln.errors import KilnError, RunCancelled, RunFailed, UsageError
from kiln.runner import (
    RunEnded,
    RunEvent,
    Runner,
    RunRequest,
    RunStarted,
    cancel_on_signals,
    raise_for_state,
)
from kiln.store.records import Run, RunState
from kiln.sweeps.plan import SweepItem, SweepPlan, plan_sweep, short_values

__all__ = [
    "SetDone",
    "SetEvent",
    "SweepEvent",
    "SweepObserver",
    "SweepResult",
    "arun_sweep",
    "plan_and_run_sweep",
    "run_sweep",
]


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetEvent:
    """An event of one set's run (a warning, a cell, an output), tagged with the set."""

    index: int
    event: RunEvent


@dataclass(frozen=True)
class SetDone:
    """A set finished: its run reached a terminal state, or it was refused as it started."""

    item: SweepItem


SweepEvent = SetEvent | SetDone
SweepObserver = Callable[[SweepEvent], None]


@dataclass(eq=False)
class _Slot:
    """A set being run: which sweep, how far it got, its task."""

    sweep: _Execution
    index: int
    phase: Literal["starting", "executing", "ending"] = "starting"
    run_id: str | None = None
    task: asyncio.Future[Run] | None = None


#: the slot of the run the current task belongs to (tasks the runner creates inherit it)
_current: ContextVar[_Slot | None] = ContextVar("kiln_sweep_slot", default=None)


class _Execution:
    def __init__(self, plan: SweepPlan, runner: Runner, observer: SweepObserver | None) -> None:
        self.items = list(plan.items)
        self.runner = runner
        self.observer = observer
        self.pending = deque(range(len(self.items)))
        self.slots: dict[int, _Slot] = {}
        self.stop_reason: str | None = None
        #: names of the signals received during the sweep (filled by the runner's handler)
        self.signals: list[str] = []

    @property
    def stopping(self) -> bool:
        # a signal counts at once, before the callback that calls stop() has run
        return self.stop_reason is not None or bool(self.signals)

    async def run(self, jobs: int) -> SweepResult:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        self.runner.observers.append(self._observe)
        try:
            with cancel_on_signals(stop) as signals:
                self.signals = signals
                stop.add_done_callback(lambda _: self._stop_on_signal())
                workers = [asyncio.ensure_future(self._worker()) for _ in range(jobs)]
                try:
                    await asyncio.wait(workers)
                except asyncio.CancelledError:
                    # the sweep itself was cancelled: end every run properly, then say so
                    self.stop("cancelled", executing=True)
                    await asyncio.wait(workers)
                    raise
            self._stop_on_signal()
            for worker in workers:
                worker.result()  # a bug in a worker is not swallowed
        finally:
            self.runner.observers.remove(self._observe)
        why = f"not run: the sweep was {self.stop_reason}"
        for index in self.pending:
            self.items[index] = replace(self.items[index], reason=why)
        return SweepResult(tuple(self.items), self.stop_reason is not None, self.stop_reason)

    def _stop_on_signal(self) -> None:
        if self.signals and self.stop_reason is None:
            self.stop(f"cancelled by {self.signals[0]}")

    def stop(self, reason: str, *, executing: bool = False) -> None:
        """Start no more sets; cancel runs still starting (and executing ones if asked: a
        signal already cancelled those through the runner)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        for slot in self.slots.values():
            if slot.task is None or slot.task.done():
                continue
            # never a run that has ended: it is closing its engine session
            if slot.phase == "starting" or (executing and slot.phase == "executing"):
                slot.task.cancel()

    async def _worker(self) -> None:
        while self.pending and not self.stopping:
            index = self.pending.popleft()
            slot = _Slot(self, index)
            self.slots[index] = slot
            slot.task = asyncio.ensure_future(self._run_one(slot))
            item = self.items[index]
            try:
                done = replace(item, run=await slot.task)
            except asyncio.CancelledError:
                if not slot.task.cancelled():
                    raise  # this worker was cancelled, not the run
                why = f"not run: the sweep was {self.stop_reason or 'cancelled'}"
                done = self._unfinished(slot, item, why)
            except KilnError as exc:
                done = self._unfinished(slot, item, exc.message)
            except Exception as exc:
                done = self._unfinished(slot, item, f"{type(exc).__name__}: {exc}")
            finally:
                del self.slots[index]
            self.items[index] = done
            self._emit(SetDone(done))

    async def _run_one(self, slot: _Slot) -> Run:
        _current.set(slot)
        return await self.runner.arun(self.items[slot.index].request, check=False)

    def _unfinished(self, slot: _Slot, item: SweepItem, reason: str) -> SweepItem:
        """A set whose ``arun`` raised: recorded (the runner gave it a terminal state) or not."""
        if slot.run_id is not None:
            return replace(item, run=self.runner.store.get_run(slot.run_id))
        return replace(item, reason=reason)

    def _observe(self, event: RunEvent) -> None:
        slot = _current.get()
        if slot is None or slot.sweep is not self:
            return  # a run of someone else sharing this runner
        if isinstance(event, RunStarted):
            slot.run_id, slot.phase = event.run.id, "executing"
            if self.stopping:
                # stopped while this run was starting: it is recorded now, so it ends cancelled
                task = asyncio.current_task()
                if task is not None:
                    task.cancel()
        elif isinstance(event, RunEnded):
            slot.phase = "ending"
        self._emit(SetEvent(slot.index, event))

    def _emit(self, event: SweepEvent) -> None:
        if self.observer is not None:
            self.observer(event)


async def arun_sweep(
    plan: SweepPlan, *, runner: Runner, jobs: int = 1, observer: SweepObserver | None = None
) -> SweepResult:
    """Run every set of ``plan``, ``jobs`` at a time, each through ``runner.arun``.

    Every run goes through the one runner, so they share its warm engines. A failed run
    does not stop the others. SIGINT/SIGTERM cancel the sweep (``result.cancelled``);
    cancelling the task that awaits this also ends every run properly and then raises.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs}")
    if not plan.items:
        return SweepResult(())
    execution = _Execution(plan, runner, observer)
    return await execution.run(min(jobs, len(plan.items)))


def run_sweep(
    plan: SweepPlan, *, runner: Runner, jobs: int = 1, observer: SweepObserver | None = None
) -> SweepResult:
    """:func:`arun_sweep` in its own event loop; the runner's engines close with it."""
    return _in_own_loop(
        runner, lambda: arun_sweep(plan, runner=runner, jobs=jobs, observer=observer)
    )


def plan_and_run_sweep(
    request: RunRequest,
    sets: Sequence[Mapping[str, Any]],
    *,
    runner: Runner,
    jobs: int = 1,
    output: str | os.PathLike[str] | None = None,
    allow_outside: bool = False,
    on_plan: Callable[[SweepPlan], SweepObserver | None] | None = None,
) -> SweepResult:
    """:func:`plan_sweep` then :func:`arun_sweep` in one event loop, whose first act is to
    start the runner's warm parent (:meth:`Runner.warm_up`): it boots (~0.3 s) while the sets
    are checked instead of after. ``on_plan`` hears the plan before anything runs and gives
    the sweep's observer. The runner's engines close with the loop, as in :func:`run_sweep`;
    a refused plan raises as :func:`plan_sweep` does (the warm parent is stopped)."""
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs}")

    async def go() -> SweepResult:
        runner.warm_up(request)
        plan = plan_sweep(request, sets, output=output, allow_outside=allow_outside)
        observer = on_plan(plan) if on_plan is not None else None
        return await arun_sweep(plan, runner=runner, jobs=jobs, observer=observer)

    return _in_own_loop(runner, go)


def _in_own_loop(runner: Runner, sweep: Callable[[], Awaitable[SweepResult]]) -> SweepResult:
    """Run ``sweep`` in an event loop of its own; the runner's engines close with it."""

    async def once() -> SweepResult:
        try:
            return await sweep()
        finally:
            await runner.aclose_engines()

    return asyncio.run(once())


# -- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did, set by set, in the grid's order.

    >>> result = kiln.sweep("report.ipynb", {"region": ["EU", "US"], "n": [1, 2]}, jobs=2)
    >>> result.ok, len(result.runs), [r.records["total"] for r in result.succeeded]
    >>> print(result.table())
    """

    items: tuple[SweepItem, ...]
    #: SIGINT/SIGTERM stopped the sweep: running runs were cancelled, the rest never started
    cancelled: bool = False
    #: why it stopped, e.g. ``cancelled by SIGINT``
    reason: str | None = None

    @property
    def runs(self) -> list[Run]:
        """The recorded runs, in set order (sets never run have none)."""
        return [item.run for item in self.items if item.run is not None]

    @property
    def succeeded(self) -> list[Run]:
        return [run for run in self.runs if run.state.ok]

    @property
    def failed(self) -> list[Run]:
        """Recorded runs that did not succeed: failed, timed out, crashed or cancelled."""
        return [run for run in self.runs if not run.state.ok]

    @property
    def not_run(self) -> list[SweepItem]:
        """Sets with no recorded run: never started, or refused as they started."""
        return [item for item in self.items if item.run is None]

    @property
    def ok(self) -> bool:
        """Every set ran and succeeded."""
        return not self.cancelled and all(item.ok for item in self.items)

    def check(self) -> None:
        """Raise unless :attr:`ok`: ``RunCancelled`` for a cancelled sweep, else the error of
        the first set (in set order) that did not succeed."""
        if self.ok:
            return
        if self.cancelled:
            cancelled = next((r for r in self.runs if r.state is RunState.CANCELLED), None)
            raise RunCancelled(f"sweep {self.reason}: {self.counts()}", run=cancelled)
        for item in self.items:
            if item.run is None:
                shown = short_values(item.values)
                raise RunFailed(f"sweep set {item.index} ({shown}): {item.reason}")
            raise_for_state(item.run)

    def counts(self) -> str:
        """``6 sets: 5 succeeded, 1 failed``."""
        by_state: dict[str, int] = {}
        for item in self.items:
            state = item.state.replace("_", " ")
            by_state[state] = by_state.get(state, 0) + 1
        parts = ", ".join(f"{count} {state}" for state, count in by_state.items())
        plural = "s" if len(self.items) != 1 else ""
        return f"{len(self.items)} set{plural}: {parts}"

    def to_json(self) -> list[dict[str, Any]]:
        return [item.to_json() for item in self.items]

    #: the columns of :meth:`rows`
    COLUMNS = ("#", "STATE", "DURATION", "RUN", "PARAMETERS", "RECORDS")

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """A row per set: index, state, duration, run id, parameters, records."""
        rows = []
        for item in self.items:
            run = item.run
            duration = run.duration if run is not None else None
            rows.append(
                (
                    str(item.index),
                    item.state,
                    f"{duration:.2f}s" if duration is not None else "-",
                    run.id if run is not None else "-",
                    short_values(item.values, 40) if item.values else "-",
                    _records(run) if run is not None else "-",
                )
            )
        return rows

    def footer(self) -> list[str]:
        """The counts, and why sets were not run."""
        lines = [self.counts()]
        if self.not_run:
            reasons = dict.fromkeys(item.reason or "not run" for item in self.not_run)
            never = "never started and not recorded" if self.cancelled else "not recorded"
            lines.append(f"{len(self.not_run)} not run ({never}): " + "; ".join(reasons))
        return lines

    def table(self) -> str:
        """A plain-text summary: :meth:`rows` under :data:`COLUMNS`, then :meth:`footer`."""
        rows = [self.COLUMNS, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = []
        for row in rows:
            cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2])]
            cells += [row[3].ljust(widths[3]), row[4].ljust(widths[4]), row[5]]
            lines.append("  ".join(cells).rstrip())
        return "\n".join([*lines, *self.footer()])


def _records(run: Run, limit: int = 50) -> str:
    parts = []
    for record in run.records_list:
        shown = json.dumps(record.value, default=str) if record.kind == "json" else None
        if shown is None or len(shown) > 20:
            shown = f"<{record.kind}>" if shown is None else shown[:19] + "…"
        parts.append(f"{record.name}={shown}")
    text = ", ".join(parts) or "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"
