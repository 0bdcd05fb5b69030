"""sent day

SEARCH SENTON/SENTBEFORE/SENTSINCE compare the Date header's own day, in
the header's own zone (RFC 3501 section 6.4.4): "25 Mar 2007 00:00 +0200"
is sent on 25 March, though it is 24 March in UTC. ``message.sent_day``
keeps that day. Rows stored before this revision only kept the instant in
UTC (the header's zone is not in the database): they get that UTC day,
which is what SENT* keys answered for them until now.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("sent_day", sa.Date(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite keeps sent_date as "YYYY-MM-DD HH:MM:SS.ffffff" in UTC.
        op.execute(
            "UPDATE message SET sent_day = substr(sent_date, 1, 10) WHERE sent_date IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE message SET sent_day = CAST(sent_date AT TIME ZONE 'UTC' AS DATE)"
            " WHERE sent_date IS NOT NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_column("sent_day")
