"""The rules every ``MailAccess`` keeps, whatever it stores in.

One suite over the in-memory store the IMAP tests use (tests/imap/fake_store.py),
the SQL store on SQLite and on PostgreSQL: the protocol tests run against
the fake, so the fake must behave as the real store does. Only what both
do is here; the rules of the dossier boxes (where a message may move) are
the domain's, tested in tests/mailbox and tests/storage/test_plans.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from palais.mailbox.errors import CannotDoThat, NoSuchMailbox
from palais.mailbox.model import EventKind, FlagMode, HeaderField, MailboxEvent
from palais.mailbox.ports import MailAccess
from tests.imap.fake_store import FakeStore
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url, running_storage
from tests.storage.test_mailstore import ME

T = TypeVar("T")
BOX = "Brouillons"
SEEN = frozenset({"\\Seen"})
DELETED = frozenset({"\\Deleted"})


@pytest.fixture(params=["fake", *DATABASES])
def access(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MailAccess]:
    if request.param == "fake":
        yield FakeStore()
        return
    with running_storage(database_url(request, tmp_path), tmp_path / "blobs") as st:
        yield st.mail


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        return await make()

    return asyncio.run(go())


def msg(n: int) -> bytes:
    return (
        f"From: a@x.test\r\nTo: p@x.test\r\nSubject: Sujet {n}\r\n"
        f"Date: Fri, 14 Mar 2025 09:30:00 +0000\r\nMessage-ID: <{n}@x>\r\n\r\ncorps {n}\r\n"
    ).encode()


async def _fill(access: MailAccess, count: int, flags: frozenset[str] = frozenset()) -> int:
    for n in range(1, count + 1):
        await access.append(ME, BOX, msg(n), flags, None)
    return (await access.mailbox(ME, BOX)).id


def test_an_unknown_box_is_no_such_mailbox(access: MailAccess) -> None:
    with pytest.raises(NoSuchMailbox):
        run(lambda: access.mailbox(ME, "Nulle part"))


def test_appended_messages_take_ascending_uids_and_are_counted(access: MailAccess) -> None:
    async def go() -> None:
        uids = [(await access.append(ME, BOX, msg(n), SEEN, None)).uid for n in (1, 2)]
        uids.append((await access.append(ME, BOX, msg(3), frozenset(), None)).uid)
        assert uids == sorted(uids) and len(set(uids)) == 3
        info = await access.mailbox(ME, BOX)
        assert (info.messages, info.unseen) == (3, 1)
        assert info.uidnext > uids[-1]
        table = await access.entries(ME, info.id)
        assert [(e.uid, e.flags) for e in table] == [
            (uids[0], SEEN),
            (uids[1], SEEN),
            (uids[2], frozenset()),
        ]

    run(go)


def test_records_and_bytes(access: MailAccess) -> None:
    async def go() -> None:
        box = await _fill(access, 2)
        records = await access.records(ME, box, [2, 99, 1])
        assert [r.uid for r in records] == [1, 2]  # UID order, unknown skipped
        assert records[0].size == len(msg(1))
        assert await access.read(records[0].blob) == msg(1)
        header = await access.read_header(records[1].blob, records[1].header_size)
        assert header.startswith(b"From: a@x.test") and b"corps" not in header

    run(go)


@pytest.mark.parametrize(
    ("mode", "given", "expected"),
    [
        (FlagMode.ADD, frozenset({"$a"}), frozenset({"\\Seen", "$a"})),
        (FlagMode.REMOVE, SEEN, frozenset()),
        (FlagMode.REPLACE, frozenset({"$a"}), frozenset({"$a"})),
    ],
)
def test_store_flags_modes(
    access: MailAccess, mode: FlagMode, given: frozenset[str], expected: frozenset[str]
) -> None:
    async def go() -> None:
        box = await _fill(access, 1, SEEN)
        before = await access.mailbox(ME, BOX)
        result = await access.store_flags(ME, box, [1], mode, given)
        assert [(e.uid, e.flags) for e in result.updated] == [(1, expected)]
        assert result.updated[0].modseq > before.highestmodseq
        assert (await access.records(ME, box, [1]))[0].flags == expected

    run(go)


def test_an_unchanged_entry_is_not_written(access: MailAccess) -> None:
    async def go() -> None:
        box = await _fill(access, 1, SEEN)
        before = (await access.records(ME, box, [1]))[0].modseq
        result = await access.store_flags(ME, box, [1], FlagMode.ADD, SEEN)
        assert result.updated == [] and result.modified == []
        assert (await access.records(ME, box, [1]))[0].modseq == before

    run(go)


def test_unchangedsince_refuses_entries_changed_since(access: MailAccess) -> None:
    async def go() -> None:
        box = await _fill(access, 2)
        first = await access.store_flags(ME, box, [1], FlagMode.ADD, frozenset({"$a"}))
        since = first.updated[0].modseq - 1
        result = await access.store_flags(ME, box, [1, 2], FlagMode.ADD, SEEN, since)
        assert result.modified == [1]
        assert [e.uid for e in result.updated] == [2]

    run(go)


@pytest.mark.parametrize("flag", ["\\Recent", "a b"])
def test_flags_that_cannot_be_stored_are_refused(access: MailAccess, flag: str) -> None:
    async def go() -> None:
        box = await _fill(access, 1)
        with pytest.raises(CannotDoThat):
            await access.store_flags(ME, box, [1], FlagMode.ADD, frozenset({flag}))

    run(go)


def test_expunge_removes_deleted_entries_among_those_asked(access: MailAccess) -> None:
    async def go() -> None:
        box = await _fill(access, 4)
        await access.store_flags(ME, box, [1, 3, 4], FlagMode.ADD, DELETED)
        assert await access.expunge(ME, box, [4, 3, 2]) == [3, 4]
        assert [e.uid for e in await access.entries(ME, box)] == [1, 2]
        assert await access.expunge(ME, box) == [1]
        assert await access.expunge(ME, box) == []
        assert (await access.mailbox(ME, BOX)).messages == 1

    run(go)


def test_watchers_hear_of_arrivals_flag_changes_and_removals(access: MailAccess) -> None:
    async def go() -> None:
        box = await _fill(access, 1)
        heard: list[MailboxEvent] = []
        unsubscribe = access.subscribe(box, heard.append)
        await access.append(ME, BOX, msg(2), frozenset(), None)
        await access.store_flags(ME, box, [1], FlagMode.ADD, DELETED)
        await access.expunge(ME, box)
        await asyncio.sleep(0.05)  # a store may publish on the loop, after its commit
        unsubscribe()
        await access.append(ME, BOX, msg(3), frozenset(), None)
        await asyncio.sleep(0.05)
        assert [(e.kind, e.uid) for e in heard] == [
            (EventKind.ARRIVED, 2),
            (EventKind.FLAGS_CHANGED, 1),
            (EventKind.REMOVED, 1),
        ]
        assert heard[1].flags == DELETED

    run(go)


def test_search_header_ignores_case(access: MailAccess) -> None:
    async def go() -> None:
        box = await _fill(access, 3)
        assert await access.search_header(ME, box, HeaderField.SUBJECT, "SUJET 2") == {2}
        assert await access.search_header(ME, box, HeaderField.TO, "P@X") == {1, 2, 3}
        assert await access.search_header(ME, box, HeaderField.SUBJECT, "absent") == set()

    run(go)
