"""SMTP ingest's filings carried out by a process of their own, beside the gateway's writer.

A real filing process is spawned on a SQLite file (its own interpreter, its
own evidence service, its own blob segment); what it leaves must be what
the gateway's writer leaves, the two writers must keep one order (UIDs,
the evidence log), and a process that dies must cost no accepted message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import text

from palais.mailbox.delegation import ActedFor
from palais.mailbox.errors import TemporaryFailure
from palais.mailbox.message import summarize
from palais.mailbox.model import MailboxEvent
from palais.pki.devpki import DevPki
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.signing import load_file_key
from palais.storage import Storage
from palais.storage.filing_process import FilingProcess, _portable
from palais.storage.filings import Filing
from tests.storage import test_filing_runs
from tests.storage.test_filing_runs import SINCE, _open, _plan, _state, _submissions
from tests.storage.test_mailstore import GREFFE, ME, msg


def evidence_service(certificate: Path, key: Path) -> KeyEvidenceService:
    """What the process calls to make its evidence service (module level:
    it crosses to a spawned interpreter)."""
    service = KeyEvidenceService(load_file_key(certificate, key), domain="palais.test", worker=True)
    assert service.worker is not None
    service.worker.start()
    return service


# That module's development PKI (once a module) and reference store.
pki = test_filing_runs.pki
reference = test_filing_runs.reference


@pytest.fixture
def store(tmp_path: Path, pki: DevPki) -> Iterator[Storage]:
    st = _open(f"sqlite:///{tmp_path / 'palais.sqlite'}", tmp_path / "blobs", pki)
    try:
        yield st
    finally:
        st.close()


@asynccontextmanager
async def filing_process(st: Storage, pki: DevPki) -> AsyncIterator[FilingProcess]:
    url = str(st.writer_engine.url)
    filings = FilingProcess(
        url,
        Path(st.blobs.root),  # type: ignore[attr-defined]
        open_evidence=partial(evidence_service, pki.evidence_cert_path, pki.evidence_key_path),
        publish=st.hub.publish,
        on_erased=st.commits.tell_erased,
    )
    await filings.start()
    st.mail.filer = filings.file
    try:
        yield filings
    finally:
        st.mail.filer = None
        await filings.stop()


def test_what_the_process_files_is_what_the_writer_files(
    store: Storage, reference: Storage, pki: DevPki
) -> None:
    submissions = _submissions(12)

    async def there() -> list[int]:
        async with filing_process(store, pki) as filings:
            filed = await asyncio.gather(
                *(
                    store.mail.file(ME, data, summarize(data), plan, resend_since=SINCE)
                    for data, plan in submissions
                )
            )
            assert filings.jobs == 12  # every one there, none by the gateway's writer
            return [f.message_id for f in filed]

    ids = asyncio.run(there())
    order = sorted(range(12), key=lambda i: ids[i])

    async def here() -> None:
        for i in order:
            data, plan = submissions[i]
            await reference.mail.file(ME, data, summarize(data), plan, resend_since=SINCE)

    asyncio.run(here())
    assert _state(store) == _state(reference)
    # The bytes went to the process's own segment, not the gateway's.
    segments = {p.name.split("-")[0] for p in Path(store.blobs.root).glob("*.pack")}  # type: ignore[attr-defined]
    assert len(segments) == 1
    with store.reader.connect() as conn:
        used = {r[0].split("-")[0] for r in conn.execute(text("SELECT DISTINCT segment FROM blob"))}
    assert segments <= used


def test_the_gateway_hears_of_each_filing_before_its_answer(store: Storage, pki: DevPki) -> None:
    heard: list[MailboxEvent] = []

    async def run() -> None:
        async with filing_process(store, pki):
            data = msg(1)
            plan = _plan(message_id=summarize(data).message_id)
            with store.reader.connect() as conn:
                boxes = conn.execute(
                    text("SELECT id FROM mailbox WHERE owner = :o AND name = 'INBOX'"),
                    {"o": GREFFE},
                ).scalars()
                for box_id in boxes:
                    store.hub.subscribe(box_id, heard.append)
            filed = await store.mail.file(ME, data, summarize(data), plan, resend_since=SINCE)
            # Published on this loop before the outcome resolved.
            assert filed.message_id > 0
            assert [e.uid for e in heard] == [1]

    asyncio.run(run())


def test_the_two_writers_keep_one_order(store: Storage, pki: DevPki) -> None:
    """Filings there and filings by the gateway's writer at once: the boxes'
    UIDs and the evidence log stay one sequence each."""

    async def run() -> None:
        async with filing_process(store, pki) as filings:
            jobs = []
            for n in range(40):
                data = msg(100 + n)
                plan = _plan(GREFFE, message_id=summarize(data).message_id)
                if n % 2:
                    jobs.append(store.mail.file(ME, data, summarize(data), plan))
                else:  # straight to the gateway's writer
                    work = Filing(
                        ME,
                        data,
                        summarize(data),
                        plan,
                        None,
                        None,
                        datetime.now(UTC),
                        store.mail._records,
                    )
                    jobs.append(store.commits.submit(work, [data]))
            await asyncio.gather(*jobs)
            assert filings.jobs == 20

    asyncio.run(run())
    with store.reader.connect() as conn:
        uids = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT e.uid FROM entry e JOIN mailbox b ON b.id = e.mailbox_id"
                    " WHERE b.owner = :o AND b.name = 'INBOX' ORDER BY e.uid"
                ),
                {"o": GREFFE},
            )
        ]
        positions = [
            r[0] for r in conn.execute(text("SELECT position FROM evidence_log ORDER BY position"))
        ]
        links = (
            conn.execute(text("SELECT evidence FROM evidence_log ORDER BY position"))
            .scalars()
            .all()
        )
        size = conn.execute(text("SELECT size FROM evidence_head")).scalar()
    assert uids == list(range(1, 41))
    assert positions == list(range(40)) and size == 40
    # Each entry names the one before it: one chain, whichever process appended.
    service = KeyEvidenceService(
        load_file_key(pki.evidence_cert_path, pki.evidence_key_path), domain="palais.test"
    )
    leaves = [service.leaf_hash(entry.encode()) for entry in links]
    for before, entry in zip(leaves, links[1:], strict=False):
        assert json.loads(entry)["log"]["previous"] == before


def test_a_process_that_dies_costs_no_accepted_message(store: Storage, pki: DevPki) -> None:
    async def run() -> None:
        async with filing_process(store, pki) as filings:
            first = msg(200)
            await store.mail.file(ME, first, summarize(first), _plan(), resend_since=SINCE)
            assert filings.jobs == 1
            pid = filings._process.pid  # type: ignore[union-attr]
            assert pid is not None
            # Stopped, then killed with a filing in flight: that one is
            # answered 451 (the client sends it again), nothing hangs.
            os.kill(pid, signal.SIGSTOP)
            data = msg(201)
            in_flight = asyncio.ensure_future(
                store.mail.file(ME, data, summarize(data), _plan(), resend_since=SINCE)
            )
            await asyncio.sleep(0.2)
            assert not in_flight.done()
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(TemporaryFailure):
                await asyncio.wait_for(in_flight, 10)
            # Meanwhile the gateway's writer files.
            assert not filings.running
            again = await store.mail.file(ME, data, summarize(data), _plan(), resend_since=SINCE)
            assert again.message_id > 0 and filings.jobs == 1
            # Then the process is back, and files again.
            for _ in range(100):
                if filings.running:
                    break
                await asyncio.sleep(0.1)
            assert filings.running and filings.restarts == 1
            last = msg(202)
            await store.mail.file(ME, last, summarize(last), _plan(), resend_since=SINCE)
            assert filings.jobs == 2

    asyncio.run(run())
    with store.reader.connect() as conn:
        subjects = sorted(
            conn.execute(text("SELECT subject FROM message WHERE sender = :s"), {"s": ME.address})
            .scalars()
            .all()
        )
    assert subjects == ["sujet 200", "sujet 201", "sujet 202"]


def test_an_error_that_cannot_cross_becomes_a_temporary_failure() -> None:
    class Local(Exception):
        def __init__(self, a: str, b: str) -> None:
            super().__init__(a)

    assert _portable(Local("x", "y")) is None
    refusal = TemporaryFailure("Try later", reason="detail")
    crossed = _portable(refusal)
    assert crossed is refusal


def test_a_filing_with_other_records_stays_with_the_gateway() -> None:
    data = msg(300)
    plain = _plan(message_id=summarize(data).message_id)
    assert Filing(ME, data, summarize(data), plain, None, None, datetime.now(UTC), {}).elsewhere()
    # A delegate's act is audited by a record writer only the gateway has.
    acted = ActedFor("d@x.test", ME.address, "send", None)
    other = replace(plain, records=(*plain.records, acted))
    assert not Filing(
        ME, data, summarize(data), other, None, None, datetime.now(UTC), {}
    ).elsewhere()
