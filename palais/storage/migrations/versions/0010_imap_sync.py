"""imap sync

What IMAP QRESYNC (RFC 7162 section 3.2) needs to tell a reconnecting
client which of the messages it knew are gone: ``vanished`` keeps, for
each entry that left a box, its UID and the box's MODSEQ of its removal.
UIDs are never reused in a box (UIDVALIDITY does not change), so a row
stays true for good; a box's rows are read by MODSEQ.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vanished",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"]),
        sa.PrimaryKeyConstraint("mailbox_id", "uid"),
    )
    op.create_index("ix_vanished_modseq", "vanished", ["mailbox_id", "modseq"])


def downgrade() -> None:
    op.drop_index("ix_vanished_modseq", table_name="vanished")
    op.drop_table("vanished")
