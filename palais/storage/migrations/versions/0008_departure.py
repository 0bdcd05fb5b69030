"""departure

Departures of clerks and magistrates (palais.mailbox.departure): one row per
declared departure, its last working day and the instant it takes effect
(00:00 the day after, in the instance's time zone, computed when declared),
the optional successor, and its state. The gateway carries a due departure
out with a conditional ``UPDATE ... WHERE state = 'pending'`` in the
transaction that moves the dossiers, so that it happens once whatever the
restarts and the number of nodes. Rows are never deleted: a cancelled or
done departure is history, as the audit log is.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "departure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("successor_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("set_by", sa.String(320), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
        sa.ForeignKeyConstraint(["successor_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_departure_due", "departure", ["state", "effective_at"])
    op.create_index("ix_departure_account_id", "departure", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_departure_account_id", table_name="departure")
    op.drop_index("ix_departure_due", table_name="departure")
    op.drop_table("departure")
