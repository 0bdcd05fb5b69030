"""Bulk import of existing messages into one box (migration, benchmarks).

Goes through the same writer as everything else, in large batches, so it
is durable and safe to run while the gateway serves; it does not apply the
submission rules, which is why only the operator's tools call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select

from palais.mailbox.boxes import BoxKind, BoxRef
from palais.mailbox.message import summarize
from palais.storage import Storage, schema
from palais.storage.blobs import sha256_hex
from palais.storage.mailstore import _allocate, _box_id, _store_blob, encode_flags
from palais.storage.writer import WriteContext

MS = schema.table(schema.Message)
PL = schema.table(schema.Placement)
EN = schema.table(schema.Entry)


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
            refs = [BoxRef(kind, None)] + ([BoxRef(kind, dossier)] if dossier else [])
            boxes = [b for b in (_box_id(conn, owner, r) for r in refs) if b is not None]
            firsts = {b: _allocate(conn, b, len(batch)) for b in boxes}
            now = datetime.now(UTC)
            rows = []
            for data in batch:
                sm = summarize(data)
                sha = sha256_hex(data)
                _store_blob(conn, sha, ctx.locations[sha])
                rows.append(
                    {
                        "blob": sha,
                        "size": len(data),
                        "header_size": sm.header_size,
                        "internaldate": now,
                        "sent_date": sm.sent_date,
                        "message_id": sm.message_id,
                        "subject": sm.subject,
                        "from_addr": sm.from_addr,
                        "to_addr": sm.to_addr,
                        "cc_addr": sm.cc_addr,
                        "bcc_addr": sm.bcc_addr,
                        "sender": sender,
                        "sender_fingerprint": "import",
                        "dossier_id": None,
                    }
                )
            # RETURNING with executemany keeps parameter order (SQLite >= 3.35, PostgreSQL).
            mids = (
                conn.execute(insert(MS).returning(MS.c.id, sort_by_parameter_order=True), rows)
                .scalars()
                .all()
            )
            pids = (
                conn.execute(
                    insert(PL).returning(PL.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "owner": owner,
                            "message_id": m,
                            "kind": kind.value,
                            "dossier": dossier,
                            "origin": None,
                        }
                        for m in mids
                    ],
                )
                .scalars()
                .all()
            )
            conn.execute(
                insert(EN),
                [
                    {
                        "mailbox_id": b,
                        "uid": firsts[b][0] + i,
                        "message_id": m,
                        "placement_id": p,
                        "flags": encode_flags(flags),
                        "modseq": firsts[b][1],
                    }
                    for i, (m, p) in enumerate(zip(mids, pids, strict=True))
                    for b in boxes
                ],
            )
            return len(batch)

        total += storage.commits.run_now(work, batch)
    return total


def box_size(storage: Storage, owner: str, name: str) -> int:
    mb = schema.table(schema.Mailbox)
    with storage.reader.connect() as conn:
        box = conn.execute(select(mb.c.id).where(mb.c.owner == owner, mb.c.name == name)).scalar()
        if box is None:
            return 0
        return len(conn.execute(select(EN.c.uid).where(EN.c.mailbox_id == box)).all())
