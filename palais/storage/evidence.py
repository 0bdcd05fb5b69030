"""Receipts carried out: evidence log entries and receipt mails, in the act's transaction.

The domain orders a receipt (``ReceiptOrder``); here it gets its evidence
id and its place in the log (the next position, linked to the previous
leaf) and is appended to the log; the batch's receipts are then sealed by
the ``EvidenceService`` together and stored as mails in their holders'
Accusés de réception boxes, all in the transaction of the act each proves.
A batch that appended leaves ends with one signed tree head
(``sign_tree_head``). Both are writer finishers, in that order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from palais.mailbox.errors import TemporaryFailure
from palais.mailbox.evidence import (
    GENESIS,
    Deposit,
    EventCode,
    MessageFacts,
    ReceiptOrder,
    canonical_json,
    evidence_document,
    message_facts,
)
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind
from palais.mailbox.ports import (
    BlobLocation,
    EvidenceService,
    EvidenceTree,
    SealedReceipt,
    Sealing,
)
from palais.storage.blobs import sha256_hex
from palais.storage.messages import NewMessage, insert_messages
from palais.storage.placement import place_messages
from palais.storage.rows import Rows, rows_for
from palais.storage.sql import EVIDENCE_SEGMENT, utc, when
from palais.storage.writer import Finisher, RefuseJobs, WriteContext

EVIDENCE_NOTE = "evidence"


_LOG_INSERT = (
    "INSERT INTO evidence_log (position, evidence_id, events, about, holder, dossier,"
    " evidence, leaf_hash, created, receipt) VALUES "
)
_LOG_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DEFERRED = "evidence-deferred"


class _Deferred:
    """A run of receipts whose mails go to the sealing worker in one request
    and whose log rows go in one statement, when the run says so."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        # Rows about a message not inserted yet (its id is ``ctx.filed``'s by
        # the time the rows are written), by row index.
        self.unfiled: list[tuple[int, WriteContext]] = []
        self.requests: list[tuple[bytes, str]] = []
        self.service: EvidenceService | None = None
        self.sealing: Sealing | None = None
        self._sealed: list[SealedReceipt] | None = None

    def send(self) -> None:
        if self.requests and self.sealing is None:
            assert self.service is not None
            self.sealing = self.service.seal_later(self.requests)

    def sealed(self) -> list[SealedReceipt]:
        if self._sealed is None:
            assert self.sealing is not None, "a deferred run is sealed once flushed"
            self._sealed = list(self.sealing.receipts())
        return self._sealed


@dataclass(frozen=True, slots=True)
class _Part:
    """One receipt of a deferred run's sealing (a ``Sealing`` of its own)."""

    run: _Deferred
    index: int

    def receipts(self) -> list[SealedReceipt]:
        return [self.run.sealed()[self.index]]


def defer_log_rows(ctx: WriteContext) -> None:
    """Until ``flush_log_rows``, the receipts this attempt issues keep their
    log rows and their mails aside (nothing reads the log meanwhile: its
    head is in the batch's scratch), to write them all at once: a statement
    and a round trip to the sealing worker for the run, not for each.

    A receipt may then be issued about a filing's message before its row is
    inserted (``ctx.filed`` without its id): its log row takes the id when
    it is written."""
    ctx.batch[_DEFERRED] = _Deferred()


def seal_deferred(ctx: WriteContext) -> None:
    """The deferred receipts' mails sent to be written now, while the
    transaction goes on (``flush_log_rows`` sends them if this was not called)."""
    run: _Deferred = ctx.batch[_DEFERRED]
    run.send()


def flush_log_rows(conn: Connection, ctx: WriteContext) -> None:
    """The deferred receipts' log rows, and their mails sent to be written."""
    run: _Deferred = ctx.batch.pop(_DEFERRED)
    run.send()
    for index, issuer in run.unfiled:
        about = issuer.filed[0]
        assert about is not None, "a receipt's message is inserted before its log row"
        run.rows[index][3] = int(about)
    if run.rows:
        rows_for(conn).run(
            _LOG_INSERT + ", ".join([_LOG_MARKS] * len(run.rows)),
            tuple(v for row in run.rows for v in row),
        )


@dataclass(frozen=True, slots=True)
class _Issued:
    """A receipt whose evidence is in the log, its mail still to seal and file."""

    position: int
    evidence: bytes
    order: ReceiptOrder
    issued: datetime
    sealing: Sealing  # its mail, being written while the batch goes on


class ReceiptWriter:
    """Writes the ``ReceiptOrder`` records of plans (a ``RecordWriter``).

    The job that carries the order appends the evidence to the log (its
    position and link are the batch's order); the batch's finisher
    (``receipts_finisher``) seals the mails of all its receipts at once and
    files them, in the same transaction.
    """

    def __init__(self, service: EvidenceService) -> None:
        self.service = service

    def __call__(self, conn: Connection, ctx: WriteContext, order: ReceiptOrder) -> None:
        self.write(conn, ctx, order)

    def write(self, conn: Connection, ctx: WriteContext, order: ReceiptOrder) -> int:
        """Issue one receipt; its log position."""
        about, facts = self._subject(ctx, order)
        head = _head(conn, ctx, self.service)
        size = head.tree.size
        service = self.service
        evidence_id = str(uuid.uuid4())
        document = evidence_document(
            order,
            facts,
            evidence_id=evidence_id,
            issuer=service.issuer,
            issuer_certificate_sha256=service.issuer_certificate_sha256,
            position=size,
            previous=head.last,
        )
        evidence = canonical_json(document)
        leaf = service.leaf_hash(evidence)
        now = datetime.now(UTC)
        rows = rows_for(conn)
        # The receipt's mail and its message row are filled in by the
        # finisher, before the transaction commits.
        row = [
            size,
            evidence_id,
            ",".join(c.value for c in order.codes),
            about,
            order.holders[0],
            order.dossier,
            evidence.decode(),
            leaf,
            when(conn, now),
            b"",
        ]
        request = (evidence, order.holders[0])
        sealing: Sealing
        deferred = ctx.batch.get(_DEFERRED)
        if deferred is not None:
            assert isinstance(deferred, _Deferred)
            if about is None:
                deferred.unfiled.append((len(deferred.rows), ctx))
            deferred.rows.append(row)
            deferred.service = service
            sealing = _Part(deferred, len(deferred.requests))
            deferred.requests.append(request)
        else:
            assert about is not None, "a receipt alone is about an inserted message"
            rows.run(_LOG_INSERT + _LOG_MARKS, tuple(row))
            sealing = service.seal_later([request])
        # The head row is written once, by the batch's finisher.
        head.tree.append(leaf)
        head.last = leaf
        if order.first_read is not None:
            message, owner = order.first_read
            rows.run(
                "INSERT INTO first_read (message_id, owner, position) VALUES (?, ?, ?)",
                (message, owner, size),
            )
        ctx.notes.add(EVIDENCE_NOTE)
        ctx.receipts.append(_Issued(size, evidence, order, now, sealing))
        return size

    def _subject(self, ctx: WriteContext, order: ReceiptOrder) -> tuple[int | None, MessageFacts]:
        """The message the receipt is about: its row id and its facts."""
        if order.message is not None:
            return order.about, order.message
        # The message the carrying filing inserts (or is about to, in a
        # deferred run: then its id is not known yet): its facts are read
        # from the bytes stored, here, off the event loop.
        assert ctx.filed is not None, "a receipt about the filed message comes with a filing"
        mid, data, summary = ctx.filed
        assert isinstance(summary, MessageSummary)
        sha = ctx.sha256(data)  # hashed once already, when its bytes were appended
        facts = message_facts(data, summary.message_id, summary.subject, sha)
        return (None if mid is None else int(mid)), facts


def receipts_finisher(service: EvidenceService) -> Finisher:
    """A writer finisher: the mails of the batch's receipts, sealed together
    and filed in their holders' Accusés de réception (dossier and global
    view); their bytes lie in the log's rows."""

    def finish(conn: Connection, contexts: Sequence[WriteContext]) -> None:
        issued: list[_Issued] = [item for ctx in contexts for item in ctx.receipts]
        if not issued:
            return
        try:
            sealed = [r for i in issued for r in i.sealing.receipts()]
        except TemporaryFailure as error:
            # Nothing the key has not sealed is accepted: the acts that
            # ordered receipts fail, the others of the batch go through.
            raise RefuseJobs([c for c in contexts if c.receipts], error) from error
        _file_receipts(conn, contexts[0], service, issued, sealed)

    return finish


def _file_receipts(
    conn: Connection,
    ctx: WriteContext,
    service: EvidenceService,
    issued: Sequence[_Issued],
    sealed: Sequence[SealedReceipt],
) -> None:
    """The receipt mails' message rows and placements, a statement each for
    the whole batch; their bytes lie in the log's rows."""
    new: list[NewMessage] = []
    for item, receipt in zip(issued, sealed, strict=True):
        data = receipt.data
        new.append(
            NewMessage(
                sha256_hex(data),
                BlobLocation(EVIDENCE_SEGMENT, item.position, len(data)),
                receipt.summary,
                item.issued,
                service.address,
                service.issuer_certificate_sha256,
                _dossier_id(conn, ctx, item.order.dossier),
            )
        )
    pg = conn.dialect.name == "postgresql"
    # Each receipt's mail and its bytes in the log's row: on PostgreSQL in
    # the statement inserting the mails (the batch holds the head's lock).
    into_log: tuple[str, tuple[Any, ...]] | None = None
    if pg:
        into_log = (
            "l AS (UPDATE evidence_log SET receipt = v.receipt, receipt_message = m.id"
            " FROM (VALUES "
            + ", ".join(["(CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS BYTEA))"] * len(new))
            + ") AS v (position, sha, receipt) JOIN m ON m.blob = v.sha"
            " WHERE evidence_log.position = v.position)",
            tuple(
                v
                for item, mail, receipt in zip(issued, new, sealed, strict=True)
                for v in (item.position, mail.sha256, receipt.data)
            ),
        )
    ids = insert_messages(conn, new, into_log)
    place_messages(
        conn,
        ctx,
        [
            (
                mid,
                item.order.dossier,
                [(h, BoxKind.ACCUSES, frozenset[str]()) for h in dict.fromkeys(item.order.holders)],
            )
            for mid, item in zip(ids, issued, strict=True)
        ],
    )
    if pg:
        return
    # One statement for the batch (executemany lets go of the GIL per row).
    cases = " ".join(["WHEN ? THEN ?"] * len(issued))
    marks = ", ".join(["?"] * len(issued))
    rows_for(conn).run(
        f"UPDATE evidence_log SET receipt = CASE position {cases} END,"
        f" receipt_message = CASE position {cases} END WHERE position IN ({marks})",
        (
            *(
                v
                for item, receipt in zip(issued, sealed, strict=True)
                for v in (item.position, receipt.data)
            ),
            *(v for item, mid in zip(issued, ids, strict=True) for v in (item.position, mid)),
            *(item.position for item in issued),
        ),
    )


def _dossier_id(conn: Connection, ctx: WriteContext, number: str | None) -> int | None:
    if number is None:
        return None
    key = ("dossier-id", number)
    known = ctx.cache.get(key)
    if known is None:
        row = rows_for(conn).one("SELECT id FROM dossier WHERE number = ?", (number,))
        known = None if row is None else int(row[0])
        if known is not None:
            ctx.cache[key] = known
    return known


@dataclass
class _Head:
    """The log as this batch has it: its tree and its last leaf."""

    tree: EvidenceTree
    last: str  # hex leaf hash, GENESIS before the first
    stored: int  # the size the head row says (what the finisher updates from)


_HEAD = "evidence-head"
_FLOOR = "evidence-floor"


def _head(conn: Connection, ctx: WriteContext, service: EvidenceService) -> _Head:
    """The log's head for this batch: read once (locked until the transaction
    ends on PostgreSQL, which orders the log across nodes), then kept in the
    batch's scratch; the finisher writes it back once.

    Leaves past the head row are this transaction's own (the jobs before a
    refused one): they are replayed, so a refused job costs a re-read only.
    """
    known = ctx.batch.get(_HEAD)
    if known is not None:
        assert isinstance(known, _Head)
        return known
    rows = rows_for(conn)
    floor = ctx.cache.get(_FLOOR, 0)
    found = _head_row(rows, conn.dialect.name == "postgresql", floor)
    stored, tree = int(found[0][0]), service.tree(str(found[0][1]))
    # The log only grows: the head's last leaf, committed, stays a lower
    # bound of every later head's, whichever node appends next.
    ctx.cache[_FLOOR] = max(floor, stored - 1)
    last = GENESIS
    leaves = [(int(position), str(leaf)) for _, _, position, leaf in found if position is not None]
    if stored:
        assert leaves and leaves[0][0] == stored - 1, (
            "the evidence head counts a leaf the log does not hold"
        )
    for position, leaf in leaves:
        if position >= stored:
            tree.append(leaf)
        last = leaf
    head = _Head(tree, last, stored)
    ctx.batch[_HEAD] = head
    return head


def _head_row(rows: Rows, pg: bool, floor: int) -> list[tuple[Any, ...]]:
    """The head row (size, frontier) with the head's last leaf and any past
    it (position, leaf hash; None, None when the log is empty), oldest
    first, the row made if missing. On PostgreSQL one statement, which locks
    the head until the transaction ends (the log's one order across nodes).

    ``floor`` is a position at or before the head's last leaf (one this
    writer saw there). Only that constant tells PostgreSQL's planner that
    few rows qualify: ``position >= GREATEST(h.size - 1, 0)`` alone is a
    third of the log to it, and without a bound parameter the statement's
    plan was made once, while the log was tiny: a scan of the whole log at
    every batch, under the head's lock, ever longer as the log grew."""
    if pg:
        read = (
            "SELECT h.size, h.frontier, l.position, l.leaf_hash FROM evidence_head h"
            " LEFT JOIN LATERAL (SELECT position, leaf_hash FROM evidence_log"
            " WHERE position >= GREATEST(h.size - 1, 0) AND position >= ?) l ON true"
            " WHERE h.id = 1 ORDER BY l.position FOR UPDATE OF h"
        )
        found = rows.all(read, (floor,))
        if not found:
            rows.run(
                "INSERT INTO evidence_head (id, size, frontier) VALUES (1, 0, '')"
                " ON CONFLICT (id) DO NOTHING",
                (),
            )
            found = rows.all(read, (floor,))
        return found
    head = rows.one("SELECT size, frontier FROM evidence_head WHERE id = 1", ())
    if head is None:
        rows.run("INSERT INTO evidence_head (id, size, frontier) VALUES (1, 0, '')", ())
        head = (0, "")
    leaves = rows.all(
        "SELECT position, leaf_hash FROM evidence_log WHERE position >= ? ORDER BY position",
        (max(int(head[0]) - 1, 0),),
    )
    return [(*head, *leaf) for leaf in leaves] or [(*head, None, None)]


def deposits(conn: Connection, message_ids: Iterable[int]) -> list[Deposit]:
    """The deposit receipts of these messages (those filed with one), oldest first."""
    wanted = sorted(set(message_ids))
    if not wanted:
        return []
    marks = ", ".join("?" * len(wanted))
    found = rows_for(conn).all(
        "SELECT about, holder, created, evidence, events FROM evidence_log"
        f" WHERE about IN ({marks}) ORDER BY position",
        tuple(wanted),
    )
    out: dict[int, Deposit] = {}
    for about, holder, created, evidence, events in found:
        if EventCode.DEPOT.value not in str(events).split(",") or int(about) in out:
            continue
        document: Mapping[str, Any] = json.loads(evidence)
        out[int(about)] = Deposit(int(about), str(holder), utc(created), document)
    return list(out.values())


def later_receipt(
    conn: Connection,
    ctx: WriteContext,
    receipts: ReceiptWriter,
    message: int,
    order_of: Callable[[Deposit], ReceiptOrder],
) -> int | None:
    """The receipt of a later event of a filed message (a non-remise, a
    registry's decision...), ordered by ``order_of`` from the message's
    deposit receipt and written in the caller's transaction: its log
    position, or None when the message was filed without a deposit receipt."""
    found = deposits(conn, [message])
    if not found:
        return None
    return receipts.write(conn, ctx, order_of(found[0]))


def already_read(conn: Connection, owner: str, message_ids: Sequence[int]) -> list[int]:
    if not message_ids:
        return []
    marks = ", ".join("?" * len(message_ids))
    found = rows_for(conn).all(
        f"SELECT message_id FROM first_read WHERE owner = ? AND message_id IN ({marks})",
        (owner, *message_ids),
    )
    return [int(m) for (m,) in found]


_TREE_HEAD_INSERT = (
    " INSERT INTO tree_head (size, root, signed_at, document, signature)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (size) DO NOTHING"
)


def tree_head_finisher(service: EvidenceService) -> Finisher:
    """A writer finisher: the head row written once for a batch that appended
    leaves, and one signed tree head."""

    def finish(conn: Connection, contexts: Sequence[WriteContext]) -> None:
        if not any(EVIDENCE_NOTE in c.notes for c in contexts):
            return
        head = _head(conn, contexts[0], service)
        size = head.tree.size
        now = datetime.now(UTC)
        root = head.tree.root()
        document, signature = service.sign_tree_head(size, root, now)
        head_row = (size, head.tree.serialized())
        signed = (size, root, when(conn, now), document, signature)
        rows = rows_for(conn)
        if conn.dialect.name == "postgresql":
            # One round trip: the batch holds the head's lock meanwhile.
            rows.run(
                "WITH h AS (UPDATE evidence_head SET size = ?, frontier = ? WHERE id = 1)"
                + _TREE_HEAD_INSERT,
                head_row + signed,
            )
        else:
            rows.run("UPDATE evidence_head SET size = ?, frontier = ? WHERE id = 1", head_row)
            rows.run(_TREE_HEAD_INSERT, signed)
        head.stored = size

    return finish


def held_evidence(conn: Connection, owner: str, evidence_id: str) -> str | None:
    """The evidence of receipt ``evidence_id`` if ``owner`` holds it (it was
    issued to them, or its mail is in one of their boxes), else None."""
    found = rows_for(conn).one(
        "SELECT evidence, holder, receipt_message FROM evidence_log WHERE evidence_id = ?",
        (evidence_id,),
    )
    if found is None:
        return None
    evidence, holder, receipt = found
    if holder == owner:
        return str(evidence)
    if receipt is None:
        return None
    placed = rows_for(conn).one(
        "SELECT 1 FROM placement WHERE owner = ? AND message_id = ?", (owner, int(receipt))
    )
    return None if placed is None else str(evidence)
