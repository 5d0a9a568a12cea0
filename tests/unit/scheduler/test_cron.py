"""Cron slots in time zones: DST gaps fire once at the next valid minute, repeated local
times once; bad expressions and zones are clear errors at load."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from kiln.project import load_project
from kiln.project.cronspec import Cron
from kiln.yamlio import YamlError


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)  # type: ignore[misc]


def _local(cron: Cron, slots: list[datetime]) -> list[str]:
    return [cron.local(s).isoformat() for s in slots]


def test_weekdays_at_six_in_berlin() -> None:
    cron = Cron("0 6 * * 1-5", "Europe/Berlin")
    slots = cron.between(_utc(2026, 11, 27), _utc(2026, 12, 2))  # Fri 27 .. Tue 1 Dec
    assert _local(cron, slots) == [
        "2026-11-27T06:00:00+01:00",
        "2026-11-30T06:00:00+01:00",
        "2026-12-01T06:00:00+01:00",
    ]


def test_a_time_skipped_by_dst_fires_once_at_the_next_valid_minute() -> None:
    cron = Cron("30 2 * * *", "Europe/Berlin")  # 29 March 2026: 02:00 -> 03:00
    slots = cron.between(_utc(2026, 3, 28), _utc(2026, 3, 31))
    assert _local(cron, slots) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    quarter = Cron("*/15 * * * *", "Europe/Berlin")  # 02:00..02:45 all collapse into 03:00
    slots = quarter.between(_utc(2026, 3, 29, 0, 40), _utc(2026, 3, 29, 1, 20))
    assert _local(quarter, slots) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
    ]


def test_a_time_repeated_by_dst_fires_once() -> None:
    cron = Cron("30 1 * * *", "America/New_York")  # 1 November 2026: 02:00 -> 01:00
    slots = cron.between(_utc(2026, 10, 31), _utc(2026, 11, 3))
    assert _local(cron, slots) == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]
    # asked from between the two 01:30s, the repeated one does not fire again
    assert cron.next_after(_utc(2026, 11, 1, 5, 45)) == _utc(2026, 11, 2, 6, 30)


def test_shortcuts_and_utc() -> None:
    daily = Cron("@daily")
    assert daily.next_after(_utc(2026, 11, 30, 12)) == _utc(2026, 12, 1)
    hourly = Cron("@hourly", "Asia/Kolkata")  # +05:30: hours start at :30 UTC
    assert hourly.next_after(_utc(2026, 11, 30, 12, 10)) == _utc(2026, 11, 30, 12, 30)


def _project(tmp_path: Path, schedule: str) -> Path:
    (tmp_path / "nb.ipynb").write_text("{}")
    (tmp_path / "kiln.yaml").write_text("schedules:\n  s:\n    notebook: nb.ipynb\n" + schedule)
    return tmp_path


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('    cron: "0 6 * *"\n', "has 4 fields; expected 5"),
        ('    cron: "61 6 * * *"\n', "is not a valid cron expression"),
        ('    cron: "@fortnightly"\n', "unknown shortcut '@fortnightly'"),
        ('    cron: "@daily"\n    timezone: Mars/Olympus\n', "unknown time zone 'Mars/Olympus'"),
        ('    cron: "@daily"\n    secrets: {k: SALES}\n', "expected env:VARIABLE"),
        ('    cron: "@daily"\n    concurrency: wait\n', "concurrency"),
    ],
)
def test_bad_schedules_are_located_errors(tmp_path: Path, schedule: str, message: str) -> None:
    project = _project(tmp_path, schedule)
    with pytest.raises(YamlError, match=r"kiln\.yaml") as caught:
        load_project(project)
    assert message in str(caught.value)
    assert "schedules.s" in str(caught.value)


def test_a_bad_template_is_an_error_at_load(tmp_path: Path) -> None:
    from kiln.scheduler.model import load_schedules

    project = _project(tmp_path, '    cron: "@daily"\n    parameters: {day: "{{ yesterdy }}"}\n')
    with pytest.raises(YamlError, match="'yesterdy' is undefined"):
        load_schedules(load_project(project))


def test_email_without_an_smtp_section_is_an_error_at_load(tmp_path: Path) -> None:
    from kiln.scheduler.model import load_schedules

    project = _project(tmp_path, '    cron: "@daily"\n    notify: {email: {to: [a@example.com]}}\n')
    with pytest.raises(YamlError, match=r"kiln\.yaml:5.*notify\.email: e-mail needs an smtp"):
        load_schedules(load_project(project))
    smtp = "smtp: {host: 127.0.0.1, port: 2525, from: k@example.com}\n"
    (tmp_path / "kiln.yaml").write_text(smtp + (tmp_path / "kiln.yaml").read_text())
    assert set(load_schedules(load_project(project))) == {"s"}


def test_the_issue_example_loads(tmp_path: Path) -> None:
    (tmp_path / "sales.ipynb").write_text("{}")
    (tmp_path / "kiln.yaml").write_text(
        """\
smtp: {host: 127.0.0.1, port: 2525, from: kiln@example.com}
schedules:
  daily-sales:
    notebook: sales.ipynb
    cron: "0 6 * * 1-5"
    timezone: Europe/Berlin
    parameters: {day: "{{ yesterday }}"}
    secrets: {api_key: env:SALES_API_KEY}
    retries: 2
    report: {format: [html, pdf], hide_code: true}
    notify:
      email: {to: [managers@example.com], on: always}
      webhook: {url: "http://127.0.0.1:9000/hook", on: failure}
"""
    )
    config = load_project(tmp_path).config
    assert config.smtp is not None and config.smtp.sender == "kiln@example.com"
    section = config.schedules["daily-sales"]
    assert section.notify is not None and section.notify.email is not None
    assert section.notify.email.on == "always" and section.notify.webhook is not None
    assert section.notify.webhook.on == "failure"
    assert section.report.formats == ["html", "pdf"] and section.secrets == {
        "api_key": "env:SALES_API_KEY"
    }


def test_word_keys_only_in_the_project_file() -> None:
    from kiln.yamlio import load_yaml

    text = "notify: {on: failure, 'yes': 1}"
    assert load_yaml(text, origin="x", word_keys=True) == {"notify": {"on": "failure", "yes": 1}}
    assert load_yaml(text, origin="x") == {"notify": {True: "failure", "yes": 1}}
