"""E-mail and webhook notifications against real servers on 127.0.0.1 (aiosmtpd, an HTTP
server): the message's parts, recipients and attachments, credentials from the environment,
masking, and errors that say what went wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.project.schedule_sections import EmailNotify, SmtpSection
from kiln.redact import Redactor
from kiln.report.mail import build_message, send_report
from kiln.report.webhook import post_json
from kiln.scheduler.deliver import wanted
from kilnsinks import smtp_sink, webhook_sink

SUMMARY = {
    "schedule": "daily-sales",
    "notebook": "sales.ipynb",
    "slot": "2026-11-30T06:00:00+01:00",
    "state": "succeeded",
    "run_id": "r1",
    "parameters": {"day": "2026-11-29", "api_key": "sup3r-s3cret-value"},
    "records": {"total": 42},
}


def test_the_message(tmp_path: Path) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7 fake")
    notify = EmailNotify(to=["a@example.com", "b@example.com"], cc=["c@example.com"])
    message = build_message(
        "kiln@example.com",
        notify,
        SUMMARY,
        html_page="<html><body><p>the report</p></body></html>",
        files={"pdf": report},
        mask=Redactor(["sup3r-s3cret-value"]),
    )
    assert message["To"] == "a@example.com, b@example.com" and message["Cc"] == "c@example.com"
    assert message["Subject"] == "[kiln] daily-sales succeeded: sales.ipynb"
    plain = message.get_body(preferencelist=("plain",)).get_content()
    assert 'parameter api_key: "***"' in plain and "sup3r" not in plain
    assert "the report" in message.get_body(preferencelist=("html",)).get_content()
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "daily-sales-report.pdf"
    assert attachment.get_payload(decode=True) == b"%PDF-1.7 fake"
    no_files = build_message("k@x.org", EmailNotify(to="a@x.org", attach=False), SUMMARY,
                             files={"pdf": report})  # fmt: skip
    assert list(no_files.iter_attachments()) == []


def test_mail_to_a_real_server_with_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KILN_SMTP_USER", "reports")
    monkeypatch.setenv("KILN_SMTP_PASSWORD", "pa55-word")
    with smtp_sink(auth=True) as sink:
        smtp = SmtpSection(port=sink.port, sender="kiln@example.com")
        sent = send_report(smtp, EmailNotify(to=["m@example.com"]), SUMMARY)
        ((recipients, message),) = sink.messages
    assert sink.logins == [("reports", "pa55-word")]
    assert recipients == ["m@example.com"] and sent["to"] == ["m@example.com"]
    assert message["Message-ID"] == sent["message_id"]


def test_mail_errors_say_what() -> None:
    from kiln.errors import UsageError

    with pytest.raises(UsageError, match="needs an smtp section"):
        send_report(None, EmailNotify(to="a@b.org"), SUMMARY)
    with smtp_sink(refuse_first=1) as sink:
        smtp = SmtpSection(port=sink.port)
        with pytest.raises(Exception, match="try again later"):
            send_report(smtp, EmailNotify(to="a@b.org"), SUMMARY)
    with pytest.raises(ValueError, match="'not-an-address' is not an e-mail address"):
        EmailNotify(to="not-an-address")


def test_webhook_posts_masked_json() -> None:
    with webhook_sink() as hook:
        answer = post_json(hook.url, SUMMARY, mask=Redactor(["sup3r-s3cret-value"]))
        (post,) = hook.posts
    assert answer == {"url": hook.url, "status": 200}
    assert post["json"]["parameters"]["api_key"] == "***"
    assert post["json"]["text"].startswith("kiln: daily-sales succeeded")
    with webhook_sink(status=503) as failing, pytest.raises(RuntimeError, match="answered 503"):
        post_json(failing.url, SUMMARY)
    with pytest.raises(RuntimeError, match=r"cannot reach http://127\.0\.0\.1:9/"):
        post_json("http://127.0.0.1:9/", SUMMARY, timeout=2)


@pytest.mark.parametrize(
    ("on", "ok", "sent"),
    [("always", True, True), ("always", False, True), ("success", True, True),
     ("success", False, False), ("failure", True, False), ("failure", False, True)],
)  # fmt: skip
def test_when_notifications_go(on: str, ok: bool, sent: bool) -> None:
    assert wanted(on, ok) is sent
