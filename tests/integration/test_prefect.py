"""Kiln in Prefect, flows run locally (Prefect's ephemeral API on SQLite, no server to start):
``run_notebook`` returns the run's records; a failing notebook fails the flow with Kiln's
message after Prefect retried the failed run; a bad parameter fails before anything runs and
is never retried; ``pipeline_flow`` runs a three-task pipeline in dependency order with
products passed; every Kiln run carries the Prefect ids in its tags.

Prefect is an extra, not in the test venv: it runs in ``~/.cache/kiln/prefect-venv`` (built
on first use by pip, about five minutes; Kiln from ``src/``). One subprocess runs the flows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from orchestrator_util import (
    history,
    last_json,
    make_project,
    once_per_session,
    orchestrator_python,
    run_in,
)

# the first run builds the venv (minutes): past the suite's 300 s per test
pytestmark = [
    pytest.mark.kernel,
    pytest.mark.xdist_group("prefect"),
    pytest.mark.timeout(1800),
]

DRIVER = Path(__file__).with_name("prefect_driver.py")


def _run_flows(base: Path) -> dict[str, Any]:
    python = orchestrator_python("prefect")
    root = make_project(base / "proj")
    env = {
        "PREFECT_HOME": str(base / "prefect-home"),
        # a loaded machine starts the temporary API slowly; nothing is sent outside
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    done = run_in(python, [str(DRIVER), str(root)], cwd=base, env=env)
    return {"root": str(root), "results": last_json(done), "log": done.stdout + done.stderr}


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four flows run once per session; what Prefect and the Kiln history say of them."""
    found = once_per_session(tmp_path_factory, "prefect", _run_flows)
    return {**found, "root": Path(found["root"])}


def test_a_notebook_task_returns_its_records(prefect: dict[str, Any]) -> None:
    found = prefect["results"]["single"]
    assert found["state"] == "COMPLETED"
    assert found["result"] == {"total": 42, "day": "d"}
    (run,) = history(prefect["root"], **{"prefect.flow_run_id": found["flow_run_id"]})
    assert run.state.value == "succeeded"
    assert run.tags["prefect.flow_name"] == "single"
    assert run.tags["prefect.task_run_id"]


def test_a_failing_notebook_fails_the_flow_after_its_retry(prefect: dict[str, Any]) -> None:
    found = prefect["results"]["fail"]
    assert found["state"] == "FAILED"
    assert "fail.ipynb: cell 2 (In [3]) raised ValueError: boom 42" in found["error"]
    assert "Kiln run " in found["error"]
    runs = history(prefect["root"], **{"prefect.flow_run_id": found["flow_run_id"]})
    # Prefect retried the failed run once: two Kiln runs, both failed, one task run
    assert [run.state.value for run in runs] == ["failed", "failed"]
    assert [run.tags["prefect.attempt"] for run in runs] == ["1", "2"]
    assert len({run.tags["prefect.task_run_id"] for run in runs}) == 1
    assert list(found["task_runs"].values()) == [2]


def test_a_bad_parameter_fails_before_anything_runs(prefect: dict[str, Any]) -> None:
    found = prefect["results"]["bad"]
    assert found["state"] == "FAILED"
    assert "parameter 'n' of " in found["error"]
    assert "expects int, got str 'many'" in found["error"]
    # refused before any kernel started, and not retried: nothing in the history
    assert history(prefect["root"], **{"prefect.flow_run_id": found["flow_run_id"]}) == []
    assert list(found["task_runs"].values()) == [1]  # one attempt, of the three allowed


def test_a_pipeline_flow_runs_in_order_with_products_passed(prefect: dict[str, Any]) -> None:
    found = prefect["results"]["etl"]
    assert found["state"] == "COMPLETED", found
    chain = "extract@2024-05-01;transform@none;load@none;"
    assert found["result"]["load"]["chain"] == chain
    assert (prefect["root"] / "out" / "load.txt").read_text() == chain
    runs = history(prefect["root"], **{"prefect.flow_run_id": found["flow_run_id"]})
    assert [run.tags["kiln.task"] for run in runs] == ["extract", "transform", "load"]
    assert [run.tags["prefect.task_run_name"] for run in runs] == ["extract", "transform", "load"]
    ats = [run.records["at"] for run in runs]
    assert ats == sorted(ats)


def test_values_for_an_unknown_task_fail_the_flow_first(prefect: dict[str, Any]) -> None:
    found = prefect["results"]["typo"]
    assert found["state"] == "FAILED"
    assert found["error"] == (
        "UsageError: parameters for unknown task(s) 'lod' of pipeline etl "
        "(tasks: extract, transform, load)"
    )
    assert found["task_runs"] == {}


def test_every_run_carries_the_prefect_ids(prefect: dict[str, Any]) -> None:
    results = prefect["results"]
    runs = history(prefect["root"])
    assert len(runs) == 6  # single, two attempts of fail, the three tasks
    ran = {results[name]["flow_run_id"] for name in ("single", "fail", "etl")}
    assert {run.tags["prefect.flow_run_id"] for run in runs} == ran
