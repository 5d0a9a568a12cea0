"""The history queries the web UI adds: runs by user and end date, an app's cached result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kiln.store import RunStore, pages
from kiln.store.records import Run

BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[RunStore]:
    """Once on SQLite and once on PostgreSQL."""
    opened = RunStore(tmp_path / "home")
    try:
        yield opened
    finally:
        opened.close()


def add(store: RunStore, run_id: str, minutes: int, **fields: object) -> None:
    values: dict[str, object] = {
        "notebook_path": "/p/app.ipynb",
        "notebook_sha256": "0",
        "state": "succeeded",
        "parameters": {"n": 1},
        **fields,
    }
    store.create_run(Run(id=run_id, created_at=BASE + timedelta(minutes=minutes), **values))  # type: ignore[arg-type]


def test_runs_by_user_and_before_a_time(store: RunStore) -> None:
    for i, user in enumerate(["ana", "bo", "ana", None, "ana"]):
        add(store, f"r{i}", i, submitted_by=user)
    page, after = pages.runs_page(store, submitted_by="ana", limit=2)
    assert [r.id for r in page] == ["r4", "r2"] and after is not None
    rest, _ = pages.runs_page(store, submitted_by="ana", limit=2, after=after)
    assert [r.id for r in rest] == ["r0"]
    until, _ = pages.runs_page(store, until=BASE + timedelta(minutes=2), limit=10)
    assert [r.id for r in until] == ["r1", "r0"]  # before it, not at it
    both, _ = pages.runs_page(
        store, since=BASE + timedelta(minutes=1), until=BASE + timedelta(minutes=4), limit=10
    )
    assert [r.id for r in both] == ["r3", "r2", "r1"]


def test_an_apps_cached_result_is_the_newest_matching_success(store: RunStore) -> None:
    add(store, "old", 0)
    add(store, "good", 5)
    add(store, "other-params", 6, parameters={"n": 2})
    add(store, "failed", 7, state="failed")
    add(store, "other-notebook", 8, notebook_path="/p/x.ipynb")
    found = pages.last_success(store, "/p/app.ipynb", {"n": 1}, BASE)
    assert found is not None and found.id == "good"
    assert pages.last_success(store, "/p/app.ipynb", {"n": 1}, BASE + timedelta(minutes=6)) is None
    assert pages.last_success(store, "/p/app.ipynb", {"n": 3}, BASE) is None
    two = pages.last_success(store, "/p/app.ipynb", {"n": 2}, BASE)
    assert two is not None and two.id == "other-params"
