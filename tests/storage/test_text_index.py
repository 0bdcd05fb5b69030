"""The substring index behind SEARCH BODY/TEXT/HEADER: on a randomised corpus
it answers exactly what reading every message answers, on SQLite and on
PostgreSQL; messages stored before it are found while pending and indexed
when the storage opens."""

from __future__ import annotations

import asyncio
import base64
import quopri
import random
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command

from palais.gateway.imap.searching import Searcher
from palais.gateway.imap.searchspec import HeaderKey, SearchKey, TextKey
from palais.gateway.imap.view import SelectedMailbox
from palais.mailbox.boxes import BoxKind
from palais.mailbox.identity import Identity
from palais.mailbox.ports import MailAccess
from palais.mailbox.searchtext import documents, indexable
from palais.storage import Storage, open_storage
from palais.storage.bulk import import_messages
from palais.storage.migrate import alembic_config
from palais.storage.textindex import backfill
from tests.imap.fake_store import FakeStore
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url
from tests.storage.test_mailstore import ME, setup_directory

WORDS = [
    "pourvoi",
    "Procédure",
    "TÉMOIN",
    "greffe",
    "Straße",
    "strasse",
    "İstanbul",
    "ﬁnance",
    "déjà-vu",
    "100%",
    "a_b",
    'dit "oui"',
    "Ω-ohm",
    "x",
    "audience",
    "CONSTITUTION",
    "=?",
]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _header_word(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    if rng.random() < 0.4:
        encoded = base64.b64encode(word.encode()).decode()
        return f"=?utf-8?b?{encoded}?="
    if rng.random() < 0.3:
        quoted = quopri.encodestring(word.encode(), header=True).decode()
        return f"=?utf-8?q?{quoted}?="
    return word


def _part(rng: random.Random) -> tuple[bytes, bytes]:
    """A body part's header lines and its encoded body."""
    text = _text(rng, rng.randint(0, 40))
    kind = rng.randrange(5)
    if kind == 0:
        return b"Content-Type: text/plain; charset=utf-8\r\n", text.encode() + b"\r\n"
    if kind == 1:
        qp = quopri.encodestring(text.encode()).replace(b"\n", b"\r\n")
        return (
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            qp + b"\r\n",
        )
    if kind == 2:
        b64 = base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
        return (
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n",
            b64,
        )
    if kind == 3:
        latin = text.encode("latin-1", "replace")
        return b"Content-Type: text/plain; charset=iso-8859-1\r\n", latin + b"\r\n"
    b64 = base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
    return (
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n",
        b64,
    )


def message(rng: random.Random, i: int) -> bytes:
    subject = " ".join(_header_word(rng) for _ in range(rng.randint(1, 4)))
    head = f"From: a{i}@x.test\r\nTo: greffe@x.test\r\nSubject: {subject}\r\n"
    head += f"Message-ID: <{i}@x>\r\n"
    if rng.random() < 0.5:
        head += f"X-Dossier: {_header_word(rng)}\r\n\t{_header_word(rng)}\r\n"
    data = head.encode()
    if rng.random() < 0.4:
        boundary = b"b%d" % i
        parts = [_part(rng) for _ in range(rng.randint(1, 3))]
        data += b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=" + boundary
        data += b"\r\n\r\npreamble\r\n"
        for fields, body in parts:
            data += b"--" + boundary + b"\r\n" + fields + b"\r\n" + body
        data += b"--" + boundary + b"--\r\n"
    else:
        fields, body = _part(rng)
        data += b"MIME-Version: 1.0\r\n" + fields + b"\r\n" + body
    return data


def _needles(rng: random.Random, corpus: list[bytes]) -> list[str]:
    out = {
        "pourvoi",
        "POURVOI",
        "procédure",
        "PROCÉDURE",
        "témoin",
        "strasse",
        "STRASSE",
        "straße",
        "i̇stanbul",
        "finance",
        "100%",
        "a_b",
        "%",
        "_b",
        '"oui"',
        "=c3=a9",
        "content-type",
        "boundary",
        "utf-8?b",
        "ohm",
        "x",
        "xy",
        "greffe@x.test",
        "introuvable",
    }
    for _ in range(60):
        data = rng.choice(corpus)
        start = rng.randrange(len(data))
        piece = data[start : start + rng.randint(1, 14)].decode("utf-8", "ignore")
        out.add(piece.upper() if rng.random() < 0.3 else piece)
    return sorted(out)


def _keys(needles: list[str]) -> list[TextKey | HeaderKey]:
    keys: list[TextKey | HeaderKey] = []
    for needle in needles:
        keys += [
            TextKey(needle, headers_too=False),
            TextKey(needle, headers_too=True),
            HeaderKey("x-dossier", needle),
            HeaderKey("content-type", needle),
        ]
    return keys


@pytest.fixture(params=DATABASES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, tmp_path)


def _open(
    url: str, blobs: Path, corpus: list[bytes] | None = None, *, index: bool = True
) -> Storage:
    st = open_storage(url, blobs)
    if corpus is not None:
        st.commits.run_now(setup_directory)
        import_messages(
            st,
            owner=ME.address,
            kind=BoxKind.BROUILLONS,
            dossier=None,
            messages=corpus,
            sender=ME.address,
        )
        if index:
            # What the gateway's indexing process does after filing.
            backfill(st.writer_engine, st.blobs)
    return st


def _view(info_access: MailAccess, who: Identity, name: str) -> SelectedMailbox:
    async def go() -> SelectedMailbox:
        info = await info_access.mailbox(who, name)
        view = SelectedMailbox(info, read_only=True)
        view.load((await info_access.entries(who, info.id)).uids)
        return view

    return asyncio.run(go())


def _search(access: MailAccess, view: SelectedMailbox, key: SearchKey) -> list[int]:
    return asyncio.run(Searcher(access, ME, view).run(key))


# The corpus, the reference store and its answers are the same for every
# test and both databases: made once per module (no test changes them).
@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    rng = random.Random(5256)
    return [message(rng, i) for i in range(120)]


@pytest.fixture(scope="module")
def reference(corpus: list[bytes]) -> Iterator[tuple[FakeStore, SelectedMailbox]]:
    store = FakeStore()
    for data in corpus:
        store.deliver("Brouillons", data)
    view = SelectedMailbox(asyncio.run(store.mailbox(ME, "Brouillons")), read_only=True)
    view.load(array("I", sorted(store.boxes["Brouillons"].messages)))
    yield store, view


Answers = list[tuple[TextKey | HeaderKey, list[int]]]


@pytest.fixture(scope="module")
def answers(corpus: list[bytes], reference: tuple[FakeStore, SelectedMailbox]) -> Answers:
    """Every key of the equivalence test, with what reading every message answers."""
    store, ref_view = reference
    keys = _keys(_needles(random.Random(4), corpus))

    async def read_all() -> Answers:  # one event loop for all the searches
        return [(key, await Searcher(store, ME, ref_view).run(key)) for key in keys]

    return asyncio.run(read_all())


def test_index_answers_what_reading_every_message_answers(
    url: str,
    tmp_path: Path,
    corpus: list[bytes],
    reference: tuple[FakeStore, SelectedMailbox],
    answers: Answers,
) -> None:
    _, ref_view = reference
    st = _open(url, tmp_path / "blobs", corpus)
    try:
        view = _view(st.mail, ME, "Brouillons")
        assert list(view.uids) == list(ref_view.uids)

        async def compare() -> int:
            narrowed = 0
            for key, expected in answers:
                assert await Searcher(st.mail, ME, view).run(key) == expected, key
                folded = key.text.casefold()
                part = (
                    "header"
                    if isinstance(key, HeaderKey)
                    else "text"
                    if key.headers_too
                    else "body"
                )
                found = await st.mail.search_text(ME, view.info.id, part, folded)
                if indexable(folded):
                    assert found is not None and set(expected) <= found, key
                    narrowed += len(found) < len(view.uids)
                else:
                    assert found is None
            return narrowed

        # One event loop for every search (a loop per search made and joined
        # threads ~700 times). The index did narrow more searches than there
        # are needles (four keys each).
        assert asyncio.run(compare()) > len(answers) // 4
    finally:
        st.close()


def test_search_subject_answers_the_same_through_the_index(
    url: str, tmp_path: Path, corpus: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from palais.mailbox.model import HeaderField
    from palais.storage import textindex

    # Half the messages indexed, the others filed since (pending).
    half = len(corpus) // 2
    st = _open(url, tmp_path / "blobs", corpus[:half])
    try:
        import_messages(
            st,
            owner=ME.address,
            kind=BoxKind.BROUILLONS,
            dossier=None,
            messages=corpus[half:],
            sender=ME.address,
        )
        with st.writer_engine.begin() as conn:  # as filed before the indexer's turn
            conn.exec_driver_sql(
                "INSERT INTO text_pending (message_id) SELECT id FROM message"
                " WHERE id NOT IN (SELECT message_id FROM text_pending)"
                f" ORDER BY id LIMIT -1 OFFSET {half}"
                if url.startswith("sqlite")
                else "INSERT INTO text_pending (message_id) SELECT id FROM message"
                " WHERE id NOT IN (SELECT message_id FROM text_pending)"
                f" ORDER BY id OFFSET {half} ON CONFLICT DO NOTHING"
            )
        view = _view(st.mail, ME, "Brouillons")
        needles = _needles(random.Random(7), corpus)

        def subject(needle: str) -> set[int]:
            return asyncio.run(st.mail.search_header(ME, view.info.id, HeaderField.SUBJECT, needle))

        indexed = {n: subject(n) for n in needles}
        monkeypatch.setattr(textindex, "subject_hits", lambda *args: None)
        assert {n: subject(n) for n in needles} == indexed
        assert any(indexed.values())
        assert any(uid > half for found in indexed.values() for uid in found)  # pending ones
    finally:
        st.close()


def test_documents_hold_every_rendering_a_search_looks_in() -> None:
    docs = documents(
        b"Subject: =?utf-8?q?Proc=C3=A9dure?=\r\nX-Long: un\r\n deux\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nStra=C3=9Fe\r\n"
    )
    assert "procédure" in docs.head  # decoded
    assert "=?utf-8?q?proc=c3=a9dure?=" in docs.head  # raw, for ASCII needles
    assert "un deux" in docs.head  # the unfolded field value
    assert "strasse" in docs.body and "stra=c3=9fe" in docs.body  # casefolded
    assert not indexable("ab") and not indexable("a\nb") and indexable("abc")


def test_messages_stored_before_the_index_are_found_then_indexed(
    url: str, tmp_path: Path, corpus: list[bytes], reference: tuple[FakeStore, SelectedMailbox]
) -> None:
    store, ref_view = reference
    st = _open(url, tmp_path / "blobs", corpus)
    try:
        # Back to before the index, then up again: every message is pending.
        with st.writer_engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
            command.upgrade(cfg, "head")
        view = _view(st.mail, ME, "Brouillons")
        key = TextKey("pourvoi", headers_too=True)
        found = asyncio.run(st.mail.search_text(ME, view.info.id, "text", "pourvoi"))
        assert found == set(view.uids)  # all pending: all candidates
        assert _search(st.mail, view, key) == _search(store, ref_view, key)
    finally:
        st.close()
    again = _open(url, tmp_path / "blobs")
    try:
        # Opening the store indexes nothing (a node would start that much
        # later): the indexing process does, as here.
        with again.reader.connect() as conn:
            listed = conn.exec_driver_sql("SELECT count(*) FROM text_pending").scalar()
        assert listed == len(corpus)
        backfill(again.writer_engine, again.blobs)
        view = _view(again.mail, ME, "Brouillons")
        found = asyncio.run(again.mail.search_text(ME, view.info.id, "text", "pourvoi"))
        expected = _search(store, ref_view, key)
        assert found is not None and set(expected) <= found < set(view.uids)
        assert _search(again.mail, view, key) == expected
        with again.reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM text_pending").scalar() == 0
    finally:
        again.close()


EDGE_CASES = [
    b"Subject: a\r\n\r\ncaf\xc3\xa9\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\ncaf\xc3\xa9\r\n",
    b'Subject: a\r\nContent-Type: text/html; charset="ISO-8859-1"\r\n\r\ncaf\xe9\r\n',
    b"Subject: a\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xc1\xc2\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=nonexistent\r\n\r\ncaf\xc3\xa9\r\n",
    b"Subject: a\r\nContent-Type: TEXT/PLAIN\r\nContent-Transfer-Encoding: 8BIT\r\n\r\nx\r\n",
    b"Subject: a\r\nContent-Transfer-Encoding: Base64\r\n\r\nY2Fmw6k=\r\n",
    b"Subject: a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n",
    # A line the mail parser takes for the start of the body: its Content-Type is no header.
    b"Subject: a\r\ngarbage\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xc1\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=koi8-r\r\n"
    b"Content-Type: text/plain\r\n\r\n\xc1\r\n",
    b"Subject: a\r\nContent-Type : text/plain; charset=koi8-r\r\n\r\n\xc1\r\n",
    b"Subject: a\r\nContent-Type: text/plain;\r\n charset=koi8-r\r\n\r\n\xc1\r\n",
    b"Subject: a\r\nContent-Type: application/octet-stream\r\n\r\ncaf\xc3\xa9\r\n",
    b"Subject: a\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n",
    b"Subject: a\rb\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n\xc1\r\n",
    b"From someone Mon Jan 1\r\nSubject: a\r\n\r\nbody\r\n",
    b"Subject: a\r\n\r\n",
    b"no header at all",
    b"\r\nbody only\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX: a\r\n b\r\n\r\nbody\r\n",
]


@pytest.mark.parametrize("data", EDGE_CASES)
def test_the_body_side_holds_the_decoded_text_as_the_exact_test_reads_it(data: bytes) -> None:
    from palais.mailbox.searchtext import body_text

    docs = documents(data)
    text = body_text(data).casefold()
    assert text in docs.body
    for line in text.split("\n"):
        assert line in docs.body


def test_the_body_side_of_the_randomised_corpus(corpus: list[bytes]) -> None:
    from palais.mailbox.searchtext import body_text

    for data in corpus:
        assert body_text(data).casefold() in documents(data).body


HEADER_CASES = [
    *EDGE_CASES,
    b"Subject: caf\xc3\xa9\nX-Dossier: needle\n\nbody\n",  # bare line feeds
    b"Subject: a\r\nX-Dossier: no blank line at all",
    b"Subject: a\nX-Dossier: lf\r\n\r\nbody",
    b"X-A: =?utf-8?q?Proc=C3=A9dure?=\r\n =?utf-8?b?Y2Fmw6k=?=\r\nSubject: b\r\n\r\nx",
    b"Subject: a\r\n\r\nX-Dossier: in the body\r\n",
]


@pytest.mark.parametrize("data", HEADER_CASES)
def test_the_header_side_holds_every_field_and_the_block_as_the_exact_test_reads_them(
    data: bytes,
) -> None:
    from palais.gateway.imap.mime import header_fields
    from palais.gateway.imap.textsearch import decode_header_value
    from palais.mailbox.errors import InvalidMessage
    from palais.mailbox.message import summarize

    docs = documents(data)
    for field in header_fields(data):
        assert decode_header_value(field.value).casefold() in docs.head, field
    crlf = data.find(b"\r\n\r\n")
    block = data[: crlf + 4 if crlf >= 0 else 0]
    assert decode_header_value(block).casefold() in docs.head
    assert block.lower().decode("ascii", "replace") in docs.head or block.isascii()
    try:
        subject = summarize(data).subject
    except InvalidMessage:  # no header: nothing stored to search
        return
    assert subject.casefold() in docs.head


def test_a_message_indexed_while_a_search_runs_is_still_found(
    url: str,
    tmp_path: Path,
    corpus: list[bytes],
    reference: tuple[FakeStore, SelectedMailbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The indexing process indexes and unlists messages between two of a
    search's statements (each may see a later commit): nothing is missed."""
    from palais.storage import sql, textindex

    store, ref_view = reference
    st = _open(url, tmp_path / "blobs", corpus, index=False)  # all listed pending
    try:
        view = _view(st.mail, ME, "Brouillons")
        real_driver = sql.driver
        turns = {"done": False}

        class IndexedAfterFirstStatement:
            def __init__(self, cur: object) -> None:
                self._cur = cur

            def execute(self, *args: object) -> object:
                result = self._cur.execute(*args)  # type: ignore[attr-defined]
                if not turns["done"]:
                    turns["done"] = True
                    backfill(st.writer_engine, st.blobs)  # the indexer's turn
                return result

            def __getattr__(self, name: str) -> object:
                return getattr(self._cur, name)

        def driver(conn: object) -> tuple[object, str]:
            cur, mark = real_driver(conn)  # type: ignore[arg-type]
            return IndexedAfterFirstStatement(cur), mark

        monkeypatch.setattr(textindex, "driver", driver)
        key = TextKey("pourvoi", headers_too=False)
        found = asyncio.run(st.mail.search_text(ME, view.info.id, "body", "pourvoi"))
        assert turns["done"]
        expected = _search(store, ref_view, key)
        assert expected and found is not None and set(expected) <= found
    finally:
        st.close()
