"""hearing booking

Each place of a hearing slot a saisine's date booking takes
(palais.mailbox.hearing_slots): written with the saisine, removed when the
registry rejects it, so that two saisines never book the last place of a
slot, on one node or several.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 21:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hearing_booking",
        sa.Column("message_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("juridiction_code", sa.String(100), nullable=False),
        sa.Column("slot_id", sa.String(200), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id"),
    )
    op.create_index("ix_hearing_booking_slot", "hearing_booking", ["juridiction_code", "slot_id"])


def downgrade() -> None:
    op.drop_index("ix_hearing_booking_slot", table_name="hearing_booking")
    op.drop_table("hearing_booking")
