"""SEARCH as evaluated (cheap keys first, repeated keys once, each message read once
for every text key) against a plain reference that tests each message on its own."""

from __future__ import annotations

import asyncio
import quopri
from array import array
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palais.gateway.imap.mime import header_fields
from palais.gateway.imap.searching import Searcher
from palais.gateway.imap.searchspec import (
    AllOf,
    AnyOf,
    DateKey,
    Everything,
    HasFlag,
    HeaderKey,
    InSequence,
    ModSeqKey,
    Negation,
    Nothing,
    Recent,
    SearchKey,
    SizeKey,
    TextKey,
)
from palais.gateway.imap.sequence import parse_sequence_set
from palais.gateway.imap.textsearch import body_text, decode_header_value
from palais.gateway.imap.view import SelectedMailbox
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import HeaderField, MessageRecord
from tests.fuzz.budget import fuzz
from tests.imap.fake_store import FakeStore

WHO = Identity(1, "me@avocats.test", Role.AVOCAT, "Me", "f" * 64, "me@avocats.test")
WORDS = ["pourvoi", "procédure", "témoin", "greffe", "Jean", "dupont", "x"]
FLAGS = ["\\Seen", "\\Flagged", "\\Deleted", "$Urgent", "$done"]


def _message(i: int) -> tuple[bytes, frozenset[str], datetime]:
    word = WORDS[i % len(WORDS)]
    other = WORDS[(i * 3 + 1) % len(WORDS)]
    body = f"Le dossier {i} concerne {word}. " * (1 + i % 4)
    if i % 3 == 0:
        payload = quopri.encodestring(body.encode()).replace(b"\n", b"\r\n")
        encoding = b"Content-Transfer-Encoding: quoted-printable\r\n"
    else:
        payload, encoding = body.encode(), b""
    extra = b"X-Dossier: %s\r\n" % other.encode() if i % 2 else b""
    data = (
        b"From: %s <a%d@avocats.test>\r\nTo: greffe@justice.test\r\nSubject: [%d] %s\r\n"
        b"Date: Mon, %d Mar 2025 10:00:00 +0100\r\n"
        % (other.encode(), i, i, word.encode(), 1 + i % 5)
        + extra
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + encoding
        + b"\r\n"
        + payload
    )
    flags = frozenset(f for j, f in enumerate(FLAGS) if (i >> j) & 1)
    return data, flags, datetime(2025, 3, 1 + i % 6, 9, 0, tzinfo=UTC)


STORE = FakeStore()
for _i in range(24):
    _data, _flags, _when = _message(_i)
    STORE.deliver("INBOX", _data, _flags, _when)
for _uid in (3, 8, 9, 15):  # gaps: sequence numbers and UIDs differ
    del STORE.boxes["INBOX"].messages[_uid]


def _view() -> SelectedMailbox:
    info = asyncio.run(STORE.mailbox(WHO, "INBOX"))
    view = SelectedMailbox(info, read_only=True)
    view.load(array("I", sorted(STORE.boxes["INBOX"].messages)))
    return view


VIEW = _view()


def _reference(key: SearchKey, record: MessageRecord, seq: int, data: bytes) -> bool:
    """Whether one message matches, key by key, as RFC 3501 reads."""
    if isinstance(key, Everything):
        return True
    if isinstance(key, (Nothing, Recent)):
        return False  # the reference view tracks no \Recent
    if isinstance(key, AllOf):
        return all(_reference(k, record, seq, data) for k in key.keys)
    if isinstance(key, AnyOf):
        return any(_reference(k, record, seq, data) for k in key.keys)
    if isinstance(key, Negation):
        return not _reference(key.key, record, seq, data)
    if isinstance(key, HasFlag):
        return any(f.lower() == key.flag.lower() for f in record.flags) == key.present
    if isinstance(key, InSequence):
        top = VIEW.uids[-1] if key.uid else VIEW.exists
        return key.numbers.contains_uid(record.uid if key.uid else seq, top)
    if isinstance(key, ModSeqKey):
        return record.modseq >= key.modseq
    if isinstance(key, SizeKey):
        return record.size > key.size if key.larger else record.size < key.size
    if isinstance(key, DateKey) and not key.sent:
        day = record.internaldate.date()
        return {"BEFORE": day < key.day, "ON": day == key.day, "SINCE": day >= key.day}[key.op]
    if isinstance(key, DateKey):
        since = key.day if key.op in ("SINCE", "ON") else None
        before = key.day if key.op == "BEFORE" else None
        if key.op == "ON":
            before = date.fromordinal(key.day.toordinal() + 1)
        return record.uid in asyncio.run(STORE.search_sent(WHO, 1, since, before))
    needle = key.text.casefold()
    if isinstance(key, HeaderKey):
        if key.name in {f.value for f in HeaderField} and key.text:
            field = HeaderField(key.name)
            return record.uid in asyncio.run(STORE.search_header(WHO, 1, field, key.text))
        return any(
            f.name == key.name and needle in decode_header_value(f.value).casefold()
            for f in header_fields(data)
        )
    head = data.find(b"\r\n\r\n")
    start = head + 4 if head >= 0 else 0
    text = body_text(data)
    if key.headers_too:
        text = decode_header_value(data[:start]) + "\n" + text
    return needle in text.casefold()


def _expected(key: SearchKey) -> list[int]:
    box = STORE.boxes["INBOX"]
    out = []
    for seq, uid in enumerate(VIEW.uids, 1):
        m = box.messages[uid]
        record = MessageRecord(
            uid, m.flags, m.modseq, m.internaldate, m.size, m.blob, m.header_size
        )
        if _reference(key, record, seq, STORE.blobs[m.blob]):
            out.append(uid)
    return out


word = st.sampled_from([*WORDS, "PROCÉDURE", "dossier 1", "", "absent"])
sequence = st.sampled_from(["1:4", "2,5:7", "*", "10:*", "3:1,18", "30"]).map(
    lambda t: parse_sequence_set(t.encode())
)
leaf: st.SearchStrategy[SearchKey] = st.one_of(
    st.just(Everything()),
    st.just(Nothing()),
    st.builds(HasFlag, st.sampled_from([*FLAGS, "\\seen", "$Other"]), st.booleans()),
    st.builds(InSequence, sequence, st.booleans()),
    st.builds(ModSeqKey, st.integers(0, 30)),
    st.builds(SizeKey, st.booleans(), st.integers(150, 700)),
    st.builds(
        DateKey,
        st.sampled_from(["BEFORE", "ON", "SINCE"]),
        st.dates(date(2025, 2, 27), date(2025, 3, 8)),
        st.booleans(),
    ),
    st.builds(HeaderKey, st.sampled_from(["subject", "from", "to", "x-dossier", "date"]), word),
    st.builds(TextKey, word, st.booleans()),
)


def _extend(children: st.SearchStrategy[SearchKey]) -> st.SearchStrategy[SearchKey]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda ks: AllOf(tuple(ks))),
        st.lists(children, min_size=2, max_size=3).map(lambda ks: AnyOf(tuple(ks))),
        children.map(Negation),
    )


program = st.recursive(leaf, _extend, max_leaves=10)


@fuzz(300)
@given(program)
def test_search_matches_the_reference(key: SearchKey) -> None:
    found = asyncio.run(Searcher(STORE, WHO, VIEW).run(key))
    assert found == _expected(key)


@pytest.mark.parametrize(
    "key",
    [
        AllOf((TextKey("procédure", False), TextKey("procédure", False), HasFlag("\\Seen", True))),
        AnyOf((HeaderKey("x-dossier", "témoin"), Negation(TextKey("", True)))),
        AllOf((Negation(InSequence(parse_sequence_set(b"2:*"), False)), Everything())),
    ],
)
def test_search_examples(key: Any) -> None:
    assert asyncio.run(Searcher(STORE, WHO, VIEW).run(key)) == _expected(key)
