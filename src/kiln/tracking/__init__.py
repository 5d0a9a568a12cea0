"""Runs as experiments: compare runs side by side, rerun a run exactly, the history as a table
(record columns, exports, charts), retention, and MLflow synchronisation.

What each run ran with is captured on the run path (:mod:`kiln.capture`,
:mod:`kiln.provenance`) and exported to MLflow there (:mod:`kiln.mlflow_export`); this package
reads the history and acts on it. Everything loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.tracking.compare import RunComparison, compare_runs
    from kiln.tracking.history import export_history, history_rows, plot_record
    from kiln.tracking.rerun import RerunPlan, RerunReport, plan_rerun, rerun_report
    from kiln.tracking.sync import sync_mlflow

__all__ = [
    "RerunPlan",
    "RerunReport",
    "RunComparison",
    "compare_runs",
    "export_history",
    "history_rows",
    "plan_rerun",
    "plot_record",
    "rerun_report",
    "sync_mlflow",
]

_LAZY = {
    "RunComparison": "kiln.tracking.compare",
    "compare_runs": "kiln.tracking.compare",
    "export_history": "kiln.tracking.history",
    "history_rows": "kiln.tracking.history",
    "plot_record": "kiln.tracking.history",
    "RerunPlan": "kiln.tracking.rerun",
    "plan_rerun": "kiln.tracking.rerun",
    "rerun_report": "kiln.tracking.rerun",
    "RerunReport": "kiln.tracking.rerun",
    "sync_mlflow": "kiln.tracking.sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
