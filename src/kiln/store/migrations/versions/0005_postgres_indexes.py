"""Indexes for the history's queries at PostgreSQL scale; run ids compared byte by byte.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10

- ``kiln runs list --notebook X --state S`` (and the API's run list) is answered by one index
  scan, newest first, however many runs the history holds: ``(notebook_name | notebook_path,
  state, created_at, id)``. Without it PostgreSQL walks ``created_at`` backwards and filters,
  which reads most of a million-run table for a notebook whose runs are old (0.3-0.45 s,
  bench/store_bench.py). These replace the single-column indexes on the notebook's name and
  path, and ``(state, created_at)`` makes the one on ``state`` alone redundant.
- On PostgreSQL the run id gets the "C" collation: ids sort as they do on SQLite (bytewise,
  whatever the database's locale), and a prefix lookup (``LIKE 'abc%'``) can use the primary
  key's index, which it cannot under a linguistic collation (a scan of every id).

Self-contained (it only touches the runs table of 0001/0002), so it can follow other
revisions once they are chained.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ORDERED = ["state", "created_at", "id"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "runs",
            "id",
            type_=sa.String(128, collation="C"),
            existing_type=sa.String(128),
            existing_nullable=False,
        )
    op.drop_index("ix_runs_state", "runs")
    op.drop_index("ix_runs_notebook_name", "runs")
    op.drop_index("ix_runs_notebook_path", "runs")
    op.create_index("ix_runs_notebook_name_state", "runs", ["notebook_name", *_ORDERED])
    op.create_index("ix_runs_notebook_path_state", "runs", ["notebook_path", *_ORDERED])


def downgrade() -> None:
    op.drop_index("ix_runs_notebook_path_state", "runs")
    op.drop_index("ix_runs_notebook_name_state", "runs")
    op.create_index("ix_runs_notebook_path", "runs", ["notebook_path"])
    op.create_index("ix_runs_notebook_name", "runs", ["notebook_name"])
    op.create_index("ix_runs_state", "runs", ["state"])
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "runs",
            "id",
            type_=sa.String(128),
            existing_type=sa.String(128, collation="C"),
            existing_nullable=False,
        )
