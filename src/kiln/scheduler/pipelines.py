"""Scheduled pipeline builds: run a claimed build, and say what it did.

A pipeline schedule's slot fires a ``queued`` build (:mod:`kiln.store.slots`); the scheduler
service claims it (:meth:`~kiln.store.builds.BuildStore.claim_build`) and calls
:func:`execute_build` in a thread of its own: :func:`kiln.pipeline.build.run_build` records into
the claimed build, every task a run of the one runner tagged with the schedule and the slot.
The service rather than the queue's workers runs builds because a build is driven by one
process from start to end (its state lives there, its tasks are started as their upstream
tasks end) and needs the project's pipeline, which the scheduler loaded and checked; a worker
runs single queued runs, possibly in another checkout on another machine. The tasks' runs
are still the one runner's.

What a notification or an alert says about a build is
:func:`kiln.report.alerts.build_summary`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.scheduler.model import Schedule
    from kiln.store.slots import Slot

log = logging.getLogger("kiln.scheduler")


def execute_build(
    schedule: Schedule,
    slot: Slot,
    build_id: str,
    home: Path | None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
) -> str:
    """Run the claimed build ``build_id`` of ``schedule``'s ``slot`` to its end; its state.

    Whatever goes wrong before the build's own loop records an end (a task notebook gone, a
    database error) ends the build ``failed`` with the reason, so the slot never waits for a
    build nobody runs."""
    from kiln.pipeline.build import run_build
    from kiln.scheduler.core import build_options

    assert schedule.pipeline is not None
    try:
        build = run_build(
            schedule.pipeline,
            home=home,
            options=build_options(schedule, slot.slot),
            claimed=build_id,
            on_start=on_start,
        )
    except BaseException as exc:  # the cancellation of a stopping scheduler too
        _fail(home, build_id, exc)
        if not isinstance(exc, Exception):
            raise
        return "failed"
    log.info("schedule %s: build %s %s", schedule.name, build.id, build.state)
    from kiln.report.alerts import build_failed_alert

    build_failed_alert(schedule.project, build, home=home)
    return build.state


def _fail(home: Path | None, build_id: str, exc: BaseException) -> None:
    import asyncio

    from kiln.errors import KilnError
    from kiln.store.builds import BuildStore

    if isinstance(exc, asyncio.CancelledError):
        why = "cancelled: the scheduler stopped"
    elif isinstance(exc, KilnError):
        why = exc.message
    else:
        why = f"{type(exc).__name__}: {exc}"
    with BuildStore.open(home) as builds:
        state = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
        if builds.finish_build(build_id, state, reason=why):
            log.error("build %s %s before its tasks ran: %s", build_id, state, why)
        else:  # the build's own loop recorded its end (a cancelled build ends its runs first)
            log.info("build %s stopped: %s", build_id, why)
