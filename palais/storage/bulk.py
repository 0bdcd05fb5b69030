"""Bulk import of existing messages into one box (migration, benchmarks).

Goes through the same writer as everything else, in large batches, so it
is durable and safe to run while the gateway serves; it does not apply the
submission rules, which is why only the operator's tools call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from sqlalchemy import Connection

from palais.mailbox.boxes import BoxKind
from palais.mailbox.message import summarize
from palais.storage import Storage
from palais.storage.messages import insert_message
from palais.storage.placement import place_all
from palais.storage.writer import WriteContext


def _batches(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_messages(
    storage: Storage,
    *,
    owner: str,
    kind: BoxKind,
    dossier: str | None,
    messages: Iterable[bytes],
    sender: str,
    flags: frozenset[str] = frozenset(),
    batch_size: int = 2000,
) -> int:
    """Import messages (writer stopped: runs in the caller's thread). Returns the count."""
    total = 0
    for batch in _batches(messages, batch_size):

        def work(conn: Connection, ctx: WriteContext, batch: list[bytes] = batch) -> int:
            now = datetime.now(UTC)
            for data in batch:
                mid, _ = insert_message(
                    conn,
                    ctx,
                    data,
                    summarize(data),
                    internaldate=now,
                    sender=sender,
                    fingerprint="import",
                    dossier_id=None,
                )
                place_all(conn, ctx, mid, dossier, [(owner, kind, flags)])
            # Nobody listens to an import; don't hold a batch's events in memory.
            ctx.events.clear()
            return len(batch)

        total += storage.commits.run_now(work, batch)
    return total
