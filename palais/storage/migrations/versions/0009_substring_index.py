"""substring index

The index behind IMAP SEARCH BODY, TEXT and HEADER (issue 13): each
message's search documents (``palais.mailbox.searchtext``) by their
three-character sequences, so that a search reads only the messages that
may match. SQLite: two contentless FTS5 tables with the trigram tokenizer
(virtual tables, which the declarative schema cannot hold);
PostgreSQL: ``message_text`` with a pg_trgm GIN index on each column.

Messages stored before this revision are listed in ``text_pending``: a
search counts them as candidates until the storage has indexed them from
their bytes (``palais.storage.textindex.backfill``, run when the storage
opens: the bytes are in the blob store, out of a migration's reach).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, column in (("message_head_text", "head"), ("message_body_text", "body")):
            op.execute(
                f"CREATE VIRTUAL TABLE {table} USING fts5({column}, content='',"
                " tokenize='trigram', detail=none)"
            )
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_table(
            "message_text",
            sa.Column("message_id", sa.Integer(), nullable=False),
            sa.Column("head", sa.Text(), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(["message_id"], ["message.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("message_id"),
        )
        for column in ("head", "body"):
            op.create_index(
                f"ix_message_text_{column}",
                "message_text",
                [column],
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )
    op.create_table(
        "text_pending",
        sa.Column("message_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("message_id"),
    )
    op.execute("INSERT INTO text_pending (message_id) SELECT id FROM message")


def downgrade() -> None:
    op.drop_table("text_pending")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE message_body_text")
        op.execute("DROP TABLE message_head_text")
    else:
        op.drop_index("ix_message_text_body", table_name="message_text")
        op.drop_index("ix_message_text_head", table_name="message_text")
        op.drop_table("message_text")
