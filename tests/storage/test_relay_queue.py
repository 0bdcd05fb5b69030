"""The relay queue on SQLite and PostgreSQL: written with the filing, leased,
finished once, given up with a non-delivery receipt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from palais.mailbox.message import summarize
from palais.mailbox.relay import RelayOrder
from palais.pki.devpki import create_dev_pki
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.signing import FileKey, load_file_key
from palais.storage import Storage, open_storage
from palais.storage.mailstore import FiledMessage
from palais.storage.relay_queue import SqlRelayQueue, write_relay_order
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url
from tests.storage.test_mailstore import ME, msg, setup_directory
from tests.storage.test_receipts import _plan

COURT = "portalis@x.test"
_EVIDENCE = "SELECT evidence FROM evidence_log ORDER BY position"


@pytest.fixture(scope="module")
def evidence_key(tmp_path_factory: pytest.TempPathFactory) -> FileKey:
    pki = create_dev_pki(tmp_path_factory.mktemp("pki") / "pki")
    return load_file_key(pki.evidence_cert_path, pki.evidence_key_path)


@pytest.fixture(params=DATABASES)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, evidence_key: FileKey
) -> Iterator[Storage]:
    service = KeyEvidenceService(evidence_key, domain="palais.test")
    st = open_storage(database_url(request, tmp_path), tmp_path / "blobs", evidence=service)
    st.commits.run_now(setup_directory)
    st.start()
    try:
        yield st
    finally:
        st.close()


def _file(st: Storage, data: bytes) -> FiledMessage:
    st.mail.add_record_writer(RelayOrder, write_relay_order)
    plan = _plan(datetime.now(UTC))
    plan = replace(plan, records=(*plan.records, RelayOrder(COURT, ME.address)))
    return asyncio.run(st.mail.file(ME, data, summarize(data), plan))


def _rows(st: Storage, sql: str) -> list[tuple[object, ...]]:
    with st.reader.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _refcount(st: Storage, sha: str) -> int:
    ((count,),) = _rows(st, f"SELECT refcount FROM blob WHERE sha256 = '{sha}'")
    assert isinstance(count, int)
    return count


def test_a_filing_queues_its_relay_and_the_queue_holds_the_bytes(store: Storage) -> None:
    filed = _file(store, msg(1))
    assert _rows(
        store, "SELECT message_id, recipient, sender, message_ident, state FROM relay_queue"
    ) == [(filed.message_id, COURT, ME.address, "<1@x>", "pending")]
    assert _refcount(store, filed.sha256) == 2  # the message and the queue row
    queue = SqlRelayQueue(store.commits, store.mail)

    async def go() -> None:
        count, oldest = await queue.backlog()
        assert count == 1 and oldest is not None and oldest.tzinfo is not None
        assert abs((datetime.now(UTC) - oldest).total_seconds()) < 60
        (item,) = await queue.claim(10)
        assert await queue.backlog() == (1, oldest)  # leased, not sent yet
        assert (item.message, item.blob, item.message_id) == (
            filed.message_id,
            filed.sha256,
            "<1@x>",
        )
        assert await queue.read(item) == msg(1)
        assert await queue.claim(10) == []  # leased
        await queue.delivered(item)
        await queue.delivered(item)  # a second mark changes nothing
        assert await queue.claim(10) == []
        assert await queue.backlog() == (0, None)

    asyncio.run(go())
    assert _rows(store, "SELECT state, failures FROM relay_queue") == [("sent", 0)]
    assert _refcount(store, filed.sha256) == 1
    # The deposit receipt delivered to the greffe only; the 250 is the court's remise.
    logged = [json.loads(str(e)) for (e,) in _rows(store, _EVIDENCE)]
    assert [[e["code"] for e in doc["events"]] for doc in logged] == [
        ["depot", "remise"],
        ["remise"],
    ]
    (event,) = logged[1]["events"]
    assert [r["address"] for r in event["recipients"]] == [COURT]


def test_a_retry_waits_for_its_instant(store: Storage) -> None:
    _file(store, msg(1))
    queue = SqlRelayQueue(store.commits, store.mail)

    async def later() -> None:
        (item,) = await queue.claim(10)
        await queue.retry(item, datetime.now(UTC) + timedelta(hours=1), "ConnectionRefusedError")
        assert await queue.claim(10) == []  # not due for an hour

    asyncio.run(later())
    assert _rows(store, "SELECT state, failures, last_error FROM relay_queue") == [
        ("pending", 1, "ConnectionRefusedError")
    ]
    with store.writer_engine.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(text("UPDATE relay_queue SET next_attempt = :t"), {"t": past})

    async def due() -> None:
        (item,) = await queue.claim(10)
        assert item.failures == 1

    asyncio.run(due())


def test_a_give_up_is_final_and_sends_the_sender_a_non_delivery_receipt(store: Storage) -> None:
    filed = _file(store, msg(1))
    queue = SqlRelayQueue(store.commits, store.mail)

    async def go() -> None:
        (item,) = await queue.claim(10)
        await queue.give_up(item, "Refusé par le système de la juridiction : 550 5.1.1 inconnu")
        assert await queue.claim(10) == []

    asyncio.run(go())
    assert _rows(store, "SELECT state, failures FROM relay_queue") == [("failed", 1)]
    logged = [
        (json.loads(str(e)), h)
        for e, h in _rows(store, "SELECT evidence, holder FROM evidence_log ORDER BY position")
    ]
    assert [[e["code"] for e in doc["events"]] for doc, _ in logged] == [
        ["depot", "remise"],
        ["non-remise"],
    ]
    doc, holder = logged[1]
    assert holder == ME.address
    (event,) = doc["events"]
    assert "550 5.1.1 inconnu" in event["reason"]
    assert [p["address"] for p in event["recipients"]] == [COURT]
    assert doc["message"]["sha256"] == filed.sha256
    assert _refcount(store, filed.sha256) == 1


def test_a_lease_run_out_lets_another_node_take_the_row_and_only_it_finishes(
    store: Storage,
) -> None:
    _file(store, msg(1))
    crashed = SqlRelayQueue(store.commits, store.mail, lease=0.0, node="a")
    other = SqlRelayQueue(store.commits, store.mail, lease=600.0, node="b")

    async def go() -> None:
        (first,) = await crashed.claim(10)
        (second,) = await other.claim(10)  # the first node's lease is over
        assert first.id == second.id
        await crashed.delivered(first)  # too late: not its row any more
        assert _rows(store, "SELECT state FROM relay_queue") == [("pending",)]
        await other.delivered(second)

    asyncio.run(go())
    assert _rows(store, "SELECT state FROM relay_queue") == [("sent",)]


def test_two_nodes_claim_disjoint_rows(store: Storage, tmp_path: Path) -> None:
    for n in range(6):
        _file(store, msg(n))
    url = store.reader.url.render_as_string(hide_password=False)
    if url.startswith("sqlite"):
        nodes = [store, store]  # SQLite: one process writes, the writer is the lock
        second = None
    else:
        second = open_storage(url, tmp_path / "blobs2")
        second.start()
        nodes = [store, second]
    try:
        queues = [SqlRelayQueue(n.commits, n.mail, node=f"n{i}") for i, n in enumerate(nodes)]

        async def go() -> list[int]:
            claimed = await asyncio.gather(*(q.claim(4) for q in queues))
            return [i.id for batch in claimed for i in batch]

        ids = asyncio.run(go())
        assert len(ids) == 6 and len(set(ids)) == 6
    finally:
        if second is not None:
            second.close()


def test_a_node_restarting_takes_back_the_rows_it_was_sending(store: Storage) -> None:
    _file(store, msg(1))
    _file(store, msg(2))
    before = SqlRelayQueue(store.commits, store.mail, node="n1")
    neighbour = SqlRelayQueue(store.commits, store.mail, node="n2")
    after = SqlRelayQueue(store.commits, store.mail, node="n1")

    async def go() -> None:
        (mine,) = await before.claim(1)  # then the process dies, its lease running
        (theirs,) = await neighbour.claim(1)
        assert await after.claim(10) == []
        assert await after.resume() == 1  # its own previous life's, not n2's
        (again,) = await after.claim(10)
        assert again.id == mine.id != theirs.id

    asyncio.run(go())
