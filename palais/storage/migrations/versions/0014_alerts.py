"""alerts

Outside-address alerts (issue 11): ``alert_setting`` keeps, per person,
the address and mode (at once, or a daily digest) they chose;
``alert_notice`` is the outbox of notices to send, unique per (person,
message, kind) so that reading the same arrivals twice adds nothing;
``alert_cursor`` keeps how far the message rows have been read. It starts
at the newest message: what arrived before this revision is not told.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 20:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_setting",
        sa.Column("person", sa.String(length=320), nullable=False),
        sa.Column("owner", sa.String(length=320), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("person"),
    )
    op.create_table(
        "alert_notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dossier", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("person", "message_id", "kind", name="uq_alert_notice_event"),
    )
    op.create_index("ix_alert_notice_pending", "alert_notice", ["state", "person"])
    op.create_table(
        "alert_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute(
        "INSERT INTO alert_cursor (name, position)"
        " SELECT 'messages', COALESCE(MAX(id), 0) FROM message"
    )


def downgrade() -> None:
    op.drop_table("alert_cursor")
    op.drop_index("ix_alert_notice_pending", table_name="alert_notice")
    op.drop_table("alert_notice")
    op.drop_table("alert_setting")
