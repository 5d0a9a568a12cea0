"""The store's tables (runs; pipeline builds; the server's users, tokens and audit log), as
SQLAlchemy Core sees them.

The migrations in ``migrations/versions`` are the source of truth for the database; this table
definition must describe the same schema (a test compares them, on both backends) and is what
queries are built from. Types are portable: ``JSON`` and ``DateTime(timezone=True)`` map to
``TEXT`` on SQLite and to ``json`` / ``timestamptz`` on PostgreSQL. The JSON columns stay
``json``, not ``jsonb``, on PostgreSQL: ``json`` keeps the text as written (the order of a run's
parameters, as on SQLite), and the one query that looks inside (the parameter filter) casts to
``jsonb`` for its comparison.
"""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store.columns import run_columns  # the hot paths' check, kept free of SQLAlchemy
from kiln.store.version import SCHEMA_HEAD  # the newest migration (kept free of SQLAlchemy)

__all__ = [
    "SCHEMA_HEAD",
    "audit",
    "build_tasks",
    "builds",
    "environments",
    "file_hashes",
    "metadata",
    "mlflow_exports",
    "run_columns",
    "runs",
    "schedule_slots",
    "schedule_states",
    "scheduler_beats",
    "task_states",
    "tokens",
    "users",
]

metadata = sa.MetaData()

#: the rows the queue may claim (kiln.store.queue): submitted, not yet taken; a direct run is
#: ``queued`` while its engine starts but has an owner from the start
CLAIMABLE = "state = 'queued' AND request IS NOT NULL AND owner_pid IS NULL"

runs = sa.Table(
    "runs",
    metadata,
    # "C" on PostgreSQL: ids sort bytewise, as on SQLite, and prefix lookups use the index
    sa.Column(
        "id",
        sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql"),
        primary_key=True,
    ),
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
    # the pipeline build this run is a task of (none for a run started on its own)
    sa.Column("build_id", sa.String(128)),
    # tracking (0006): what the run ran with, what it produced beyond records, where it came from
    sa.Column("environment_hash", sa.String(64)),
    sa.Column("git", sa.JSON(none_as_null=True)),
    sa.Column("inputs", sa.JSON(none_as_null=True)),
    sa.Column("metrics", sa.JSON(none_as_null=True)),
    sa.Column("artifacts", sa.JSON(none_as_null=True)),
    sa.Column("origin", sa.JSON(none_as_null=True)),
    sa.Index("ix_runs_state_created_at", "state", "created_at"),
    sa.Index("ix_runs_created_at", "created_at"),
    # runs of a notebook in some state, newest first, from the index alone (0005)
    sa.Index("ix_runs_notebook_name_state", "notebook_name", "state", "created_at", "id"),
    sa.Index("ix_runs_notebook_path_state", "notebook_path", "state", "created_at", "id"),
    sa.Index("ix_runs_build_id", "build_id"),
    sa.Index("ix_runs_environment_hash", "environment_hash"),
    # runs of a notebook in any state, newest first (0006)
    sa.Index("ix_runs_notebook_name_created_at", "notebook_name", "created_at"),
    sa.Index("ix_runs_notebook_path_created_at", "notebook_path", "created_at"),
    # runs someone submitted, newest first (0008)
    sa.Index("ix_runs_submitted_by_created_at", "submitted_by", "created_at", "id"),
    # the queue: only the runs a worker may claim, in the claim's order (0010). The index is
    # partial on both backends, WHERE CLAIMABLE, as migration 0010 creates it; the condition
    # is not repeated here because a postgresql_where argument imports SQLAlchemy's PostgreSQL
    # dialect (~25 ms of CPU) in every process that opens a SQLite history, and nothing reads
    # it here (Alembic's comparison of the table with the migrations does not look at it)
    sa.Index("ix_runs_claimable", "created_at", "id"),
)


# -- pipelines (migration 0003) ----------------------------------------------------------------

#: one ``kiln build`` of one pipeline of one project
builds = sa.Table(
    "builds",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("project", sa.Text, nullable=False),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_started", sa.Double),
    # the alerts sent when the build failed, each {kind, ok, error...} (0009)
    sa.Column("deliveries", sa.JSON(none_as_null=True)),
    sa.Index("ix_builds_pipeline", "project", "pipeline", "created_at"),
    sa.Index("ix_builds_state", "state"),
)

#: each selected task's state in a build, and why
build_tasks = sa.Table(
    "build_tasks",
    metadata,
    sa.Column(
        "build_id",
        sa.String(128),
        sa.ForeignKey("builds.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("task", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("run_id", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)

#: what each task's last successful run saw and wrote: decides whether it is up to date
task_states = sa.Table(
    "task_states",
    metadata,
    sa.Column("project", sa.Text, primary_key=True),
    sa.Column("pipeline", sa.Text, primary_key=True),
    sa.Column("task", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.JSON, nullable=False),
    sa.Column("run_id", sa.String(128)),
    sa.Column("build_id", sa.String(128)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: a file's sha256 for a stamp (its size and modification time, or an object store's ETag)
file_hashes = sa.Table(
    "file_hashes",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("stamp", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)


# -- accounts and the audit log (0004) ------------------------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    # argon2 hash; NULL for an account that only signs in through a trusted proxy or tokens
    sa.Column("password_hash", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # SHA-256 of the token (hex): tokens are long random strings, the hash is the lookup key
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("user_name", sa.String(255), nullable=False),
    # "api" (kiln tokens create) or "session" (a browser's login)
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("label", sa.String(255)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Index("ix_tokens_user_name", "user_name"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(255)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("address", sa.String(255)),
    sa.Column("details", sa.JSON(none_as_null=True)),
    sa.Index("ix_audit_at", "at"),
    sa.Index("ix_audit_actor", "actor"),
)


# -- tracking (0006) ------------------------------------------------------------------------

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


# -- schedules (0007) ------------------------------------------------------------------------

#: one row per fired (or missed, or skipped) slot of a schedule: the key fires it once
schedule_slots = sa.Table(
    "schedule_slots",
    metadata,
    sa.Column("schedule", sa.String(255), primary_key=True),
    # the slot's instant (UTC); a run-now gets the instant it was asked for
    sa.Column("slot", sa.DateTime(timezone=True), primary_key=True),
    # waiting (for its turn or a retry), queued (run_id in flight), succeeded, failed,
    # cancelled, skipped (concurrency), missed (catch-up)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("manual", sa.Boolean, nullable=False),
    sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    # the report's delivery: pending, sending (leased), done
    sa.Column("delivery", sa.String(16)),
    sa.Column("delivery_owner", sa.String(255)),
    sa.Column("delivery_expires", sa.DateTime(timezone=True)),
    sa.Column("deliveries", sa.JSON(none_as_null=True)),
    # a pipeline schedule's slot: the build it fired (0009); run_id stays empty
    sa.Column("build_id", sa.String(128)),
    sa.Index("ix_schedule_slots_state", "state"),
    sa.Index("ix_schedule_slots_delivery", "delivery"),
)

#: what changes at run time per schedule (paused), and when a scheduler first saw it
schedule_states = sa.Table(
    "schedule_states",
    metadata,
    sa.Column("schedule", sa.String(255), primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(255)),
)

#: each scheduler process's last heartbeat
scheduler_beats = sa.Table(
    "scheduler_beats",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
)
