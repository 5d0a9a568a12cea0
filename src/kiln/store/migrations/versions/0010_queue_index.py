"""The queue's own index: the runs a worker may claim, oldest first.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

A partial index on (created_at, id) holding only claimable rows (``queued``, with a request,
no owner yet). Without it a claim walked ``ix_runs_created_at`` from the oldest run of the
whole history and filtered: each claim read every finished run before the first queued one
(3,000 rows and 1,280 pages for the last claim of a 3,000-run queue on PostgreSQL; a
million-run history would be read through at every claim). With it a claim reads the head
of a small index that holds the queue alone, in the claim's order, with no sort.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: the claim's condition (kiln.store.queue): both backends keep only these rows
_CLAIMABLE = "state = 'queued' AND request IS NOT NULL AND owner_pid IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_runs_claimable",
        "runs",
        ["created_at", "id"],
        postgresql_where=sa.text(_CLAIMABLE),
        sqlite_where=sa.text(_CLAIMABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_claimable", "runs")
