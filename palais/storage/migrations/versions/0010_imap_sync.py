"""imap sync

What IMAP QRESYNC (RFC 7162 section 3.2) needs to tell a reconnecting
client which of the messages it knew are gone: ``vanished`` keeps, for
each entry that left a box, its UID and the box's MODSEQ of its removal.
UIDs are never reused in a box (UIDVALIDITY does not change), so a row
stays true for good; a box's rows are read by MODSEQ.

``imap_recent`` keeps, per box, the highest UID some IMAP session has been
told of first: the messages above it are \\Recent for the next session that
selects the box (RFC 3501 2.3.2), in exactly one session, across restarts
and nodes. A box without a row was never selected: all it holds is recent;
the boxes existing at this revision start with what they hold now.

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
    op.create_table(
        "imap_recent",
        sa.Column("mailbox_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"]),
        sa.PrimaryKeyConstraint("mailbox_id"),
    )
    # Boxes that exist now: what they hold was seen before this revision.
    op.execute("INSERT INTO imap_recent (mailbox_id, uid) SELECT id, uidnext - 1 FROM mailbox")


def downgrade() -> None:
    op.drop_table("imap_recent")
    op.drop_index("ix_vanished_modseq", table_name="vanished")
    op.drop_table("vanished")
