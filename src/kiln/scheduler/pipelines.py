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

:func:`build_summary` is what a notification or an alert says about a build: its tasks, their
states, durations and the failing task's error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.pipeline.result import Build
    from kiln.project import Project
    from kiln.scheduler.model import Schedule
    from kiln.store.builds import BuildRow
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


def build_failed_alert(
    project: Project, build: Build, *, home: Path | None = None
) -> list[dict[str, Any]]:
    """When ``build`` failed (or crashed) and ``alerts:`` asks for it: the alert sent, its
    outcome recorded on the build (``deliveries``) and logged. Never raises: a build's
    state does not depend on its alert."""
    alerts = project.config.alerts
    if alerts is None or not alerts.builds or build.state not in ("failed", "crashed"):
        return []
    from kiln.scheduler.alerts import send_alert

    try:
        summary = build_summary(build)
        failing = summary.get("failed_task")
        text = f"pipeline {build.pipeline} build {build.id} {build.state}"
        if failing:
            text += f": task {failing['task']} {failing['state']}: {failing['error']}"
        details = {**summary, "text": text, "schedule": build.pipeline}
        results = send_alert(project, "build_failed", details)
    except Exception as exc:  # an alert never fails anything
        results = [{"kind": "alert", "ok": False, "error": f"{type(exc).__name__}: {exc}"}]
        log.warning("alert about build %s failed: %s", build.id, results[0]["error"])
    _record(home, build.id, results)
    return results


def _record(home: Path | None, build_id: str, results: list[dict[str, Any]]) -> None:
    from kiln.store.builds import BuildStore

    try:
        with BuildStore.open(home) as builds:
            builds.set_deliveries(build_id, results)
    except Exception as exc:
        log.warning("could not record the alert of build %s: %s", build_id, exc)


def build_summary(
    build: Build | BuildRow, durations: dict[str, float | None] | None = None
) -> dict[str, Any]:
    """What a notification says about a build (JSON-ready): each task's state, duration and
    run, and the first failing task's error."""
    tasks: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    for name, task in build.tasks.items():
        run_id = getattr(task, "run_id", None)
        run = getattr(task, "run", None)
        if run is not None:
            run_id = run.id
        duration = task.duration
        if duration is None and durations is not None and run_id is not None:
            duration = durations.get(run_id)
        entry = {
            "task": name,
            "state": task.state,
            "duration": round(duration, 3) if duration is not None else None,
            "run_id": run_id,
            "error": task.reason if task.state in ("failed", "crashed", "blocked") else None,
        }
        tasks.append(entry)
        if failed is None and task.state in ("failed", "crashed"):
            failed = entry
    out: dict[str, Any] = {
        "pipeline": build.pipeline,
        "build_id": build.id,
        "build_state": build.state,
        "reason": build.reason,
        "tasks": tasks,
    }
    if failed is not None:
        out["failed_task"] = failed
        out["error"] = failed["error"]
    return out
