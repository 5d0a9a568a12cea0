"""Schedules: each fired slot once, pause state, scheduler heartbeats.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

``schedule_slots`` has one row per (schedule, slot time): the primary key is what makes a
slot fire once even when two schedulers share the database (the second insert fails and
its transaction, which also held the slot's queued run, rolls back). The row follows the
slot's runs (retries) and the delivery of its report. ``schedule_states`` keeps what the
CLI and the API change at run time (paused) and when the scheduler first saw a schedule
(missed slots are counted from then). ``scheduler_beats`` holds each scheduler's last
heartbeat, for ``kiln health`` and the alerts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_slots",
        sa.Column("schedule", sa.String(255), primary_key=True),
        sa.Column("slot", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("manual", sa.Boolean, nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(128)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("delivery", sa.String(16)),
        sa.Column("delivery_owner", sa.String(255)),
        sa.Column("delivery_expires", sa.DateTime(timezone=True)),
        sa.Column("deliveries", sa.JSON(none_as_null=True)),
    )
    op.create_index("ix_schedule_slots_state", "schedule_slots", ["state"])
    op.create_index("ix_schedule_slots_delivery", "schedule_slots", ["delivery"])
    op.create_table(
        "schedule_states",
        sa.Column("schedule", sa.String(255), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(255)),
    )
    op.create_table(
        "scheduler_beats",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduler_beats")
    op.drop_table("schedule_states")
    op.drop_index("ix_schedule_slots_delivery", "schedule_slots")
    op.drop_index("ix_schedule_slots_state", "schedule_slots")
    op.drop_table("schedule_slots")
