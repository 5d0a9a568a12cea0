"""The scheduler's step on a real history (SQLite and PostgreSQL), driven by a clock:
each slot fired once (also by two schedulers at once), catch-up and concurrency policies,
retries with backoff, refusals recorded on the slot."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from kiln.project import load_project
from kiln.scheduler.core import Scheduler
from kiln.scheduler.model import load_schedules
from kiln.store import RunStore
from kiln.store import slots as store_slots
from kiln.store.records import RunState

from kilntest import build_notebook

T0 = datetime(2026, 11, 30, 5, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[RunStore]:
    with RunStore(tmp_path / "home") as opened:
        yield opened


def _project(tmp_path: Path, schedules: str) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    nbformat.write(
        build_notebook([("day = 'x'\nn = 0", ["parameters"]), "print(day)"]), root / "nb.ipynb"
    )
    (root / "kiln.yaml").write_text("schedules:\n" + schedules)
    return root


def _scheduler(tmp_path: Path, store: RunStore, schedules: str) -> Scheduler:
    project = load_project(_project(tmp_path, schedules))
    return Scheduler(load_schedules(project), store)


EVERY_MINUTE = """\
  m:
    notebook: nb.ipynb
    cron: "* * * * *"
    parameters: {day: "{{ yesterday }}", n: 1}
"""


def _seen_at(scheduler: Scheduler, when: datetime) -> None:
    """The scheduler first sees its schedules at ``when``."""
    scheduler.tick(when)


def _end_runs(store: RunStore, state: RunState = RunState.SUCCEEDED) -> None:
    for run in store.list_runs(state=[RunState.QUEUED], limit=None):
        store.finish_run(run.id, state, ended_at=datetime.now(timezone.utc))


def test_a_due_slot_fires_once_with_its_parameters(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, EVERY_MINUTE)
    _seen_at(scheduler, T0)
    assert scheduler.tick(T0 + timedelta(seconds=30)).fired == []  # nothing due yet
    result = scheduler.tick(T0 + timedelta(minutes=1, seconds=0.2))
    ((name, slot, run_id),) = result.fired
    assert (name, slot) == ("m", T0 + timedelta(minutes=1))
    assert scheduler.tick(T0 + timedelta(minutes=1, seconds=0.5)).fired == []  # not again
    run = store.get_run_exact(run_id)
    assert run.state is RunState.QUEUED and run.parameters == {"day": "2026-11-29", "n": 1}
    assert run.tags == {"schedule": "m", "slot": slot.isoformat()}
    assert run.request is not None and Path(run.run_dir or "").is_dir()


def test_two_schedulers_fire_each_slot_once(tmp_path: Path, store: RunStore) -> None:
    schedules = "".join(EVERY_MINUTE.replace("  m:", f"  m{i}:") for i in range(5))
    first = _scheduler(tmp_path, store, schedules)
    with RunStore(store.home) as other_store:
        second = Scheduler(first.schedules, other_store)
        _seen_at(first, T0)
        errors: list[BaseException] = []

        def drive(scheduler: Scheduler) -> None:
            try:
                for minute in range(1, 11):
                    scheduler.tick(T0 + timedelta(minutes=minute, seconds=0.1))
                    _end_runs(scheduler.store)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(s,)) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    first.tick(T0 + timedelta(minutes=10, seconds=1))  # follows the last runs' ends
    fired = store_slots.slots(store)
    assert len(fired) == 50
    assert {(s.schedule, s.slot) for s in fired} == {
        (f"m{i}", T0 + timedelta(minutes=m)) for i in range(5) for m in range(1, 11)
    }
    # a slot whose predecessor's run had not ended yet is skipped (concurrency: skip);
    # every other slot has exactly one run, and no run was left over by a losing insert
    ran = [s for s in fired if s.state != "skipped"]
    assert len(ran) >= 10 and all(s.state == "succeeded" for s in ran)
    runs = store.list_runs(limit=None)
    assert sorted(r.id for r in runs) == sorted(s.run_id for s in ran)
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted(r.id for r in runs)


@pytest.mark.parametrize("catchup", ["latest", "skip"])
def test_catch_up_after_downtime(tmp_path: Path, store: RunStore, catchup: str) -> None:
    schedules = EVERY_MINUTE + f"    catchup: {catchup}\n    grace: 10s\n"
    scheduler = _scheduler(tmp_path, store, schedules)
    _seen_at(scheduler, T0)
    # down for 105 minutes: 105 slots passed, the latest 30 s ago (more than the grace)
    result = scheduler.tick(T0 + timedelta(minutes=105, seconds=30))
    if catchup == "latest":
        assert [s for _n, s, _r in result.fired] == [T0 + timedelta(minutes=105)]
        assert len(result.missed) == 100 - 1
    else:
        assert result.fired == [] and len(result.missed) == 100
    assert scheduler.tick(T0 + timedelta(minutes=105, seconds=31)).fired == []


def test_a_short_delay_is_no_downtime(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, EVERY_MINUTE + "    catchup: skip\n")
    _seen_at(scheduler, T0)
    result = scheduler.tick(T0 + timedelta(minutes=3, seconds=20))  # within the grace
    assert [s for _n, s, _r in result.fired] == [T0 + timedelta(minutes=3)]
    assert [s for _n, s in result.missed] == [T0 + timedelta(minutes=m) for m in (1, 2)]


@pytest.mark.parametrize("policy", ["skip", "queue"])
def test_concurrency_policy(tmp_path: Path, store: RunStore, policy: str) -> None:
    scheduler = _scheduler(tmp_path, store, EVERY_MINUTE + f"    concurrency: {policy}\n")
    _seen_at(scheduler, T0)
    (first,) = scheduler.tick(T0 + timedelta(minutes=1)).fired
    second = scheduler.tick(T0 + timedelta(minutes=2))  # the first run is still queued
    assert second.fired == []
    slot = store_slots.get_slot(store, "m", T0 + timedelta(minutes=2))
    assert slot is not None
    if policy == "skip":
        assert second.skipped == [("m", T0 + timedelta(minutes=2))] and slot.state == "skipped"
        return
    assert slot.state == "waiting" and slot.run_id is None
    store.finish_run(first[2], RunState.SUCCEEDED, ended_at=datetime.now(timezone.utc))
    third = scheduler.tick(T0 + timedelta(minutes=2, seconds=5))
    assert [s for _n, s, _r in third.retried] == [T0 + timedelta(minutes=2)]
    assert third.ended == [("m", T0 + timedelta(minutes=1), "succeeded")]


def test_a_failed_run_is_retried_with_backoff(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, EVERY_MINUTE + "    retries: 2\n    retry_delay: 10s\n")
    _seen_at(scheduler, T0)
    slot_time = T0 + timedelta(minutes=1)
    now = slot_time
    scheduler.tick(now)
    waits = []
    for _ in range(2):
        _end_runs(store, RunState.FAILED)
        scheduler.tick(now)
        slot = store_slots.get_slot(store, "m", slot_time)
        assert slot is not None and slot.state == "waiting" and slot.next_at is not None
        waits.append((slot.next_at - now).total_seconds())
        assert scheduler.tick(now).retried == []  # not before its time
        now = slot.next_at
        (retry,) = scheduler.tick(now).retried
        assert store.get_run_exact(retry[2]).attempt == slot.attempts + 1
    assert waits == [10.0, 20.0]
    _end_runs(store, RunState.FAILED)
    assert scheduler.tick(now).ended == [("m", slot_time, "failed")]
    final = store_slots.get_slot(store, "m", slot_time)
    assert final is not None and final.attempts == 3 and final.delivery == "pending"
    # later slots of the schedule fire as usual (the failed one is no longer open)
    assert scheduler.tick(now + timedelta(minutes=1)).fired != []


def test_a_refused_request_fails_the_slot_and_goes_on(tmp_path: Path, store: RunStore) -> None:
    schedules = EVERY_MINUTE + "    parameters: {day: 1, nope: 2}\n"
    scheduler = _scheduler(tmp_path, store, schedules.replace(
        '    parameters: {day: "{{ yesterday }}", n: 1}\n', ""))  # fmt: skip
    _seen_at(scheduler, T0)
    result = scheduler.tick(T0 + timedelta(minutes=1))
    assert result.fired == [] and "expects str, got int 1" in result.refused[0][2]
    slot = store_slots.get_slot(store, "m", T0 + timedelta(minutes=1))
    assert slot is not None and slot.state == "failed" and slot.delivery == "pending"
    assert store.list_runs(limit=None) == []


def test_pause_resume_and_run_now(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, EVERY_MINUTE)
    _seen_at(scheduler, T0)
    store_slots.set_paused(store, "m", True, by="alice")
    assert scheduler.tick(T0 + timedelta(minutes=5)).fired == []
    scheduler.clock = lambda: T0 + timedelta(minutes=5, seconds=30)
    run_id = scheduler.run_now("m", by="alice")
    assert run_id is not None and store.get_run_exact(run_id).state is RunState.QUEUED
    _end_runs(store)
    before = datetime.now(timezone.utc)
    store_slots.set_paused(store, "m", False, by="alice")
    # slots that passed while paused are not run after the resume; the first one after it is.
    # The tick falls a second into the next minute: one slot since the resume, whatever the
    # second the test runs at (now + 61 s held two slots when it ran in a minute's last second)
    next_minute = before.replace(second=0, microsecond=0) + timedelta(minutes=1)
    resumed = scheduler.tick(next_minute + timedelta(seconds=1))
    assert len(resumed.fired) == 1 and resumed.missed == []
