"""Parameter templates: filled per slot in the schedule's zone, sandboxed, strict."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from kiln.scheduler import templates

BERLIN = ZoneInfo("Europe/Berlin")


def _names(slot: datetime, fired: datetime | None = None) -> dict[str, object]:
    return templates.context("sales", slot, fired or slot)


def test_yesterday_is_the_day_before_the_slot_in_its_zone() -> None:
    # 00:30 in Berlin on 1 December is still 30 November in UTC: the zone's date counts
    slot = datetime(2026, 12, 1, 0, 30, tzinfo=BERLIN)
    names = _names(slot)
    assert templates.fill("{{ yesterday }}", names) == "2026-11-30"
    assert templates.fill("{{ today }}", names) == "2026-12-01"
    assert templates.fill("{{ slot }}", names) == "2026-12-01T00:30:00+01:00"


def test_the_date_filter_and_nested_values() -> None:
    slot = datetime(2026, 3, 2, 6, tzinfo=BERLIN)
    names = _names(slot, datetime(2026, 3, 2, 6, 0, 3, tzinfo=BERLIN))
    value = {"month": "{{ now | date('%Y-%m') }}", "days": ["{{ slot | date('%d') }}", 3]}
    assert templates.fill(value, names) == {"month": "2026-03", "days": ["02", 3]}
    assert templates.fill("plain {text}", names) == "plain {text}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ tomorow }}", "'tomorow' is undefined"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ schedule | date }}", "not a date"),
    ],
)
def test_wrong_templates_say_what(text: str, message: str) -> None:
    names = _names(datetime(2026, 3, 2, 6, tzinfo=BERLIN))
    with pytest.raises(ValueError, match=message) as caught:
        templates.fill(text, names, where="schedules.s.parameters.day")
    assert "schedules.s.parameters.day" in str(caught.value)
