"""The runs table.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Records (values saved by ``kiln.record``) live in a JSON column on the run row rather than in a
table of their own: they are always written and read with their run, a run's records change
together in one UPDATE, and no query looks inside them yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("notebook_path", sa.Text, nullable=False),
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
    )
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_index("ix_runs_notebook_path", "runs", ["notebook_path"])
    op.create_index("ix_runs_notebook_name", "runs", ["notebook_name"])


def downgrade() -> None:
    op.drop_table("runs")
