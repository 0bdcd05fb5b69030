"""The relay queue: rows written with a filing, leased and finished by the relay.

Storage decides nothing here: which message is relayed, when it is tried
again and when the relay gives up are ``palais.mailbox.relay``'s rules;
this module writes them, each change through the writer (one transaction,
durable when the call returns).

A row holds one reference to its message's blob (``blob.refcount``) from
the filing until it is finished, so that the sender deleting their copy
meanwhile does not take the bytes away.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, func, select, update

from palais.mailbox.evidence import Deposit, ReceiptOrder, non_delivery_of, relayed_delivery
from palais.mailbox.ports import BlobLocation
from palais.mailbox.relay import RelayItem, RelayOrder
from palais.storage import schema
from palais.storage.evidence import ReceiptWriter, later_receipt
from palais.storage.mailstore import MailStore
from palais.storage.rows import rows_for
from palais.storage.sql import BL, utc, when
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["SqlRelayQueue", "write_relay_order"]

RQ = schema.table(schema.RelayQueue)

PENDING = "pending"
SENT = "sent"
FAILED = "failed"

_INSERT = (
    "INSERT INTO relay_queue (message_id, blob, recipient, sender, message_ident, state,"
    " failures, queued_at, next_attempt) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
)
_HOLD = "UPDATE blob SET refcount = refcount + 1 WHERE sha256 = ?"


def write_relay_order(conn: Connection, ctx: WriteContext, order: RelayOrder) -> None:
    """A filing's ``RelayOrder``: its queue row, due at once (a filing job only)."""
    if ctx.filed is None:
        raise TypeError("a relay order is carried by a filing plan only")
    mid, data, summary = ctx.filed
    now = when(conn, datetime.now(UTC))
    sha = ctx.sha256(data)
    rows = rows_for(conn)
    rows.run(_INSERT, (mid, sha, order.recipient, order.sender, summary.message_id, now, now))
    rows.run(_HOLD, (sha,))


class SqlRelayQueue:
    """``palais.mailbox.relay.RelayQueue`` on the instance's database."""

    def __init__(
        self, writer: CommitQueue, mail: MailStore, *, lease: float = 600.0, node: str = ""
    ) -> None:
        self._writer = writer
        self._mail = mail
        self._lease = timedelta(seconds=lease)
        # Which node holds a lease: its name and a token of this process.
        self._node = f"{node or 'node'}"[:48] + ":"
        self._owner = self._node + secrets.token_hex(6)

    async def resume(self) -> int:
        # A node's name is its own (`palais node add`, one per worker): a
        # lease under it by another process is its previous life's.
        prefix, owner = self._node, self._owner

        def work(conn: Connection, _ctx: WriteContext) -> int:
            done = conn.execute(
                update(RQ)
                .where(
                    RQ.c.state == PENDING,
                    RQ.c.lease_owner.startswith(prefix, autoescape=True),
                    RQ.c.lease_owner != owner,
                )
                .values(lease_until=None, lease_owner=None)
            )
            return int(done.rowcount)

        return await self._writer.submit(work)

    async def claim(self, limit: int) -> Sequence[RelayItem]:
        lease, owner = self._lease, self._owner

        def work(conn: Connection, _ctx: WriteContext) -> list[RelayItem]:
            now = datetime.now(UTC)
            due = (
                select(RQ)
                .where(
                    RQ.c.state == PENDING,
                    RQ.c.next_attempt <= now,
                    (RQ.c.lease_until.is_(None)) | (RQ.c.lease_until < now),
                )
                .order_by(RQ.c.next_attempt, RQ.c.id)
                .limit(limit)
                # Other nodes skip the rows this one is leasing (PostgreSQL);
                # SQLite has one writer, which needs no lock.
                .with_for_update(skip_locked=True)
            )
            found = conn.execute(due).all()
            if not found:
                return []
            ids = [r.id for r in found]
            conn.execute(
                update(RQ)
                .where(RQ.c.id.in_(ids))
                .values(lease_until=now + lease, lease_owner=owner)
            )
            return [
                RelayItem(
                    id=int(r.id),
                    message=int(r.message_id),
                    blob=str(r.blob),
                    recipient=str(r.recipient),
                    sender=str(r.sender),
                    message_id=r.message_ident,
                    failures=int(r.failures),
                    queued=utc(r.queued_at),
                )
                for r in found
            ]

        return await self._writer.submit(work)

    async def read(self, item: RelayItem) -> bytes:
        return await self._mail.read(item.blob)

    async def delivered(self, item: RelayItem) -> None:
        await self._close(
            item,
            SENT,
            None,
            lambda deposit, now: relayed_delivery(deposit, [item.recipient], now=now),
        )

    async def retry(self, item: RelayItem, at: datetime, error: str) -> None:
        owner = self._owner

        def work(conn: Connection, _ctx: WriteContext) -> None:
            conn.execute(
                update(RQ)
                .where(RQ.c.id == item.id, RQ.c.state == PENDING, RQ.c.lease_owner == owner)
                .values(
                    failures=RQ.c.failures + 1,
                    next_attempt=at,
                    lease_until=None,
                    lease_owner=None,
                    last_error=error[:2000],
                )
            )

        await self._writer.submit(work)

    async def give_up(self, item: RelayItem, reason: str) -> None:
        await self._close(
            item,
            FAILED,
            reason,
            lambda deposit, now: non_delivery_of(deposit, [item.recipient], reason=reason, now=now),
        )

    async def _close(
        self,
        item: RelayItem,
        state: str,
        error: str | None,
        receipt_of: Callable[[Deposit, datetime], ReceiptOrder],
    ) -> None:
        """The row's last state, its bytes released and the sender's receipt
        (remise or non-remise), in one transaction; nothing if it was done."""
        receipts = self._mail.receipts

        def work(conn: Connection, ctx: WriteContext) -> None:
            if not self._finish(conn, item, state, error):
                return
            _release(conn, ctx, item.blob)
            _later_receipt(conn, ctx, receipts, item, receipt_of)

        await self._writer.submit(work)

    def _finish(self, conn: Connection, item: RelayItem, state: str, error: str | None) -> bool:
        """Mark the row done if this node still holds it; False if not (another
        node took it over after this one's lease ran out: it finishes it)."""
        values: dict[str, object] = {
            "state": state,
            "done_at": datetime.now(UTC),
            "lease_until": None,
            "lease_owner": None,
        }
        if error is not None:
            values["last_error"] = error[:2000]
            values["failures"] = RQ.c.failures + 1
        done = conn.execute(
            update(RQ)
            .where(RQ.c.id == item.id, RQ.c.state == PENDING, RQ.c.lease_owner == self._owner)
            .values(**values)
        )
        return bool(done.rowcount)

    async def backlog(self) -> tuple[int, datetime | None]:
        def read() -> tuple[int, datetime | None]:
            with self._mail.reader.connect() as conn:
                count, oldest = conn.execute(
                    select(func.count(), func.min(RQ.c.queued_at)).where(RQ.c.state == PENDING)
                ).one()
            return int(count), None if oldest is None else utc(oldest)

        return await asyncio.to_thread(read)

    async def counts(self) -> dict[str, int]:
        """Rows by state (tests, metrics)."""

        def work(conn: Connection, _ctx: WriteContext) -> dict[str, int]:
            rows = conn.execute(select(RQ.c.state, RQ.c.id)).all()
            out: dict[str, int] = {}
            for state, _ in rows:
                out[str(state)] = out.get(str(state), 0) + 1
            return out

        return await self._writer.submit(work)


def _release(conn: Connection, ctx: WriteContext, sha: str) -> None:
    """The queue's reference to the bytes dropped; erased if nobody else holds them."""
    conn.execute(update(BL).where(BL.c.sha256 == sha).values(refcount=BL.c.refcount - 1))
    blob = conn.execute(
        select(BL.c.refcount, BL.c.segment, BL.c.offset, BL.c.length).where(BL.c.sha256 == sha)
    ).first()
    if blob is not None and blob.refcount <= 0:
        conn.execute(delete(BL).where(BL.c.sha256 == sha))
        ctx.erase_after_commit[sha] = BlobLocation(blob.segment, blob.offset, blob.length)


def _later_receipt(
    conn: Connection,
    ctx: WriteContext,
    receipts: ReceiptWriter | None,
    item: RelayItem,
    order: Callable[[Deposit, datetime], ReceiptOrder],
) -> None:
    """The sender's receipt of the relay's end (remise or non-remise), with the
    row's end (a message filed without a deposit receipt, on an instance
    without evidence, gets none)."""
    if receipts is None:
        return
    now = datetime.now(UTC)
    later_receipt(conn, ctx, receipts, item.message, lambda deposit: order(deposit, now))
