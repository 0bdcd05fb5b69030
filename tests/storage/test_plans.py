"""Storage carries plans out whole: the records a plan carries commit with it,
and each kind of step leaves both views consistent. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from sqlalchemy import Connection, text

from palais.mailbox.boxes import BoxRef
from palais.mailbox.deletion import plan_move
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.filing import CommittedRecord
from palais.mailbox.flags import plan_flag_change
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind, FlagMode
from palais.storage import Storage
from palais.storage.mailstore import MailStore
from palais.storage.placement import (
    RecordWriters,
    carry_out_flags,
    carry_out_steps,
    flagged_entries,
    held_placements,
)
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, msg
from tests.storage.test_resend import PLAN

CLERK = Identity(3, "clerk@x.test", Role.GREFFIER, "C", "d" * 64, GREFFE)


@dataclass(frozen=True, slots=True)
class _Deposit(CommittedRecord):
    """Stands for the deposit receipt's log entry of the receipts issue."""

    label: str


@dataclass(frozen=True, slots=True)
class _Unknown(CommittedRecord):
    label: str


def _store(st: Storage, writers: RecordWriters) -> MailStore:
    return MailStore(st.reader, st.commits, st.blobs, st.hub, records=writers)


def _count(st: Storage, sql: str) -> int:
    with st.reader.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_a_plans_records_are_written_in_its_transaction(storage: Storage) -> None:
    written: list[tuple[str, int]] = []

    def write(conn: Connection, _ctx: WriteContext, record: _Deposit) -> None:
        # The filing's rows are there, uncommitted: the same transaction.
        n = conn.execute(text("SELECT count(*) FROM message")).scalar_one()
        written.append((record.label, int(n)))

    mail = _store(storage, {_Deposit: write})
    plan = replace(PLAN, records=(_Deposit("deposit"),))
    asyncio.run(mail.file(ME, msg(1), summarize(msg(1)), plan))
    assert written == [("deposit", 1)]


def test_a_record_that_fails_takes_the_filing_with_it(storage: Storage) -> None:
    def write(_conn: Connection, _ctx: WriteContext, _record: _Deposit) -> None:
        raise OSError("log unavailable")

    mail = _store(storage, {_Deposit: write})
    plan = replace(PLAN, records=(_Deposit("deposit"),))
    with pytest.raises(OSError):
        asyncio.run(mail.file(ME, msg(1), summarize(msg(1)), plan))
    assert _count(storage, "SELECT count(*) FROM message") == 0
    assert _count(storage, "SELECT count(*) FROM entry") == 0


def test_a_record_kind_storage_cannot_write_files_nothing(storage: Storage) -> None:
    mail = _store(storage, {})
    plan = replace(PLAN, records=(_Unknown("x"),))
    with pytest.raises(TypeError):
        asyncio.run(mail.file(ME, msg(1), summarize(msg(1)), plan))
    assert _count(storage, "SELECT count(*) FROM placement") == 0


def test_expunge_of_a_message_already_in_supprimes_leaves_one_copy_there(
    storage: Storage,
) -> None:
    asyncio.run(storage.mail.file(ME, msg(1), summarize(msg(1)), PLAN))

    async def go() -> None:
        mail = storage.mail
        inbox = await mail.mailbox(CLERK, "INBOX")
        copied = await mail.copy(CLERK, inbox.id, [1], "Supprimés")
        assert len(copied.dest_uids) == 1
        await mail.store_flags(CLERK, inbox.id, [1], FlagMode.ADD, frozenset({"\\Deleted"}))
        assert await mail.expunge(CLERK, inbox.id) == [1]
        assert (await mail.mailbox(CLERK, "INBOX")).messages == 0
        assert (await mail.mailbox(CLERK, f"Dossiers/{NUMBER}/Reçus")).messages == 0
        assert (await mail.mailbox(CLERK, "Supprimés")).messages == 1

    asyncio.run(go())
    assert _count(storage, "SELECT count(*) FROM message") == 1  # still held


def test_a_flag_change_takes_one_modseq_per_view(storage: Storage) -> None:
    for n in (1, 2):
        asyncio.run(storage.mail.file(ME, msg(n), summarize(msg(n)), PLAN))

    async def go() -> None:
        mail = storage.mail
        sent = await mail.mailbox(ME, "Envoyés")
        other = await mail.mailbox(ME, f"Dossiers/{NUMBER}/Envoyés")
        result = await mail.store_flags(ME, sent.id, [1, 2], FlagMode.ADD, frozenset({"$x"}))
        assert {e.modseq for e in result.updated} == {sent.highestmodseq + 1}
        records = await mail.records(ME, other.id, [1, 2])
        assert all("$x" in r.flags for r in records)
        assert {r.modseq for r in records} == {other.highestmodseq + 1}
        assert (await mail.mailbox(ME, f"Dossiers/{NUMBER}/Envoyés")).highestmodseq == (
            other.highestmodseq + 1
        )

    asyncio.run(go())


def test_a_refused_move_changes_nothing(storage: Storage) -> None:
    asyncio.run(storage.mail.file(ME, msg(1), summarize(msg(1)), PLAN))
    asyncio.run(storage.mail.file(ME, msg(2), summarize(msg(2)), PLAN))

    async def go() -> None:
        mail = storage.mail
        sent = await mail.mailbox(ME, "Envoyés")
        trash = await mail.mailbox(ME, "Supprimés")
        moved = await mail.move(ME, sent.id, [1], "Supprimés")
        # One of the two may not go to INBOX (it came from Envoyés): neither moves.
        with pytest.raises(CannotDoThat):
            await mail.move(ME, trash.id, moved.dest_uids, "INBOX")
        assert (await mail.mailbox(ME, "Supprimés")).messages == 1

    asyncio.run(go())


def _failing(_conn: Connection, _ctx: WriteContext, _record: _Deposit) -> None:
    raise OSError("log unavailable")


def test_a_flag_plans_records_commit_with_its_changes(storage: Storage) -> None:
    asyncio.run(storage.mail.file(ME, msg(1), summarize(msg(1)), PLAN))
    written: list[str] = []

    def record(_conn: Connection, _ctx: WriteContext, r: _Deposit) -> None:
        written.append(r.label)

    async def go() -> None:
        mail = storage.mail
        sent = (await mail.mailbox(ME, "Envoyés")).id

        def job(writers: RecordWriters) -> Callable[[Connection, WriteContext], object]:
            def work(conn: Connection, ctx: WriteContext) -> object:
                found = flagged_entries(conn, sent, [1])
                plan = plan_flag_change(found, FlagMode.ADD, frozenset({"$read"}))
                plan = replace(plan, records=(_Deposit("first read"),))
                return carry_out_flags(conn, ctx, sent, plan, writers)

            return work

        with pytest.raises(OSError):
            await storage.commits.submit(job({_Deposit: _failing}))
        assert "$read" not in (await mail.records(ME, sent, [1]))[0].flags
        await storage.commits.submit(job({_Deposit: record}))
        assert "$read" in (await mail.records(ME, sent, [1]))[0].flags
        assert written == ["first read"]

    asyncio.run(go())


def test_a_move_plans_records_commit_with_its_steps(storage: Storage) -> None:
    asyncio.run(storage.mail.file(ME, msg(1), summarize(msg(1)), PLAN))

    async def go() -> None:
        mail = storage.mail
        sent = (await mail.mailbox(ME, "Envoyés")).id

        def work(conn: Connection, ctx: WriteContext) -> object:
            plan = plan_move(held_placements(conn, sent, [1]), BoxRef(BoxKind.SUPPRIMES, None))
            plan = replace(plan, records=(_Deposit("deleted"),))
            return carry_out_steps(conn, ctx, ME.mailbox_owner, plan, {_Deposit: _failing})

        with pytest.raises(OSError):
            await storage.commits.submit(work)
        assert (await mail.mailbox(ME, "Envoyés")).messages == 1
        assert (await mail.mailbox(ME, "Supprimés")).messages == 0

    asyncio.run(go())
