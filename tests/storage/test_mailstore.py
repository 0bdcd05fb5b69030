"""The mail store on a real SQLite file and pack segments."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, text

from palais.mailbox.boxes import BoxKind
from palais.mailbox.drafts import supersedes_drafts
from palais.mailbox.errors import CannotDoThat, NoSuchMailbox
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import EventKind, FlagMode, MailboxEvent, MessageRecord
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)

ME = Identity(1, "a@x.test", Role.AVOCAT, "A", "f" * 64, "a@x.test")
OTHER = Identity(2, "b@x.test", Role.AVOCAT, "B", "e" * 64, "b@x.test")
GREFFE = "greffe@x.test"
NUMBER = "2025-0000138"


DOSSIER_ADDRESS = "d@x.test"


def msg(n: int, body: str = "") -> bytes:
    return (
        f"From: a@x.test\r\nSubject: sujet {n}\r\nMessage-ID: <{n}@x>\r\n\r\ncorps {n}\r\n{body}"
    ).encode()


def setup_directory(conn: Connection, _ctx: WriteContext) -> None:
    """Two lawyers taking part in one dossier of a greffe service."""
    me = Directory.add_account(conn, address=ME.address, role=Role.AVOCAT, display_name="A")
    other = Directory.add_account(conn, address=OTHER.address, role=Role.AVOCAT, display_name="B")
    service = Directory.add_service(conn, address=GREFFE, name="CPH", juridiction="CPH X")
    dossier = Directory.add_dossier(
        conn, number=NUMBER, address=DOSSIER_ADDRESS, juridiction="CPH X", service_id=service
    )
    Directory.add_participant(conn, dossier_id=dossier, account_id=me, capacity="avocat")
    Directory.add_participant(conn, dossier_id=dossier, account_id=other, capacity="avocat")


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_append_fetch_and_bytes(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        res = await mail.append(ME, "Brouillons", msg(1), frozenset({"\\Flagged"}), None)
        assert res.uid == 1
        box = await mail.mailbox(ME, "Brouillons")
        assert (box.messages, box.unseen, box.uidnext) == (1, 1, 2)
        (rec,) = await mail.records(ME, box.id, [1, 99])
        assert await mail.read(rec.blob) == msg(1)
        assert (await mail.read_header(rec.blob, rec.header_size)).endswith(b"\r\n\r\n")
        assert rec.flags == frozenset({"\\Flagged"})

    run(go())


def test_records_of_a_selected_box_follow_its_changes(storage: Storage) -> None:
    """Records of a box whose entry table is kept come from that table and the
    facts kept per UID; they must show every later change all the same."""

    async def go() -> None:
        mail = storage.mail
        for n in range(1, 6):
            await mail.append(ME, "Brouillons", msg(n), frozenset(), None)
        box = await mail.mailbox(ME, "Brouillons")
        await mail.entries(ME, box.id)  # what SELECT does: the table is kept
        first = await mail.records(ME, box.id, [1, 2, 3, 4, 5, 6])
        assert [r.uid for r in first] == [1, 2, 3, 4, 5]
        await mail.store_flags(ME, box.id, [2], FlagMode.ADD, frozenset({"\\Deleted"}))
        await mail.store_flags(ME, box.id, [3], FlagMode.ADD, frozenset({"\\Flagged"}))
        assert await mail.expunge(ME, box.id) == [2]
        await mail.append(ME, "Brouillons", msg(6), frozenset({"\\Seen"}), None)
        await mail.entries(ME, box.id)
        again = {r.uid: r for r in await mail.records(ME, box.id, [1, 2, 3, 4, 5, 6])}
        assert sorted(again) == [1, 3, 4, 5, 6]
        assert again[3].flags == frozenset({"\\Flagged"}) and again[3].modseq > first[2].modseq
        assert again[6].flags == frozenset({"\\Seen"})
        assert await mail.read(again[6].blob) == msg(6)
        assert again[1] == first[0]
        # Only UIDs not seen before were looked up in the message rows.
        asked: list[list[int]] = []
        joined = mail._joined_records

        async def recording(mailbox_id: int, wanted: list[int]) -> list[MessageRecord]:
            asked.append(wanted)
            return await joined(mailbox_id, wanted)

        mail._joined_records = recording  # type: ignore[method-assign]
        await mail.records(ME, box.id, [1, 3, 4, 5, 6])
        assert asked == []

    run(go())


def test_boxes_are_private(storage: Storage) -> None:
    async def go() -> None:
        box = await storage.mail.mailbox(ME, "Brouillons")
        with pytest.raises(NoSuchMailbox):
            await storage.mail.entries(OTHER, box.id)

    run(go())


def test_store_flags_condstore(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        await mail.append(ME, "Brouillons", msg(1), frozenset(), None)
        await mail.append(ME, "Brouillons", msg(2), frozenset(), None)
        box = await mail.mailbox(ME, "Brouillons")
        r = await mail.store_flags(ME, box.id, [1, 2], FlagMode.ADD, frozenset({"\\Seen"}))
        assert [e.uid for e in r.updated] == [1, 2]
        modseq = r.updated[0].modseq
        r2 = await mail.store_flags(
            ME, box.id, [1], FlagMode.ADD, frozenset({"$Urgent"}), unchanged_since=modseq - 1
        )
        assert r2.modified == [1] and not r2.updated
        r3 = await mail.store_flags(
            ME, box.id, [1], FlagMode.REPLACE, frozenset(), unchanged_since=modseq
        )
        assert r3.updated[0].flags == frozenset() and r3.updated[0].modseq > modseq
        assert (await mail.mailbox(ME, "Brouillons")).unseen == 1

    run(go())


def test_expunge_erases_bytes(storage: Storage, tmp_path: Path) -> None:
    async def go() -> None:
        mail = storage.mail
        secret = msg(7) + b"SECRET-DOCUMENT\r\n"
        await mail.append(ME, "Brouillons", secret, frozenset({"\\Deleted"}), None)
        box = await mail.mailbox(ME, "Brouillons")
        events: list[MailboxEvent] = []
        unsubscribe = mail.subscribe(box.id, events.append)
        blob = (await mail.records(ME, box.id, [1]))[0].blob
        mail.remember(blob, "imap.envelope", b'("Mon" "SECRET-DOCUMENT" NIL)')
        assert mail.recall(blob, "imap.envelope") is not None
        assert await mail.expunge(ME, box.id) == [1]
        # Nothing derived from the erased bytes stays in memory either.
        assert mail.recall(blob, "imap.envelope") is None
        await asyncio.sleep(0.05)
        unsubscribe()
        assert [e.kind for e in events] == [EventKind.REMOVED]
        assert (await mail.mailbox(ME, "Brouillons")).messages == 0

    run(go())
    if storage.reader.dialect.name == "postgresql":
        # The bytes were a large object (palais.storage.pg_blobs): unlinked.
        with storage.reader.connect() as conn:
            left = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_largeobject"
                " WHERE position('SECRET-DOCUMENT'::bytea in data) > 0"
            ).scalar_one()
        assert left == 0
        return
    data = b"".join(p.read_bytes() for p in (tmp_path / "blobs").iterdir())
    assert b"SECRET-DOCUMENT" not in data


def _send(storage: Storage, n: int) -> None:
    plan = FilingPlan(
        NUMBER,
        (
            Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(GREFFE, BoxKind.RECUS),
        ),
    )
    asyncio.run(storage.mail.file(ME, msg(n), summarize(msg(n)), plan))


def test_message_shows_in_dossier_box_and_global_view(storage: Storage) -> None:
    _send(storage, 1)

    async def go() -> None:
        sent = await storage.mail.mailbox(ME, "Envoyés")
        dossier_sent = await storage.mail.mailbox(ME, f"Dossiers/{NUMBER}/Envoyés")
        assert sent.messages == dossier_sent.messages == 1
        assert sent.id != dossier_sent.id
        # A flag set in one view shows in the other.
        await storage.mail.store_flags(ME, sent.id, [1], FlagMode.ADD, frozenset({"\\Flagged"}))
        (rec,) = await storage.mail.records(ME, dossier_sent.id, [1])
        assert "\\Flagged" in rec.flags
        names = [b.name for b in await storage.mail.list_mailboxes(ME)]
        assert names[:5] == ["INBOX", "Envoyés", "Supprimés", "Brouillons", "Accusés de réception"]
        assert "Dossiers" in names and f"Dossiers/{NUMBER}/Reçus" in names

    run(go())


def test_delete_restore_and_refusals(storage: Storage) -> None:
    _send(storage, 1)

    async def go() -> None:
        mail = storage.mail
        sent = await mail.mailbox(ME, f"Dossiers/{NUMBER}/Envoyés")
        moved = await mail.move(ME, sent.id, [1], "Supprimés")
        assert moved.source_uids == [1] and len(moved.dest_uids) == 1
        assert (await mail.mailbox(ME, "Envoyés")).messages == 0
        assert (await mail.mailbox(ME, f"Dossiers/{NUMBER}/Supprimés")).messages == 1
        trash = await mail.mailbox(ME, "Supprimés")
        with pytest.raises(CannotDoThat):
            await mail.move(ME, trash.id, moved.dest_uids, "INBOX")
        back = await mail.move(ME, trash.id, moved.dest_uids, "Envoyés")
        assert back.dest_uids
        (rec,) = await mail.records(ME, (await mail.mailbox(ME, "Envoyés")).id, back.dest_uids)
        assert "\\Seen" in rec.flags  # flags kept
        with pytest.raises(CannotDoThat):
            await mail.move(ME, (await mail.mailbox(ME, "Envoyés")).id, back.dest_uids, "INBOX")

    run(go())


def test_expunge_outside_trash_deletes_to_trash(storage: Storage) -> None:
    _send(storage, 1)

    async def go() -> None:
        mail = storage.mail
        inbox = await mail.mailbox(OTHER, "INBOX")  # OTHER has nothing; use the service
        assert inbox.messages == 0
        who = Identity(3, "clerk@x.test", Role.GREFFIER, "C", "d" * 64, GREFFE)
        box = await mail.mailbox(who, "INBOX")
        await mail.store_flags(who, box.id, [1], FlagMode.ADD, frozenset({"\\Deleted"}))
        assert await mail.expunge(who, box.id) == [1]
        trash = await mail.mailbox(who, "Supprimés")
        assert trash.messages == 1
        (rec,) = await mail.records(who, trash.id, [1])
        assert "\\Deleted" not in rec.flags
        await mail.store_flags(who, trash.id, [1], FlagMode.ADD, frozenset({"\\Deleted"}))
        assert await mail.expunge(who, trash.id) == [1]
        assert (await mail.mailbox(who, f"Dossiers/{NUMBER}/Supprimés")).messages == 0

    run(go())


def test_sent_copy_append_is_recognised(storage: Storage) -> None:
    _send(storage, 5)

    async def go() -> None:
        sent = await storage.mail.mailbox(ME, "Envoyés")
        res = await storage.mail.append(ME, "Envoyés", msg(5), frozenset({"\\Seen"}), None)
        assert res.uid == 1 and (await storage.mail.mailbox(ME, "Envoyés")).messages == 1
        assert res.uidvalidity == sent.uidvalidity
        with pytest.raises(CannotDoThat):
            await storage.mail.append(ME, "Envoyés", msg(6), frozenset(), None)
        with pytest.raises(CannotDoThat):
            await storage.mail.append(ME, "INBOX", msg(6), frozenset(), None)

    run(go())


def test_sending_a_draft_removes_it(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        await mail.append(ME, f"Dossiers/{NUMBER}/Brouillons", msg(9), frozenset(), None)
        assert (await mail.mailbox(ME, "Brouillons")).messages == 1
        plan = FilingPlan(NUMBER, (Destination(ME.address, BoxKind.ENVOYES),))
        # A plan that supersedes no draft leaves it alone: storage decides nothing.
        await mail.file(ME, msg(9), summarize(msg(9)), plan)
        assert (await mail.mailbox(ME, "Brouillons")).messages == 1
        superseding = replace(plan, supersedes=supersedes_drafts(ME.mailbox_owner, "<9@x>"))
        await mail.file(ME, msg(9), summarize(msg(9)), superseding)
        assert (await mail.mailbox(ME, "Brouillons")).messages == 0
        assert (await mail.mailbox(ME, f"Dossiers/{NUMBER}/Brouillons")).messages == 0

    run(go())


def test_search_header_and_sent(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        for n in range(5):
            await mail.append(ME, "Brouillons", msg(n), frozenset(), None)
        box = await mail.mailbox(ME, "Brouillons")
        from palais.mailbox.model import HeaderField

        assert await mail.search_header(ME, box.id, HeaderField.SUBJECT, "SUJET 3") == {4}
        assert await mail.search_header(ME, box.id, HeaderField.SUBJECT, "%") == set()
        assert await mail.search_header(ME, box.id, HeaderField.SUBJECT, "_") == set()
        assert len(await mail.search_header(ME, box.id, HeaderField.FROM, "A@X")) == 5

    run(go())


def test_concurrent_filings_share_commits(storage: Storage) -> None:
    plan = FilingPlan(
        None, (Destination(ME.address, BoxKind.ENVOYES), Destination(OTHER.address, BoxKind.RECUS))
    )

    async def go() -> None:
        before = storage.commits.batches
        results = await asyncio.gather(
            *(storage.mail.file(ME, msg(n), summarize(msg(n)), plan) for n in range(200))
        )
        batches = storage.commits.batches - before
        assert len({r.message_id for r in results}) == 200
        assert batches < 100, batches
        inbox = await storage.mail.mailbox(OTHER, "INBOX")
        assert inbox.messages == 200
        uids = [e.uid for e in await storage.mail.entries(OTHER, inbox.id)]
        assert uids == list(range(1, 201))

    run(go())


def test_failed_job_does_not_spoil_batch(storage: Storage) -> None:
    async def go() -> None:
        def boom(conn: Connection, ctx: WriteContext) -> None:
            raise ValueError("refused")

        ok = storage.mail.append(ME, "Brouillons", msg(1), frozenset(), None)
        bad = storage.commits.submit(boom)
        res = await asyncio.gather(ok, bad, return_exceptions=True)
        assert isinstance(res[1], ValueError)
        assert (await storage.mail.mailbox(ME, "Brouillons")).messages == 1

    run(go())


def test_refused_job_inside_a_batch_leaves_nothing_behind(storage: Storage) -> None:
    async def go() -> None:
        gate = threading.Event()
        before = await storage.mail.mailbox(ME, "Brouillons")

        def hold(conn: Connection, ctx: WriteContext) -> None:
            gate.wait(10)

        def half(conn: Connection, ctx: WriteContext) -> None:
            conn.execute(
                text("UPDATE mailbox SET highestmodseq = highestmodseq + 1000 WHERE id = :id"),
                {"id": before.id},
            )
            raise ValueError("refused")

        held = asyncio.ensure_future(storage.commits.submit(hold))
        await asyncio.sleep(0.2)  # the writer is now inside the held job
        batches = storage.commits.batches
        first = storage.mail.append(ME, "Brouillons", msg(1), frozenset(), None)
        bad = storage.commits.submit(half)
        last = storage.mail.append(ME, "Brouillons", msg(2), frozenset(), None)
        pending = asyncio.gather(first, bad, last, return_exceptions=True)
        await asyncio.sleep(0.2)
        gate.set()
        await held
        res = await pending
        assert storage.commits.batches - batches == 2  # the held job, then the three
        assert isinstance(res[1], ValueError)
        after = await storage.mail.mailbox(ME, "Brouillons")
        assert after.messages == before.messages + 2
        assert after.highestmodseq < before.highestmodseq + 1000

    run(go())


def test_reads_on_a_database_server_never_hold_the_event_loop(
    storage: Storage, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL every statement of a read runs in a worker thread, not on the loop.

    On SQLite (in-process, microseconds) the small reads stay on the loop:
    a thread hop would cost more than the statement.
    """
    server = storage.reader.dialect.name != "sqlite"

    async def go() -> None:
        mail = storage.mail
        await mail.append(ME, "Brouillons", msg(1), frozenset(), None)
        loop_thread = threading.get_ident()
        threads: list[int] = []

        # Every statement of the reads goes through these two.
        for name in ("_read", "_read_raw"):
            original = getattr(mail, name)

            def recorded(fn: Any, _original: Any = original) -> Any:
                threads.append(threading.get_ident())
                return _original(fn)

            setattr(mail, name, recorded)
        box = await mail.mailbox(ME, "Brouillons")
        await mail.entries(ME, box.id)
        (rec,) = await mail.records(ME, box.id, [1])
        await mail.read(rec.blob)
        await mail.list_mailboxes(ME)
        await mail.expunge(ME, box.id, [1])
        on_loop = [t for t in threads if t == loop_thread]
        assert len(threads) >= 4
        if server:
            assert on_loop == [], "a read ran on the event loop"

    run(go())


def test_records_never_include_a_uid_not_asked_for(storage: Storage) -> None:
    """An asked UID expunged meanwhile must not let its unasked neighbour in (FETCH SERVERBUG)."""

    async def go() -> None:
        mail = storage.mail
        for i in range(1, 5):
            await mail.append(ME, "Brouillons", msg(i), frozenset(), None)
        box = await mail.mailbox(ME, "Brouillons")
        await mail.store_flags(ME, box.id, [2], FlagMode.ADD, frozenset({"\\Deleted"}))
        await mail.expunge(ME, box.id, [2])
        # UIDs 1, 2 and 4 asked: the range 1..4 now holds 1, 3 and 4.
        got = await mail._joined_records(box.id, [1, 2, 4])
        assert [r.uid for r in got] == [1, 4]

    run(go())
