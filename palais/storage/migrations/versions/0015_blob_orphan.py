"""blob orphan

Large objects no ``blob`` row names, as a sweep saw them
(``palais.storage.blob_sweep``): a later sweep, a grace period on, unlinks
those still unnamed. Kept in a table so that any node does the second pass
and a restart forgets nothing. Created on SQLite too (one schema), where it
stays empty: the pack store has no large objects.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 23:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_orphan",
        sa.Column("lo_oid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("lo_xmin", sa.String(length=20), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lo_oid"),
    )


def downgrade() -> None:
    op.drop_table("blob_orphan")
