"""The real store's read side as the IMAP server uses it: entry tables kept and
brought forward, counts, header search — checked against the rows themselves."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from palais.mailbox.boxes import BoxKind
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import FlagMode, HeaderField
from palais.mailbox.ports import EntryTable
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, caches, open_storage
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext

ME = Identity(1, "a@x.test", Role.AVOCAT, "A", "f" * 64, "a@x.test")
OTHER = Identity(2, "b@x.test", Role.AVOCAT, "B", "e" * 64, "b@x.test")
GREFFE = "greffe@x.test"
CLERK = Identity(3, "clerk@x.test", Role.GREFFIER, "C", "d" * 64, GREFFE)
NUMBER = "2025-0000138"


DELETED = frozenset({"\\Deleted"})


def msg(n: int, subject: str = "sujet") -> bytes:
    return (
        f"From: a@x.test\r\nSubject: {subject} {n}\r\nMessage-ID: <{n}.{subject}@x>\r\n\r\n"
        f"corps {n}\r\n"
    ).encode()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs")

    def setup(conn: Connection, _ctx: WriteContext) -> None:
        me = Directory.add_account(conn, address=ME.address, role=Role.AVOCAT, display_name="A")
        Directory.add_account(conn, address=OTHER.address, role=Role.AVOCAT, display_name="B")
        service = Directory.add_service(conn, address=GREFFE, name="CPH", juridiction="CPH X")
        dossier = Directory.add_dossier(
            conn, number=NUMBER, address="d@x.test", juridiction="CPH X", service_id=service
        )
        Directory.add_participant(conn, dossier_id=dossier, account_id=me, capacity="avocat")

    st.commits.run_now(setup)
    st.start()
    try:
        yield st
    finally:
        st.close()


def _rows(path: Path, box_id: int) -> list[tuple[int, frozenset[str], int]]:
    with sqlite3.connect(path) as db:
        return [
            (uid, frozenset(flags.split()), modseq)
            for uid, flags, modseq in db.execute(
                "SELECT uid, flags, modseq FROM entry WHERE mailbox_id = ? ORDER BY uid",
                (box_id,),
            )
        ]


def _as_rows(table: EntryTable) -> list[tuple[int, frozenset[str], int]]:
    return [(e.uid, e.flags, e.modseq) for e in table]


def _check(table: EntryTable, rows: list[tuple[int, frozenset[str], int]]) -> None:
    assert _as_rows(table) == rows
    assert len(table) == len(rows)
    assert sum(table.counts) == len(rows)
    assert table.unseen == sum(1 for _, flags, _ in rows if "\\Seen" not in flags)
    first = next((i for i, (_, flags, _) in enumerate(rows) if "\\Seen" not in flags), None)
    assert table.first_unseen() == first
    assert table.highestmodseq >= max((m for _, _, m in rows), default=0)


def test_tables_follow_every_kind_of_change(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.sqlite"
    loads: list[int] = []
    real_load = caches.load_table

    def counting_load(*args: Any) -> EntryTable:
        loads.append(1)
        return real_load(*args)

    monkeypatch.setattr(caches, "load_table", counting_load)

    async def go() -> None:
        mail = storage.mail
        for n in range(6):
            flags = frozenset({"\\Seen"}) if n % 2 else frozenset()
            await mail.append(ME, "Brouillons", msg(n), flags, None)
        box = await mail.mailbox(ME, "Brouillons")
        first = await mail.entries(ME, box.id)
        _check(first, _rows(db, box.id))
        before = _as_rows(first)
        assert await mail.entries(ME, box.id) is first  # nothing changed: the same table
        assert len(loads) == 1

        await mail.store_flags(ME, box.id, [1, 3], FlagMode.ADD, frozenset({"\\Seen", "$Todo"}))
        await mail.append(ME, "Brouillons", msg(7), frozenset(), None)
        second = await mail.entries(ME, box.id)
        _check(second, _rows(db, box.id))
        assert _as_rows(first) == before  # tables already handed out never change

        await mail.store_flags(ME, box.id, [2, 5], FlagMode.ADD, frozenset({"\\Deleted"}))
        assert await mail.expunge(ME, box.id) == [2, 5]
        third = await mail.entries(ME, box.id)
        _check(third, _rows(db, box.id))
        assert [e.uid for e in third] == [1, 3, 4, 6, 7]
        assert len(loads) == 1  # all brought forward from the changed rows

        info = await mail.mailbox(ME, "Brouillons")
        assert (info.messages, info.unseen) == (len(third), third.unseen)
        assert info.highestmodseq == third.highestmodseq and info.uidnext == third.uidnext == 8

    asyncio.run(go())


def test_tables_follow_delivery_copy_and_move(storage: Storage, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    plan = FilingPlan(
        NUMBER,
        (
            Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(GREFFE, BoxKind.RECUS),
        ),
    )

    async def deliver(n: int) -> None:
        await storage.mail.file(ME, msg(n), summarize(msg(n)), plan)

    async def go() -> None:
        mail = storage.mail
        for n in range(3):
            await deliver(n)
        names = ("INBOX", f"Dossiers/{NUMBER}/Reçus", "Supprimés", "Envoyés")
        boxes = {name: (await mail.mailbox(CLERK, name)).id for name in names[:3]}
        sent = (await mail.mailbox(ME, "Envoyés")).id

        async def check() -> None:
            for name, box in boxes.items():
                table = await mail.entries(CLERK, box)
                _check(table, _rows(db, box))
                info = await mail.mailbox(CLERK, name)
                assert (info.messages, info.unseen) == (len(table), table.unseen)
            _check(await mail.entries(ME, sent), _rows(db, sent))

        await check()
        await deliver(3)
        await mail.store_flags(CLERK, boxes["INBOX"], [2], FlagMode.ADD, frozenset({"\\Seen"}))
        await check()  # the flag shows in the dossier's view too
        await mail.copy(CLERK, boxes["INBOX"], [1], "Supprimés")
        await mail.move(CLERK, boxes["INBOX"], [3], "Supprimés")
        await check()
        await mail.store_flags(CLERK, boxes["Supprimés"], [1, 2], FlagMode.ADD, DELETED)
        await mail.expunge(CLERK, boxes["Supprimés"])
        await deliver(4)
        await check()

    asyncio.run(go())


def test_a_change_made_elsewhere_is_seen(storage: Storage, tmp_path: Path) -> None:
    """Another process writes the same database: no event reaches us, the key tells."""
    db = tmp_path / "db.sqlite"

    async def go() -> None:
        mail = storage.mail
        for n in range(3):
            await mail.append(ME, "Brouillons", msg(n), frozenset(), None)
        box = await mail.mailbox(ME, "Brouillons")
        assert (box.messages, box.unseen) == (3, 3)
        table = await mail.entries(ME, box.id)
        with sqlite3.connect(db) as other:
            top = box.highestmodseq + 1
            other.execute(
                "UPDATE entry SET flags = '\\Seen', modseq = ? WHERE mailbox_id = ? AND uid = 2",
                (top, box.id),
            )
            other.execute("DELETE FROM entry WHERE mailbox_id = ? AND uid = 3", (box.id,))
            other.execute("UPDATE mailbox SET highestmodseq = ? WHERE id = ?", (top + 1, box.id))
        after = await mail.entries(ME, box.id)
        assert after is not table
        _check(after, _rows(db, box.id))
        info = await mail.mailbox(ME, "Brouillons")
        assert (info.messages, info.unseen) == (2, 1)

    asyncio.run(go())


def test_counts_without_a_table_are_remembered_by_key(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        await mail.append(ME, "Brouillons", msg(1), frozenset(), None)
        assert (await mail.mailbox(ME, "Brouillons")).unseen == 1
        box = await mail.mailbox(ME, "Brouillons")
        await mail.store_flags(ME, box.id, [1], FlagMode.ADD, frozenset({"\\Seen"}))
        assert (await mail.mailbox(ME, "Brouillons")).unseen == 0
        listed = {b.name: b for b in await mail.list_mailboxes(ME)}
        assert (listed["Brouillons"].messages, listed["Brouillons"].unseen) == (1, 0)

    asyncio.run(go())


def test_header_search_same_answer_either_way(storage: Storage) -> None:
    """A box with most of the messages is searched message table first, a small one by entry."""

    async def go() -> None:
        mail = storage.mail
        for n in range(12):
            subject = "Pourvoi" if n % 3 == 0 else "conclusions"
            await mail.append(OTHER, "Brouillons", msg(n, subject), frozenset(), None)
        await mail.append(ME, "Brouillons", msg(100, "pourvoi_x%"), frozenset(), None)
        await mail.append(ME, "Brouillons", msg(101, "autre"), frozenset(), None)
        big = await mail.mailbox(OTHER, "Brouillons")
        small = await mail.mailbox(ME, "Brouillons")
        assert await mail.search_header(OTHER, big.id, HeaderField.SUBJECT, "POURVOI") == {
            1,
            4,
            7,
            10,
        }
        assert await mail.search_header(ME, small.id, HeaderField.SUBJECT, "pourvoi") == {1}
        assert await mail.search_header(ME, small.id, HeaderField.SUBJECT, "_x%") == {1}
        assert await mail.search_header(ME, small.id, HeaderField.SUBJECT, "i_x") == {1}
        assert await mail.search_header(OTHER, big.id, HeaderField.SUBJECT, "i_x") == set()
        assert await mail.search_header(OTHER, big.id, HeaderField.MESSAGE_ID, "3.pourvoi@") == {4}

    asyncio.run(go())
