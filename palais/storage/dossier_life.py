"""Dossier lives kept and carried out: the store's side of ``palais.mailbox.dossier_life``.

The rules are the domain's; here the facts are read, the plans carried out
in one transaction, nothing decided:

- ``DossierLives.file``: the filer the submission desk uses. A court
  system's message carrying dossier events has them applied by the domain
  first (a refusal is the SMTP reply, nothing stored), then the message is
  filed with a ``LifeApplied`` record: its life, the events' digests and
  the new Fiche dossier of each mailbox commit with the filing, or nothing
  does. The record is written only on the life it was computed from; if
  another event came first, the whole is planned again.
- the opened hearing slots a court system publishes
  (``palais.storage.hearing_slots``) kept with the message publishing them,
  when it is filed through ``DossierLives.file``;
- ``DossierLives.refresh_fiche``: the Fiche dossier made again for every
  mailbox showing the dossier (a dossier just created, a participant who
  joined): what other flows call after changing a dossier.
- ``PurgeRunner``: in the gateway, purges the terminated dossiers whose
  retention is over, at an interval (its clock injectable): their messages
  and boxes go, their receipts stay (in each holder's global Accusés de
  réception, and in the evidence log, which is never purged).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo

from sqlalchemy import Connection, Engine, delete, insert, select, update

from palais.mailbox.boxes import BoxRef
from palais.mailbox.court_events import DossierEvent, DossierStatus
from palais.mailbox.dossier_life import (
    DossierLife,
    LifeApplied,
    LifeChange,
    apply_events,
    blank_life,
    carried_events,
    newly_constituted,
    purge_due,
    searched_parties,
    unknown_dossier,
)
from palais.mailbox.errors import TemporaryFailure
from palais.mailbox.fiche import FicheFacts, FicheReader, plan_fiches
from palais.mailbox.filing import FilingPlan
from palais.mailbox.hearing_slots import SlotBooked, SlotsPublished, carried_slots
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import MessageSummary, summarize
from palais.mailbox.model import BoxKind, CommittedRecord, EventKind, MailboxEvent, Placement
from palais.periodic import Periodic
from palais.storage import schema
from palais.storage.dossiers import admit_constituted, replace_parties
from palais.storage.hearing_slots import write_slot_booked, write_slots_published
from palais.storage.mailstore import MailStore
from palais.storage.messages import FiledMessage, insert_message
from palais.storage.placement import drop_placement
from palais.storage.rows import rows_for
from palais.storage.sql import DO, EN, MB, PL, encode_flags
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["DossierLives", "PurgeRunner", "StaleLife", "purge_dossier", "write_life_applied"]

LI = schema.table(schema.DossierLife)
EV = schema.table(schema.DossierEventApplied)
FI = schema.table(schema.DossierFiche)
SV = schema.table(schema.Service)
AC = schema.table(schema.Account)
PA = schema.table(schema.Participation)
VN = schema.table(schema.Vanished)
log = logging.getLogger("palais.dossiers")

# The lawyers' side: in a confidential dossier they see only their own
# parties' addresses (palais.mailbox.fiche).
_LAWYER_ROLES = frozenset({Role.AVOCAT.value, Role.COLLABORATEUR.value})
_ATTEMPTS = 3


def _at(value: datetime | None) -> datetime | None:
    """An instant as the DateTime columns take it (SQLite: compared as UTC)."""
    return None if value is None else value.astimezone(UTC)


class StaleLife(TemporaryFailure):
    """The life changed between the plan and its transaction: plan again."""


@dataclass(frozen=True, slots=True)
class LifeFacts:
    dossier_id: int
    facts: FicheFacts
    life: DossierLife
    readers: tuple[FicheReader, ...]
    applied: frozenset[str]  # digests, among those asked, already applied


def read_life(conn: Connection, number: str, digests: Sequence[str] = ()) -> LifeFacts | None:
    """What the domain needs to apply events to ``number``; None if no such
    dossier (or no longer: purged)."""
    row = conn.execute(
        select(DO.c.id, DO.c.address, DO.c.juridiction, SV.c.address.label("service"))
        .join(SV, SV.c.id == DO.c.service_id)
        .where(DO.c.number == number)
    ).first()
    if row is None:
        return None
    kept = conn.execute(select(LI.c.state, LI.c.purged_at).where(LI.c.dossier_id == row.id)).first()
    if kept is not None and kept.purged_at is not None:
        return None  # purged: its row stays for its receipts to name, nothing else
    life = blank_life(number) if kept is None else DossierLife.model_validate_json(kept.state)
    applied: set[str] = set()
    if digests:
        applied = set(
            conn.execute(
                select(EV.c.digest).where(EV.c.dossier_id == row.id, EV.c.digest.in_(digests))
            ).scalars()
        )
    return LifeFacts(
        dossier_id=int(row.id),
        facts=FicheFacts(number, row.address, row.juridiction, row.service),
        life=life,
        readers=_readers(conn, number),
        applied=frozenset(applied),
    )


def _readers(conn: Connection, number: str) -> tuple[FicheReader, ...]:
    """Every mailbox showing the dossier (its Reçus box), lawyers known by their role."""
    recus = BoxRef(BoxKind.RECUS, number).name
    owners = sorted(
        conn.execute(select(MB.c.owner).where(MB.c.dossier == number, MB.c.name == recus)).scalars()
    )
    lawyers = set(
        conn.execute(
            select(AC.c.address).where(AC.c.address.in_(owners), AC.c.role.in_(_LAWYER_ROLES))
        ).scalars()
    )
    return tuple(FicheReader(o, lawyer=o in lawyers) for o in owners)


def _lock(conn: Connection, number: str) -> None:
    """The dossier's row locked until commit (PostgreSQL; SQLite has one
    writer): another node's change to its life waits, then finds the life
    changed (StaleLife) or the dossier purged."""
    conn.execute(select(DO.c.id).where(DO.c.number == number).with_for_update())


def write_life_applied(conn: Connection, ctx: WriteContext, record: LifeApplied) -> None:
    """The ``LifeApplied`` record's writer, in its plan's transaction."""
    _lock(conn, record.number)
    found = read_life(conn, record.number)
    if found is None:  # the dossier purged meanwhile
        raise unknown_dossier(record.number)
    if found.life.version != record.version_before or {r.mailbox_owner for r in found.readers} != {
        f.mailbox_owner for f in record.fiches
    }:
        raise StaleLife(reason=f"dossier {record.number}: life changed since planned")
    life = record.life
    values = {
        "state": life.model_dump_json(),
        "version": life.version,
        "status": life.status.value,
        "terminated_at": _at(life.terminated_at),
    }
    if conn.execute(select(LI.c.dossier_id).where(LI.c.dossier_id == found.dossier_id)).first():
        conn.execute(update(LI).where(LI.c.dossier_id == found.dossier_id).values(**values))
    else:
        conn.execute(insert(LI).values(dossier_id=found.dossier_id, **values))
    # The dossier search finds the parties the court's events left.
    parties = searched_parties(found.life, life)
    if parties is not None:
        replace_parties(conn, found.dossier_id, parties)
    # Lawyers the court constituted take part (their Fiche follows the
    # commit: DossierLives.file).
    for lawyer in record.joining:
        admit_constituted(conn, found.dossier_id, lawyer)
    for change, digest in record.changes:
        conn.execute(
            insert(EV).values(
                dossier_id=found.dossier_id,
                digest=digest,
                kind=change.event.event.kind,
                occurred_at=_at(change.event.occurred_at),
                applied_at=_at(record.at),
            )
        )
    _replace_fiches(conn, ctx, found.dossier_id, record)


def _replace_fiches(
    conn: Connection, ctx: WriteContext, dossier_id: int, record: LifeApplied
) -> None:
    """Each mailbox's earlier Fiche expunged (wherever its holder put it), the new
    one appended; the sessions hear both (``ctx.events``)."""
    for fiche in record.fiches:
        old = conn.execute(
            select(FI.c.message_id).where(
                FI.c.dossier_id == dossier_id, FI.c.owner == fiche.mailbox_owner
            )
        ).scalar()
        if old is not None:
            for p in conn.execute(
                select(PL.c.id, PL.c.kind, PL.c.dossier).where(
                    PL.c.owner == fiche.mailbox_owner, PL.c.message_id == old
                )
            ).all():
                drop_placement(
                    conn, ctx, Placement(int(p.id), int(old), BoxKind(p.kind), p.dossier)
                )
            conn.execute(
                delete(FI).where(FI.c.dossier_id == dossier_id, FI.c.owner == fiche.mailbox_owner)
            )
        mid, _ = insert_message(
            conn,
            ctx,
            fiche.data,
            summarize(fiche.data),
            internaldate=record.at,
            sender="",  # the gateway wrote it: nobody to send a read receipt to
            fingerprint="",
            dossier_id=dossier_id,
        )
        _place_in_recus(conn, ctx, mid, fiche.mailbox_owner, record.number)
        conn.execute(
            insert(FI).values(dossier_id=dossier_id, owner=fiche.mailbox_owner, message_id=mid)
        )


# Read already: the Fiche is a summary, not mail to acknowledge (a first \Seen
# would send a read receipt).
_FICHE_FLAGS = frozenset({"\\Seen"})


def _place_in_recus(conn: Connection, ctx: WriteContext, mid: int, owner: str, number: str) -> None:
    """The Fiche in the dossier's own Reçus only: not in the global INBOX view
    (palais.mailbox.fiche says why)."""
    box = conn.execute(
        select(MB.c.id).where(MB.c.owner == owner, MB.c.name == BoxRef(BoxKind.RECUS, number).name)
    ).scalar_one()
    rows = rows_for(conn)
    placed = rows.one(
        "INSERT INTO placement (owner, message_id, kind, dossier, origin)"
        " VALUES (?, ?, ?, ?, NULL) RETURNING id",
        (owner, mid, BoxKind.RECUS.value, number),
    )
    given = rows.one(
        "UPDATE mailbox SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
        " WHERE id = ? RETURNING uidnext, highestmodseq",
        (box,),
    )
    assert placed is not None and given is not None
    uid, modseq = int(given[0]) - 1, int(given[1])
    rows.run(
        "INSERT INTO entry (mailbox_id, uid, message_id, placement_id, flags, modseq)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (box, uid, mid, int(placed[0]), encode_flags(_FICHE_FLAGS), modseq),
    )
    ctx.events.append(MailboxEvent(int(box), EventKind.ARRIVED, uid, _FICHE_FLAGS, modseq))


class DossierLives:
    """Applies the dossier events court systems send, and keeps each dossier's Fiche.

    Stands in front of the mail store as the submission desk's filer: a
    message without dossier events (every lawyer's) goes straight through,
    at the cost of a role comparison.
    """

    def __init__(
        self,
        reader: Engine,
        commits: CommitQueue,
        mail: MailStore,
        *,
        zone: tzinfo,
        sender: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        notices: Callable[[str, datetime], Sequence[CommittedRecord]] = lambda _n, _at: (),
        forget_dossier: Callable[[str], None] = lambda _n: None,
    ) -> None:
        """``forget_dossier``: told the number of a dossier whose participants
        changed (what the node cached of them forgotten), once committed."""
        self._reader = reader
        self._forget = forget_dossier
        self._commits = commits
        self._mail = mail
        # Records committed with each event applied (the alerts' notices:
        # palais.mailbox.alerts.DossierEventAlert), by dossier and instant.
        self._notices = notices
        self._zone = zone
        self._sender = sender
        self._clock = clock
        mail.add_record_writer(LifeApplied, write_life_applied)
        mail.add_record_writer(SlotsPublished, write_slots_published)
        mail.add_record_writer(SlotBooked, write_slot_booked)

    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
        *,
        resend_since: datetime | None = None,
        arrival: str | None = None,
    ) -> FiledMessage:
        if who.role is not Role.COURT_SYSTEM:
            return await self._mail.file(
                who, data, summary, plan, resend_since=resend_since, arrival=arrival
            )
        # Opened hearing slots it publishes are kept with the message.
        slots = tuple(SlotsPublished(s) for s in carried_slots(data))
        if slots:
            plan = replace(plan, records=(*plan.records, *slots))
        events = carried_events(data)
        if not events:
            return await self._mail.file(
                who, data, summary, plan, resend_since=resend_since, arrival=arrival
            )
        for attempt in range(_ATTEMPTS):
            record = await asyncio.to_thread(self._plan, events, plan.dossier)
            planned = plan
            if record is not None:
                happened = record.changes[-1][0].event.occurred_at
                told = self._notices(record.number, happened)
                planned = replace(plan, records=(*plan.records, record, *told))
            try:
                filed = await self._mail.file(
                    who, data, summary, planned, resend_since=resend_since, arrival=arrival
                )
            except StaleLife:
                log.info(
                    "dossier %s: life changed meanwhile, planned again (%d)", plan.dossier, attempt
                )
                continue
            if record is not None and record.joining:
                await self.participants_changed(record.number)
            return filed
        raise TemporaryFailure(reason=f"dossier {plan.dossier}: life kept changing")

    async def participants_changed(self, number: str) -> None:
        """After a dossier was created or someone joined it (a registry's
        decision, a lawyer the court constituted), committed: this node
        forgets what it cached of its participants (a newcomer writes to it
        at once) and every mailbox showing it, a newcomer's included, gets
        its Fiche. The change stands already: a failure here is logged."""
        self._forget(number)
        try:
            await self.refresh_fiche(number)
        except Exception:
            log.exception("fiche not refreshed dossier=%s", number)

    def _plan(
        self, events: Sequence[tuple[DossierEvent, str]], message_dossier: str | None
    ) -> LifeApplied | None:
        number = events[0][0].dossier
        with self._reader.connect() as conn:
            found = read_life(conn, number, [d for _, d in events])
        if found is None:
            raise unknown_dossier(number)
        # The same event sent again (its 250 lost): filed, not applied twice.
        fresh = [(e, d) for e, d in events if d not in found.applied]
        if not fresh:
            return None
        changes = apply_events(found.life, fresh, message_dossier)
        return self._record(found, changes, changes[-1][0].after)

    def _record(
        self,
        found: LifeFacts,
        changes: tuple[tuple[LifeChange, str], ...],
        life: DossierLife,
    ) -> LifeApplied:
        now = self._clock()
        fiches = plan_fiches(
            life, found.facts, found.readers, now=now, zone=self._zone, sender=self._sender
        )
        return LifeApplied(
            number=found.facts.number,
            version_before=found.life.version,
            changes=changes,
            life=life,
            fiches=fiches,
            at=now,
            joining=newly_constituted(found.life, life),
        )

    async def refresh_fiche(self, number: str) -> None:
        """Make the dossier's Fiche again for every mailbox showing it, in a
        transaction of its own: call it after creating a dossier or adding a
        participant (the events that change the dossier do it themselves)."""
        for _ in range(_ATTEMPTS):
            found = await asyncio.to_thread(self._read, number)
            if found is None:
                raise unknown_dossier(number)
            record = self._record(found, (), found.life)
            try:
                await self._commits.submit(
                    functools.partial(_write_alone, record), list(record.blobs)
                )
                return
            except StaleLife:
                continue
        raise TemporaryFailure(reason=f"dossier {number}: life kept changing")

    def _read(self, number: str) -> LifeFacts | None:
        with self._reader.connect() as conn:
            return read_life(conn, number)


def _write_alone(record: LifeApplied, conn: Connection, ctx: WriteContext) -> None:
    write_life_applied(conn, ctx, record)


# -- purge ---------------------------------------------------------------------------


def due_purges(conn: Connection, now: datetime, retention: timedelta) -> list[str]:
    """The terminated dossiers whose retention is over (the domain decides on each)."""
    rows = conn.execute(
        select(DO.c.number, LI.c.state)
        .join(DO, DO.c.id == LI.c.dossier_id)
        .where(
            LI.c.purged_at.is_(None),
            LI.c.status == DossierStatus.TERMINE.value,
            LI.c.terminated_at <= _at(now - retention),
        )
    ).all()
    return [
        str(r.number)
        for r in rows
        if purge_due(DossierLife.model_validate_json(r.state), now, retention)
    ]


def purge_dossier(
    conn: Connection, ctx: WriteContext, number: str, now: datetime, retention: timedelta
) -> dict[str, object] | None:
    """Purge one dossier, if still due (another node may have done it): its
    messages (every placement but receipts), its boxes, its participations.
    Receipt mails stay in each holder's global Accusés de réception; the
    dossier's row stays for them (and for the evidence log) to name."""
    _lock(conn, number)
    row = conn.execute(
        select(DO.c.id, DO.c.address, LI.c.state)
        .join(LI, LI.c.dossier_id == DO.c.id)
        .where(DO.c.number == number, LI.c.purged_at.is_(None))
    ).first()
    if row is None or not purge_due(DossierLife.model_validate_json(row.state), now, retention):
        return None
    placements = conn.execute(
        select(PL.c.id, PL.c.message_id, PL.c.kind, PL.c.dossier).where(
            PL.c.dossier == number, PL.c.kind != BoxKind.ACCUSES.value
        )
    ).all()
    for p in placements:
        drop_placement(
            conn, ctx, Placement(int(p.id), int(p.message_id), BoxKind(p.kind), p.dossier)
        )
    # What is left in the dossier's boxes: its receipts' entries (their
    # placements keep their global view), then the boxes themselves.
    found = conn.execute(select(MB.c.id, MB.c.owner, MB.c.name).where(MB.c.dossier == number)).all()
    boxes = [int(b.id) for b in found]
    for b in found:
        # The writer's jobs remember box ids (boxes are never renamed): not these.
        ctx.cache.pop(("box", b.owner, b.name), None)
    for box in boxes:
        for uid in conn.execute(select(EN.c.uid).where(EN.c.mailbox_id == box)).scalars():
            ctx.events.append(MailboxEvent(box, EventKind.REMOVED, int(uid)))
        conn.execute(delete(EN).where(EN.c.mailbox_id == box))
        conn.execute(delete(VN).where(VN.c.mailbox_id == box))
    if boxes:
        conn.execute(delete(MB).where(MB.c.id.in_(boxes)))
    conn.execute(delete(PA).where(PA.c.dossier_id == row.id))
    conn.execute(delete(FI).where(FI.c.dossier_id == row.id))
    conn.execute(update(LI).where(LI.c.dossier_id == row.id).values(purged_at=_at(now)))
    return {
        "dossier": number,
        "address": row.address,
        "messages": len(placements),
        "boxes": len(boxes),
    }


class PurgeRunner(Periodic):
    """Purges terminated dossiers in the gateway: at start, then every ``interval`` seconds.

    ``clock`` is injectable so that tests move time. Each dossier is one
    writer job, done once whatever the nodes (the job checks it is still due).
    """

    def __init__(
        self,
        reader: Engine,
        commits: CommitQueue,
        *,
        retention: timedelta,
        interval: float = 3600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        purged: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__("palais-purge", interval)
        self._reader = reader
        self._commits = commits
        self.retention = retention
        self._clock = clock
        # Told each dossier purged (number, address): what this node cached
        # of its participants goes at once, not at the cache's expiry.
        self._on_purged = purged
        self.purged = 0

    async def look(self) -> bool:
        await self.run_due()
        return False

    async def run_due(self) -> list[dict[str, object]]:
        """Purge every dossier due now; what each purge removed."""
        now = self._clock()
        done = []
        for number in await asyncio.to_thread(self._due, now):
            try:
                outcome = await self._commits.submit(
                    functools.partial(_purge_job, number, now, self.retention)
                )
            except Exception:
                log.exception("dossier %s could not be purged", number)
                continue
            if outcome is not None:
                self.purged += 1
                log.info("dossier purged %s", outcome)
                if self._on_purged is not None:
                    self._on_purged(number, str(outcome["address"]))
                done.append(outcome)
        return done

    def _due(self, now: datetime) -> list[str]:
        with self._reader.connect() as conn:
            return due_purges(conn, now, self.retention)


def _purge_job(
    number: str, now: datetime, retention: timedelta, conn: Connection, ctx: WriteContext
) -> dict[str, object] | None:
    return purge_dossier(conn, ctx, number, now, retention)
