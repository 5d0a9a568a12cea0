"""What both hot paths of the run row (``hotrow`` on SQLite, ``pgrow`` on PostgreSQL) are put
through, so that each is checked against SQLAlchemy with the same writes."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from kiln.errors import RunNotFound, StoreError
from kiln.store import Record, Run, RunStore


def lifecycle(store: RunStore, run_id: str) -> None:
    """One run's writes with every kind of value: JSON with NaN and NUL, None in nullable and
    non-null JSON columns, times in other zones, floats, records."""
    store.create_run(
        Run(
            id=run_id,
            notebook_path="dir/report.ipynb",
            notebook_sha256="a" * 64,
            state="queued",
            parameters={"x": 1, "nan": math.nan, "text": "nul\x00here", "nested": [1.5, None]},
            created_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2))),
            run_dir="/runs/r",
            engine="fork",
            owner_pid=123,
            owner_host="host",
            owner_started=1714971234.25,
            request={"notebook": "report.ipynb", "options": {"b": 1, "a": 2}},
            tags={"team": "a"},
            origin=None,
            error=None,
            reason="why\x00",
        )
    )
    store.update_run(
        run_id,
        state="running",
        started_at=datetime(2024, 5, 6, 5, 8, 10, tzinfo=timezone.utc),
        kernel_pid=456,
        kernel_started=17.5,
        kernel_version="ipython 8",
    )
    assert store.finish_run(
        run_id,
        "failed",
        reason="cell 1 raised",
        error={"ename": "ValueError", "evalue": "inf", "value": math.inf},
        ended_at=datetime(2024, 5, 6, 5, 9, 0, 5, tzinfo=timezone.utc),
        cell_durations=[0.1, None, 2.0],
        records=[Record("loss", "json", 0.5, 1), Record("m", "json", {"a": [1]}, 2)],
        metrics=None,
        artifacts=[],
    )
    assert not store.finish_run(run_id, "succeeded")  # ended already: no change


def refuses_what_sqlalchemy_refuses(store: RunStore) -> None:
    """A duplicate id, a value JSON cannot hold, a missing run and a write to an ended run
    are refused with the errors SQLAlchemy's path gives."""
    run = Run(id="20240101-000000-dup", notebook_path="a.ipynb", notebook_sha256="0" * 64,
              state="queued")  # fmt: skip
    store.create_run(run)
    with pytest.raises(StoreError, match="already exists"):
        store.create_run(run)
    with pytest.raises(StoreError, match="cannot store the value"):
        store.update_run(run.id, tags={"x": object()})
    with pytest.raises(RunNotFound):
        store.finish_run("20240101-000000-none", "succeeded")
    with pytest.raises(RunNotFound):
        store.update_run("20240101-000000-none", reason="x")
    store.finish_run(run.id, "succeeded")
    with pytest.raises(StoreError, match="already finished"):
        store.update_run(run.id, state="running")
    assert store.get_run_exact(run.id).state == "succeeded"
