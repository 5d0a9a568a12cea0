"""``kiln runs sync-mlflow``: record in MLflow the runs whose export did not happen (MLflow
was down, or Kiln was killed before it could export)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.errors import RunNotFound

if TYPE_CHECKING:
    from kiln.store.sql import RunStore


@dataclass(frozen=True)
class SyncResult:
    """One run's export attempt: ``ok``, or the reason it failed again."""

    run_id: str
    ok: bool
    message: str | None
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run_id, "ok": self.ok, "skipped": self.skipped, "message": self.message}


def sync_mlflow(
    store: RunStore, *, run_ids: Sequence[str] | None = None, uri: str | None = None
) -> list[SyncResult]:
    """Export every run whose export is pending or failed (only ``run_ids`` when given), to
    the URI it was meant for (or ``uri``). A run still going on is skipped: its own end
    exports it."""
    from kiln.mlflow_export import experiment_for, export_and_mark
    from kiln.store.exports import owed_exports

    results = []
    for owed in owed_exports(store, list(run_ids) if run_ids is not None else None):
        try:
            run = store.get_run_exact(owed.run_id)
        except RunNotFound:
            continue
        if not run.finished:
            results.append(SyncResult(run.id, False, f"still {run.state}", skipped=True))
            continue
        experiment = owed.experiment or experiment_for(run.notebook_path)
        failed = export_and_mark(store, run, uri or owed.uri, experiment)
        results.append(SyncResult(run.id, failed is None, failed))
    return results
