"""Message rows and the references they hold on their bytes."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from palais.mailbox.filing import EarlierMessage
from palais.mailbox.message import MessageSummary
from palais.mailbox.model import BoxKind
from palais.mailbox.ports import BlobLocation
from palais.storage.rows import rows_for
from palais.storage.sql import BL, MS, PL, utc, when
from palais.storage.textindex import index_later, index_later_from
from palais.storage.writer import WriteContext


@dataclass(frozen=True, slots=True)
class FiledMessage:
    message_id: int
    sha256: str
    size: int
    uids: dict[str, int]  # "owner/box kind" -> uid
    resent: bool = False  # an identical earlier filing answered; nothing was filed (no uids)


# A second copy of the same bytes only takes a reference; its appended
# bytes in the pack stay unreferenced (reclaimed by compaction).
def _store_blobs(count: int) -> str:
    """The statement storing ``count`` blob references (distinct sha256s)."""
    return (
        'INSERT INTO blob (sha256, segment, "offset", length, refcount) VALUES '
        + ", ".join(["(?, ?, ?, ?, 1)"] * count)
        + " ON CONFLICT (sha256) DO UPDATE SET refcount = blob.refcount + 1"
    )


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message row to insert, its bytes already stored at ``where``."""

    sha256: str
    where: BlobLocation
    summary: MessageSummary
    internaldate: datetime
    sender: str
    fingerprint: str
    dossier_id: int | None
    arrival: str | None = None  # EarlierMessage.arrival


_MESSAGE_COLUMNS = (
    "INSERT INTO message (blob, size, header_size, internaldate, sent_date, sent_day,"
    " message_id, subject, from_addr, to_addr, cc_addr, bcc_addr, sender,"
    " sender_fingerprint, dossier_id, arrival) VALUES "
)
_MESSAGE_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _message_values(conn: Connection, m: NewMessage) -> tuple[object, ...]:
    summary = m.summary
    return (
        m.sha256,
        m.where.length,
        summary.header_size,
        when(conn, m.internaldate),
        when(conn, summary.sent_date),
        _day(conn, summary.sent_date),
        summary.message_id,
        summary.subject,
        summary.from_addr,
        summary.to_addr,
        summary.cc_addr,
        summary.bcc_addr,
        m.sender,
        m.fingerprint,
        m.dossier_id,
        m.arrival,
    )


def insert_message(
    conn: Connection,
    ctx: WriteContext,
    data: bytes,
    summary: MessageSummary,
    *,
    internaldate: datetime,
    sender: str,
    fingerprint: str,
    dossier_id: int | None,
    arrival: str | None = None,
) -> tuple[int, str]:
    """The message's row, and a reference on its bytes (handed with the job); (id, sha256)."""
    sha = ctx.sha256(data)
    new = NewMessage(
        sha, ctx.locations[sha], summary, internaldate, sender, fingerprint, dossier_id, arrival
    )
    return insert_messages(conn, [new])[0], sha


def insert_messages(
    conn: Connection,
    messages: Sequence[NewMessage],
    also: tuple[str, tuple[Any, ...]] | None = None,
) -> list[int]:
    """Rows of messages with distinct bytes (a batch's receipt mails) and
    their blob references, in a statement each; their ids, in order.

    ``also``: on PostgreSQL, one more clause of the same statement
    (``name AS (...)`` and its parameters), which may read the inserted
    rows' ``m (id, blob)``."""
    if not messages:
        return []
    rows = rows_for(conn)
    blob_values = tuple(
        v for m in messages for v in (m.sha256, m.where.segment, m.where.offset, m.where.length)
    )
    message_rows = _MESSAGE_COLUMNS + ", ".join([_MESSAGE_MARKS] * len(messages))
    message_values = tuple(v for m in messages for v in _message_values(conn, m))
    together = conn.dialect.name == "postgresql"
    if together:
        # The three statements in one (data-modifying WITH): a round trip
        # is most of each, and a batch may hold its boxes' locks meanwhile.
        clause, params = (f", {also[0]}", also[1]) if also is not None else ("", ())
        found = rows.all(
            f"WITH b AS ({_store_blobs(len(messages))}),"
            f" m AS ({message_rows} RETURNING id, blob),"
            f" t AS ({index_later_from('m')}){clause}"
            " SELECT id, blob FROM m",
            blob_values + message_values + params,
        )
    else:
        assert also is None, "a clause of the statement is for PostgreSQL only"
        # One statement, not executemany: SQLite lets go of the GIL at every
        # row's step, and the writer waits to take it back each time.
        rows.run(_store_blobs(len(messages)), blob_values)
        found = rows.all(message_rows + " RETURNING id, blob", message_values)
    # RETURNING's order is not promised: each row is known by its bytes.
    ids = {str(blob): int(mid) for mid, blob in found}
    out = [ids[m.sha256] for m in messages]
    if not together:
        index_later(conn, *out)
    return out


def _day(conn: Connection, sent: datetime | None) -> date | str | None:
    """The Date header's own day (its wall clock, not UTC's), as the Date
    column stores it (SQLite: ISO text)."""
    if sent is None:
        return None
    day = sent.date()
    return day.isoformat() if conn.dialect.name == "sqlite" else day


def release_messages(conn: Connection, ctx: WriteContext, message_ids: Iterable[int]) -> None:
    """Delete messages nobody holds any more, and their bytes if no message shares them."""
    for mid in message_ids:
        still = conn.execute(select(PL.c.id).where(PL.c.message_id == mid).limit(1)).first()
        if still is not None:
            continue
        sha = conn.execute(select(MS.c.blob).where(MS.c.id == mid)).scalar_one()
        conn.execute(delete(MS).where(MS.c.id == mid))
        conn.execute(update(BL).where(BL.c.sha256 == sha).values(refcount=BL.c.refcount - 1))
        blob = conn.execute(
            select(BL.c.refcount, BL.c.segment, BL.c.offset, BL.c.length).where(BL.c.sha256 == sha)
        ).one()
        if blob.refcount <= 0:
            conn.execute(delete(BL).where(BL.c.sha256 == sha))
            ctx.erase_after_commit[sha] = BlobLocation(blob.segment, blob.offset, blob.length)


def lock_message_ids(conn: Connection, asked: Collection[tuple[str, str]]) -> None:
    """On PostgreSQL, this transaction's locks on these (sender, Message-ID)
    pairs, taken in one order (two nodes' batches never wait on each other
    in a cycle) and held until it ends; nothing on SQLite, whose one writer
    is serial anyway."""
    if conn.dialect.name != "postgresql" or not asked:
        return
    keys = sorted({f"{sender} {message_id}" for sender, message_id in asked})
    rows_for(conn).run(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))"
        " FROM (SELECT k FROM unnest(CAST(? AS text[])) AS k ORDER BY k) AS keys",
        (keys,),
    )


def earlier_messages(
    conn: Connection, sender: str, message_id: str, owners: Collection[str]
) -> list[EarlierMessage]:
    """The stored messages with this Message-ID, with their placements among ``owners``.

    One statement through the Message-ID index; a new Message-ID (the usual
    case) finds no row, and no placement is read. On PostgreSQL the
    transaction first takes a lock on (sender, Message-ID), held until it
    commits, so that a twin filing on another node waits and then sees this one.
    """
    rows = rows_for(conn)
    lock_message_ids(conn, [(sender, message_id)])
    found = rows.all(
        "SELECT id, sender, blob, size, arrival, internaldate, dossier_id IS NOT NULL"
        " FROM message WHERE message_id = ? ORDER BY id",
        (message_id,),
    )
    if not found:
        return []
    marks = ", ".join("?" * len(owners))
    out: list[EarlierMessage] = []
    for mid, by, sha, size, arrival, accepted, filed in found:
        placed = rows.all(
            # Through the (owner, message_id) index.
            f"SELECT owner, kind FROM placement WHERE owner IN ({marks}) AND message_id = ?",
            (*sorted(owners), mid),
        )
        held = frozenset((owner, BoxKind(kind)) for owner, kind in placed)
        out.append(
            EarlierMessage(int(mid), by, sha, int(size), arrival, utc(accepted), bool(filed), held)
        )
    return out
