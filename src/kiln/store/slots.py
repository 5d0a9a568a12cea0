"""Schedules in the history: each slot fired once, its runs followed, its report delivered.

A fire is one transaction that inserts the slot's row and its queued run together (a
pipeline schedule's slot: its ``queued`` build, which a scheduler claims and runs). The slot
row's primary key (schedule, slot) is what makes the fire happen once: the insert is
``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL alike), and the run is only
inserted when the slot row was. Two schedulers on one database can both try; one inserts.
A scheduler killed in the middle leaves both rows or neither (the transaction), so the next
scheduler either sees the slot fired or fires it.

Every later step on a slot (its run ended, a retry queued, a delivery claimed) is a
conditional UPDATE on the state it expects, so two schedulers never both take one step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.store.schema import builds, runs, schedule_slots, schedule_states, scheduler_beats
from kiln.store.values import column_values, to_utc

if TYPE_CHECKING:
    from kiln.store.records import Run
    from kiln.store.sql import RunStore

#: slot states: waiting (its turn, or a retry, is due at next_at), queued (run_id in flight)
WAITING, QUEUED = "waiting", "queued"
#: ... and the ends of a slot
SUCCEEDED, FAILED, CANCELLED, SKIPPED, MISSED = (
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
    "missed",
)
OPEN = (WAITING, QUEUED)
#: delivery states
PENDING, SENDING, DONE = "pending", "sending", "done"


@dataclasses.dataclass(frozen=True)
class Slot:
    """One row of ``schedule_slots``."""

    schedule: str
    slot: datetime
    state: str
    manual: bool
    fired_at: datetime
    run_id: str | None = None
    attempts: int = 0
    next_at: datetime | None = None
    reason: str | None = None
    delivery: str | None = None
    delivery_owner: str | None = None
    delivery_expires: datetime | None = None
    deliveries: list[dict[str, Any]] | None = None
    #: a pipeline schedule's slot: its (latest) build
    build_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("slot", "fired_at", "next_at", "delivery_expires"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        out.pop("delivery_owner")
        return out


def _slot(row: sa.Row[Any]) -> Slot:
    values = dict(row._mapping)
    for key in ("slot", "fired_at", "next_at", "delivery_expires"):
        if values[key] is not None:
            values[key] = to_utc(values[key])
    values["manual"] = bool(values["manual"])
    return Slot(**values)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _insert_ignoring_conflict(store: RunStore, table: sa.Table) -> Any:
    if store.backend == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as lite_insert

    return lite_insert(table).on_conflict_do_nothing()


def _run_values(run: Run) -> dict[str, Any]:
    return column_values({f.name: getattr(run, f.name) for f in dataclasses.fields(run)})


@dataclasses.dataclass(frozen=True)
class QueuedBuild:
    """A build a pipeline schedule's slot fires: inserted ``queued`` with the slot."""

    id: str
    project: str
    pipeline: str
    options: dict[str, Any]

    def values(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "pipeline": self.pipeline,
            "state": "queued",
            "created_at": now,
            "ended_at": None,
            "options": self.options,
            "reason": None,
            "owner_pid": None,
            "owner_host": None,
            "owner_started": None,
            "deliveries": None,
        }


# -- firing -------------------------------------------------------------------------------------


def fire(
    store: RunStore,
    schedule: str,
    slot: datetime,
    *,
    state: str,
    run: Run | None = None,
    build: QueuedBuild | None = None,
    manual: bool = False,
    reason: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Record ``slot`` of ``schedule`` (with its queued ``run`` or ``build`` when it runs
    now), once: False when the slot was recorded already (by this or another scheduler)."""
    when = now or _now()
    values = {
        "schedule": schedule,
        "slot": to_utc(slot),
        "state": state,
        "manual": manual,
        "fired_at": when,
        "run_id": run.id if run is not None else None,
        "build_id": build.id if build is not None else None,
        "attempts": 1 if run is not None or build is not None else 0,
        "next_at": None,
        "reason": reason,
        "delivery": None,
        "delivery_owner": None,
        "delivery_expires": None,
        "deliveries": None,
    }
    insert = _insert_ignoring_conflict(store, schedule_slots)
    with store._write() as conn:
        if store.backend == "postgresql":  # its rowcount does not tell a skipped insert
            row = conn.execute(insert.returning(schedule_slots.c.state), values).first()
            inserted = row is not None
        else:
            inserted = bool(conn.execute(insert, values).rowcount)
        if not inserted:
            return False
        if run is not None:
            conn.execute(runs.insert(), _run_values(run))
        if build is not None:
            conn.execute(builds.insert(), build.values(when))
        _held_for_tests(schedule, slot)
    return True


def _held_for_tests(schedule: str, slot: datetime) -> None:
    """With ``KILN_TEST_HOLD_FIRE=PATH``, stop inside the fire's transaction (both rows
    written, nothing committed), say so in PATH and wait to be killed: the test of a
    scheduler killed with SIGKILL in the middle of a fire."""
    import os

    hold = os.environ.get("KILN_TEST_HOLD_FIRE")
    if not hold:
        return
    import time

    with open(hold, "w", encoding="utf-8") as fh:
        fh.write(f"{schedule} {slot.isoformat()}\n")
    time.sleep(120)


def start_waiting(
    store: RunStore, slot: Slot, run: Run | None = None, *, build: QueuedBuild | None = None
) -> bool:
    """Give a waiting slot its (next) run or build, queued; False when another scheduler
    did."""
    where = sa.and_(
        schedule_slots.c.schedule == slot.schedule,
        schedule_slots.c.slot == slot.slot,
        schedule_slots.c.state == WAITING,
        schedule_slots.c.attempts == slot.attempts,
    )
    with store._write() as conn:
        moved = conn.execute(
            schedule_slots.update()
            .where(where)
            .values(
                state=QUEUED,
                run_id=run.id if run is not None else None,
                build_id=build.id if build is not None else None,
                attempts=slot.attempts + 1,
                next_at=None,
            )
        ).rowcount
        if not moved:
            return False
        if run is not None:
            conn.execute(runs.insert(), _run_values(run))
        if build is not None:
            conn.execute(builds.insert(), build.values(_now()))
    return True


def settle(store: RunStore, slot: Slot, state: str, **values: Any) -> bool:
    """Move a slot from the state it is in (as read) to ``state``; False when it moved
    meanwhile. ``values`` are other columns to set (``next_at``, ``reason``, ``delivery``)."""
    where = sa.and_(
        schedule_slots.c.schedule == slot.schedule,
        schedule_slots.c.slot == slot.slot,
        schedule_slots.c.state == slot.state,
        schedule_slots.c.attempts == slot.attempts,
    )
    with store._write() as conn:
        moved: int = conn.execute(
            schedule_slots.update().where(where).values(state=state, **values)
        ).rowcount
    return bool(moved)


# -- reading ------------------------------------------------------------------------------------


def slots(
    store: RunStore,
    *,
    schedule: str | None = None,
    states: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[Slot]:
    """Slots, newest first, of one schedule or all, in some states or any."""
    query = schedule_slots.select().order_by(schedule_slots.c.slot.desc())
    if schedule is not None:
        query = query.where(schedule_slots.c.schedule == schedule)
    if states is not None:
        query = query.where(schedule_slots.c.state.in_(list(states)))
    if limit is not None:
        query = query.limit(limit)
    with store._read() as conn:
        return [_slot(row) for row in conn.execute(query)]


def get_slot(store: RunStore, schedule: str, slot: datetime) -> Slot | None:
    query = schedule_slots.select().where(
        schedule_slots.c.schedule == schedule, schedule_slots.c.slot == to_utc(slot)
    )
    with store._read() as conn:
        row = conn.execute(query).first()
    return None if row is None else _slot(row)


def latest_slots(store: RunStore) -> dict[str, datetime]:
    """Each schedule's latest slot from its cron (run-now slots do not count)."""
    query = (
        sa.select(schedule_slots.c.schedule, sa.func.max(schedule_slots.c.slot))
        .where(schedule_slots.c.manual.is_(False))
        .group_by(schedule_slots.c.schedule)
    )
    with store._read() as conn:
        return {str(name): to_utc(when) for name, when in conn.execute(query)}


def run_states(store: RunStore, run_ids: Iterable[str]) -> dict[str, str]:
    """The state of each of ``run_ids`` that exists."""
    wanted = list(run_ids)
    if not wanted:
        return {}
    query = sa.select(runs.c.id, runs.c.state).where(runs.c.id.in_(wanted))
    with store._read() as conn:
        return {str(i): str(s) for i, s in conn.execute(query)}


def build_states(store: RunStore, build_ids: Iterable[str]) -> dict[str, str]:
    """The state of each of ``build_ids`` that exists."""
    wanted = list(build_ids)
    if not wanted:
        return {}
    query = sa.select(builds.c.id, builds.c.state).where(builds.c.id.in_(wanted))
    with store._read() as conn:
        return {str(i): str(s) for i, s in conn.execute(query)}


def queued_builds(store: RunStore, schedules: Iterable[str]) -> list[str]:
    """The builds still ``queued`` of open slots of these schedules, oldest slot first."""
    names = list(schedules)
    if not names:
        return []
    query = (
        sa.select(builds.c.id)
        .select_from(schedule_slots.join(builds, builds.c.id == schedule_slots.c.build_id))
        .where(
            schedule_slots.c.schedule.in_(names),
            schedule_slots.c.state == QUEUED,
            builds.c.state == "queued",
        )
        .order_by(schedule_slots.c.slot)
    )
    with store._read() as conn:
        return [str(row[0]) for row in conn.execute(query)]


def slot_of_build(store: RunStore, build_id: str) -> Slot | None:
    query = schedule_slots.select().where(schedule_slots.c.build_id == build_id)
    with store._read() as conn:
        row = conn.execute(query).first()
    return None if row is None else _slot(row)


# -- schedule states (pause) -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleState:
    schedule: str
    paused: bool
    first_seen: datetime
    updated_at: datetime
    updated_by: str | None


def ensure_states(
    store: RunStore, defaults: Mapping[str, bool], *, now: datetime | None = None
) -> dict[str, ScheduleState]:
    """The run-time state of each schedule named in ``defaults`` (name -> paused at start),
    adding the ones seen for the first time."""
    when = now or _now()
    known = states(store)
    missing = [name for name in defaults if name not in known]
    if missing:
        with store._write() as conn:
            conn.execute(
                _insert_ignoring_conflict(store, schedule_states),
                [
                    {
                        "schedule": name,
                        "paused": bool(defaults[name]),
                        "first_seen": when,
                        "updated_at": when,
                        "updated_by": None,
                    }
                    for name in missing
                ],
            )
        known = states(store)
    return {name: known[name] for name in defaults if name in known}


def states(store: RunStore) -> dict[str, ScheduleState]:
    with store._read() as conn:
        rows = conn.execute(schedule_states.select()).all()
    return {
        str(row.schedule): ScheduleState(
            schedule=str(row.schedule),
            paused=bool(row.paused),
            first_seen=to_utc(row.first_seen),
            updated_at=to_utc(row.updated_at),
            updated_by=row.updated_by,
        )
        for row in rows
    }


def set_paused(store: RunStore, schedule: str, paused: bool, *, by: str | None = None) -> None:
    """Pause or resume a schedule (its state row is added when it has none yet)."""
    when = _now()
    ensure_states(store, {schedule: paused}, now=when)
    with store._write() as conn:
        conn.execute(
            schedule_states.update()
            .where(schedule_states.c.schedule == schedule)
            .values(paused=paused, updated_at=when, updated_by=by)
        )


# -- delivery -----------------------------------------------------------------------------------


def claim_delivery(store: RunStore, owner: str, *, lease: float) -> Slot | None:
    """Take one slot whose report is to be delivered (or whose deliverer died)."""
    now = _now()
    ready = sa.or_(
        schedule_slots.c.delivery == PENDING,
        sa.and_(
            schedule_slots.c.delivery == SENDING,
            schedule_slots.c.delivery_expires < now,
        ),
    )
    with store._write() as conn:
        row = conn.execute(
            schedule_slots.select().where(ready).order_by(schedule_slots.c.slot).limit(1)
        ).first()
        if row is None:
            return None
        found = _slot(row)
        moved = conn.execute(
            schedule_slots.update()
            .where(
                schedule_slots.c.schedule == found.schedule,
                schedule_slots.c.slot == found.slot,
                ready,
            )
            .values(
                delivery=SENDING,
                delivery_owner=owner,
                delivery_expires=now + timedelta(seconds=lease),
            )
        ).rowcount
    if not moved:
        return None
    return dataclasses.replace(found, delivery=SENDING, delivery_owner=owner)


def finish_delivery(
    store: RunStore, slot: Slot, owner: str, deliveries: list[dict[str, Any]]
) -> bool:
    with store._write() as conn:
        moved: int = conn.execute(
            schedule_slots.update()
            .where(
                schedule_slots.c.schedule == slot.schedule,
                schedule_slots.c.slot == slot.slot,
                schedule_slots.c.delivery == SENDING,
                schedule_slots.c.delivery_owner == owner,
            )
            .values(
                delivery=DONE, delivery_owner=None, delivery_expires=None, deliveries=deliveries
            )
        ).rowcount
    return bool(moved)


def deliveries_of_run(store: RunStore, run_id: str) -> list[dict[str, Any]] | None:
    """What was delivered for the slot whose run is ``run_id`` (None: not a scheduled run,
    or nothing delivered yet)."""
    query = sa.select(schedule_slots.c.deliveries).where(schedule_slots.c.run_id == run_id)
    with store._read() as conn:
        found = conn.execute(query).scalar()
    return list(found) if found else None


# -- heartbeats ---------------------------------------------------------------------------------


def beat(store: RunStore, name: str, *, host: str, pid: int, started: datetime) -> None:
    """Record that the scheduler ``name`` is alive now."""
    now = _now()
    with store._write() as conn:
        moved = conn.execute(
            scheduler_beats.update().where(scheduler_beats.c.name == name).values(beat_at=now)
        ).rowcount
        if not moved:
            conn.execute(
                scheduler_beats.insert(),
                {"name": name, "host": host, "pid": pid, "started_at": started, "beat_at": now},
            )


def last_beat(store: RunStore) -> datetime | None:
    """The latest heartbeat of any scheduler on this database."""
    with store._read() as conn:
        found = conn.execute(sa.select(sa.func.max(scheduler_beats.c.beat_at))).scalar()
    return None if found is None else to_utc(found)


def beat_of(store: RunStore, name: str) -> datetime | None:
    """The last heartbeat of the scheduler ``name`` (None: it never beat)."""
    query = sa.select(scheduler_beats.c.beat_at).where(scheduler_beats.c.name == name)
    with store._read() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else to_utc(found)


def forget_beat(store: RunStore, name: str) -> None:
    with store._write() as conn:
        conn.execute(scheduler_beats.delete().where(scheduler_beats.c.name == name))
