"""Runs as experiments: the environment, git state and inputs of each run, its metric series
and artefacts, where it came from (a rerun), and its export to MLflow.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

Environments are stored once per distinct environment (``environments``, keyed by the hash of
the Python version, OS, machine and installed distributions); a run names its environment by
that hash. Metrics and artefacts travel like records (a JSON column on the run row, written
with the run's end in one UPDATE). Two indexes serve the history's per-notebook queries
(``runs list --notebook``, ``runs plot``) newest first without sorting every run of the
notebook.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_RUN_COLUMNS = ("environment_hash", "git", "inputs", "metrics", "artifacts", "origin")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("environment_hash", sa.String(64)))
        batch.add_column(sa.Column("git", sa.JSON(none_as_null=True)))
        batch.add_column(sa.Column("inputs", sa.JSON(none_as_null=True)))
        batch.add_column(sa.Column("metrics", sa.JSON(none_as_null=True)))
        batch.add_column(sa.Column("artifacts", sa.JSON(none_as_null=True)))
        batch.add_column(sa.Column("origin", sa.JSON(none_as_null=True)))
    op.create_index("ix_runs_environment_hash", "runs", ["environment_hash"])
    op.create_index("ix_runs_notebook_name_created_at", "runs", ["notebook_name", "created_at"])
    op.create_index("ix_runs_notebook_path_created_at", "runs", ["notebook_path", "created_at"])
    op.create_table(
        "environments",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("language", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("implementation", sa.String(64), nullable=False),
        sa.Column("os", sa.Text, nullable=False),
        sa.Column("machine", sa.String(64), nullable=False),
        sa.Column("packages", sa.JSON, nullable=False),
    )
    op.create_table(
        "mlflow_exports",
        sa.Column(
            "run_id",
            sa.String(128),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("experiment", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mlflow_exports_state", "mlflow_exports", ["state"])


def downgrade() -> None:
    op.drop_index("ix_mlflow_exports_state", "mlflow_exports")
    op.drop_table("mlflow_exports")
    op.drop_table("environments")
    op.drop_index("ix_runs_notebook_path_created_at", "runs")
    op.drop_index("ix_runs_notebook_name_created_at", "runs")
    op.drop_index("ix_runs_environment_hash", "runs")
    with op.batch_alter_table("runs") as batch:
        for name in reversed(_RUN_COLUMNS):
            batch.drop_column(name)
