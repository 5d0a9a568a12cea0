"""Run.to_json: the run as JSON data, a copy that shares nothing with the run."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

from kiln.store.records import Record, Run, RunState


def _full_run() -> Run:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    return Run(
        id="20260102-030405-abcdef",
        notebook_path="/nb/report.ipynb",
        notebook_sha256="0" * 64,
        state=RunState.FAILED,
        parameters={"x": 1, "nested": {"a": [1, 2, {"b": None}]}, "t": (1, "two")},
        created_at=when,
        started_at=when,
        ended_at=when.replace(second=9),
        error={"ename": "ValueError", "traceback": ["line 1", "line 2"]},
        cell_durations=[0.5, None, 1.25],
        records_list=[Record("total", "json", {"v": [1, 2]}, 2)],
        tags={"sweep": "s1"},
        git={"root": "/nb", "dirty": False},
        inputs=[{"path": "a.csv", "size": 3}],
        metrics=[{"name": "loss", "value": 0.5, "step": 1}],
        origin={"rerun_of": "r0", "overrides": {"x": 2}},
    )


def _by_asdict(run: Run) -> dict[str, object]:
    """What to_json gave when it was built on dataclasses.asdict (the reference)."""
    out: dict[str, object] = {}
    for key, value in dataclasses.asdict(run).items():
        if key == "records_list":
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, RunState):
            value = value.value
        out[key] = value
    out["duration"] = run.duration
    out["records"] = run.record_values
    out["record_kinds"] = {r.name: r.kind for r in run.records_list}
    return out


def test_to_json_is_what_asdict_gave() -> None:
    run = _full_run()
    data = run.to_json()
    assert data == _by_asdict(run)
    assert list(data) == list(_by_asdict(run))  # same keys, same order
    assert data["state"] == "failed" and data["ended_at"] == "2026-01-02T03:04:09.678901+00:00"
    assert data["duration"] == 4.0
    json.dumps(data)  # JSON data throughout


def test_to_json_shares_no_container_with_the_run() -> None:
    run = _full_run()
    data = run.to_json()
    data["parameters"]["nested"]["a"][2]["b"] = "changed"
    data["error"]["traceback"].append("more")
    data["cell_durations"][0] = 99.0
    data["tags"]["sweep"] = "other"
    data["metrics"][0]["value"] = 1.0
    assert run.parameters["nested"]["a"][2] == {"b": None}
    assert run.error is not None and run.error["traceback"] == ["line 1", "line 2"]
    assert run.cell_durations[0] == 0.5
    assert run.tags == {"sweep": "s1"}
    assert run.metrics[0]["value"] == 0.5
    assert run.to_json() == _by_asdict(run)
