"""Run fields as stored (column_values) and the store's copies of a run (changed_run)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from kiln.store import Run
from kiln.store.records import Record, RunState, changed_run
from kiln.store.values import column_values, dumps


def _run() -> Run:
    return Run(
        id="20240101-000000-000001",
        notebook_path="/n/report.ipynb",
        notebook_sha256="0" * 64,
        state="queued",
        parameters={"x": 1},
        tags={"team": "a"},
    )


def test_a_changed_run_is_what_dataclasses_replace_makes():
    run = _run()
    ended = datetime(2024, 1, 1, tzinfo=timezone.utc)
    changes = {
        "state": RunState.SUCCEEDED,
        "ended_at": ended,
        "records_list": [Record("n", "json", 1, 0)],
        "environment_hash": "e" * 64,
        "inputs": [],
    }
    assert changed_run(run, **changes) == dataclasses.replace(run, **changes)
    assert run.state is RunState.QUEUED and run.ended_at is None  # the run itself is kept
    assert changed_run(run, state="failed").state is RunState.FAILED  # text made a state
    with pytest.raises(TypeError, match="not fields of a run: nonsense"):
        changed_run(run, nonsense=1)


def test_column_values_convert_check_and_derive():
    when = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    out = column_values(
        {
            "notebook_path": "/n/re\x00port.ipynb",
            "state": RunState.RUNNING,
            "created_at": when,
            "ended_at": None,
            "parameters": None,
            "cell_durations": None,
            "records_list": [Record("n", "json", 1, 0)],
            "reason": "a\x00b",
            "error": None,
        }
    )
    assert out == {
        "notebook_path": "/n/re\ufffdport.ipynb",
        "notebook_name": "re\ufffdport.ipynb",
        "state": "running",
        "created_at": datetime(2024, 1, 1, tzinfo=timezone.utc),
        "ended_at": None,
        "parameters": {},
        "cell_durations": [],
        "records": [{"name": "n", "kind": "json", "value": 1, "cell_index": 0}],
        "reason": "a\ufffdb",
        "error": None,
    }
    assert type(out["state"]) is str
    with pytest.raises(ValueError, match="run field state cannot be None"):
        column_values({"state": None})
    with pytest.raises(ValueError, match="unknown run fields bogus, nonsense"):
        column_values({"nonsense": 1, "bogus": 2, "state": "queued"})
    with pytest.raises(ValueError, match="engine is 65 characters long: at most 64 fit"):
        column_values({"engine": "e" * 65})


def test_json_values_are_written_as_json_dumps_writes_them():
    import json

    value = {"b": [1, 2.5, None, True], "a": "é", "when": datetime(2024, 1, 1)}
    assert dumps(value) == json.dumps(value, default=str, ensure_ascii=False).replace(
        "2024-01-01 00:00:00", "2024-01-01T00:00:00"
    )
    assert dumps(float("nan")) == '"nan"' and dumps({"x": "\x00"}) == r'{"x": "\ufffd"}'
