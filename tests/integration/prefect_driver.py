"""Runs in the Prefect venv (tests/integration/test_prefect.py): five flow runs, locally
(Prefect's ephemeral API on SQLite under ``PREFECT_HOME``), and prints, as JSON on its last
line, each flow run's id, final state, message and result.

Usage: ``python prefect_driver.py PROJECT`` (the project of ``orchestrator_util.make_project``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from kiln.integrations.prefect import pipeline_flow, run_notebook


def main() -> None:
    root = sys.argv[1]

    @flow
    def single(n: int) -> dict[str, Any]:
        return run_notebook(f"{root}/single.ipynb", parameters={"n": n, "day": "d"})

    @flow
    def failing() -> dict[str, Any]:
        # a failed run is retried once
        task = run_notebook.with_options(retries=1, retry_delay_seconds=0)
        return task(f"{root}/fail.ipynb", parameters={"n": 42})

    @flow
    def bad() -> dict[str, Any]:
        # a refusal is never retried, whatever the retries
        task = run_notebook.with_options(retries=3, retry_delay_seconds=0)
        return task(f"{root}/single.ipynb", parameters={"n": "many"})

    etl = pipeline_flow("etl", project=root)
    calls: dict[str, Any] = {
        "single": lambda: single(21, return_state=True),
        "fail": lambda: failing(return_state=True),
        "bad": lambda: bad(return_state=True),
        "etl": lambda: etl(parameters={"extract": {"day": "2024-05-01"}}, return_state=True),
        "typo": lambda: etl(parameters={"lod": {"x": 1}}, return_state=True),
    }
    results: dict[str, Any] = {}
    for name, call in calls.items():
        state = call()
        value = state.result(raise_on_failure=False)
        results[name] = {
            "flow_run_id": str(state.state_details.flow_run_id),
            "state": state.type.value,
            "message": state.message,
            "result": value if not isinstance(value, BaseException) else None,
            "error": f"{type(value).__name__}: {value}"
            if isinstance(value, BaseException)
            else None,
        }
    with get_client(sync_client=True) as client:
        for found in results.values():
            only = FlowRunFilter(id=FlowRunFilterId(any_=[found["flow_run_id"]]))
            found["task_runs"] = {
                task_run.name: task_run.run_count
                for task_run in client.read_task_runs(flow_run_filter=only)
            }
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
