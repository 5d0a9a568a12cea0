"""Runs in the Airflow venv (tests/integration/test_airflow.py): loads the DAG file given, runs
each named DAG with ``dag.test()`` at one logical date, and prints, as JSON on its last line,
each DAG run's state, its task instances and their XComs (and the file's ``REFUSED``: a
refusal it caught while it was parsed).

Usage: ``python airflow_driver.py DAG_FILE NAME...`` with ``AIRFLOW_HOME`` and
``AIRFLOW__CORE__DAGS_FOLDER`` set (the database migrated already).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timezone
from typing import Any

LOGICAL_DATE = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _xcoms(dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    out: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        for row in session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id)):
            out.setdefault(row.task_id, {})[row.key] = XComModel.deserialize_value(row)
    return out


def main() -> None:
    spec = importlib.util.spec_from_file_location("kiln_test_dags", sys.argv[1])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results: dict[str, Any] = {}
    for name in sys.argv[2:]:
        dag = getattr(module, name)
        run = dag.test(logical_date=LOGICAL_DATE)
        tasks = {
            ti.task_id: {"state": str(ti.state), "try_number": ti.try_number}
            for ti in run.get_task_instances()
        }
        results[name] = {
            "dag_id": dag.dag_id,
            "run_id": run.run_id,
            "state": str(run.state),
            "tasks": tasks,
            "xcom": _xcoms(dag.dag_id, run.run_id),
        }
    results["refused"] = {"dag_id": None, "error": getattr(module, "REFUSED", None)}
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
