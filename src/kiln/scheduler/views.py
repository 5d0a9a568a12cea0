"""What the CLI and the API show and change about schedules: their next fire times and
last slots, pause, resume and run-now (the same functions behind both)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from kiln.scheduler.core import Scheduler, utcnow
from kiln.store import slots as store_slots

if TYPE_CHECKING:
    from kiln.project import Project
    from kiln.scheduler.model import Schedule
    from kiln.store.sql import RunStore


def schedules_of(project: Project) -> dict[str, Schedule]:
    from kiln.scheduler.model import load_schedules

    return load_schedules(project)


def known(schedules: dict[str, Schedule], name: str) -> Schedule:
    """The schedule ``name``, or a clear error listing the ones there are."""
    from kiln.errors import UsageError

    found = schedules.get(name)
    if found is None:
        names = ", ".join(sorted(schedules)) or "none: kiln.yaml has no schedules section"
        raise UsageError(f"no schedule named {name!r} (schedules: {names})")
    return found


def describe(
    schedules: dict[str, Schedule],
    store: RunStore | None,
    *,
    count: int = 3,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Each schedule as shown: cron, zone, paused, next ``count`` fire times, last slot."""
    now = now or utcnow()
    states = store_slots.states(store) if store is not None else {}
    last: dict[str, store_slots.Slot] = {}
    if store is not None:
        for slot in store_slots.slots(store, limit=max(200, len(schedules) * 4)):
            last.setdefault(slot.schedule, slot)
    shown = []
    for name, schedule in schedules.items():
        state = states.get(name)
        paused = state.paused if state is not None else schedule.section.paused
        nexts = [] if paused else schedule.next_fires(now, count)
        latest = last.get(name)
        shown.append(
            {
                "name": name,
                "notebook": schedule.section.notebook,
                "pipeline": schedule.section.pipeline,
                "cron": schedule.section.cron,
                "timezone": schedule.section.timezone,
                "paused": paused,
                "next": [schedule.cron.local(s).isoformat() for s in nexts],
                "last": latest.to_json() if latest is not None else None,
            }
        )
    return shown


def set_paused(
    schedules: dict[str, Schedule], store: RunStore, name: str, paused: bool, by: str | None
) -> None:
    known(schedules, name)
    store_slots.set_paused(store, name, paused, by=by)


def run_now(
    schedules: dict[str, Schedule], store: RunStore, name: str, by: str | None = None
) -> str | None:
    """Queue a run of ``name`` now (a manual slot); its run id."""
    known(schedules, name)
    return Scheduler(schedules, store).run_now(name, by=by)
