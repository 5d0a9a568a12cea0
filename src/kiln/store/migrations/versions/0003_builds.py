"""Pipeline builds: the builds, each task's state in a build, each task's last good state,
file hashes cached by size and time, and the link from a run to its build.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

A build is one ``kiln build`` of one pipeline; ``build_tasks`` holds every selected task's
state and the reason for it (a row per task, so each task's end is one small UPDATE);
``task_states`` holds, per task, what its last successful run saw and wrote (the fingerprint
that decides whether it is up to date); ``file_hashes`` remembers the sha256 of a file for a
given size and modification time, so checking a big project reads no unchanged file.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builds",
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
    )
    op.create_index("ix_builds_pipeline", "builds", ["project", "pipeline", "created_at"])
    op.create_index("ix_builds_state", "builds", ["state"])
    op.create_table(
        "build_tasks",
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
    op.create_table(
        "task_states",
        sa.Column("project", sa.Text, primary_key=True),
        sa.Column("pipeline", sa.Text, primary_key=True),
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.JSON, nullable=False),
        sa.Column("run_id", sa.String(128)),
        sa.Column("build_id", sa.String(128)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "file_hashes",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("stamp", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("build_id", sa.String(128)))
        batch.create_index("ix_runs_build_id", ["build_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_build_id")
        batch.drop_column("build_id")
    op.drop_table("file_hashes")
    op.drop_table("task_states")
    op.drop_table("build_tasks")
    op.drop_table("builds")
