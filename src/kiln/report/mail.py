"""Reports by e-mail over SMTP: the HTML report as the body (or a summary), the report's
files attached, a plain-text part for clients that show no HTML.

Credentials come from the environment (the variables the ``smtp`` section names, by default
``KILN_SMTP_USER`` and ``KILN_SMTP_PASSWORD``); ``kiln.yaml`` holds none. Everything that goes
into the message has been through the run's secret masking.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.project.schedule_sections import EmailNotify, SmtpSection

_MIME = {"html": ("text", "html"), "pdf": ("application", "pdf")}


def default_subject(summary: Mapping[str, Any]) -> str:
    state = summary.get("state", "?")
    return f"[kiln] {summary.get('schedule')} {state}: {summary.get('notebook')}"


def summary_text(summary: Mapping[str, Any]) -> str:
    """The summary as lines of text (the plain part, and the body without a report)."""
    lines = []
    for key in ("schedule", "notebook", "pipeline", "slot", "state", "run_id", "build_id",
                "attempts", "duration", "reason"):  # fmt: skip
        value = summary.get(key)
        if value is not None:
            lines.append(f"{key}: {value}")
    for name, value in (summary.get("parameters") or {}).items():
        lines.append(f"parameter {name}: {json.dumps(value, default=str)}")
    for name, value in (summary.get("records") or {}).items():
        lines.append(f"record {name}: {json.dumps(value, default=str)[:500]}")
    for task in summary.get("tasks") or ():  # a pipeline build's tasks
        took = f" in {task['duration']:.1f}s" if task.get("duration") is not None else ""
        error = f": {task['error']}" if task.get("error") else ""
        lines.append(f"task {task['task']}: {task['state']}{took}{error}")
    return "\n".join(lines) + "\n"


def build_message(
    sender: str,
    notify: EmailNotify,
    summary: Mapping[str, Any],
    *,
    subject: str | None = None,
    html_page: str | None = None,
    files: Mapping[str, Path] | None = None,
    mask: Callable[[str], str] | None = None,
) -> EmailMessage:
    """The message for one notification (nothing sent)."""
    hide = mask or (lambda text: text)
    message = EmailMessage()
    message["Subject"] = hide(subject or default_subject(summary)).replace("\n", " ")
    message["From"] = sender
    message["To"] = ", ".join(notify.recipients)
    if notify.cc:
        message["Cc"] = ", ".join(notify.cc)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "kiln")
    text = hide(summary_text(summary))
    message.set_content(text)
    body = html_page
    if body is None:
        body = f"<html><body><pre>{html.escape(text)}</pre></body></html>"
    message.add_alternative(body, subtype="html")
    if notify.attach and files:
        for key, path in files.items():
            # "html", or "TASK.html" for each task of a pipeline build
            task, _, kind = key.rpartition(".")
            maintype, subtype = _MIME.get(kind, ("application", "octet-stream"))
            stem = f"{summary.get('schedule', 'report')}-{task + '-' if task else ''}report"
            message.add_attachment(
                Path(path).read_bytes(),
                maintype=maintype,
                subtype=subtype,
                filename=f"{stem}.{kind}",
            )
    return message


def send(smtp: SmtpSection, message: EmailMessage, recipients: list[str]) -> None:
    """Deliver ``message`` through ``smtp`` (raises on any refusal or network error)."""
    import smtplib
    import ssl

    user = os.environ.get(smtp.user_env)
    password = os.environ.get(smtp.password_env)
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if smtp.security == "ssl":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    with client:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if user and password:
            client.login(user, password)
        refused = client.send_message(message, to_addrs=recipients)
    if refused:
        raise RuntimeError(f"the server refused {', '.join(sorted(refused))}")


def send_report(
    smtp: SmtpSection | None,
    notify: EmailNotify,
    summary: Mapping[str, Any],
    *,
    subject: str | None = None,
    html_page: str | None = None,
    files: Mapping[str, Path] | None = None,
    mask: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Build and send one notification; what was sent (for the slot's record)."""
    if smtp is None:
        from kiln.errors import UsageError

        raise UsageError("e-mail needs an smtp section in kiln.yaml (host, port, from)")
    message = build_message(
        smtp.sender, notify, summary, subject=subject, html_page=html_page, files=files,
        mask=mask,
    )  # fmt: skip
    recipients = [*notify.recipients, *notify.cc]
    send(smtp, message, recipients)
    return {"to": recipients, "message_id": message["Message-ID"], "subject": message["Subject"]}
