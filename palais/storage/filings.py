"""A filing plan carried out in the writer: one message, or a batch's run of them.

Filing is the write path of SMTP ingest. Alone, a filing runs seven
statements or so; a run of plain filings in a batch (new Message-IDs,
distinct bytes, nothing superseded, no record but its receipts) shares them:
a statement per table for the whole run, each releasing and retaking the
GIL once instead of once per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from palais.mailbox.evidence import ReceiptOrder
from palais.mailbox.filing import FilingPlan, resend_of
from palais.mailbox.identity import Identity
from palais.mailbox.message import MessageSummary
from palais.storage.evidence import defer_log_rows, flush_log_rows, seal_deferred
from palais.storage.messages import (
    FiledMessage,
    NewMessage,
    earlier_messages,
    insert_message,
    insert_messages,
    lock_message_ids,
)
from palais.storage.placement import (
    Holder,
    Placements,
    RecordWriters,
    distinct_holders,
    drop_superseded,
    insert_placements,
    lock_boxes,
    place_all,
    place_messages,
    write_records,
)
from palais.storage.rows import rows_for
from palais.storage.writer import Together, WriteContext


@dataclass(frozen=True, slots=True, eq=False)
class Filing(Together[FiledMessage]):
    """``MailStore.file``'s job: the message, its placements and its records.

    With ``resend_since``, the same message filed by the same sender since
    then is returned instead (``resent``), in the transaction too: the
    writer runs one batch at a time, and on PostgreSQL a lock on (sender,
    Message-ID) keeps other nodes out.
    """

    who: Identity
    data: bytes
    summary: MessageSummary
    plan: FilingPlan
    resend_since: datetime | None
    dossier_id: int | None
    now: datetime
    writers: RecordWriters
    arrival: str | None = None  # EarlierMessage.arrival

    def __call__(self, conn: Connection, ctx: WriteContext) -> FiledMessage:
        plan, summary, data = self.plan, self.summary, self.data
        # Whether any message has this Message-ID yet: if none, there is no
        # draft to look for either (None: not asked).
        known: bool | None = None
        if self.resend_since is not None and summary.message_id:
            sha = ctx.sha256(data)
            owners = {d.owner for d in plan.destinations}
            earlier = earlier_messages(conn, self.who.address, summary.message_id, owners)
            known = bool(earlier)
            first = resend_of(earlier, self.who.address, sha, self.resend_since, plan, self.arrival)
            if first is not None:
                # What the first filing stored: a copy completed on another
                # node has other bytes.
                was = next(m for m in earlier if m.id == first)
                return FiledMessage(first, was.sha256, was.size, {}, resent=True)
        mid, sha = insert_message(
            conn,
            ctx,
            data,
            summary,
            internaldate=self.now,
            sender=self.who.address,
            fingerprint=self.who.fingerprint,
            dossier_id=self.dossier_id,
            arrival=self.arrival,
        )
        superseded = plan.supersedes
        if superseded is not None and known is not False:
            drop_superseded(conn, ctx, superseded)
        placed = place_all(conn, ctx, mid, plan.dossier, self._holders())
        filed = FiledMessage(mid, sha, len(data), self._uids(placed))
        if plan.records:
            ctx.filed = (mid, data, summary)
            write_records(conn, ctx, self.writers, plan.records)
        return filed

    def _holders(self) -> list[Holder]:
        return [(d.owner, d.kind, d.flags) for d in self.plan.destinations]

    def _uids(self, placed: Sequence[dict[int, int]]) -> dict[str, int]:
        uids: dict[str, int] = {}
        for dest, boxes in zip(self.plan.destinations, placed, strict=True):
            for uid in boxes.values():
                uids.setdefault(f"{dest.owner}/{dest.kind.value}", uid)
        return uids

    def elsewhere(self) -> bool:
        """Whether the filing process may carry it out: it writes receipts,
        and no other record: the process has no other record's writer
        (``palais.storage.filing_process``)."""
        return all(isinstance(r, ReceiptOrder) for r in self.plan.records)

    def _asks(self) -> bool:
        """Whether an earlier message with this Message-ID matters."""
        return self.resend_since is not None and bool(self.summary.message_id)

    def _plain(self) -> bool:
        """No record but receipts about this message, and no draft to drop
        unless it has the message's own Message-ID: when no message has it
        yet (what a run checks), there is no such draft."""
        superseded = self.plan.supersedes
        return (
            superseded is None
            or (self._asks() and superseded.message_id == self.summary.message_id)
        ) and all(isinstance(r, ReceiptOrder) and r.message is None for r in self.plan.records)

    @staticmethod
    def _listed(
        filings: Sequence[tuple[Filing, WriteContext]], ids: Sequence[int]
    ) -> list[tuple[int, str | None, list[Holder]]]:
        """Each message of a run with its dossier and its holders."""
        return [
            (mid, f.plan.dossier, f._holders()) for (f, _), mid in zip(filings, ids, strict=True)
        ]

    @classmethod
    def together(
        cls, conn: Connection, jobs: Sequence[tuple[Any, WriteContext]]
    ) -> list[FiledMessage] | None:
        filings: list[tuple[Filing, WriteContext]] = jobs  # type: ignore[assignment]
        if not all(f._plain() for f, _ in filings):
            return None
        shas = [ctx.sha256(f.data) for f, ctx in filings]
        if len(set(shas)) != len(shas):  # one message's bytes twice: each alone
            return None
        asked = [(f.who.address, f.summary.message_id or "") for f, _ in filings if f._asks()]
        if asked:
            if len(set(asked)) != len(asked):  # a resend within the batch
                return None
            lock_message_ids(conn, asked)
            message_ids = sorted({m for _, m in asked})
            # No LIMIT 1: PostgreSQL's planner then expects an early match
            # and reads the whole table, where there is seldom any. On
            # PostgreSQL one array: one prepared statement, whose plan the
            # writer makes again as the table grows, where a list of marks
            # made one per length, some of them keeping a plan made early.
            if conn.dialect.name == "postgresql":
                seen = rows_for(conn).all(
                    "SELECT id FROM message WHERE message_id = ANY(CAST(? AS text[]))",
                    (message_ids,),
                )
            else:
                marks = ", ".join("?" * len(message_ids))
                seen = rows_for(conn).all(
                    f"SELECT id FROM message WHERE message_id IN ({marks})", tuple(message_ids)
                )
            if seen:  # maybe a resend, or a draft to drop: each answers alone
                return None
        first = filings[0][1]
        new = [
            NewMessage(
                sha,
                ctx.locations[sha],
                f.summary,
                f.now,
                f.who.address,
                f.who.fingerprint,
                f.dossier_id,
                f.arrival,
            )
            for (f, ctx), sha in zip(filings, shas, strict=True)
        ]
        # On PostgreSQL the message and placement rows go in before the
        # locks another node's batch waits for (they lock nothing it needs):
        # that batch then waits only for the UIDs, the receipts and the
        # commit. On SQLite, whose one writer waits for nobody, they go in
        # while the sealing worker writes the receipts' mails.
        ids: list[int] | None = None
        made: Placements | None = None
        if conn.dialect.name == "postgresql":
            ids = insert_messages(conn, new)
            listed = cls._listed(filings, ids)
            if distinct_holders(listed):
                made = insert_placements(conn, listed)
        # The receipts first, so that the sealing worker writes their mails
        # while the rows below go in (their log rows wait for the messages'
        # ids when those are not known yet). On PostgreSQL every transaction
        # locks the mailbox rows before the evidence log's head, or two
        # nodes' batches deadlock: the boxes are locked here, before the
        # receipts read the head.
        lock_boxes(conn, first, [(f.plan.dossier, f._holders()) for f, _ in filings])
        defer_log_rows(first)
        for index, (f, ctx) in enumerate(filings):
            if f.plan.records:
                ctx.filed = (None if ids is None else ids[index], f.data, f.summary)
                write_records(conn, ctx, f.writers, f.plan.records)
        seal_deferred(first)
        if ids is None:
            ids = insert_messages(conn, new)
        # Every entry's event lands in the first context: the batch's
        # events are published together anyway.
        placed = place_messages(conn, first, cls._listed(filings, ids), placements=made)
        out: list[FiledMessage] = []
        for (f, ctx), mid, sha, boxes in zip(filings, ids, shas, placed, strict=True):
            out.append(FiledMessage(mid, sha, len(f.data), f._uids(boxes)))
            if f.plan.records:
                ctx.filed = (mid, f.data, f.summary)
        flush_log_rows(conn, first)
        return out
