"""Kiln in Airflow: the bundled sales report as one task, and the bundled pipeline as a DAG.

Put this folder in Airflow's DAG folder (or point ``AIRFLOW__CORE__DAGS_FOLDER`` at it), with
``pip install 'kiln-notebooks[airflow,demo]'`` in Airflow's environment. To try it without a
scheduler, ``dag.test()`` runs each DAG once (see README.md beside this file)::

    python examples/airflow/kiln_dags.py
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import DAG

from kiln.integrations.airflow import KilnOperator, kiln_pipeline_dag

EXAMPLES = Path(__file__).resolve().parent.parent

# The daily report: {{ ds }} is rendered by Airflow (the run's logical date), then checked by
# Kiln against the notebook's `date: str` before anything runs. The run is in the Kiln history
# of examples/sales (`kiln runs list --tag airflow.dag_id=kiln_daily_sales`); its records are
# the task's XCom.
with DAG(
    "kiln_daily_sales",
    schedule="0 6 * * 1-5",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["kiln"],
) as daily_sales:
    KilnOperator(
        task_id="report",
        notebook="../sales/daily_sales.ipynb",  # from this file's folder
        parameters={"date": "{{ ds }}", "region": "EU"},
        timeout="10m",
        retries=2,
    )

# The bundled pipeline (examples/pipeline/kiln.yaml): one Airflow task per Kiln task, grid
# members included (clean.region-EU, clean.region-US), products passed as `kiln build` does.
sales_pipeline = kiln_pipeline_dag(
    "sales",
    project=EXAMPLES / "pipeline",
    dag_id="kiln_sales_pipeline",
    schedule="@daily",
    # rendered by Airflow's Jinja into text; a template meant to give a number needs the DAG's
    # render_template_as_native_obj=True (Kiln checks types and does not guess)
    parameters={"report": {"title": "Sales by region, {{ ds }}"}},
)


if __name__ == "__main__":
    for dag in (daily_sales, sales_pipeline):
        run = dag.test()
        print(f"{dag.dag_id}: {run.state}")
