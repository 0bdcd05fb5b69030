"""saisines and dossier parties

What the saisine and constitution flows need: a dossier's status
(provisoire, en cours, terminé; NULL for the dossiers opened before this
revision, whose status the court system never said), its parties with
their quality, person type, name (and its folded form, which a lawyer's
search by party name compares) and the lawyer constituted for each; and
each lawyer's three saisine boxes (Saisines/Enregistrées, Envoyées,
Rejetées), created here for the lawyers who exist already.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:00:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_SAISINE_BOXES = (
    ("Saisines/Enregistrées", "saisine-enreg"),
    ("Saisines/Envoyées", "saisine-envoyee"),
    ("Saisines/Rejetées", "saisine-rejetee"),
)


def upgrade() -> None:
    op.add_column("dossier", sa.Column("status", sa.String(length=16), nullable=True))
    op.create_table(
        "dossier_party",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dossier_id", sa.Integer(), nullable=False),
        sa.Column("quality", sa.String(length=32), nullable=False),
        sa.Column("person_type", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("folded", sa.String(length=200), nullable=False),
        sa.Column("lawyer", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossier.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dossier_party_dossier", "dossier_party", ["dossier_id"])
    op.create_index("ix_dossier_party_folded", "dossier_party", ["folded"])
    validity = int(datetime.now(UTC).timestamp()) & 0xFFFFFFFF
    for name, kind in _SAISINE_BOXES:
        op.get_bind().execute(
            sa.text(
                "INSERT INTO mailbox (owner, name, special_use, kind, dossier, uidvalidity,"
                " uidnext, highestmodseq) SELECT address, :name, NULL, :kind, NULL, :validity,"
                " 1, 1 FROM account WHERE role = 'avocat'"
            ),
            {"name": name, "kind": kind, "validity": validity},
        )


def downgrade() -> None:
    op.execute("DELETE FROM mailbox WHERE kind LIKE 'saisine-%'")
    op.drop_index("ix_dossier_party_folded", table_name="dossier_party")
    op.drop_index("ix_dossier_party_dossier", table_name="dossier_party")
    op.drop_table("dossier_party")
    op.drop_column("dossier", "status")
