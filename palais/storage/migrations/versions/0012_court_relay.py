"""court relay

Placeholder reserved for the court systems' relay queue and DKIM verification (issue 11).
Filled in by that work, or removed and the chain relinked if it needs
no schema change.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 20:10:00.000000
"""

from __future__ import annotations

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
