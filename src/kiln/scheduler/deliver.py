"""After a scheduled slot ends: its report written beside the run, then mailed and posted
as the schedule says. Each notification is tried again on failure (with a doubling wait)
and its outcome recorded on the slot (``kiln schedules history``, the API); a failed
delivery never changes the run's state."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kiln.report.alerts import why, with_retries

if TYPE_CHECKING:
    from collections.abc import Callable

    from kiln.scheduler.model import Schedule
    from kiln.store.records import Run
    from kiln.store.slots import Slot
    from kiln.store.sql import RunStore

log = logging.getLogger("kiln.scheduler")


def wanted(on: str, succeeded: bool) -> bool:
    """Whether a notification with ``on`` goes out for this outcome."""
    return on == "always" or (on == "success") == succeeded


def deliver_slot(store: RunStore, schedule: Schedule | None, slot: Slot) -> list[dict[str, Any]]:
    """Make and send what ``slot``'s schedule asks for; one entry per delivery."""
    if schedule is None:
        return [{"kind": "report", "ok": False, "error": "the schedule is no longer in kiln.yaml"}]
    from kiln.scheduler.redact import masker_for

    section = schedule.section
    run = store.get_run_exact(slot.run_id) if slot.run_id else None
    mask = masker_for(schedule, run)
    results: list[dict[str, Any]] = []
    files: dict[str, Any] = {}
    html_page: str | None = None
    if slot.build_id is not None:
        summary, files, made = _build_reports(store, schedule, slot, mask)
        results.extend(made)
    elif run is not None:
        from kiln.report.make import run_report_html, write_file
        from kiln.store.files import file_modes

        try:
            html_page = run_report_html(run, hide_code=section.report.hide_code, mask=mask)
            mode = file_modes().file
            folder = store.run_folder(run.id)
            folder.mkdir(parents=True, exist_ok=True)
            if "html" in section.report.formats:
                files["html"] = write_file(folder / "report.html", html_page.encode(), mode)
            if "pdf" in section.report.formats:
                from kiln.report.pdf import html_to_pdf

                files["pdf"] = write_file(folder / "report.pdf", html_to_pdf(html_page), mode)
            results.append(
                {"kind": "report", "ok": True, "files": {k: str(v) for k, v in files.items()}}
            )
        except Exception as exc:  # a report that cannot be made still gets notified
            results.append({"kind": "report", "ok": False, "error": why(exc)})
    notify = section.notify
    if notify is None:
        return results
    succeeded = slot.state == "succeeded"
    if slot.build_id is None:
        summary = summary_of(schedule, slot, run)
    if notify.email is not None and wanted(notify.email.on, succeeded):
        from kiln.report.mail import send_report

        subject = None
        if notify.email.subject:
            from kiln.scheduler import templates

            names = templates.context(
                schedule.name, schedule.cron.local(slot.slot), schedule.cron.local(slot.fired_at)
            )
            try:
                subject = str(templates.fill(notify.email.subject, {**summary, **names}))
            except ValueError as exc:
                subject = f"[kiln] {schedule.name} {slot.state} (subject template: {exc})"

        def mail() -> dict[str, Any]:
            assert notify is not None and notify.email is not None
            return send_report(
                schedule.smtp,
                notify.email,
                summary,
                subject=subject,
                html_page=html_page,
                files=files,
                mask=mask,
            )

        results.append(with_retries("email", mail, notify.retries, notify.retry_delay))
    if notify.webhook is not None and wanted(notify.webhook.on, succeeded):
        from kiln.report.webhook import post_json

        def post() -> dict[str, Any]:
            assert notify is not None and notify.webhook is not None
            return post_json(notify.webhook.url, summary, timeout=notify.webhook.timeout, mask=mask)

        results.append(with_retries("webhook", post, notify.retries, notify.retry_delay))
    return results


def _build_reports(
    store: RunStore, schedule: Schedule, slot: Slot, mask: Callable[[str], str]
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A pipeline slot's summary (its build's tasks) and, when the schedule has a ``report``
    section, a report of each task that ran, written beside the task's run: (summary, files
    by "TASK.FORMAT", outcomes)."""
    import re

    from kiln.errors import RunNotFound
    from kiln.report.alerts import build_summary
    from kiln.store.builds import BuildStore

    assert slot.build_id is not None
    summary = summary_of(schedule, slot, None)
    builds = BuildStore(store)
    try:
        row = builds.get_build(slot.build_id)
    except RunNotFound:
        return summary, {}, [{"kind": "report", "ok": False, "error": "the build is gone"}]
    finally:
        builds.close()
    run_ids = [t.run_id for t in row.tasks.values() if t.run_id]
    durations = BuildStore(store).run_durations(run_ids) if run_ids else {}
    summary.update(build_summary(row, durations))
    files: dict[str, Any] = {}
    outcomes: list[dict[str, Any]] = []
    if schedule.project.where(schedule.section, "report") is None:
        return summary, files, outcomes  # a build's task reports only when `report:` asks
    from kiln.report.make import run_report_html, write_file
    from kiln.store.files import file_modes

    mode = file_modes().file
    report = schedule.section.report
    for task in row.tasks.values():
        if task.run_id is None or task.state in ("up_to_date", "blocked"):
            continue
        key = re.sub(r"[^A-Za-z0-9_.=-]+", "_", task.task)
        try:
            run = store.get_run_exact(task.run_id)
            page = run_report_html(run, hide_code=report.hide_code, mask=mask)
            folder = store.run_folder(run.id)
            folder.mkdir(parents=True, exist_ok=True)
            if "html" in report.formats:
                files[f"{key}.html"] = write_file(folder / "report.html", page.encode(), mode)
            if "pdf" in report.formats:
                from kiln.report.pdf import html_to_pdf

                files[f"{key}.pdf"] = write_file(folder / "report.pdf", html_to_pdf(page), mode)
        except Exception as exc:  # one task's report failing still leaves the others
            outcomes.append({"kind": "report", "task": task.task, "ok": False, "error": why(exc)})
    outcomes.append({"kind": "report", "ok": True, "files": {k: str(v) for k, v in files.items()}})
    return summary, files, outcomes


def summary_of(schedule: Schedule, slot: Slot, run: Run | None) -> dict[str, Any]:
    """What a notification says about a slot (JSON-ready)."""
    out: dict[str, Any] = {
        "schedule": schedule.name,
        "notebook": schedule.section.notebook or f"pipeline {schedule.section.pipeline}",
        "slot": schedule.cron.local(slot.slot).isoformat(),
        "state": slot.state,
        "attempts": slot.attempts,
        "reason": slot.reason,
    }
    if run is not None:
        out.update(
            run_id=run.id,
            run_state=run.state.value,
            started_at=run.started_at.isoformat() if run.started_at else None,
            ended_at=run.ended_at.isoformat() if run.ended_at else None,
            duration=run.duration,
            parameters=dict(run.parameters),
            records=run.record_values,
            error=run.reason,
        )
    return out
