"""A batch's run of filings shares its statements and leaves what filings one by one leave.

The writer is held inside a job while the filings queue up, so that they
commit as one batch; the same filings made one at a time in another store
are the reference. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import Connection, Engine, create_engine, text

from palais.mailbox.drafts import supersedes_drafts
from palais.mailbox.evidence import deposit_and_delivery
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind
from palais.mailbox.routing import Destination, FilingPlan
from palais.pki.devpki import DevPki, create_dev_pki
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.signing import load_file_key
from palais.pki.verify import verify_receipt
from palais.storage import Storage, open_storage
from palais.storage.filings import Filing
from palais.storage.mailstore import FiledMessage
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, OTHER, msg, setup_directory

SINCE = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return create_dev_pki(tmp_path_factory.mktemp("pki") / "pki")


def _open(url: str, blobs: Path, pki: DevPki) -> Storage:
    key = load_file_key(pki.evidence_cert_path, pki.evidence_key_path)
    st = open_storage(url, blobs, evidence=KeyEvidenceService(key, domain="palais.test"))
    st.commits.run_now(setup_directory)
    st.start()
    return st


@pytest.fixture(params=DATABASES)
def store(request: pytest.FixtureRequest, tmp_path: Path, pki: DevPki) -> Iterator[Storage]:
    st = _open(database_url(request, tmp_path), tmp_path / "blobs", pki)
    try:
        yield st
    finally:
        st.close()


@pytest.fixture
def reference(tmp_path: Path, pki: DevPki) -> Iterator[Storage]:
    st = _open(f"sqlite:///{tmp_path / 'reference.sqlite'}", tmp_path / "ref-blobs", pki)
    try:
        yield st
    finally:
        st.close()


def _plan(to: str = GREFFE, *, message_id: str | None = None) -> FilingPlan:
    plan = FilingPlan(
        NUMBER,
        (
            Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(to, BoxKind.RECUS),
        ),
        supersedes=supersedes_drafts(ME.mailbox_owner, message_id),
    )
    receipt = deposit_and_delivery(ME, [("d@x.test", to)], NUMBER, datetime.now(UTC))
    return replace(plan, records=(receipt,))


Submission = tuple[bytes, FilingPlan]
Filer = Callable[["Storage", Sequence[Submission]], Awaitable[list[FiledMessage]]]


def _submissions(count: int) -> list[Submission]:
    # As SMTP files them: with a Message-ID, superseding drafts of it,
    # checked for a resend; to two registries in turn.
    out = []
    for n in range(count):
        data = msg(n)
        plan = _plan(GREFFE if n % 2 else OTHER.address, message_id=summarize(data).message_id)
        out.append((data, plan))
    return out


class Runs:
    """Counts the runs the writer carried out together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.together: list[int] = []
        original = Filing.together.__func__  # type: ignore[attr-defined]

        def spy(cls: type[Filing], conn: Connection, jobs: Sequence[Any]) -> Any:
            result = original(cls, conn, jobs)
            if result is not None:
                self.together.append(len(jobs))
            return result

        monkeypatch.setattr(Filing, "together", classmethod(spy))


async def _in_one_batch(st: Storage, submissions: Sequence[Submission]) -> list[FiledMessage]:
    """The filings, queued while the writer is held, so committed as one batch."""
    gate = threading.Event()

    def hold(conn: Connection, ctx: WriteContext) -> None:
        gate.wait(10)

    held = asyncio.ensure_future(st.commits.submit(hold))
    await asyncio.sleep(0.2)  # the writer is inside the held job
    batches = st.commits.batches
    pending = asyncio.gather(
        *(
            st.mail.file(ME, data, summarize(data), plan, resend_since=SINCE)
            for data, plan in submissions
        )
    )
    await asyncio.sleep(0.2)
    gate.set()
    await held
    filed = await pending
    assert st.commits.batches - batches == 2  # the held job, then the filings
    return filed


async def _one_by_one(st: Storage, submissions: Sequence[Submission]) -> list[FiledMessage]:
    return [
        await st.mail.file(ME, data, summarize(data), plan, resend_since=SINCE)
        for data, plan in submissions
    ]


def _rows(st: Storage, sql: str) -> list[tuple[Any, ...]]:
    with st.reader.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _state(st: Storage) -> dict[str, list[tuple[Any, ...]]]:
    """What a filing leaves, without what differs between two stores
    (ids of rows, evidence ids, instants, signatures)."""
    return {
        "entries": _rows(
            st,
            "SELECT b.owner, b.name, e.uid, e.modseq, e.flags, m.subject"
            " FROM entry e JOIN mailbox b ON b.id = e.mailbox_id"
            " JOIN message m ON m.id = e.message_id ORDER BY b.owner, b.name, e.uid",
        ),
        "boxes": _rows(
            st, "SELECT owner, name, uidnext, highestmodseq FROM mailbox ORDER BY owner, name"
        ),
        "placements": _rows(
            st,
            "SELECT p.owner, p.kind, p.dossier, m.subject FROM placement p"
            " JOIN message m ON m.id = p.message_id ORDER BY p.owner, p.kind, m.subject",
        ),
        "log": _rows(
            st,
            "SELECT l.position, l.events, l.holder, l.dossier, m.subject FROM evidence_log l"
            " LEFT JOIN message m ON m.id = l.about ORDER BY l.position",
        ),
        "blobs": _rows(  # the messages' (receipts differ: evidence ids, instants)
            st,
            "SELECT b.sha256, b.refcount, b.length FROM blob b JOIN message m"
            f" ON m.blob = b.sha256 WHERE m.sender = '{ME.address}' ORDER BY b.sha256",
        ),
        "pending": _rows(st, "SELECT count(*) FROM text_pending"),
    }


def test_a_run_leaves_what_filings_one_by_one_leave(
    store: Storage, reference: Storage, pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    submissions = _submissions(12)
    runs = Runs(monkeypatch)
    together = asyncio.run(_in_one_batch(store, submissions))
    assert runs.together == [12]
    # The batch's order is the order the filings reached the writer (on
    # PostgreSQL a dossier's id is looked up in a thread first): the same
    # order, one at a time, is the reference.
    order = sorted(range(12), key=lambda i: together[i].message_id)
    alone = asyncio.run(_one_by_one(reference, [submissions[i] for i in order]))
    assert runs.together == [12]  # one at a time, nothing to run together
    assert _state(store) == _state(reference)
    assert [sorted(together[i].uids.items()) for i in order] == [
        sorted(f.uids.items()) for f in alone
    ]
    assert not any(f.resent for f in together)
    # Every receipt of the run is a signed mail about its own message.
    receipts = _rows(
        store, "SELECT l.receipt, m.subject FROM evidence_log l JOIN message m ON m.id = l.about"
    )
    assert len(receipts) == 12
    anchor = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
    for receipt, subject in receipts:
        verdict = verify_receipt(bytes(receipt), anchors=[anchor])
        assert verdict.ok, verdict
        assert verdict.evidence is not None and verdict.evidence.message.subject == subject


def test_a_resend_in_the_run_is_answered_alone(
    store: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = Runs(monkeypatch)
    earlier = asyncio.run(_one_by_one(store, _submissions(1)))[0]
    # The first message again (a client that lost its 250), among new ones.
    again = _submissions(4)
    filed = asyncio.run(_in_one_batch(store, again))
    assert runs.together == []  # an earlier message has one of the Message-IDs
    assert filed[0].resent and filed[0].message_id == earlier.message_id
    assert not any(f.resent for f in filed[1:])
    assert _rows(store, "SELECT count(*) FROM message WHERE sender = 'a@x.test'") == [(4,)]
    # Twice in one batch: the second is the first's resend.
    twice = [_submissions(6)[5]] * 2
    first, second = asyncio.run(_in_one_batch(store, twice))
    assert not first.resent and second.resent and second.message_id == first.message_id


def test_a_draft_of_a_message_in_the_run_leaves_brouillons(
    store: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    submissions = _submissions(3)

    async def go() -> int:
        await store.mail.append(ME, "Brouillons", submissions[1][0], frozenset(), None)
        await _in_one_batch(store, submissions)
        return (await store.mail.mailbox(ME, "Brouillons")).messages

    runs = Runs(monkeypatch)
    assert asyncio.run(go()) == 0
    assert runs.together == []  # the draft has one of the Message-IDs: each files alone


@contextmanager
def _traced(tmp_path: Path, pki: DevPki) -> Iterator[tuple[Storage, list[str]]]:
    """A store on SQLite whose writer's connection tells every statement."""
    st = _open(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs", pki)
    statements: list[str] = []
    try:

        def traced(conn: Connection, ctx: WriteContext) -> None:
            # The writer's one connection tells every statement from now on.
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            dbapi.set_trace_callback(statements.append)

        asyncio.run(st.commits.submit(traced))
        statements.clear()
        yield st, statements
    finally:
        st.close()


def test_a_run_shares_its_statements(tmp_path: Path, pki: DevPki) -> None:
    """A statement per table for the run, not per message."""
    with _traced(tmp_path, pki) as (st, statements):
        asyncio.run(_in_one_batch(st, _submissions(40)))
        # Filing one by one runs each of these once per message; a run, once
        # for its messages and once for their receipt mails.
        for start in (
            "INSERT INTO message ",
            "INSERT INTO placement ",
            "INSERT INTO entry ",
            "UPDATE mailbox SET uidnext",
            "INSERT INTO evidence_log ",
        ):
            ran = [s for s in statements if s.startswith(start)]
            assert 1 <= len(ran) <= 2, (start, len(ran))


async def _file_while_held(
    st: Storage,
    other: Engine,
    holder: Connection,
    file: Filer,
    submissions: Sequence[Submission],
    name: str,
) -> list[FiledMessage]:
    """The filings, made while ``holder`` (another node) holds their boxes:
    they wait without holding the evidence log's head, then go through once
    it lets go."""
    pending = asyncio.ensure_future(file(st, submissions))
    await asyncio.sleep(1.0)  # the filings wait for the registry's boxes
    assert not pending.done(), name
    with other.connect() as probe:
        # Raises (lock not available) if the waiting filing holds the head.
        probe.execute(text("SET lock_timeout = '200ms'"))
        probe.execute(text("SELECT size FROM evidence_head FOR UPDATE"))
        probe.rollback()
    holder.rollback()  # the other node's transaction ends
    return await pending


def test_mailboxes_are_locked_before_the_evidence_head(
    postgres_url: str, tmp_path: Path, pki: DevPki
) -> None:
    """One lock order for every filing, alone or in a run: on PostgreSQL two
    nodes' transactions taking the mailbox rows and the log's head in
    opposite orders deadlock (seen in the nodes bench: a batch alone against
    a run). Another node holds the registry's boxes: the filings wait for
    them without holding the head meanwhile, then go through."""
    st = _open(postgres_url, tmp_path / "blobs", pki)
    other = create_engine(postgres_url)
    try:
        asyncio.run(_one_by_one(st, _submissions(1)))  # the head row exists
        for name, submissions, file in (
            ("alone", _submissions(2)[1:], _one_by_one),
            ("run", _submissions(8)[2:], _in_one_batch),
        ):
            with other.connect() as holder:
                holder.execute(
                    text("SELECT id FROM mailbox WHERE owner = :o FOR UPDATE"), {"o": GREFFE}
                )
                filed = asyncio.run(_file_while_held(st, other, holder, file, submissions, name))
            assert len(filed) == len(submissions), name
            assert all(f.uids for f in filed), name
    finally:
        other.dispose()
        st.close()
