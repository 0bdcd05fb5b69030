"""The audit log on both databases: record in the caller's transaction, query, the refusal queue."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from palais.mailbox.audit import GATEWAY_ACTOR, AuditAction, AuditRecord
from palais.storage import Storage, open_storage, schema
from palais.storage.audit import AuditLog, query, record
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)

AE = schema.table(schema.AuditEvent)


def write(storage: Storage, **fields: Any) -> None:
    """One event recorded in a writer job, as the operator's commands do."""

    def job(conn: Connection, _ctx: WriteContext) -> None:
        record(conn, **fields)

    asyncio.run(storage.commits.submit(job))


def count(storage: Storage) -> int:
    with storage.reader.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AE)).scalar_one())


def test_an_event_reads_back_as_written(storage: Storage) -> None:
    before = datetime.now(UTC)
    write(
        storage,
        actor="operator:alice",
        action=AuditAction.ACCOUNT_DEACTIVATED,
        subject="camille.dupont@avocats.example",
        reason="a quitté le barreau",
        detail={"role": "avocat", "n": 1},
    )
    [event] = list(query(storage.reader))
    assert isinstance(event, AuditRecord)
    assert event.actor == "operator:alice"
    assert event.action is AuditAction.ACCOUNT_DEACTIVATED
    assert event.subject == "camille.dupont@avocats.example"
    assert event.reason == "a quitté le barreau"
    assert event.detail == {"role": "avocat", "n": 1}
    assert event.listener is None and event.peer is None
    assert event.at.tzinfo is not None
    assert before - timedelta(seconds=1) <= event.at <= datetime.now(UTC) + timedelta(seconds=1)
    exported = event.as_json()
    assert exported["action"] == "account-deactivated"
    assert exported["at"] == event.at.isoformat()


def test_an_event_commits_and_rolls_back_with_its_change(storage: Storage) -> None:
    class Refused(Exception):
        pass

    def job(conn: Connection, _ctx: WriteContext) -> None:
        record(conn, actor="operator:bob", action=AuditAction.TRUST_ADDED, subject="CA 1")
        raise Refused()  # the change failed: its event must not stay behind

    with pytest.raises(Refused):
        asyncio.run(storage.commits.submit(job))
    assert count(storage) == 0


def test_an_unknown_action_is_refused(storage: Storage) -> None:
    with pytest.raises(ValueError), storage.writer_engine.connect() as conn:
        record(conn, actor="operator:x", action="account-renamed")


def test_query_filters_and_orders(storage: Storage) -> None:
    write(storage, actor="operator:a", action="trust-added", subject="CA 1")
    write(storage, actor="operator:a", action="account-deactivated", subject="x@avocats.example")
    middle = datetime.now(UTC)
    write(storage, actor="x@avocats.example", action="delegation-granted", subject="y@example")
    write(storage, actor="operator:a", action="account-reactivated", subject="x@avocats.example")

    everything = list(query(storage.reader))
    assert [e.action.value for e in everything] == [
        "trust-added",
        "account-deactivated",
        "delegation-granted",
        "account-reactivated",
    ]
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    # The account as subject or as actor, whatever its case.
    mine = list(query(storage.reader, account="X@Avocats.Example"))
    assert [e.action.value for e in mine] == [
        "account-deactivated",
        "delegation-granted",
        "account-reactivated",
    ]
    later = list(query(storage.reader, since=middle))
    assert [e.action.value for e in later] == ["delegation-granted", "account-reactivated"]
    # A naive date is UTC.
    naive = list(query(storage.reader, since=middle.replace(tzinfo=None)))
    assert [e.id for e in naive] == [e.id for e in later]
    # The same instant in another zone selects the same events.
    paris = middle.astimezone(pytest.importorskip("zoneinfo").ZoneInfo("Europe/Paris"))
    assert [e.id for e in query(storage.reader, since=paris)] == [e.id for e in later]
    assert list(query(storage.reader, since=datetime.now(UTC) + timedelta(minutes=1))) == []
    only = list(query(storage.reader, action=AuditAction.ACCOUNT_REACTIVATED))
    assert [e.subject for e in only] == ["x@avocats.example"]
    assert len(list(query(storage.reader, limit=2))) == 2


def test_refusals_are_queued_and_written_in_batches(storage: Storage) -> None:
    audit = AuditLog(storage.commits)
    batches_before = storage.commits.batches

    async def go() -> None:
        for n in range(50):
            audit.refused(
                AuditAction.CONNECTION_REFUSED,
                listener="smtps",
                peer=f"192.0.2.{n}:4000",
                reason="certificate verify failed",
                detail={"outcome": "tls-certificate"},
            )
        # Nothing was written on the loop: refused() only queues.
        assert audit.pending > 0
        await audit.close()

    asyncio.run(go())
    assert audit.written == 50 and audit.dropped == 0 and audit.pending == 0
    # Not one transaction per refusal.
    assert storage.commits.batches - batches_before < 50
    events = list(query(storage.reader, action="connection-refused"))
    assert len(events) == 50
    assert {e.actor for e in events} == {GATEWAY_ACTOR}
    assert events[0].peer == "192.0.2.0:4000" and events[0].listener == "smtps"
    assert events[0].detail == {"outcome": "tls-certificate"}


def test_a_command_refusal_names_the_account(storage: Storage) -> None:
    audit = AuditLog(storage.commits)

    async def go() -> None:
        audit.refused(
            AuditAction.COMMAND_REFUSED,
            listener="submission",
            peer="127.0.0.1:5000",
            reason="not a participant of dossier 2025-1",
            subject="camille@avocats.example",
            detail={"command": "RCPT"},
        )
        await audit.close()

    asyncio.run(go())
    [event] = list(query(storage.reader, account="camille@avocats.example"))
    assert event.action is AuditAction.COMMAND_REFUSED
    assert event.reason == "not a participant of dossier 2025-1"


def test_a_full_queue_drops_counts_and_says_so(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(storage.commits, capacity=5)
    # No running loop: nothing drains, the queue fills up.
    for n in range(8):
        audit.refused(AuditAction.CONNECTION_REFUSED, listener="imaps", peer=None, reason=f"r{n}")
    assert audit.pending == 5 and audit.dropped == 3
    with caplog.at_level(logging.WARNING, logger="palais.storage.audit"):
        asyncio.run(audit.close())
    assert audit.written == 5
    assert [e.reason for e in query(storage.reader)] == ["r0", "r1", "r2", "r3", "r4"]
    assert any("dropped count=3" in r.getMessage() for r in caplog.records)


def test_a_stopped_writer_drops_and_counts(tmp_path: Path) -> None:
    st = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs")
    try:
        audit = AuditLog(st.commits)  # the writer never started

        async def go() -> None:
            audit.refused(AuditAction.CONNECTION_REFUSED, listener="https", peer=None, reason="r")
            await audit.close()

        asyncio.run(go())
        assert audit.dropped == 1 and audit.written == 0
    finally:
        st.close()


def test_network_text_longer_than_its_column_is_cut(storage: Storage) -> None:
    audit = AuditLog(storage.commits)

    async def go() -> None:
        audit.refused(
            AuditAction.CONNECTION_REFUSED,
            listener="imaps",
            peer="[" + "f" * 200 + "]:1",
            reason="r",
            subject="a" * 400 + "@example",
        )
        await audit.close()

    asyncio.run(go())
    [event] = list(query(storage.reader))
    assert event.peer is not None and len(event.peer) == 80
    assert event.subject is not None and len(event.subject) == 320
