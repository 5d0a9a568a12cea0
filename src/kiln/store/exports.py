"""Runs' exports to an MLflow tracking server, as the history keeps them.

One row per exported run (``mlflow_exports``): where it goes, ``pending`` while the export is
under way or owed, ``done`` with the MLflow run id, ``failed`` with the error. A run whose
export did not finish (MLflow down, Kiln killed meanwhile) stays ``pending`` or ``failed``
until ``kiln runs sync-mlflow`` uploads it; the run itself is never failed by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kiln.store.schema import mlflow_exports

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

PENDING, DONE, FAILED = "pending", "done", "failed"


@dataclass(frozen=True)
class ExportState:
    """Where a run's MLflow export stands."""

    run_id: str
    uri: str
    experiment: str | None
    state: str
    mlflow_run_id: str | None
    error: str | None
    attempts: int
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "experiment": self.experiment,
            "state": self.state,
            "mlflow_run_id": self.mlflow_run_id,
            "error": self.error,
            "attempts": self.attempts,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def _row(row: Any) -> ExportState:
    data = row._mapping
    return ExportState(
        run_id=data["run_id"],
        uri=data["uri"],
        experiment=data["experiment"],
        state=data["state"],
        mlflow_run_id=data["mlflow_run_id"],
        error=data["error"],
        attempts=int(data["attempts"] or 0),
        updated_at=data["updated_at"],
    )


def mark_export(
    store: RunStore,
    run_id: str,
    *,
    uri: str,
    experiment: str | None,
    state: str,
    mlflow_run_id: str | None = None,
    error: str | None = None,
    attempt: bool = False,
) -> None:
    """Record where a run's export stands (one row per run, replaced)."""
    values = {
        "uri": uri,
        "experiment": experiment,
        "state": state,
        "mlflow_run_id": mlflow_run_id,
        "error": error,
        "updated_at": datetime.now(timezone.utc),
    }
    with store._write() as conn:
        bump = mlflow_exports.c.attempts + (1 if attempt else 0)
        done = conn.execute(
            mlflow_exports.update()
            .where(mlflow_exports.c.run_id == run_id)
            .values(**values, attempts=bump)
        ).rowcount
        if not done:
            conn.execute(
                mlflow_exports.insert(),
                {"run_id": run_id, **values, "attempts": 1 if attempt else 0},
            )


def export_state(store: RunStore, run_id: str) -> ExportState | None:
    with store._read() as conn:
        row = conn.execute(mlflow_exports.select().where(mlflow_exports.c.run_id == run_id)).first()
    return _row(row) if row is not None else None


def owed_exports(store: RunStore, run_ids: list[str] | None = None) -> list[ExportState]:
    """Exports not done (pending or failed), oldest first; only these runs when given."""
    query = mlflow_exports.select().where(mlflow_exports.c.state != DONE)
    if run_ids is not None:
        query = query.where(mlflow_exports.c.run_id.in_(run_ids))
    with store._read() as conn:
        return [_row(r) for r in conn.execute(query.order_by(mlflow_exports.c.updated_at))]


def count_by_state(store: RunStore) -> dict[str, int]:
    query = sa.select(mlflow_exports.c.state, sa.func.count()).group_by(mlflow_exports.c.state)
    with store._read() as conn:
        return {str(state): int(n) for state, n in conn.execute(query)}
