"""Kiln in Apache Airflow, with Airflow's own ``dag.test()`` on a SQLite metadata database (no
scheduler, no webserver): ``KilnOperator`` runs a notebook with an Airflow-templated parameter
and pushes its records and run id to XCom; a failing notebook fails the task with Kiln's
message and a failed Kiln run; a bad parameter fails the task before anything runs, without
retries; ``kiln_pipeline_dag`` runs a three-task pipeline in dependency order with products
passed; every Kiln run carries the Airflow ids in its tags.

Airflow is an extra, not in the test venv: it runs in ``~/.cache/kiln/airflow-venv`` (built on
first use by pip, about six minutes; Kiln from ``src/``). One subprocess runs the four DAGs.
"""

from __future__ import annotations

import os
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
    pytest.mark.xdist_group("airflow"),
    pytest.mark.timeout(1800),
]

DRIVER = Path(__file__).with_name("airflow_driver.py")

DAG_FILE = """\
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from kiln.integrations.airflow import KilnOperator, kiln_pipeline_dag

ROOT = Path({root!r})

with DAG("kiln_single", schedule=None) as single:
    # a relative notebook path is taken from this file's folder
    KilnOperator(
        task_id="single",
        notebook="../proj/single.ipynb",
        parameters={{"n": 21, "day": "{{{{ ds }}}}"}},
        tags={{"team": "data"}},
    )

with DAG("kiln_fail", schedule=None) as fail:
    KilnOperator(task_id="fail", notebook=str(ROOT / "fail.ipynb"), parameters={{"n": 42}})

with DAG("kiln_bad", schedule=None) as bad:
    # a refusal is not retried, whatever the retries
    KilnOperator(
        task_id="bad",
        notebook=str(ROOT / "single.ipynb"),
        parameters={{"n": "many"}},
        retries=3,
        retry_delay=timedelta(0),
    )

etl = kiln_pipeline_dag("etl", project=ROOT, dag_id="kiln_etl")

try:  # values for a task the pipeline does not have: refused when the file is parsed
    kiln_pipeline_dag("etl", project=ROOT, dag_id="kiln_typo", parameters={{"lod": {{"x": 1}}}})
except Exception as exc:
    REFUSED = f"{{type(exc).__name__}}: {{exc}}"
"""


def _run_dags(base: Path) -> dict[str, Any]:
    python = orchestrator_python("airflow")
    root = make_project(base / "proj")
    dags = base / "dags"
    dags.mkdir()
    dag_file = dags / "kiln_test_dags.py"
    dag_file.write_text(DAG_FILE.format(root=str(root)), encoding="utf-8")
    env = {
        "AIRFLOW_HOME": str(base / "airflow-home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    migrated = run_in(python, ["-m", "airflow", "db", "migrate"], cwd=base, env=env)
    assert migrated.returncode == 0, migrated.stderr[-3000:] + migrated.stdout[-3000:]
    names = ["single", "fail", "bad", "etl"]
    done = run_in(python, [str(DRIVER), str(dag_file), *names], cwd=base, env=env)
    return {"root": str(root), "results": last_json(done), "log": done.stdout + done.stderr}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four DAGs run once per session; what Airflow and the Kiln history say of them."""
    found = once_per_session(tmp_path_factory, "airflow", _run_dags)
    return {**found, "root": Path(found["root"])}


def test_a_notebook_task_succeeds_with_records_in_xcom(airflow: dict[str, Any]) -> None:
    found = airflow["results"]["single"]
    assert found["state"] == "success"
    assert found["tasks"]["single"]["state"] == "success"
    xcom = found["xcom"]["single"]
    # {{ ds }} rendered by Airflow: the logical date of the test run
    assert xcom["return_value"] == {"total": 42, "day": "2024-05-01"}
    (run,) = history(airflow["root"], **{"airflow.dag_id": "kiln_single"})
    assert xcom["kiln_run_id"] == run.id
    assert run.state.value == "succeeded"
    assert run.parameters == {"n": 21, "day": "2024-05-01"}
    assert f"Kiln run {run.id} succeeded" in airflow["log"]


def test_a_failing_notebook_fails_the_task_with_kilns_message(airflow: dict[str, Any]) -> None:
    found = airflow["results"]["fail"]
    assert found["state"] == "failed"
    assert found["tasks"]["fail"]["state"] == "failed"
    (run,) = history(airflow["root"], **{"airflow.dag_id": "kiln_fail"})
    assert run.state.value == "failed"
    assert found["xcom"]["fail"]["kiln_run_id"] == run.id
    log = airflow["log"]
    assert "fail.ipynb: cell 2 (In [3]) raised ValueError: boom 42" in log
    assert f"Kiln run {run.id} failed: output notebook" in log
    # Kiln's message, not its internals: no frame of the runner in the task's failure
    assert f"kiln{os.sep}runner.py" not in log


def test_a_bad_parameter_fails_before_anything_runs(airflow: dict[str, Any]) -> None:
    found = airflow["results"]["bad"]
    assert found["state"] == "failed"
    # AirflowFailException: no retry for a refusal, though the task has three
    assert found["tasks"]["bad"] == {"state": "failed", "try_number": 1}
    assert history(airflow["root"], **{"airflow.dag_id": "kiln_bad"}) == []
    assert "AirflowFailException: parameter 'n' of " in airflow["log"]
    assert "expects int, got str 'many'" in airflow["log"]


def test_a_pipeline_dag_runs_in_order_with_products_passed(airflow: dict[str, Any]) -> None:
    found = airflow["results"]["etl"]
    assert found["state"] == "success", found
    assert set(found["tasks"]) == {"extract", "transform", "load"}
    chain = "extract@2024-05-01;transform@none;load@none;"
    assert found["xcom"]["load"]["return_value"]["chain"] == chain
    assert (airflow["root"] / "out" / "load.txt").read_text() == chain
    runs = history(airflow["root"], **{"airflow.dag_id": "kiln_etl"})
    assert [run.tags["kiln.task"] for run in runs] == ["extract", "transform", "load"]
    ats = [run.records["at"] for run in runs]
    assert ats == sorted(ats)
    assert all(run.tags["kiln.pipeline"] == "etl" for run in runs)


def test_values_for_an_unknown_task_are_refused(airflow: dict[str, Any]) -> None:
    assert airflow["results"]["refused"]["error"] == (
        "UsageError: parameters for unknown task(s) 'lod' of pipeline etl "
        "(tasks: extract, transform, load)"
    )


def test_every_run_carries_the_airflow_ids(airflow: dict[str, Any]) -> None:
    results = airflow["results"]
    runs = history(airflow["root"])
    assert len(runs) == 5  # single, fail, and the three tasks; the bad one never ran
    for run in runs:
        dag = next(r for r in results.values() if r["dag_id"] == run.tags["airflow.dag_id"])
        assert run.tags["airflow.run_id"] == dag["run_id"]
        assert run.tags["airflow.task_id"] in dag["tasks"]
        assert run.tags["airflow.try_number"] == "1"
    (single,) = [r for r in runs if r.tags["airflow.dag_id"] == "kiln_single"]
    assert single.tags["team"] == "data"
