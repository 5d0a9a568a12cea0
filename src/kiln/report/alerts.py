"""Alerts and their delivery: slots missed while no scheduler ran, a scheduler gone silent,
a pipeline build that failed (``alerts:`` in kiln.yaml), sent by e-mail and webhook like a
schedule's notifications, each attempt retried with a doubling wait. An alert that cannot be
sent is logged and recorded; it never fails the build, the slot or the scheduler.

Kept at the report layer (beside :mod:`kiln.report.mail` and :mod:`kiln.report.webhook`) so
that ``kiln build``, :func:`kiln.build` and the scheduler send the same alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.pipeline.result import Build
    from kiln.project import Project
    from kiln.store.builds import BuildRow

log = logging.getLogger("kiln.scheduler")


def send_alert(project: Project, kind: str, details: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one alert (``kind``: missed, heartbeat) as the alerts section says; what was
    sent (empty without an alerts section)."""
    alerts = project.config.alerts
    if alerts is None:
        return []
    summary = {"alert": kind, "schedule": details.get("schedule", "-"), "state": kind, **details}
    summary.setdefault("notebook", details.get("notebook", "-"))
    subject = f"[kiln] alert: {kind} ({details.get('text', '')})"
    results = []
    if alerts.email is not None:
        from kiln.report.mail import send_report

        email = alerts.email

        def mail() -> dict[str, Any]:
            return send_report(project.config.smtp, email, summary, subject=subject)

        results.append(with_retries("email", mail, 2, 1.0))
    if alerts.webhook is not None:
        from kiln.report.webhook import post_json

        hook = alerts.webhook

        def post() -> dict[str, Any]:
            return post_json(hook.url, {**summary, "text": f"kiln alert: {details.get('text')}"},
                             timeout=hook.timeout)  # fmt: skip

        results.append(with_retries("webhook", post, 2, 1.0))
    for result in results:
        if not result.get("ok"):
            log.warning("alert %s by %s failed: %s", kind, result["kind"], result.get("error"))
    return results


def missed_alert(project: Project, missed: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Alert about slots this step recorded missed (one alert for all of them)."""
    alerts = project.config.alerts
    if alerts is None or not alerts.missed or not missed:
        return []
    names = sorted({name for name, _slot in missed})
    text = f"{len(missed)} slot(s) of {', '.join(names)} missed while no scheduler ran"
    slots = [{"schedule": name, "slot": slot.isoformat()} for name, slot in missed[-50:]]
    return send_alert(project, "missed", {"text": text, "slots": slots, "schedule": names[0]})


def build_failed_alert(
    project: Project, build: Build, *, home: Path | None = None
) -> list[dict[str, Any]]:
    """When ``build`` failed (or crashed) and ``alerts:`` asks for it: the alert sent, its
    outcome recorded on the build (``deliveries``) and logged. Never raises: a build's
    state does not depend on its alert."""
    alerts = project.config.alerts
    if alerts is None or not alerts.builds or build.state not in ("failed", "crashed"):
        return []
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


def with_retries(
    kind: str, attempt: Callable[[], dict[str, Any]], retries: int, delay: float
) -> dict[str, Any]:
    errors: list[str] = []
    for number in range(retries + 1):
        try:
            done = attempt()
        except Exception as exc:
            errors.append(why(exc))
            log.warning("%s delivery attempt %d failed: %s", kind, number + 1, errors[-1])
            if number < retries:
                time.sleep(delay * 2**number)
            continue
        return {"kind": kind, "ok": True, "attempts": number + 1, **done, "at": now()}
    return {"kind": kind, "ok": False, "attempts": retries + 1, "error": errors[-1], "at": now()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def why(exc: BaseException) -> str:
    from kiln.errors import KilnError

    if isinstance(exc, KilnError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
