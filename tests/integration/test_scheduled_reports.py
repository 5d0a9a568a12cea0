"""Scheduled runs end to end with real parts: `kiln scheduler` fires a slot, a real kernel
runs it, the report is written (HTML and PDF), mailed to a real SMTP server (aiosmtpd on
127.0.0.1) and posted to a real HTTP server; failed deliveries are retried and recorded,
and never change the run's state."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kiln.store import RunStore
from kiln.store import slots as store_slots
from kilnsinks import HookSink, MailSink, smtp_sink, webhook_sink

from kilntest import KILN, build_notebook, wait_for

pytestmark = pytest.mark.kernel

NOTEBOOK = [
    ("day = ''\nfail = False", ["parameters"]),
    "print('day is', day)",
    ("print('HIDDEN-CELL')", ["hide"]),
    "from IPython.display import HTML\nHTML('<b onclick=\"x()\">bold</b><script>evil()</script>')",
    "import kiln\nkiln.record('total', 42)\nassert not fail, 'the data was bad'",
]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    env.update(extra)
    return env


def _project(root: Path, smtp: MailSink, hook: HookSink, extra: str = "") -> Path:
    nbformat.write(build_notebook(NOTEBOOK), root / "sales.ipynb")
    (root / "kiln.yaml").write_text(
        f"""\
smtp: {{host: 127.0.0.1, port: {smtp.port}, from: kiln@example.com}}
schedules:
  daily-sales:
    notebook: sales.ipynb
    cron: "* * * * *"
    timezone: Europe/Berlin
    parameters: {{day: "{{{{ yesterday }}}}"}}
    report: {{format: [html, pdf], hide_code: true}}
    notify:
      email: {{to: [managers@example.com], cc: [boss@example.com], on: always}}
      webhook: {{url: "{hook.url}", on: always}}
      retries: 2
      retry_delay: 0.2
{extra}"""
    )
    return root


def _backdate(home: Path, minutes: int = 2) -> None:
    with RunStore(home) as store:
        store_slots.ensure_states(
            store,
            {"daily-sales": False},
            now=datetime.now(timezone.utc) - timedelta(minutes=minutes),
        )


@contextmanager
def _scheduler(root: Path, home: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    log = (root / "scheduler.log").open("w")
    proc = subprocess.Popen([KILN, "scheduler"], cwd=root, env=_env(home, **env), stdout=log,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _delivered(home: Path) -> list[store_slots.Slot]:
    with RunStore(home) as store:
        return [s for s in store_slots.slots(store) if s.delivery == "done"]


def _attachments(message: Any) -> dict[str, tuple[str, bytes]]:
    return {
        part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    }


def test_a_scheduled_report_is_mailed_and_posted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with smtp_sink() as smtp, webhook_sink() as hook:
        root = _project(tmp_path, smtp, hook)
        _backdate(home)
        with _scheduler(root, home):
            slot = wait_for(lambda: _delivered(home), timeout=120, what="a delivered slot")[-1]
        assert slot.state == "succeeded"
        # (a later minute's slot may have been delivered too before the scheduler stopped)
        (recipients, message), post = smtp.messages[0], hook.posts[0]
    assert sorted(recipients) == ["boss@example.com", "managers@example.com"]
    assert message["To"] == "managers@example.com" and message["Cc"] == "boss@example.com"
    assert message["From"] == "kiln@example.com"
    assert message["Subject"] == "[kiln] daily-sales succeeded: sales.ipynb"
    yesterday = (slot.slot.astimezone(_berlin()).date() - timedelta(days=1)).isoformat()
    body = message.get_body(preferencelist=("html",)).get_content()
    assert f"day is {yesterday}" in body and "kiln-report-header" in body
    assert "<script" not in body and "onclick" not in body and "evil()" not in body
    assert "HIDDEN-CELL" not in body and "print(" not in body  # hide_code: outputs only
    plain = message.get_body(preferencelist=("plain",)).get_content()
    assert "state: succeeded" in plain and "record total: 42" in plain
    files = _attachments(message)
    assert files["daily-sales-report.html"][0] == "text/html"
    assert files["daily-sales-report.pdf"][0] == "application/pdf"
    assert post["content_type"] == "application/json"
    assert post["json"]["state"] == "succeeded" and post["json"]["records"] == {"total": 42}
    assert post["json"]["schedule"] == "daily-sales" and "daily-sales" in post["json"]["text"]
    run_dir = home / "runs" / str(slot.run_id)
    assert (run_dir / "report.html").is_file() and (run_dir / "report.pdf").is_file()
    assert [(d["kind"], d["ok"]) for d in slot.deliveries or []] == [
        ("report", True),
        ("email", True),
        ("webhook", True),
    ]
    if shutil.which("pdftotext"):
        pdf = tmp_path / "mailed.pdf"
        pdf.write_bytes(files["daily-sales-report.pdf"][1])
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
        assert f"day is {yesterday}" in text and "daily-sales" in text


def test_failures_are_retried_and_delivery_failures_are_recorded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    extra = "    retries: 1\n    retry_delay: 1\n"
    with smtp_sink(refuse_first=1) as smtp, webhook_sink(status=500) as hook:
        root = _project(tmp_path, smtp, hook, extra)
        text = (root / "kiln.yaml").read_text()
        (root / "kiln.yaml").write_text(
            text.replace('{day: "{{ yesterday }}"}', '{day: "{{ yesterday }}", fail: true}')
        )
        _backdate(home)
        with _scheduler(root, home):
            slot = wait_for(lambda: _delivered(home), timeout=180, what="a delivered slot")[-1]
        assert smtp.attempts >= 2  # refused once, then sent
        assert hook.attempts >= 3  # the first try and 2 retries, all answered 500
        _recipients, message = smtp.messages[0]
    assert slot.state == "failed" and slot.attempts == 2  # the run and its one retry
    assert message["Subject"] == "[kiln] daily-sales failed: sales.ipynb"
    assert "the data was bad" in message.get_body(preferencelist=("html",)).get_content()
    deliveries = {d["kind"]: d for d in slot.deliveries or []}
    assert deliveries["email"]["ok"] is True and deliveries["email"]["attempts"] == 2
    assert deliveries["webhook"]["ok"] is False and "answered 500" in deliveries["webhook"]["error"]
    with RunStore(home) as store:
        runs = [r for r in store.list_runs(limit=None) if r.tags["slot"] == slot.slot.isoformat()]
    # the run and its retry (a later minute's slot may have fired too); delivery left them be
    assert sorted((r.attempt, r.state.value) for r in runs) == [(1, "failed"), (2, "failed")]
    history = subprocess.run(
        [KILN, "schedules", "history", "daily-sales", "--json"],
        cwd=root,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    (entry,) = [e for e in json.loads(history.stdout) if e["run_id"] == slot.run_id]
    assert entry["state"] == "failed" and entry["deliveries"][2]["ok"] is False


def _berlin() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Berlin")


def test_kiln_report_of_a_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    nbformat.write(build_notebook(NOTEBOOK), tmp_path / "sales.ipynb")

    def kiln(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KILN, *args], cwd=tmp_path, env=_env(home), capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    ran = kiln("run", "sales.ipynb", "-p", "day", "2026-11-29")
    assert ran.returncode == 0, ran.stderr
    with RunStore(home) as store:
        (run,) = store.list_runs(limit=None)
    made = kiln("report", run.id[:12], "--format", "html")
    assert made.returncode == 0, made.stderr
    page = Path(made.stdout.strip()).read_text()
    assert Path(made.stdout.strip()) == home / "runs" / run.id / "report.html"
    assert "print(&#x27;day is&#x27;, day)" in page or "print" in page  # code shown by default
    assert "day is 2026-11-29" in page and "<script" not in page
    bare = kiln("report", run.id, "--no-input", "-o", "-")
    assert "print" not in bare.stdout.split("kiln-report-header", 1)[1]
    pdf = kiln("report", str(run.output_path), "--format", "pdf", "-o", "out.pdf")
    assert pdf.returncode == 0, pdf.stderr
    assert (tmp_path / "out.pdf").read_bytes().startswith(b"%PDF")
    missing = kiln("report", "nope.ipynb")
    assert missing.returncode == 2 and "nope.ipynb: no such notebook" in missing.stderr


CANARY = "canary-7f3a9c2e5b1d"  # the secret's value: it must appear in no file, mail or post
AWS_KEY = "AKIAZ7QXEXAMPLEKEY42"  # a known secret format printed by the notebook


def test_canary_secrets_are_masked_everywhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with smtp_sink() as smtp, webhook_sink() as hook:
        _project(tmp_path, smtp, hook, "    secrets: {api_key: env:SALES_API_KEY}\n")
        nbformat.write(
            build_notebook(
                [
                    ("day = ''\napi_key = ''", ["parameters"]),
                    "import kiln, hashlib\n"
                    "kiln.record('key_sha', hashlib.sha256(api_key.encode()).hexdigest())",
                    "print('using', api_key)\nprint('postgres://app:' + api_key + '@db/s')",
                    f"print('aws key {AWS_KEY}')",
                    "raise ValueError('bad key ' + api_key)",
                ]
            ),
            tmp_path / "sales.ipynb",
        )
        _backdate(home)
        with _scheduler(tmp_path, home, SALES_API_KEY=CANARY):
            slot = wait_for(lambda: _delivered(home), timeout=120, what="a delivered slot")[-1]
        mails = [m.as_bytes() for _r, m in smtp.messages]
        posts = [json.dumps(p["json"]) for p in hook.posts]
    assert slot.state == "failed"
    with RunStore(home) as store:
        run = store.get_run_exact(str(slot.run_id))
    # the run received the real value
    assert run.record_values["key_sha"] == hashlib.sha256(CANARY.encode()).hexdigest()
    assert run.parameters["api_key"] == "***"
    assert mails and posts
    leaks = [
        str(path)
        for folder in (home, tmp_path)
        for path in folder.rglob("*")
        if path.is_file() and CANARY.encode() in path.read_bytes()
    ]
    assert leaks == []  # the database, output notebook, log, reports, scheduler log
    for text in [*(m.decode("utf-8", "replace") for m in mails), *posts]:
        assert CANARY not in text
    output = (home / "runs" / run.id / "output.ipynb").read_text()
    assert 'api_key = \\"***\\"' in output or "api_key = '***'" in output
    shown = json.dumps([c.get("outputs", []) for c in json.loads(output)["cells"]])
    assert AWS_KEY not in shown and "aws key ***" in shown  # a known format, in an output
    assert "postgres://app:***@db/s" in shown and "bad key ***" in shown
    report = (home / "runs" / run.id / "report.html").read_text()  # code hidden: outputs only
    assert AWS_KEY not in report and "bad key ***" in report


def test_a_missing_secret_fails_the_slot_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with smtp_sink() as smtp, webhook_sink() as hook:
        root = _project(tmp_path, smtp, hook, "    secrets: {api_key: env:SALES_API_KEY}\n")
        text = (root / "sales.ipynb").read_text().replace("day = ''", "day = ''\\napi_key = ''")
        (root / "sales.ipynb").write_text(text)
        _backdate(home)
        with _scheduler(root, home):
            slot = wait_for(lambda: _delivered(home), timeout=120, what="a delivered slot")[-1]
        ((_r, message), *_more) = smtp.messages
    assert slot.state == "failed" and slot.run_id is None
    assert "SALES_API_KEY is not set" in (slot.reason or "")
    assert "SALES_API_KEY is not set" in message.get_body(preferencelist=("plain",)).get_content()


def test_alerts_for_missed_slots_and_a_silent_scheduler(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with smtp_sink() as smtp, webhook_sink() as hook:
        root = _project(tmp_path, smtp, hook, "    catchup: skip\n    grace: 5s\n")
        with (root / "kiln.yaml").open("a") as fh:
            fh.write(
                f"alerts:\n  email: {{to: [ops@example.com]}}\n"
                f"  webhook: {{url: '{hook.url}'}}\n  heartbeat: 2s\n"
            )
        silent = subprocess.run([KILN, "health", "--alert"], cwd=root, env=_env(home),
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert silent.returncode == 1
        assert hook.posts[-1]["json"]["alert"] == "heartbeat"
        _backdate(home, minutes=10)  # nine slots passed: missed (catch-up: skip)
        with _scheduler(root, home):
            wait_for(lambda: any(p["json"].get("alert") == "missed" for p in hook.posts),
                     timeout=120, what="a missed-slot alert")  # fmt: skip
        missed = [p["json"] for p in hook.posts if p["json"].get("alert") == "missed"]
        mails = [m for _r, m in smtp.messages if "alert" in str(m["Subject"])]
    assert len(missed) == 1 and "missed while no scheduler ran" in missed[0]["text"]
    assert len(missed[0]["slots"]) >= 8
    # a subject over 78 characters (10 slots missed on a slow machine) is folded, and the
    # sink's parser keeps the fold's leading space
    subjects = sorted(str(m["Subject"]).strip() for m in mails)
    assert subjects[0].startswith("[kiln] alert: heartbeat")
    assert any(s.startswith("[kiln] alert: missed") for s in subjects)
