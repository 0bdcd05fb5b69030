"""account identifier

Accounts are keyed by the holder's stable identifier (the card subject's
serialNumber: bar number for lawyers, agent number for justice staff),
unique within the community whose CA issues it, so that a renewed card
reaches the same account whatever its fingerprint.

Backfill: an account gets the identifier its linked certificates' subjects
carry when they all carry the same one and no other account of the same
community carries it too. Otherwise (no certificate, no serialNumber,
several numbers, or two accounts with one number: a duplicate for an
operator to merge) it is left NULL, and the next card it is linked to by
address gives it one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:00:00.000000
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copy of the role -> community mapping of this revision: a migration
# must keep meaning what it meant, whatever the code later says.
_COMMUNITY = {
    "avocat": "avocats",
    "collaborateur": "avocats",
    "greffier": "justice",
    "magistrat": "justice",
    "systeme_juridiction": "juridictions",
    "admin": "admin",
}
# The stored subject is RFC 4514 text with readable labels (serialNumber=...),
# or the dotted OID for a writer that knew no label.
_SERIAL = re.compile(r"(?:^|,)(?:serialNumber|2\.5\.4\.5)=((?:[^,\\]|\\.)*)")


def _serial(subject: str) -> str | None:
    found = {re.sub(r"\\(.)", r"\1", m).strip() for m in _SERIAL.findall(subject or "")}
    found.discard("")
    # Two serialNumber attributes: which is the holder? Leave it to an operator.
    return found.pop() if len(found) == 1 else None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("identifier", sa.String(64), nullable=True))
        batch.add_column(sa.Column("community", sa.String(32), nullable=True))
    op.create_index(
        "ux_account_community_identifier", "account", ["community", "identifier"], unique=True
    )

    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT a.id, a.role, c.subject FROM account a"
            " JOIN certificate c ON c.account_id = a.id ORDER BY a.id"
        )
    ).all()
    serials: dict[int, set[str | None]] = {}
    role_of: dict[int, str] = {}
    for account_id, role, subject in rows:
        serials.setdefault(int(account_id), set()).add(_serial(subject))
        role_of[int(account_id)] = role
    wanted: dict[tuple[str, str], list[int]] = {}
    for account_id, found in serials.items():
        community = _COMMUNITY.get(role_of[account_id])
        if community is None or len(found) != 1 or None in found:
            continue
        (value,) = found
        assert value is not None
        wanted.setdefault((community, value[:64]), []).append(account_id)
    for (community, value), accounts in wanted.items():
        if len(accounts) != 1:
            continue  # a duplicate: an operator merges them (`palais admin account merge`)
        conn.execute(
            sa.text("UPDATE account SET identifier = :i, community = :c WHERE id = :a"),
            {"i": value, "c": community, "a": accounts[0]},
        )


def downgrade() -> None:
    op.drop_index("ux_account_community_identifier", table_name="account")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("community")
        batch.drop_column("identifier")
