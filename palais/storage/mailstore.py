"""The mail store: ``MailAccess`` on SQL plus the blob store.

Every change is a plan the domain computes from facts read in the writer's
transaction, carried out in that same transaction (``placement``), so that
it commits whole or not at all, with whatever records the plan carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, or_, select, update

from palais.mailbox.boxes import BoxRef, parse_box_name
from palais.mailbox.deletion import plan_expunge, plan_move
from palais.mailbox.drafts import (
    DeleteHeld,
    SaveDraft,
    SentCopy,
    addresses_written_to,
    plan_append,
)
from palais.mailbox.errors import NoSuchMailbox, PalaisError, TemporaryFailure
from palais.mailbox.evidence import (
    Deposit,
    ReceiptOrder,
    first_reads,
    non_delivery_of,
    registry_decision,
)
from palais.mailbox.filing import FilingPlan
from palais.mailbox.flags import check_storable, newly_read, plan_flag_change
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary, header_size, summarize
from palais.mailbox.model import (
    AppendResult,
    BoxKind,
    CommittedRecord,
    CopyResult,
    FlagMode,
    StoreResult,
)
from palais.mailbox.ports import EventBus, EvidenceService, MessageBytes
from palais.storage.evidence import (
    ReceiptWriter,
    already_read,
    deposits,
    held_evidence,
    later_receipt,
    receipts_finisher,
    tree_head_finisher,
)
from palais.storage.filings import Filing
from palais.storage.messages import FiledMessage, insert_message
from palais.storage.placement import (
    RecordWriter,
    RecordWriters,
    carry_out_flags,
    carry_out_steps,
    flagged_deleted,
    flagged_entries,
    held_copies,
    held_in,
    held_placements,
    messages_of,
    place_all,
)
from palais.storage.reads import MailReads
from palais.storage.rows import rows_for
from palais.storage.schema import ImapRecent, table
from palais.storage.sql import DO, EN, MB, MS
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["FiledMessage", "MailStore"]

RC = table(ImapRecent)


class MailStore(MailReads):
    """Implements ``palais.mailbox.ports.MailAccess``; its writes go through the writer."""

    def __init__(
        self,
        reader: Engine,
        writer: CommitQueue,
        blobs: MessageBytes,
        hub: EventBus,
        *,
        records: RecordWriters | None = None,
        evidence: EvidenceService | None = None,
    ) -> None:
        super().__init__(reader, blobs, hub)
        self._writer = writer
        writers = dict(records or {})
        # Without an evidence service (tools, some tests) no receipt is
        # issued: a plan ordering one fails whole ("no writer").
        self.receipts = ReceiptWriter(evidence) if evidence is not None else None
        if self.receipts is not None and evidence is not None:
            writers[ReceiptOrder] = self.receipts
            writer.finishers += [receipts_finisher(evidence), tree_head_finisher(evidence)]
        self._records: RecordWriters = writers
        self._dossier_ids: dict[str, int] = {}
        self._box_kinds: dict[int, BoxKind] = {}
        writer.on_erased.append(self._forget_blob)
        # The gateway's filing process (SMTP ingest on a second core): it
        # carries out the filings it can, None when it is not running.
        self.filer: Callable[[Filing], Awaitable[FiledMessage | None]] | None = None

    def add_record_writer(self, kind: type[CommittedRecord], writer: RecordWriter) -> None:
        """Write records of ``kind`` that plans carry, in their transaction (a
        kind another module owns: the audit of a delegate's act, say)."""
        self._records = {**self._records, kind: writer}

    # -- MailAccess: changes ---------------------------------------------------

    async def store_flags(
        self,
        who: Identity,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        await self._check_owner(who, mailbox_id)
        check_storable(flags)  # refused before queueing behind the writer
        # Marking received mail read may be its first reading: a read receipt.
        reading = (
            self.receipts is not None
            and "\\Seen" in flags
            and mode is not FlagMode.REMOVE
            and await self._box_kind(mailbox_id) is BoxKind.RECUS
        )

        def work(conn: Connection, ctx: WriteContext) -> StoreResult:
            current = flagged_entries(conn, mailbox_id, uids)
            plan = plan_flag_change(current, mode, flags, unchanged_since)
            placements = newly_read(current, plan) if reading else ()
            if placements:
                messages = messages_of(conn, placements)
                orders = first_reads(
                    who,
                    deposits(conn, messages),
                    already_read(conn, who.mailbox_owner, messages),
                    datetime.now(UTC),
                )
                plan = replace(plan, records=plan.records + orders)
            updated = carry_out_flags(conn, ctx, mailbox_id, plan, self._records)
            return StoreResult(updated=updated, modified=list(plan.modified))

        return await self._writer.submit(work)

    async def _box_kind(self, mailbox_id: int) -> BoxKind:
        kind = self._box_kinds.get(mailbox_id)
        if kind is None:
            kind = self._box_kinds[mailbox_id] = (await self._kind_of(mailbox_id)).kind
        return kind

    async def expunge(
        self, who: Identity, mailbox_id: int, uids: Sequence[int] | None = None
    ) -> list[int]:
        await self._check_owner(who, mailbox_id)
        box = await self._kind_of(mailbox_id)
        owner = who.mailbox_owner
        only = set(uids) if uids is not None else None

        def work(conn: Connection, ctx: WriteContext) -> list[int]:
            candidates = flagged_deleted(conn, mailbox_id)
            if not candidates:
                return []
            messages = {h.placement.message_id for h in candidates}
            in_trash = held_in(conn, owner, BoxKind.SUPPRIMES, messages)
            plan = plan_expunge(box, candidates, in_trash, only)
            carry_out_steps(conn, ctx, owner, plan, self._records)
            return list(plan.removed)

        return await self._writer.submit(work)

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        box = await self.mailbox(who, mailbox_name)
        ref = parse_box_name(box.name)  # the row just read names it: no second query
        summary = _summary(data)
        when = (internaldate or datetime.now(UTC)).astimezone(UTC)
        if ref.kind is BoxKind.SUPPRIMES:
            return await self._append_to_trash(who, box.id, ref, data, summary)
        sent_uid, dossier_at = await self._query(
            lambda conn: _append_facts(conn, box.id, ref, summary)
        )
        plan = plan_append(ref, summary, flags, sent_uid=sent_uid, dossier_at=dossier_at)
        if isinstance(plan, SentCopy):
            return AppendResult(uidvalidity=box.uidvalidity, uid=plan.uid)
        assert isinstance(plan, SaveDraft)  # Supprimés went to _append_to_trash

        def work(conn: Connection, ctx: WriteContext) -> AppendResult:
            return _save_draft(conn, ctx, who, box.id, plan, data, summary, when)

        return await self._writer.submit(work, [data])

    async def append_all(
        self,
        who: Identity,
        mailbox_name: str,
        messages: Sequence[tuple[bytes, frozenset[str], datetime | None]],
    ) -> list[AppendResult]:
        box = await self.mailbox(who, mailbox_name)
        ref = parse_box_name(box.name)
        now = datetime.now(UTC)
        items = [
            (data, _summary(data), flags, (when or now).astimezone(UTC))
            for data, flags, when in messages
        ]

        def work(conn: Connection, ctx: WriteContext) -> list[AppendResult]:
            # One transaction: a message refused undoes the ones before it.
            out: list[AppendResult] = []
            for data, summary, flags, when in items:
                if ref.kind is BoxKind.SUPPRIMES:
                    out.append(self._trash_in(conn, ctx, who, box.id, ref, data, summary))
                    continue
                sent_uid, dossier_at = _append_facts(conn, box.id, ref, summary)
                plan = plan_append(ref, summary, flags, sent_uid=sent_uid, dossier_at=dossier_at)
                if isinstance(plan, SentCopy):
                    out.append(AppendResult(uidvalidity=box.uidvalidity, uid=plan.uid))
                    continue
                assert isinstance(plan, SaveDraft)
                out.append(_save_draft(conn, ctx, who, box.id, plan, data, summary, when))
            return out

        return await self._writer.submit(work, [data for data, _, _ in messages])

    async def _append_to_trash(
        self, who: Identity, box_id: int, ref: BoxRef, data: bytes, summary: MessageSummary
    ) -> AppendResult:
        """A message the owner holds, APPENDed to Supprimés: its delete (``DeleteHeld``),
        planned and carried out on the facts of the writer's transaction."""

        def work(conn: Connection, ctx: WriteContext) -> AppendResult:
            return self._trash_in(conn, ctx, who, box_id, ref, data, summary)

        return await self._writer.submit(work)

    def _trash_in(
        self,
        conn: Connection,
        ctx: WriteContext,
        who: Identity,
        box_id: int,
        ref: BoxRef,
        data: bytes,
        summary: MessageSummary,
    ) -> AppendResult:
        """``_append_to_trash`` inside the writer's transaction."""
        owner = who.mailbox_owner
        sha = hashlib.sha256(data).hexdigest()
        same = MS.c.blob == sha
        if summary.message_id:
            same = or_(same, MS.c.message_id == summary.message_id)
        there = conn.execute(
            select(EN.c.uid)
            .join(MS, MS.c.id == EN.c.message_id)
            .where(EN.c.mailbox_id == box_id, same)
            .order_by(EN.c.uid.desc())
            .limit(1)
        ).scalar()
        held = held_copies(conn, owner, sha, summary.message_id) if there is None else []
        plan = plan_append(
            ref,
            summary,
            frozenset(),
            sent_uid=None if there is None else int(there),
            dossier_at={},
            held=held,
        )
        validity = conn.execute(select(MB.c.uidvalidity).where(MB.c.id == box_id)).scalar_one()
        if isinstance(plan, SentCopy):
            return AppendResult(uidvalidity=int(validity), uid=plan.uid)
        assert isinstance(plan, DeleteHeld)
        placed = carry_out_steps(conn, ctx, owner, plan.move, self._records)
        return AppendResult(uidvalidity=int(validity), uid=placed[0][1][box_id])

    async def _transfer(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str, *, move: bool
    ) -> CopyResult:
        await self._check_owner(who, mailbox_id)
        dest_box = await self.mailbox(who, dest_name)
        dest = parse_box_name(dest_box.name)

        def work(conn: Connection, ctx: WriteContext) -> CopyResult:
            plan = plan_move(held_placements(conn, mailbox_id, uids), dest, keep_source=not move)
            src_uids: list[int] = []
            dst_uids: list[int] = []
            for uid, placed in carry_out_steps(conn, ctx, who.mailbox_owner, plan, self._records):
                if dest_box.id in placed:
                    src_uids.append(uid)
                    dst_uids.append(placed[dest_box.id])
            return CopyResult(dest_box.uidvalidity, src_uids, dst_uids)

        return await self._writer.submit(work)

    async def copy(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._transfer(who, mailbox_id, uids, dest_name, move=False)

    async def move(
        self, who: Identity, mailbox_id: int, uids: Sequence[int], dest_name: str
    ) -> CopyResult:
        return await self._transfer(who, mailbox_id, uids, dest_name, move=True)

    # -- IMAP \\Recent ------------------------------------------------------------

    async def recent_mark(self, who: Identity, mailbox_id: int) -> int:
        await self._check_owner(who, mailbox_id)
        query = select(RC.c.uid).where(RC.c.mailbox_id == mailbox_id)
        mark = await self._query(lambda c: c.execute(query).scalar())
        return 0 if mark is None else int(mark)

    async def claim_recent(self, who: Identity, mailbox_id: int, upto: int) -> int:
        await self._check_owner(who, mailbox_id)

        def work(conn: Connection, ctx: WriteContext) -> int:
            # Locked (PostgreSQL): two nodes' sessions never both claim a message.
            rows_for(conn).run(
                "INSERT INTO imap_recent (mailbox_id, uid) VALUES (?, 0)"
                " ON CONFLICT (mailbox_id) DO NOTHING",
                (mailbox_id,),
            )
            mark = conn.execute(
                select(RC.c.uid).where(RC.c.mailbox_id == mailbox_id).with_for_update()
            ).scalar_one()
            if upto > mark:
                conn.execute(update(RC).where(RC.c.mailbox_id == mailbox_id).values(uid=upto))
            return int(mark)

        return await self._writer.submit(work)

    # -- evidence --------------------------------------------------------------

    async def held_evidence(self, who: Identity, evidence_id: str) -> str | None:
        """The evidence (canonical JSON) of a receipt ``who``'s mailbox holds, else None."""
        owner = who.mailbox_owner
        return await self._query(lambda c: held_evidence(c, owner, evidence_id))

    async def record_registry_decision(
        self, registry: Identity, message: int, *, accepted: bool, reason: str | None = None
    ) -> int:
        """The registry's decision on a filed message, with its receipt to the
        sender (acceptation or rejet greffe); the receipt's log position."""
        return await self._later_event(
            message,
            lambda deposit, now: registry_decision(
                registry, deposit, accepted=accepted, reason=reason, now=now
            ),
        )

    async def record_non_delivery(
        self, message: int, recipients: Sequence[str], *, reason: str
    ) -> int:
        """That a filed message could not reach these recipients, with its receipt
        to the sender (non-remise); the receipt's log position."""
        return await self._later_event(
            message,
            lambda deposit, now: non_delivery_of(deposit, recipients, reason=reason, now=now),
        )

    async def _later_event(
        self, message: int, plan: Callable[[Deposit, datetime], ReceiptOrder]
    ) -> int:
        """The receipt ``plan`` orders from the deposit of a filed message."""
        receipts = self._receipts_writer()
        now = datetime.now(UTC)

        def work(conn: Connection, ctx: WriteContext) -> int:
            position = later_receipt(conn, ctx, receipts, message, lambda d: plan(d, now))
            if position is None:
                raise NoSuchMailbox(
                    "No such message", reason=f"receipt about unfiled message {message}"
                )
            return position

        return await self._writer.submit(work)

    def _receipts_writer(self) -> ReceiptWriter:
        if self.receipts is None:
            raise TemporaryFailure(
                "The evidence service is not available", reason="no evidence service configured"
            )
        return self.receipts

    # -- delivery ------------------------------------------------------------

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
        """Carry out a filing plan for an accepted message; durable on return.

        The drafts the plan supersedes leave Brouillons and its records are
        written, in the same transaction. With ``resend_since``, the same
        message filed by the same sender since then is returned instead
        (``resent``), in that transaction too: the writer runs one job at a
        time, and on PostgreSQL a lock on (sender, Message-ID) keeps other
        nodes out.
        """
        dossier_id: int | None = None
        if plan.dossier is not None:
            dossier_id = self._dossier_ids.get(plan.dossier)
            if dossier_id is None:
                dossier_id = await self._query(
                    lambda c: c.execute(select(DO.c.id).where(DO.c.number == plan.dossier)).scalar()
                )
                if dossier_id is not None:
                    self._dossier_ids[plan.dossier] = dossier_id
        work = Filing(
            who,
            data,
            summary,
            plan,
            resend_since,
            dossier_id,
            datetime.now(UTC),
            self._records,
            arrival,
        )
        blobs = [data]
        for record in plan.records:
            # Messages a record files with this one (a dossier's new Fiche):
            # their bytes go to the pack before the transaction, as its own.
            blobs.extend(getattr(record, "blobs", ()))
        if self.filer is not None and len(blobs) == 1 and work.elsewhere():
            filed = await self.filer(work)
            if filed is not None:
                return filed
        return await self._writer.submit(work, blobs)


def _summary(data: bytes) -> MessageSummary:
    try:
        return summarize(data)
    except PalaisError:  # IMAP lets a client store any bytes; index what we can
        return MessageSummary(header_size(data), "", "", "", "", "", None, None, True)


def _append_facts(
    conn: Connection, box_id: int, ref: BoxRef, summary: MessageSummary
) -> tuple[int | None, dict[str, str]]:
    """Only what plan_append reads for this box: in Envoyés the box's newest
    entry with this Message-ID (a sent copy); in the global Brouillons the
    dossiers of the addresses the message is written to; for any other box
    nothing (plan_append refuses it)."""
    uid = None
    if ref.kind is BoxKind.ENVOYES and summary.message_id:
        uid = conn.execute(
            select(EN.c.uid)
            .join(MS, MS.c.id == EN.c.message_id)
            .where(EN.c.mailbox_id == box_id, MS.c.message_id == summary.message_id)
            .order_by(EN.c.uid.desc())
            .limit(1)
        ).scalar()
    at: dict[str, str] = {}
    addresses = (
        addresses_written_to(summary)
        if ref.kind is BoxKind.BROUILLONS and ref.dossier is None
        else []
    )
    if addresses:
        q = select(DO.c.address, DO.c.number).where(DO.c.address.in_(addresses))
        at = {str(a): str(n) for a, n in conn.execute(q)}
    return (None if uid is None else int(uid)), at


def _save_draft(
    conn: Connection,
    ctx: WriteContext,
    who: Identity,
    box_id: int,
    plan: SaveDraft,
    data: bytes,
    summary: MessageSummary,
    when: datetime,
) -> AppendResult:
    mid, _ = insert_message(
        conn,
        ctx,
        data,
        summary,
        internaldate=when,
        sender=who.address,
        fingerprint=who.fingerprint,
        dossier_id=None,
    )
    uids = place_all(conn, ctx, mid, plan.dossier, [(who.mailbox_owner, plan.kind, plan.flags)])[0]
    validity = conn.execute(select(MB.c.uidvalidity).where(MB.c.id == box_id)).scalar_one()
    return AppendResult(uidvalidity=int(validity), uid=uids[box_id])
