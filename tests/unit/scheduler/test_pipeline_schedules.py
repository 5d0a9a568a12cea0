"""Schedules of pipelines on a real history (SQLite and PostgreSQL), driven by a clock: the
section takes a notebook or a pipeline (one of the two), a slot fires one queued build in
the slot's own transaction, one process claims it, and the slot follows the build's end
(retries with backoff; a build whose scheduler died is crashed, so the slot retries)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from kiln.errors import KilnError
from kiln.project import load_project
from kiln.scheduler.core import Scheduler
from kiln.scheduler.model import load_schedules
from kiln.store import RunStore
from kiln.store import slots as store_slots
from kiln.store.builds import BuildStore

from kilntest import build_notebook

T0 = datetime(2026, 11, 30, 5, 0, tzinfo=timezone.utc)

PIPELINES = """\
pipelines:
  etl:
    tasks:
      a: {notebook: a.ipynb}
      b: {notebook: a.ipynb, upstream: [a]}
"""


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[RunStore]:
    with RunStore(tmp_path / "home") as opened:
        yield opened


def _project(tmp_path: Path, schedules: str) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    nbformat.write(build_notebook([("x = 1", ["parameters"]), "print(x)"]), root / "a.ipynb")
    (root / "kiln.yaml").write_text(PIPELINES + "schedules:\n" + schedules)
    return root


def _scheduler(tmp_path: Path, store: RunStore, schedules: str) -> Scheduler:
    return Scheduler(load_schedules(load_project(_project(tmp_path, schedules))), store)


NIGHTLY = """\
  nightly:
    pipeline: etl
    cron: "* * * * *"
"""


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("    notebook: a.ipynb\n    pipeline: etl\n", "exactly one of notebook: (a notebook "
         "to run) and pipeline: (a pipeline to build); both are given"),
        ("", "exactly one of notebook: (a notebook to run) and pipeline: (a pipeline to "
         "build); neither is given"),
        ("    pipeline: etl\n    parameters: {x: 2}\n", "parameters: a pipeline schedule "
         "takes no parameters (each task of pipelines.etl sets its own)"),
        ("    pipeline: etl\n    secrets: {k: env:K}\n", "takes no secrets"),
        ("    pipeline: nope\n", "schedules.s.pipeline: no pipeline 'nope' in the pipelines "
         "section (pipelines: etl)"),
        ("    notebook: a.ipynb\n    force: true\n", "force: is for pipeline schedules"),
    ],
)  # fmt: skip
def test_a_schedule_takes_a_notebook_or_a_pipeline(
    tmp_path: Path, schedule: str, message: str
) -> None:
    root = _project(tmp_path, "  s:\n    cron: '@daily'\n" + schedule)
    with pytest.raises(KilnError) as caught:
        load_schedules(load_project(root))
    text = str(caught.value)
    assert message in text
    assert "kiln.yaml:" in text and "schedules.s" in text


def test_a_broken_pipeline_is_refused_at_load(tmp_path: Path) -> None:
    root = _project(tmp_path, NIGHTLY)
    (root / "kiln.yaml").write_text(
        (root / "kiln.yaml").read_text().replace("upstream: [a]", "upstream: [zz]")
    )
    with pytest.raises(KilnError, match=r"schedules\.nightly\.pipeline: .*zz"):
        load_schedules(load_project(root))


def test_a_slot_fires_one_queued_build(tmp_path: Path, store: RunStore) -> None:
    one = _scheduler(tmp_path, store, NIGHTLY)
    two = Scheduler(one.schedules, store)
    one.tick(T0)
    slot_time = T0 + timedelta(minutes=1)
    fired = one.tick(slot_time).fired + two.tick(slot_time).fired
    assert len(fired) == 1
    build_id = fired[0][2]
    slot = store_slots.get_slot(store, "nightly", slot_time)
    assert slot is not None and slot.state == "queued" and slot.build_id == build_id
    assert slot.run_id is None and store.list_runs(limit=None) == []
    with BuildStore(store) as builds:
        row = builds.get_build(build_id)
        assert row.state == "queued" and row.pipeline == "etl" and row.owner_pid is None
        assert row.options["tags"] == {"schedule": "nightly", "slot": slot_time.isoformat()}
        assert row.options["force"] is False  # incremental: what is up to date stays
        assert store_slots.queued_builds(store, ["nightly"]) == [build_id]
        # one process claims it
        assert builds.claim_build(build_id) is True
        assert builds.claim_build(build_id) is False
        assert builds.get_build(build_id).state == "running"
    assert store_slots.queued_builds(store, ["nightly"]) == []
    # the slot stays open while its build runs: the next slot is skipped (concurrency: skip)
    later = one.tick(slot_time + timedelta(minutes=1))
    assert later.fired == [] and later.skipped == [("nightly", slot_time + timedelta(minutes=1))]


def test_a_failed_build_is_retried_then_the_slot_ends(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, NIGHTLY + "    retries: 1\n    retry_delay: 10s\n")
    scheduler.tick(T0)
    slot_time = T0 + timedelta(minutes=1)
    ((_, _, first),) = scheduler.tick(slot_time).fired
    builds = BuildStore(store)
    assert builds.claim_build(first)
    builds.finish_build(first, "failed", reason="failed: a")
    scheduler.tick(slot_time)
    slot = store_slots.get_slot(store, "nightly", slot_time)
    assert slot is not None and slot.state == "waiting"
    assert slot.reason == f"build {first} failed; retry 1 of 1 in 10s"
    assert slot.next_at == slot_time + timedelta(seconds=10)
    ((_, _, second),) = scheduler.tick(slot.next_at).retried
    assert second != first and builds.get_build(second).state == "queued"
    assert builds.claim_build(second)
    builds.finish_build(second, "succeeded")
    assert scheduler.tick(slot.next_at).ended == [("nightly", slot_time, "succeeded")]
    final = store_slots.get_slot(store, "nightly", slot_time)
    assert final is not None and final.attempts == 2 and final.delivery == "pending"
    builds.close()


def test_a_build_whose_scheduler_died_is_crashed_and_retried(
    tmp_path: Path, store: RunStore
) -> None:
    scheduler = _scheduler(tmp_path, store, NIGHTLY + "    retries: 1\n    retry_delay: 1s\n")
    scheduler.tick(T0)
    slot_time = T0 + timedelta(minutes=1)
    ((_, _, build_id),) = scheduler.tick(slot_time).fired
    # a scheduler process claims the build, then dies before it ends
    claim = (
        "import sys; from kiln.store import RunStore; from kiln.store.builds import BuildStore\n"
        f"with RunStore({str(store.home)!r}) as s, BuildStore(s) as b:\n"
        f"    sys.exit(0 if b.claim_build({build_id!r}) else 3)\n"
    )
    subprocess.run([sys.executable, "-c", claim], check=True)
    with BuildStore(store) as builds:
        assert builds.get_build(build_id).state == "running"
        scheduler.tick(slot_time)  # recovers the orphan build first, then follows the slot
        row = builds.get_build(build_id)
        assert row.state == "crashed" and "exited before the build ended" in (row.reason or "")
    slot = store_slots.get_slot(store, "nightly", slot_time)
    assert slot is not None and slot.state == "waiting"
    assert slot.reason is not None and f"build {build_id} crashed" in slot.reason
    ((_, _, retry),) = scheduler.tick(slot_time + timedelta(seconds=1)).retried
    assert retry != build_id


def test_run_now_of_a_pipeline_schedule_queues_a_build(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, NIGHTLY)
    build_id = scheduler.run_now("nightly")
    assert build_id is not None
    with BuildStore(store) as builds:
        assert builds.get_build(build_id).state == "queued"
    assert store.list_runs(limit=None) == []


def test_force_runs_every_task(tmp_path: Path, store: RunStore) -> None:
    scheduler = _scheduler(tmp_path, store, NIGHTLY + "    force: true\n")
    build_id = scheduler.run_now("nightly")
    assert build_id is not None
    with BuildStore(store) as builds:
        assert builds.get_build(build_id).options["force"] is True
