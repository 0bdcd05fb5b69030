"""message arrival

The digest of a message's sender and of its bytes as submitted, before the
gateway completed them with its trace line: a client that lost the 250 and
sends the message again, to whichever node the load balancer picks, is
answered with the first filing rather than filed twice. Messages stored
before this revision have none (NULL): a resend of one is recognised only by
its stored bytes, as before.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, on SQLite too: a batch (copy of the table) would
    # drop a table other tables' foreign keys name.
    op.add_column("message", sa.Column("arrival", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("message", "arrival")
