"""Carrying out a new dossier (``palais.mailbox.new_dossier``), a lawyer joining one,
and its parties as the court system's events leave them.

Both run inside the caller's writer transaction and decide nothing: the
plan says what to write; what is missing here (an account it names) fails
the transaction whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select, update

from palais.mailbox.court_events import Quality
from palais.mailbox.dossier_life import DossierLife, DossierParty, joins_dossier
from palais.mailbox.dossiers import plan_dossier_opening
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.identity import Role
from palais.mailbox.juridictions import folded
from palais.mailbox.new_dossier import NewDossier
from palais.mailbox.registry import life_with_lawyer
from palais.storage import schema
from palais.storage.directory import Directory

__all__ = ["admit_constituted", "create_dossier", "join_dossier", "replace_parties"]

AC = schema.table(schema.Account)
SV = schema.table(schema.Service)
DO = schema.table(schema.Dossier)
PA = schema.table(schema.Participation)
DP = schema.table(schema.DossierParty)
LI = schema.table(schema.DossierLife)


def _account(conn: Connection, address: str) -> int:
    found = conn.execute(select(AC.c.id).where(AC.c.address == address.lower())).scalar()
    if found is None:
        raise CannotDoThat(
            "An account taking part in the dossier is unknown here",
            reason=f"no account {address}",
        )
    return int(found)


def create_dossier(conn: Connection, new: NewDossier) -> int:
    """The dossier, its service if missing, who takes part and their boxes,
    its status and its parties; the dossier's id."""
    if conn.execute(select(DO.c.id).where(DO.c.number == new.number)).first() is not None:
        raise CannotDoThat(
            f"dossier: le dossier {new.number} existe déjà",
            reason=f"dossier {new.number} created twice",
        )
    service = new.service.address.lower()
    service_id = conn.execute(select(SV.c.id).where(SV.c.address == service)).scalar()
    if service_id is None:
        service_id = Directory.add_service(
            conn, address=service, name=new.service.name, juridiction=new.juridiction_name
        )
    joining = [
        Directory.participation(conn, _account(conn, address), capacity)
        for address, capacity in new.participants
    ]
    opening = plan_dossier_opening(
        number=new.number,
        address=new.address,
        juridiction=new.juridiction,
        service_id=int(service_id),
        service_address=service,
        participants=joining,
    )
    dossier_id = Directory.open_dossier(conn, opening)
    conn.execute(update(DO).where(DO.c.id == dossier_id).values(status=new.status.value))
    if new.life is not None:  # as palais.storage.dossier_life keeps it
        conn.execute(
            insert(LI).values(
                dossier_id=dossier_id,
                state=new.life.model_dump_json(),
                version=new.life.version,
                status=new.life.status.value,
                terminated_at=None,
            )
        )
    _insert_parties(conn, dossier_id, new.parties)
    return dossier_id


def admit_constituted(conn: Connection, dossier_id: int, lawyer: str) -> bool:
    """A lawyer the court constituted takes part in the dossier if
    ``joins_dossier`` says their account may and they do not yet; whether
    they joined."""
    account = conn.execute(
        select(AC.c.id, AC.c.role, AC.c.active).where(AC.c.address == lawyer.lower())
    ).first()
    if account is None or not joins_dossier(Role(account.role), bool(account.active)):
        return False
    return _take_part(conn, dossier_id, int(account.id))


def _take_part(conn: Connection, dossier_id: int, account: int) -> bool:
    """The lawyer's account takes part in the dossier, unless it does; whether it joined."""
    already = conn.execute(
        select(PA.c.account_id).where(PA.c.dossier_id == dossier_id, PA.c.account_id == account)
    ).first()
    if already is not None:
        return False
    Directory.add_participant(conn, dossier_id=dossier_id, account_id=account, capacity="avocat")
    return True


def replace_parties(conn: Connection, dossier_id: int, parties: Sequence[DossierParty]) -> None:
    """The dossier's parties as its search finds them, in place of the earlier ones."""
    conn.execute(delete(DP).where(DP.c.dossier_id == dossier_id))
    _insert_parties(conn, dossier_id, parties)


def _insert_parties(conn: Connection, dossier_id: int, parties: Sequence[DossierParty]) -> None:
    if not parties:
        return
    conn.execute(
        insert(DP),
        [
            {
                "dossier_id": dossier_id,
                "quality": p.quality.value,
                "person_type": p.person_type.value,
                "name": p.name,
                "folded": p.folded,
                "lawyer": p.lawyer,
            }
            for p in parties
        ],
    )


def join_dossier(
    conn: Connection, number: str, lawyer: str, represents: Sequence[tuple[Quality, str]]
) -> int:
    """``lawyer`` takes part in dossier ``number`` (if not yet), constituted for
    the parties named; the dossier's id."""
    dossier_id = conn.execute(select(DO.c.id).where(DO.c.number == number)).scalar()
    if dossier_id is None:
        raise CannotDoThat(
            f"dossier: aucun dossier {number}", reason=f"constitution in unknown {number}"
        )
    _take_part(conn, int(dossier_id), _account(conn, lawyer))
    kept = conn.execute(
        select(LI.c.state).where(LI.c.dossier_id == dossier_id, LI.c.purged_at.is_(None))
    ).scalar()
    if kept is not None:  # the Fiche dossier names the lawyers its life holds
        life = DossierLife.model_validate_json(kept)
        after = life_with_lawyer(life, lawyer, represents)
        if after is not life:
            conn.execute(
                update(LI)
                .where(LI.c.dossier_id == dossier_id)
                .values(state=after.model_dump_json(), version=after.version)
            )
    for quality, name in represents:
        conn.execute(
            update(DP)
            .where(
                DP.c.dossier_id == dossier_id,
                DP.c.quality == quality.value,
                DP.c.folded == folded(name),
            )
            .values(lawyer=lawyer.lower())
        )
    return int(dossier_id)
