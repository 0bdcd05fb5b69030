"""evidence log

Receipts (accusés de réception): every receipt's evidence is a leaf of an
append-only Merkle tree (``evidence_log``, with the receipt mail's bytes:
written with its rows, no second sync of the message store), whose size and compact range
(``evidence_head``) the next leaf reads in its own transaction; signed
tree heads (``tree_head``); and the first reading of each received message
per mailbox (``first_read``), which makes the read receipt unique.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence_log",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("evidence_id", sa.String(64), nullable=False),
        sa.Column("events", sa.String(100), nullable=False),
        sa.Column("about", sa.BigInteger(), nullable=True),
        sa.Column("holder", sa.String(320), nullable=False),
        sa.Column("dossier", sa.String(32), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
        sa.Column("receipt_message", sa.BigInteger(), nullable=True),
        sa.Column("receipt", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("evidence_id"),
    )
    op.create_index("ix_evidence_log_about", "evidence_log", ["about"])
    op.create_table(
        "evidence_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tree_head",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "first_read",
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(320), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "owner"),
    )


def downgrade() -> None:
    op.drop_table("first_read")
    op.drop_table("tree_head")
    op.drop_table("evidence_head")
    op.drop_index("ix_evidence_log_about", table_name="evidence_log")
    op.drop_table("evidence_log")
