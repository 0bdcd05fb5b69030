"""The mail store on a real SQLite file and pack segments."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import FlagMode, MailboxEvent
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, open_storage
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext

ME = Identity(1, "a@x.test", Role.AVOCAT, "A", "f" * 64, "a@x.test")
OTHER = Identity(2, "b@x.test", Role.AVOCAT, "B", "e" * 64, "b@x.test")


def msg(n: int) -> bytes:
    return (
        f"From: a@x.test\r\nSubject: sujet {n}\r\nMessage-ID: <{n}@x>\r\n\r\ncorps {n}\r\n".encode()
    )


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs")

    def setup(conn: Connection, _ctx: WriteContext) -> None:
        Directory.add_account(conn, address=ME.address, role=Role.AVOCAT, display_name="A")
        Directory.add_account(conn, address=OTHER.address, role=Role.AVOCAT, display_name="B")

    st.commits.run_now(setup)
    st.start()
    try:
        yield st
    finally:
        st.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_append_fetch_and_bytes(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        res = await mail.append(ME, "INBOX", msg(1), frozenset({"\\Flagged"}), None)
        assert res.uid == 1
        box = await mail.mailbox(ME, "inbox")
        assert (box.messages, box.unseen, box.uidnext) == (1, 1, 2)
        (rec,) = await mail.records(ME, box.id, [1, 99])
        assert await mail.read(rec.blob) == msg(1)
        assert (await mail.read_header(rec.blob, rec.header_size)).endswith(b"\r\n\r\n")
        assert rec.flags == frozenset({"\\Flagged"})

    run(go())


def test_boxes_are_private(storage: Storage) -> None:
    async def go() -> None:
        box = await storage.mail.mailbox(ME, "INBOX")
        with pytest.raises(NoSuchMailbox):
            await storage.mail.entries(OTHER, box.id)

    run(go())


def test_store_flags_condstore(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        await mail.append(ME, "INBOX", msg(1), frozenset(), None)
        await mail.append(ME, "INBOX", msg(2), frozenset(), None)
        box = await mail.mailbox(ME, "INBOX")
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
        assert (await mail.mailbox(ME, "INBOX")).unseen == 1

    run(go())


def test_expunge_erases_bytes(storage: Storage, tmp_path: Path) -> None:
    async def go() -> None:
        mail = storage.mail
        secret = msg(7) + b"SECRET-DOCUMENT\r\n"
        await mail.append(ME, "INBOX", secret, frozenset({"\\Deleted"}), None)
        box = await mail.mailbox(ME, "INBOX")
        events: list[MailboxEvent] = []
        unsubscribe = mail.subscribe(box.id, events.append)
        assert await mail.expunge(ME, box.id) == [1]
        await asyncio.sleep(0.05)
        unsubscribe()
        assert [e.kind for e in events] == ["expunge"]
        assert (await mail.mailbox(ME, "INBOX")).messages == 0

    run(go())
    data = b"".join(p.read_bytes() for p in (tmp_path / "blobs").iterdir())
    assert b"SECRET-DOCUMENT" not in data


def test_copy_keeps_one_message_and_move_removes_source(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        await mail.append(ME, "INBOX", msg(1), frozenset({"\\Seen"}), None)
        inbox = await mail.mailbox(ME, "INBOX")
        c = await mail.copy(ME, inbox.id, [1], "Supprimés")
        assert c.dest_uids == [1]
        m = await mail.move(ME, inbox.id, [1], "Envoyés")
        assert m.source_uids == [1] and m.dest_uids == [1]
        assert (await mail.mailbox(ME, "INBOX")).messages == 0
        sent = await mail.mailbox(ME, "Envoyés")
        (rec,) = await mail.records(ME, sent.id, [1])
        assert rec.flags == frozenset({"\\Seen"})
        with pytest.raises(NoSuchMailbox):
            await mail.copy(ME, sent.id, [1], "Nulle part")

    run(go())


def test_search_header_and_sent(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        for n in range(5):
            await mail.append(ME, "INBOX", msg(n), frozenset(), None)
        box = await mail.mailbox(ME, "INBOX")
        from palais.mailbox.model import HeaderField

        assert await mail.search_header(ME, box.id, HeaderField.SUBJECT, "SUJET 3") == {4}
        assert await mail.search_header(ME, box.id, HeaderField.SUBJECT, "%") == set()
        assert len(await mail.search_header(ME, box.id, HeaderField.FROM, "a@x")) == 5

    run(go())


def test_concurrent_filings_share_commits(storage: Storage) -> None:
    plan = FilingPlan(
        None, (Destination(ME.address, "Envoyés"), Destination(OTHER.address, "INBOX"))
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

        ok = storage.mail.append(ME, "INBOX", msg(1), frozenset(), None)
        bad = storage.commits.submit(boom)
        res = await asyncio.gather(ok, bad, return_exceptions=True)
        assert isinstance(res[1], ValueError)
        assert (await storage.mail.mailbox(ME, "INBOX")).messages == 1

    run(go())
