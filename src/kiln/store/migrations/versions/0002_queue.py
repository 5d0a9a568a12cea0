"""The runs table as a queue: what to run, who holds it, retries, who asked, tags.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

A submitted run is a row in state ``queued`` whose ``request`` holds what the runner needs
(options, output, the notebook's label; the bytes are in ``inputs/<sha256>.ipynb``). A worker
claims the oldest queued row and holds it with a lease (``lease_owner``, ``lease_expires``),
renewed while the run goes on; an expired lease means the worker died. A retry is a new row
whose ``retry_of`` names the run it repeats. ``cancel_requested`` asks the run's holder to stop
it (the API's cancel).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("request", sa.JSON(none_as_null=True)))
        batch.add_column(sa.Column("lease_owner", sa.String(255)))
        batch.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("retry_of", sa.String(128)))
        batch.add_column(sa.Column("attempt", sa.Integer))
        batch.add_column(sa.Column("max_retries", sa.Integer))
        batch.add_column(sa.Column("submitted_by", sa.String(255)))
        batch.add_column(sa.Column("tags", sa.JSON(none_as_null=True)))
        batch.add_column(sa.Column("cancel_requested", sa.DateTime(timezone=True)))
    op.create_index("ix_runs_state_created_at", "runs", ["state", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_state_created_at", "runs")
    with op.batch_alter_table("runs") as batch:
        for name in (
            "cancel_requested",
            "tags",
            "submitted_by",
            "max_retries",
            "attempt",
            "retry_of",
            "lease_expires",
            "lease_owner",
            "request",
        ):
            batch.drop_column(name)
