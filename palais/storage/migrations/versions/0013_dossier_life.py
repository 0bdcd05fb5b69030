"""dossier life

The life of each dossier as its court system pushes it (palais.mailbox
.dossier_life): the domain's state as JSON with its version, status and
termination instant (what the purge of terminated dossiers looks for); the
digest of each dossier event applied (the same event sent again is not
applied twice); the Fiche dossier message each mailbox holds, so that an
event replaces it; and each juridiction's opened hearing slots, as last
published (palais.mailbox.hearing_slots).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 20:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dossier_life",
        sa.Column("dossier_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossier.id"]),
        sa.PrimaryKeyConstraint("dossier_id"),
    )
    op.create_index("ix_dossier_life_terminated", "dossier_life", ["purged_at", "terminated_at"])
    op.create_table(
        "dossier_event",
        sa.Column("dossier_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossier.id"]),
        sa.PrimaryKeyConstraint("dossier_id", "digest"),
    )
    op.create_table(
        "dossier_fiche",
        sa.Column("dossier_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(320), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossier.id"]),
        sa.PrimaryKeyConstraint("dossier_id", "owner"),
    )
    op.create_table(
        "hearing_slots",
        sa.Column("juridiction_code", sa.String(100), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("juridiction_code"),
    )


def downgrade() -> None:
    op.drop_table("hearing_slots")
    op.drop_table("dossier_fiche")
    op.drop_table("dossier_event")
    op.drop_index("ix_dossier_life_terminated", table_name="dossier_life")
    op.drop_table("dossier_life")
