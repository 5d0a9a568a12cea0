"""The runs table, as SQLAlchemy Core sees it.

The migrations in ``migrations/versions`` are the source of truth for the database; this table
definition must describe the same schema (a test compares them) and is what queries are built
from. Types are portable: ``JSON`` and ``DateTime(timezone=True)`` map to ``TEXT`` on SQLite and
to ``json`` / ``timestamptz`` on PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

#: The newest migration. The store compares it with ``alembic_version`` on open and only imports
#: Alembic when the database is new or behind; a test checks it equals Alembic's script head.
SCHEMA_HEAD = "0006"

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("notebook_path", sa.Text, nullable=False),
    # Derived from notebook_path so "runs of report.ipynb" is an indexed, exact comparison.
    sa.Column("notebook_name", sa.Text, nullable=False),
    sa.Column("notebook_sha256", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("run_dir", sa.Text),
    sa.Column("input_path", sa.Text),
    sa.Column("output_path", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("engine", sa.String(64)),
    sa.Column("kernel_name", sa.String(255)),
    sa.Column("kernel_version", sa.String(64)),
    sa.Column("language", sa.String(64)),
    sa.Column("python_version", sa.String(64)),
    sa.Column("kiln_version", sa.String(64)),
    sa.Column("cell_durations", sa.JSON, nullable=False),
    sa.Column("error", sa.JSON(none_as_null=True)),
    sa.Column("reason", sa.Text),
    sa.Column("records", sa.JSON, nullable=False),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_started", sa.Double),
    sa.Column("kernel_pid", sa.Integer),
    sa.Column("kernel_started", sa.Double),
    # the queue (0002)
    sa.Column("request", sa.JSON(none_as_null=True)),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires", sa.DateTime(timezone=True)),
    sa.Column("retry_of", sa.String(128)),
    sa.Column("attempt", sa.Integer),
    sa.Column("max_retries", sa.Integer),
    sa.Column("submitted_by", sa.String(255)),
    sa.Column("tags", sa.JSON(none_as_null=True)),
    sa.Column("cancel_requested", sa.DateTime(timezone=True)),
    # tracking (0006): what the run ran with, what it produced beyond records, where it came from
    sa.Column("environment_hash", sa.String(64)),
    sa.Column("git", sa.JSON(none_as_null=True)),
    sa.Column("inputs", sa.JSON(none_as_null=True)),
    sa.Column("metrics", sa.JSON(none_as_null=True)),
    sa.Column("artifacts", sa.JSON(none_as_null=True)),
    sa.Column("origin", sa.JSON(none_as_null=True)),
    sa.Index("ix_runs_state", "state"),
    sa.Index("ix_runs_state_created_at", "state", "created_at"),
    sa.Index("ix_runs_created_at", "created_at"),
    sa.Index("ix_runs_notebook_path", "notebook_path"),
    sa.Index("ix_runs_notebook_name", "notebook_name"),
    sa.Index("ix_runs_environment_hash", "environment_hash"),
    sa.Index("ix_runs_notebook_name_created_at", "notebook_name", "created_at"),
    sa.Index("ix_runs_notebook_path_created_at", "notebook_path", "created_at"),
)

#: one row per distinct environment (tracking, 0006): 10,000 runs in one venv store it once
environments = sa.Table(
    "environments",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("language", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("implementation", sa.String(64), nullable=False),
    sa.Column("os", sa.Text, nullable=False),
    sa.Column("machine", sa.String(64), nullable=False),
    sa.Column("packages", sa.JSON, nullable=False),
)

#: a run's export to an MLflow tracking server (tracking, 0006); retried by sync-mlflow
mlflow_exports = sa.Table(
    "mlflow_exports",
    metadata,
    sa.Column(
        "run_id", sa.String(128), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("experiment", sa.Text),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_mlflow_exports_state", "state"),
)
