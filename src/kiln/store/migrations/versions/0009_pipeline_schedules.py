"""Schedules of pipelines, and what was sent about a build.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

``schedule_slots.build_id`` is the build a pipeline schedule's slot fired (its ``run_id`` stays
empty): the fire inserts the slot row and a ``queued`` build row in one transaction, a
scheduler claims the build with a conditional UPDATE (``queued`` -> ``running``, its pid as the
owner) and runs it, and the slot follows the build's end as it follows a run's.
``builds.deliveries`` records the alerts sent (or not) when a build failed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedule_slots") as batch:
        batch.add_column(sa.Column("build_id", sa.String(128)))
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("deliveries", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("deliveries")
    with op.batch_alter_table("schedule_slots") as batch:
        batch.drop_column("build_id")
