"""court relay

The queue of messages relayed to court systems' own SMTP endpoints
(palais.mailbox.relay): one row per filed message and court system, written
in the filing's transaction, leased by the node sending it (SELECT ... FOR
UPDATE SKIP LOCKED on PostgreSQL), marked sent after the endpoint's 250 or
failed when given up (with a non-delivery receipt). Rows stay as history.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 20:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("message_ident", sa.String(998), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id", "recipient"),
    )
    op.create_index("ix_relay_queue_due", "relay_queue", ["state", "next_attempt"])


def downgrade() -> None:
    op.drop_index("ix_relay_queue_due", table_name="relay_queue")
    op.drop_table("relay_queue")
