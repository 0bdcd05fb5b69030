"""court documents

Placeholder reserved for the saisine and constitution flows (issue 11).
Filled in by that work, or removed and the chain relinked if it needs
no schema change.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
