"""Receipts committed with the acts they prove, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import text

from palais.mailbox.errors import InvalidMessage, TemporaryFailure
from palais.mailbox.evidence import GENESIS, EventCode, deposit_and_delivery
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind, FlagMode
from palais.mailbox.routing import Destination, FilingPlan
from palais.pki.devpki import DevPki, create_dev_pki
from palais.pki.evidence_model import Evidence
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.merkle import Frontier, leaf_hash, root_of
from palais.pki.signing import EvidenceUnavailable, FileKey, load_file_key
from palais.storage import Storage, open_storage
from palais.storage.engine import make_engine
from palais.storage.evidence import _head
from palais.storage.mailstore import FiledMessage
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, msg, setup_directory

CLERK = Identity(3, "clerk@x.test", Role.GREFFIER, "Greffier Un", "d" * 64, GREFFE)
CLERK2 = Identity(4, "clerk2@x.test", Role.GREFFIER, "Greffier Deux", "c" * 64, GREFFE)


@dataclass
class Switchable:
    """The evidence key, which a test can make fail as an HSM taken away would."""

    key: FileKey
    broken: bool = False
    signed: list[int] = field(default_factory=list)

    @property
    def certificate(self) -> x509.Certificate:
        return self.key.certificate

    @property
    def chain(self) -> Sequence[x509.Certificate]:
        return self.key.chain

    def sign(self, data: bytes) -> bytes:
        if self.broken:
            raise EvidenceUnavailable("The evidence service cannot sign now", reason="test")
        self.signed.append(len(data))
        return self.key.sign(data)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return create_dev_pki(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture
def key(pki: DevPki) -> Switchable:
    return Switchable(load_file_key(pki.evidence_cert_path, pki.evidence_key_path))


@pytest.fixture(params=DATABASES)
def store(request: pytest.FixtureRequest, tmp_path: Path, key: Switchable) -> Iterator[Storage]:
    service = KeyEvidenceService(key, domain="palais.test")
    st = open_storage(database_url(request, tmp_path), tmp_path / "blobs", evidence=service)
    st.commits.run_now(setup_directory)
    st.start()
    try:
        yield st
    finally:
        st.close()


def _plan(now: datetime) -> FilingPlan:
    plan = FilingPlan(
        NUMBER,
        (
            Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(GREFFE, BoxKind.RECUS),
        ),
    )
    receipt = deposit_and_delivery(ME, [("d@x.test", GREFFE)], NUMBER, now)
    return replace(plan, records=(receipt,))


def _file(st: Storage, data: bytes, *, since: datetime | None = None) -> FiledMessage:
    now = datetime.now(UTC)
    return asyncio.run(st.mail.file(ME, data, summarize(data), _plan(now), resend_since=since))


def _rows(st: Storage, sql: str) -> list[tuple[object, ...]]:
    with st.reader.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _log(st: Storage) -> list[dict[str, Any]]:
    return [
        json.loads(str(evidence))
        for (evidence,) in _rows(st, "SELECT evidence FROM evidence_log ORDER BY position")
    ]


def _read(st: Storage, who: Identity, uid: int = 1) -> None:
    async def go() -> None:
        box = await st.mail.mailbox(who, "INBOX")
        await st.mail.store_flags(who, box.id, [uid], FlagMode.ADD, frozenset({"\\Seen"}))

    asyncio.run(go())


def test_a_filing_commits_its_deposit_and_delivery_receipt(store: Storage) -> None:
    data = msg(1)
    filed = _file(store, data)
    (evidence,) = _log(store)
    Evidence.model_validate(evidence)
    assert [e["code"] for e in evidence["events"]] == ["depot", "remise"]
    message = evidence["message"]
    assert isinstance(message, dict)
    assert message["sha256"] == filed.sha256 and message["size"] == len(data)
    assert evidence["log"] == {"position": 0, "previous": GENESIS}
    assert evidence["dossier"] == NUMBER
    sender = evidence["sender"]
    assert isinstance(sender, dict) and sender["certificate_sha256"] == ME.fingerprint

    async def receipts() -> tuple[int, int, bytes]:
        mine = await store.mail.mailbox(ME, "Accusés de réception")
        in_dossier = await store.mail.mailbox(ME, f"Dossiers/{NUMBER}/Accusés de réception")
        (record,) = await store.mail.records(ME, mine.id, [1])
        return mine.messages, in_dossier.messages, await store.mail.read(record.blob)

    total, in_dossier, receipt = asyncio.run(receipts())
    assert (total, in_dossier) == (1, 1)
    assert receipt.startswith(b"From: ") and b"multipart/signed" in receipt
    # The greffe keeps no copy of the sender's receipt.
    assert _rows(
        store, f"SELECT count(*) FROM placement WHERE owner = '{GREFFE}' AND kind = 'accuses'"
    ) == [(0,)]


def test_the_log_links_each_leaf_to_the_previous_and_a_tree_head_covers_them(
    store: Storage,
) -> None:
    for n in range(5):
        _file(store, msg(n))
    leaves = _rows(
        store, "SELECT position, leaf_hash, evidence FROM evidence_log ORDER BY position"
    )
    assert [p for p, _, _ in leaves] == list(range(5))
    previous = GENESIS
    for _, leaf, evidence in leaves:
        document = json.loads(str(evidence))
        assert document["log"]["previous"] == previous
        assert leaf == leaf_hash(str(evidence).encode()).hex()
        previous = str(leaf)
    heads = _rows(store, "SELECT size, root FROM tree_head ORDER BY size")
    size, root = heads[-1]
    assert size == 5
    assert root == root_of([bytes.fromhex(str(h)) for _, h, _ in leaves]).hex()


def test_first_read_gives_one_receipt_to_the_sender_and_a_copy_to_the_reader(
    store: Storage,
) -> None:
    _file(store, msg(1))
    _read(store, CLERK)
    _read(store, CLERK)  # again: nothing more
    logged = _log(store)
    assert [[e["code"] for e in d["events"]] for d in logged] == [
        ["depot", "remise"],
        ["premiere-lecture"],
    ]
    read = logged[1]
    (event,) = read["events"]
    (reader,) = event["recipients"]
    assert reader["address"] == CLERK.address and reader["mailbox"] == GREFFE
    assert reader["certificate_sha256"] == CLERK.fingerprint
    assert read["message"] == logged[0]["message"]
    assert event["time"] >= logged[0]["events"][1]["time"]
    holders = _rows(
        store,
        "SELECT owner FROM placement WHERE kind = 'accuses' AND message_id ="
        " (SELECT receipt_message FROM evidence_log WHERE position = 1) ORDER BY owner",
    )
    assert holders == [(ME.address,), (GREFFE,)]


def test_two_clerks_reading_at_once_cause_exactly_one_read_receipt(store: Storage) -> None:
    for n in range(20):
        _file(store, msg(n))

    async def both() -> None:
        async def read_all(who: Identity) -> None:
            box = await store.mail.mailbox(who, "INBOX")
            for uid in range(1, 21):
                await store.mail.store_flags(
                    who, box.id, [uid], FlagMode.ADD, frozenset({"\\Seen"})
                )

        await asyncio.gather(read_all(CLERK), read_all(CLERK2))

    asyncio.run(both())
    reads = _rows(store, "SELECT about FROM evidence_log WHERE events = 'premiere-lecture'")
    assert sorted(int(str(a)) for (a,) in reads) == sorted(
        int(str(m)) for (m,) in _rows(store, "SELECT DISTINCT about FROM evidence_log")
    )
    assert len(reads) == 20


def test_marking_unread_and_read_again_causes_no_second_receipt(store: Storage) -> None:
    _file(store, msg(1))
    _read(store, CLERK)

    async def unread() -> None:
        box = await store.mail.mailbox(CLERK, "INBOX")
        await store.mail.store_flags(CLERK, box.id, [1], FlagMode.REMOVE, frozenset({"\\Seen"}))

    asyncio.run(unread())
    _read(store, CLERK2)
    assert len(_log(store)) == 2


def test_the_sender_reading_its_own_copy_causes_no_read_receipt(store: Storage) -> None:
    _file(store, msg(1))

    async def go() -> None:
        box = await store.mail.mailbox(ME, "Envoyés")
        await store.mail.store_flags(ME, box.id, [1], FlagMode.REMOVE, frozenset({"\\Seen"}))
        await store.mail.store_flags(ME, box.id, [1], FlagMode.ADD, frozenset({"\\Seen"}))

    asyncio.run(go())
    assert len(_log(store)) == 1


def test_a_resend_issues_no_second_receipt(store: Storage) -> None:
    since = datetime(2000, 1, 1, tzinfo=UTC)
    first = _file(store, msg(1), since=since)
    again = _file(store, msg(1), since=since)
    assert again.resent and again.message_id == first.message_id
    assert len(_log(store)) == 1


def test_a_key_that_cannot_sign_refuses_the_filing_whole(store: Storage, key: Switchable) -> None:
    key.broken = True
    with pytest.raises(TemporaryFailure):
        _file(store, msg(1))
    assert _rows(store, "SELECT count(*) FROM message") == [(0,)]
    assert _rows(store, "SELECT count(*) FROM evidence_log") == [(0,)]
    key.broken = False
    _file(store, msg(1))
    assert _rows(store, "SELECT count(*) FROM evidence_log") == [(1,)]


def test_a_read_is_refused_rather_than_left_without_its_receipt(
    store: Storage, key: Switchable
) -> None:
    _file(store, msg(1))
    key.broken = True
    with pytest.raises(TemporaryFailure):
        _read(store, CLERK)
    key.broken = False
    flags = _rows(
        store,
        "SELECT flags FROM entry e JOIN mailbox m ON m.id = e.mailbox_id"
        f" WHERE m.owner = '{GREFFE}' AND m.name = 'INBOX'",
    )
    assert flags == [("",)]
    _read(store, CLERK)
    assert len(_log(store)) == 2


def test_registry_decisions_and_non_delivery_reach_the_sender(store: Storage) -> None:
    filed = _file(store, msg(1))

    async def decide() -> None:
        await store.mail.record_registry_decision(CLERK, filed.message_id, accepted=True)
        await store.mail.record_registry_decision(
            CLERK, filed.message_id, accepted=False, reason="pièce manquante"
        )
        with pytest.raises(InvalidMessage):
            await store.mail.record_registry_decision(CLERK, filed.message_id, accepted=False)
        await store.mail.record_non_delivery(
            filed.message_id, ["portalis@x.test"], reason="refusé par le système"
        )

    asyncio.run(decide())
    codes = [[e["code"] for e in d["events"]] for d in _log(store)]
    assert codes == [
        ["depot", "remise"],
        [EventCode.ACCEPTATION_GREFFE.value],
        [EventCode.REJET_GREFFE.value],
        [EventCode.NON_REMISE.value],
    ]
    rejected = _log(store)[2]
    assert rejected["events"][0]["reason"] == "pièce manquante"
    holders = _rows(store, "SELECT DISTINCT holder FROM evidence_log")
    assert holders == [(ME.address,)]


def test_only_a_holder_gets_a_receipt_s_evidence(store: Storage) -> None:
    _file(store, msg(1))
    _read(store, CLERK)
    ids = [
        str(i) for (i,) in _rows(store, "SELECT evidence_id FROM evidence_log ORDER BY position")
    ]
    other = Identity(9, "z@x.test", Role.AVOCAT, "Z", "9" * 64, "z@x.test")

    async def ask() -> list[bool]:
        return [
            await store.mail.held_evidence(who, evidence_id) is not None
            for who in (ME, CLERK, other)
            for evidence_id in ids
        ]

    # The sender holds both; the greffe holds its copy of the read receipt only.
    assert asyncio.run(ask()) == [True, True, False, True, False, False]


def test_receipts_outlive_the_messages_they_prove(store: Storage) -> None:
    _file(store, msg(1))
    _read(store, CLERK)

    async def purge(who: Identity, box: str) -> None:
        source = await store.mail.mailbox(who, box)
        await store.mail.move(who, source.id, [1], "Supprimés")
        trash = await store.mail.mailbox(who, "Supprimés")
        await store.mail.store_flags(who, trash.id, [1], FlagMode.ADD, frozenset({"\\Deleted"}))
        assert await store.mail.expunge(who, trash.id) == [1]

    asyncio.run(purge(ME, "Envoyés"))
    asyncio.run(purge(CLERK, "INBOX"))
    originals = _rows(store, "SELECT count(*) FROM message WHERE sender = 'a@x.test'")
    assert originals == [(0,)]  # deleted for good, its bytes erased
    assert len(_log(store)) == 2
    (evidence_id,) = _rows(store, "SELECT evidence_id FROM evidence_log WHERE position = 0")[0]
    assert asyncio.run(store.mail.held_evidence(ME, str(evidence_id))) is not None


def test_the_log_s_head_is_read_through_its_key_once_the_log_has_grown(
    postgres_url: str, tmp_path: Path, key: Switchable
) -> None:
    """A writer's statements are prepared after a few runs, and a plan made
    while the log was tiny scans it whole. The head's read (no bound
    parameter: its one plan kept) scanned the log at every batch since; and
    the writer's connections keep generic plans, made again as tables grow."""
    service = KeyEvidenceService(key, domain="palais.test")
    open_storage(postgres_url, tmp_path / "blobs", evidence=service).close()
    hashes = [bytes([n % 256, n // 256]) * 16 for n in range(3000)]

    def grow(conn: Any, start: int, end: int) -> None:
        conn.execute(
            text(
                "INSERT INTO evidence_log (position, evidence_id, events, holder, evidence,"
                " leaf_hash, receipt, created) VALUES (:p, :i, 'depot', 'x@x.test', :e,"
                " :h, '', now())"
            ),
            # Rows as wide as real ones (an evidence document is 1.5 KB).
            [
                {"p": n, "i": f"e{n}", "e": secrets.token_hex(750), "h": hashes[n].hex()}
                for n in range(start, end)
            ],
        )
        frontier = Frontier.of(hashes[:end]).to_json()
        conn.execute(
            text(
                "INSERT INTO evidence_head (id, size, frontier) VALUES (1, :s, :f)"
                " ON CONFLICT (id) DO UPDATE SET size = :s, frontier = :f"
            ),
            {"s": end, "f": frontier},
        )

    engine = make_engine(postgres_url, writer=True)
    other = make_engine(postgres_url, writer=True)

    def read_counting_scans(ctx: WriteContext) -> int:
        """Reads the head as a batch does, on a connection of the writer's
        pool; how many times it scanned the log."""
        # Committed, not rolled back: psycopg forgets its prepared
        # statements at a rollback.
        with engine.connect() as conn, conn.begin():
            ctx.batch.clear()
            scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'evidence_log'"
            before = conn.execute(text(scans)).scalar_one()
            head = _head(conn, ctx, service)
            after = conn.execute(text(scans)).scalar_one()
            assert head.stored == head.tree.size
            assert head.last == hashes[head.stored - 1].hex()
        return int(after - before)

    try:
        ctx = WriteContext()
        with other.begin() as peer:
            grow(peer, 0, 40)
        # Prepared, and planned on a 40-row log (the pool's one connection).
        for _ in range(20):
            read_counting_scans(ctx)
        with other.begin() as peer:  # what the other nodes appended meanwhile
            grow(peer, 40, len(hashes))
        scans = [read_counting_scans(ctx) for _ in range(20)]
        assert scans[-5:] == [0] * 5, scans
    finally:
        engine.dispose()
        other.dispose()
