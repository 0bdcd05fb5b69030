"""The registry's decisions carried out (``palais.mailbox.saisine_flow.SentActs``).

``sent_act`` reads the facts of the saisine or constitution a decision names;
``decide`` carries out the plan ``palais.mailbox.registry.plan_decision``
made of them, in one writer transaction: the dossier created or joined, the
lawyer's copy moved, the court's decision mail filed, the lawyer's receipt.
``messages_with_id`` and ``write_message_decided`` are the same for a
decision about a lawyer's message in a dossier
(``palais.mailbox.message_decisions``): its receipt, through the same
``issue_receipt``, rides with the decision mail's ordinary filing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, exists, or_, select, update

from palais.mailbox.errors import CannotDoThat, TemporaryFailure
from palais.mailbox.evidence import EventCode, registry_decision
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary
from palais.mailbox.message_decisions import DossierMessage, MessageDecided
from palais.mailbox.model import BoxKind, Placement
from palais.mailbox.registry import DecisionPlan, SentAct
from palais.storage.dossiers import create_dossier, join_dossier
from palais.storage.evidence import ReceiptWriter, deposits, later_receipt
from palais.storage.hearing_slots import free_booking
from palais.storage.mailstore import MailStore
from palais.storage.messages import insert_message
from palais.storage.placement import drop_placement, place_all
from palais.storage.schema import Account, EvidenceLog, RelayQueue, table
from palais.storage.sql import DO, EN, MS, PL, decode_flags
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["RegistryStore", "issue_receipt", "write_message_decided"]

RQ = table(RelayQueue)
AC = table(Account)
EL = table(EvidenceLog)
_DECISION_CODES = (EventCode.ACCEPTATION_GREFFE.value, EventCode.REJET_GREFFE.value)

# Where a lawyer's act awaits its decision: a saisine in Saisines/Envoyées,
# a constitution in Envoyés outside any dossier.
_AWAITING = (BoxKind.SAISINE_ENVOYEE.value, BoxKind.ENVOYES.value)


def _ids(message_id: str) -> list[str]:
    """A Message-ID as stored (with its angle brackets) and as often quoted (without)."""
    bare = message_id.strip().strip("<>")
    return [f"<{bare}>", bare]


class RegistryStore:
    def __init__(self, reader: Engine, writer: CommitQueue, mail: MailStore) -> None:
        self._reader = reader
        self._writer = writer
        self._mail = mail

    def _row(self, court: str, message_id: str) -> tuple[int, str, str, Placement | None, str]:
        court = court.lower()
        # Received by the court system: in its INBOX, or queued for its endpoint.
        received = exists().where(
            PL.c.message_id == MS.c.id, PL.c.owner == court, PL.c.kind == BoxKind.RECUS.value
        )
        relayed = exists().where(RQ.c.message_id == MS.c.id, RQ.c.recipient == court)
        with self._reader.connect() as conn:
            found = conn.execute(
                select(MS.c.id, MS.c.sender, MS.c.blob)
                .where(MS.c.message_id.in_(_ids(message_id)), or_(received, relayed))
                .order_by(MS.c.id.desc())
                .limit(1)
            ).first()
            if found is None:
                return 0, "", "", None, ""
            held = conn.execute(
                select(PL.c.id, PL.c.owner, PL.c.kind, PL.c.dossier, EN.c.flags)
                .outerjoin(EN, EN.c.placement_id == PL.c.id)
                .where(
                    PL.c.message_id == found.id,
                    PL.c.owner != court,
                    PL.c.kind.in_(_AWAITING),
                    PL.c.dossier.is_(None),
                )
                .limit(1)
            ).first()
        if held is None:
            return int(found.id), str(found.sender), str(found.blob), None, ""
        placement = Placement(int(held.id), int(found.id), BoxKind(held.kind), None)
        return int(found.id), str(held.owner), str(found.blob), placement, held.flags or ""

    async def sent_act(self, court: str, message_id: str) -> SentAct | None:
        mid, lawyer, blob, placement, flags = await asyncio.to_thread(self._row, court, message_id)
        if not mid:
            return None
        data = await self._mail.read(blob)
        return SentAct(mid, lawyer, placement, decode_flags(flags), data)

    async def messages_with_id(self, message_id: str) -> list[DossierMessage]:
        """``palais.mailbox.message_decisions.DossierMessages``: each filed message
        with this Message-ID, its sender's role and its dossier's number."""

        def find() -> list[DossierMessage]:
            with self._reader.connect() as conn:
                # Its registry receipt issued already (a second decision is refused).
                decided = exists().where(EL.c.about == MS.c.id, EL.c.events.in_(_DECISION_CODES))
                rows = conn.execute(
                    select(MS.c.id, MS.c.sender, AC.c.role, DO.c.number, decided.label("decided"))
                    .outerjoin(AC, AC.c.address == MS.c.sender)
                    .outerjoin(DO, DO.c.id == MS.c.dossier_id)
                    .where(MS.c.message_id.in_(_ids(message_id)))
                    .order_by(MS.c.id)
                    .limit(20)
                ).all()
            return [
                DossierMessage(
                    int(r.id),
                    str(r.sender),
                    None if r.role is None else str(r.role),
                    None if r.number is None else str(r.number),
                    bool(r.decided),
                )
                for r in rows
            ]

        return await asyncio.to_thread(find)

    def write_message_decided(
        self, conn: Connection, ctx: WriteContext, record: MessageDecided
    ) -> None:
        """The mail store's writer of ``MessageDecided`` records."""
        write_message_decided(self._mail.receipts, conn, ctx, record)

    async def decision_filed(
        self, court: str, message_id: str, sha256: str, arrival: str | None = None
    ) -> int | None:
        same = MS.c.blob == sha256
        if arrival is not None:
            same = or_(same, MS.c.arrival == arrival)

        def find() -> int | None:
            with self._reader.connect() as conn:
                found = conn.execute(
                    select(MS.c.id)
                    .where(MS.c.message_id == message_id, MS.c.sender == court.lower(), same)
                    .limit(1)
                ).scalar()
            return None if found is None else int(found)

        return await asyncio.to_thread(find)

    async def decide(
        self,
        court: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: DecisionPlan,
        arrival: str | None = None,
    ) -> int:
        receipts = self._mail.receipts
        now = datetime.now(UTC)

        def work(conn: Connection, ctx: WriteContext) -> int:
            return _carry_out(conn, ctx, court, data, summary, plan, receipts, now, arrival)

        return await self._writer.submit(work, [data])


def _carry_out(
    conn: Connection,
    ctx: WriteContext,
    court: Identity,
    data: bytes,
    summary: MessageSummary,
    plan: DecisionPlan,
    receipts: ReceiptWriter | None,
    now: datetime,
    arrival: str | None,
) -> int:
    moved = plan.moved
    if (
        moved is not None
        and conn.execute(select(PL.c.id).where(PL.c.id == moved.id)).first() is None
    ):
        # Decided by another node meanwhile: nothing twice.
        raise CannotDoThat("The act was decided already", reason=f"placement {moved.id} gone")
    dossier_id: int | None = None
    if plan.dossier is not None:
        dossier_id = create_dossier(conn, plan.dossier)
    elif plan.joins is not None:
        dossier_id = join_dossier(conn, plan.joins, plan.lawyer, plan.represents)
    elif plan.filing.dossier is not None:
        dossier_id = conn.execute(
            select(DO.c.id).where(DO.c.number == plan.filing.dossier)
        ).scalar()
    if moved is not None:
        # Placed anew before the old copy goes (which would otherwise free the message).
        place_all(conn, ctx, plan.act, plan.to_dossier, [(plan.lawyer, plan.to, plan.flags)])
        drop_placement(conn, ctx, moved)
        if plan.to_dossier is not None:
            conn.execute(update(MS).where(MS.c.id == plan.act).values(dossier_id=dossier_id))
    mid, _ = insert_message(
        conn,
        ctx,
        data,
        summary,
        internaldate=now,
        sender=court.address,
        fingerprint=court.fingerprint,
        dossier_id=dossier_id,
        arrival=arrival,
    )
    holders = [(d.owner, d.kind, d.flags) for d in plan.filing.destinations]
    place_all(conn, ctx, mid, plan.filing.dossier, holders)
    if plan.frees_booking:
        free_booking(conn, plan.act)
    if plan.receipt is not None:
        issue_receipt(
            conn, ctx, receipts, court, plan.act, plan.receipt.accepted, plan.receipt.reason, now
        )
    return mid


def issue_receipt(
    conn: Connection,
    ctx: WriteContext,
    receipts: ReceiptWriter | None,
    registry: Identity,
    act: int,
    accepted: bool,
    reason: str | None,
    now: datetime,
) -> None:
    """The acceptation-greffe or rejet-greffe receipt of message ``act``, to its
    sender's Accusés de réception, in the caller's transaction."""
    # The decision's receipt follows the act's deposit receipt (an act filed
    # without one, by a store without evidence service, has none to follow).
    if receipts is None:
        if deposits(conn, [act]):
            raise TemporaryFailure(
                "The evidence service is not available", reason="registry receipt without service"
            )
        return
    later_receipt(
        conn,
        ctx,
        receipts,
        act,
        lambda deposit: registry_decision(
            registry, deposit, accepted=accepted, reason=reason, now=now
        ),
    )


def write_message_decided(
    receipts: ReceiptWriter | None, conn: Connection, ctx: WriteContext, record: MessageDecided
) -> None:
    """The ``MessageDecided`` record a registry's decision mail carries
    (``palais.mailbox.message_decisions``): the decided message's receipt."""
    issue_receipt(
        conn,
        ctx,
        receipts,
        record.registry,
        record.message,
        record.accepted,
        record.reason,
        datetime.now(UTC),
    )
