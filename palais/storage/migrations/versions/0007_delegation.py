"""delegation

A lawyer's delegations in force (e-délégation): who acts for whom, on which
dossier (NULL: all of the lawyer's dossiers), to read or to read and write.
A revocation deletes its row; grants and revocations are in the audit log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:00:00.000000
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
        "delegation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lawyer_id", sa.Integer(), nullable=False),
        sa.Column("delegate_id", sa.Integer(), nullable=False),
        sa.Column("dossier_id", sa.Integer(), nullable=True),
        sa.Column("rights", sa.String(8), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(320), nullable=False),
        sa.ForeignKeyConstraint(["lawyer_id"], ["account.id"]),
        sa.ForeignKeyConstraint(["delegate_id"], ["account.id"]),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossier.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lawyer_id", "delegate_id", "dossier_id"),
    )
    op.create_index("ix_delegation_delegate", "delegation", ["delegate_id"])


def downgrade() -> None:
    op.drop_index("ix_delegation_delegate", table_name="delegation")
    op.drop_table("delegation")
