"""Kiln in Prefect: the bundled sales report as a task in a flow, and the bundled pipeline as
a flow of its own.

With ``pip install 'kiln-notebooks[prefect,demo]'``, run it locally (Prefect starts its own
temporary API on SQLite; no server needed)::

    python examples/prefect/flows.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from kiln.integrations.prefect import pipeline_flow, run_notebook

EXAMPLES = Path(__file__).resolve().parent.parent


@flow
def daily_sales(date: str = "2026-11-21", regions: tuple[str, ...] = ("EU", "US")) -> None:
    """The report for each region; each run is a Kiln run tagged with this flow run's id,
    retried once when it fails (a bad parameter is never retried)."""
    report = run_notebook.with_options(retries=1, retry_delay_seconds=10)
    for region in regions:
        records: dict[str, Any] = report(
            EXAMPLES / "sales" / "daily_sales.ipynb",
            parameters={"date": date, "region": region},
            timeout="10m",
        )
        print(region, {k: v for k, v in records.items() if not isinstance(v, dict)})


# The bundled pipeline (examples/pipeline/kiln.yaml): one Prefect task per Kiln task, each
# started when its upstream tasks succeeded, products passed as `kiln build` does.
sales_pipeline = pipeline_flow("sales", project=EXAMPLES / "pipeline")


if __name__ == "__main__":
    daily_sales()
    results = sales_pipeline(parameters={"report": {"title": "Sales by region (Prefect)"}})
    print("revenue:", results["report"]["revenue"])
