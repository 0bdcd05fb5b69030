"""court system role

The role of a court's case-management system was stored as "juridiction",
the word the directory also uses for a court's name (a service's and a
dossier's ``juridiction``). It is now "systeme_juridiction".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 12:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE account SET role = 'systeme_juridiction' WHERE role = 'juridiction'")


def downgrade() -> None:
    op.execute("UPDATE account SET role = 'juridiction' WHERE role = 'systeme_juridiction'")
