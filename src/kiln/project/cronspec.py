"""Cron expressions in a time zone: checking them, and the instants they fire at.

croniter walks the *wall clock* of the schedule's zone (naive local times), and each wall
time becomes an instant here, so daylight saving time is handled in one place with one rule:

* a local time that a change skips (02:30 on the night clocks go forward) fires once, at the
  first valid minute after the gap (03:00); several skipped times collapse into that one;
* a local time that a change repeats (02:30 on the night clocks go back) fires once, at its
  first occurrence.

Slots are aware UTC datetimes; they key the slots in the history.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

#: the shortcuts croniter knows, spelled as people write them
SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


@functools.lru_cache(maxsize=4096)
def check_cron(expression: str) -> None:
    """``ValueError`` saying what is wrong unless ``expression`` is a usable cron expression."""
    from croniter import croniter

    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in SHORTCUTS:
            raise ValueError(
                f"cron: unknown shortcut {text!r}: expected one of {', '.join(SHORTCUTS)}"
            )
        return
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron: {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week), e.g. '0 6 * * 1-5'"
        )
    if not croniter.is_valid(text):
        raise ValueError(
            f"cron: {expression!r} is not a valid cron expression "
            "(minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-7; * , - / allowed)"
        )


def check_timezone(name: str) -> None:
    """``ValueError`` unless ``name`` is an IANA time zone this machine knows."""
    zone_of(name)


@functools.lru_cache(maxsize=512)
def zone_of(name: str) -> tzinfo:
    """The zone named ``name`` (``UTC`` and IANA names)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone: unknown time zone {name!r}: expected an IANA name such as "
            "Europe/Berlin, America/New_York or UTC"
        ) from None


@functools.lru_cache(maxsize=4096)
def _parsed(expression: str) -> Any:
    """A croniter for ``expression``, parsed once; copies of it walk from any start."""
    from croniter import croniter

    return croniter(expression, datetime(2000, 1, 1))


class Cron:
    """A cron expression in a zone: the slots (aware UTC instants) it fires at."""

    def __init__(self, expression: str, zone: str = "UTC") -> None:
        check_cron(expression)
        self.expression = expression.strip()
        self.zone_name = zone
        self.zone = zone_of(zone)

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, {self.zone_name!r})"

    def _iter(self, start_local: datetime) -> Any:
        import copy

        walker = copy.copy(_parsed(self.expression))  # parsing is most of croniter's cost
        walker.set_current(start_local, force=True)
        return walker

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The slots strictly after ``moment`` (aware), in order, each once."""
        # walking the wall clock from ``moment``'s own wall time finds every slot after it:
        # a skipped wall time lies after every valid one before the gap, and a repeated
        # one's first occurrence, when it is before ``moment``, is dropped below
        walker = self._iter(moment.astimezone(self.zone).replace(tzinfo=None))
        last: datetime | None = None
        while True:
            wall = walker.get_next(datetime)
            slot = self.instant(wall)
            if slot <= moment or slot == last:
                continue
            last = slot
            yield slot

    def next_after(self, moment: datetime) -> datetime:
        """The first slot after ``moment``."""
        return next(self.after(moment))

    def between(self, start: datetime, end: datetime, *, limit: int = 100_000) -> list[datetime]:
        """Slots in ``(start, end]``, at most ``limit`` (the latest kept when there are more)."""
        found: list[datetime] = []
        for slot in self.after(start):
            if slot > end:
                break
            found.append(slot)
            if len(found) > limit:
                del found[0]
        return found

    def instant(self, wall: datetime) -> datetime:
        """The UTC instant of a local wall time: its first occurrence, or the end of the gap
        that skips it."""
        if self.zone is timezone.utc:
            return wall.replace(tzinfo=timezone.utc)
        first = wall.replace(tzinfo=self.zone, fold=0)
        as_utc = first.astimezone(timezone.utc)
        if as_utc.astimezone(self.zone).replace(tzinfo=None) == wall:
            return as_utc
        # skipped by a gap: the next minute that exists on the wall clock
        probe = wall
        for _ in range(48 * 60):
            probe += timedelta(minutes=1)
            candidate = probe.replace(tzinfo=self.zone, fold=0)
            utc = candidate.astimezone(timezone.utc)
            if utc.astimezone(self.zone).replace(tzinfo=None) == probe:
                return utc
        return as_utc  # pragma: no cover - no zone has a gap this long

    def local(self, slot: datetime) -> datetime:
        """A slot on the schedule's wall clock (aware, in its zone)."""
        return slot.astimezone(self.zone)
