"""Alerts about the scheduling itself (``alerts:`` in kiln.yaml): slots missed while no
scheduler ran, and a scheduler gone silent. Sent like a schedule's notifications (e-mail,
webhook), retried, and logged; an alert that cannot be sent never stops the scheduler."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.project import Project

log = logging.getLogger("kiln.scheduler")


def send_alert(project: Project, kind: str, details: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one alert (``kind``: missed, heartbeat) as the alerts section says; what was
    sent (empty without an alerts section)."""
    from kiln.scheduler.deliver import _with_retries

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

        results.append(_with_retries("email", mail, 2, 1.0))
    if alerts.webhook is not None:
        from kiln.report.webhook import post_json

        hook = alerts.webhook

        def post() -> dict[str, Any]:
            return post_json(hook.url, {**summary, "text": f"kiln alert: {details.get('text')}"},
                             timeout=hook.timeout)  # fmt: skip

        results.append(_with_retries("webhook", post, 2, 1.0))
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
