"""Runs by who submitted them, newest first: the web UI's runs list filtered by user.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

One index on (submitted_by, created_at, id), the order of the list, so a page of one user's
runs is one range scan at any depth of the history.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_submitted_by_created_at", "runs", ["submitted_by", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_submitted_by_created_at", "runs")
