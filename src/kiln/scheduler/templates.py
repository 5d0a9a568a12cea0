"""Parameter templates of a schedule, filled at fire time in a sandboxed Jinja environment.

What a template sees (all in the schedule's time zone): ``slot`` (the slot's local time,
ISO 8601), ``today`` (the slot's date), ``yesterday`` and ``tomorrow`` (the dates around it),
``now`` (when the slot fired), ``schedule`` (its name). The ``date`` filter formats a date or
time with ``strftime`` codes: ``{{ now | date('%Y-%m') }}``. An unknown name is an error, not
an empty string, and the sandbox refuses attribute tricks (``__class__`` and friends).
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from typing import Any

#: what a template may use, for messages
NAMES = ("slot", "today", "yesterday", "tomorrow", "now", "schedule")


def _date_filter(value: Any, fmt: str = "%Y-%m-%d") -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            try:
                value = date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"date: {value!r} is not a date or time in ISO form") from None
    if not isinstance(value, (date, datetime)):
        raise ValueError(f"date: expected a date or time; got {type(value).__name__}")
    return value.strftime(fmt)


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters["date"] = _date_filter
    return env


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Any:
    return _environment().from_string(text)


def context(schedule: str, slot_local: datetime, fired_local: datetime) -> dict[str, Any]:
    """The names a template sees for one slot (times aware, in the schedule's zone)."""
    day = slot_local.date()
    return {
        "slot": slot_local.isoformat(),
        "today": day.isoformat(),
        "yesterday": (day - timedelta(days=1)).isoformat(),
        "tomorrow": (day + timedelta(days=1)).isoformat(),
        "now": fired_local.isoformat(),
        "schedule": schedule,
    }


def has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def fill(value: Any, names: dict[str, Any], *, where: str = "parameters") -> Any:
    """``value`` with every template in its text filled (lists and mappings walked);
    ``ValueError`` naming the parameter when a template is wrong."""
    if isinstance(value, str):
        if not has_template(value):
            return value
        from jinja2 import TemplateError

        try:
            return _compiled(value).render(names)
        except TemplateError as exc:
            raise ValueError(
                f"{where}: template {value!r}: {exc} (names: {', '.join(NAMES)}; "
                "filter: date('%Y-%m-%d'))"
            ) from None
        except ValueError as exc:
            raise ValueError(f"{where}: template {value!r}: {exc}") from None
    if isinstance(value, list):
        return [fill(item, names, where=f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: fill(item, names, where=f"{where}.{key}") for key, item in value.items()}
    return value
