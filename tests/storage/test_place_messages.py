"""Several messages placed in the same statements (a batch's receipt mails):
consecutive UIDs and MODSEQs per box, both views, one event each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import Connection

from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind, EventKind
from palais.storage import Storage
from palais.storage.messages import NewMessage, insert_messages
from palais.storage.placement import place_messages
from palais.storage.rows import rows_for
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import ME, NUMBER, OTHER, msg


def test_several_messages_in_one_box_get_consecutive_uids_and_modseqs(storage: Storage) -> None:
    datas = [msg(n) for n in range(3)]

    def work(conn: Connection, ctx: WriteContext) -> tuple[list[int], list[list[dict[int, int]]]]:
        before = rows_for(conn).all(
            "SELECT id, uidnext, highestmodseq FROM mailbox WHERE owner = ? AND kind = ?",
            (ME.address, BoxKind.ACCUSES.value),
        )
        ctx.batch["before"] = {int(b): (int(u), int(m)) for b, u, m in before}
        now = datetime.now(UTC)
        new = [
            NewMessage(sha, ctx.locations[sha], summarize(data), now, "x@y", "0" * 64, None)
            for data in datas
            for sha in [ctx.sha256(data)]
        ]
        ids = insert_messages(conn, new)
        holders = [(ME.address, BoxKind.ACCUSES, frozenset[str]())]
        # The last one also goes to the other lawyer: boxes with one and with three.
        placed = place_messages(
            conn,
            ctx,
            [
                (ids[0], NUMBER, holders),
                (ids[1], NUMBER, holders),
                (ids[2], NUMBER, [*holders, (OTHER.address, BoxKind.ACCUSES, frozenset())]),
            ],
        )
        return ids, placed

    ctx_events: list[tuple[int, int, int]] = []

    def run(conn: Connection, ctx: WriteContext) -> tuple[list[int], list[list[dict[int, int]]]]:
        result = work(conn, ctx)
        before: dict[int, tuple[int, int]] = ctx.batch["before"]
        for ev in ctx.events:
            assert ev.kind is EventKind.ARRIVED
            ctx_events.append((ev.mailbox_id, ev.uid, ev.modseq or 0))
        after = {
            int(b): (int(u), int(m))
            for b, u, m in rows_for(conn).all(
                "SELECT id, uidnext, highestmodseq FROM mailbox WHERE owner = ? AND kind = ?",
                (ME.address, BoxKind.ACCUSES.value),
            )
        }
        for box, (uidnext, modseq) in before.items():
            assert after[box] == (uidnext + 3, modseq + 3)
            got = sorted((uid, m) for b, uid, m in ctx_events if b == box)
            assert got == [(uidnext + i, modseq + 1 + i) for i in range(3)]
        return result

    ids, placed = asyncio.run(storage.commits.submit(run, datas))
    assert len(set(ids)) == 3
    # Each of my placements is in the global view and the dossier's.
    assert [len(p[0]) for p in placed] == [2, 2, 2]
    assert len(placed[2][1]) == 2  # the other lawyer's, both views
    assert len(ctx_events) == 8
