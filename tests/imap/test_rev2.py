"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, over a real TLS connection, from
the RFC's examples: both advertised; a session behaves rev2 only after ENABLE
IMAP4rev2 (Appendix A): ESEARCH for every SEARCH, no \\Recent and no RECENT,
a LIST response in SELECT, mailbox names in UTF-8; rev1 sessions keep rev1's
answers (SEARCH response, \\Recent, SEARCH RECENT/NEW/OLD, modified UTF-7)."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator

import pytest

from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

# As in RFC 9051 6.4.4's example: FLAGGED NOT FROM "Smith" is 2,10:11.
FLAGGED = {2, 10, 11, 12}
SMITH = {12}
SEARCH = b'FLAGGED NOT FROM "Smith"'


def _msg(n: int) -> bytes:
    sender = "Smith <smith@b.test>" if n in SMITH else "Jones <jones@b.test>"
    return f"From: {sender}\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


def _fill(server: ServerThread, store: FakeStore) -> None:
    for n in range(1, 13):
        flags = frozenset({"\\Flagged"}) if n in FLAGGED else frozenset()
        server.run(store.deliver, "INBOX", _msg(n), flags)


def _ok(lines: list[bytes], tag: bytes) -> list[bytes]:
    assert lines[-1].startswith(tag + b" OK"), lines
    return lines[:-1]


def _client(server: ServerThread, pki: Pki, *, rev2: bool) -> RawClient:
    client = RawClient(server.port, pki.client_context())
    client.login()
    if rev2:
        assert _ok(client.cmd(b"e", b"ENABLE IMAP4rev2"), b"e") == [b"* ENABLED IMAP4rev2\r\n"]
    return client


@pytest.fixture
def rev2(server: ServerThread, pki: Pki) -> Iterator[RawClient]:
    client = _client(server, pki, rev2=True)
    yield client
    client.close()


@pytest.fixture
def rev1(server: ServerThread, pki: Pki) -> Iterator[RawClient]:
    client = _client(server, pki, rev2=False)
    yield client
    client.close()


@pytest.fixture
def fresh(store: FakeStore) -> FakeStore:
    store.seen_elsewhere = False  # deliveries nobody was told of yet: \Recent for rev1
    return store


def test_greeting_and_capability_list_both_revisions(raw: RawClient) -> None:
    assert {b"IMAP4rev1", b"IMAP4rev2"} <= set(raw.greeting.split(b"]")[0].split())
    raw.login()
    caps = set(raw.cmd(b"c", b"CAPABILITY")[0].split())
    # What RFC 9051 folds in, all offered (LITERAL- within LITERAL+).
    folded = {
        b"IMAP4rev1",
        b"IMAP4rev2",
        b"NAMESPACE",
        b"UNSELECT",
        b"UIDPLUS",
        b"ESEARCH",
        b"SEARCHRES",
        b"ENABLE",
        b"IDLE",
        b"SASL-IR",
        b"LIST-EXTENDED",
        b"LIST-STATUS",
        b"MOVE",
        b"LITERAL+",
        b"BINARY",
        b"SPECIAL-USE",
        b"CHILDREN",
        b"STATUS=SIZE",
    }
    assert folded <= caps


def test_enable_lists_imap4rev2_once(rev2: RawClient) -> None:
    assert _ok(rev2.cmd(b"e2", b"ENABLE IMAP4rev2"), b"e2") == [b"* ENABLED\r\n"]


def test_search_answers_esearch_after_enable(
    server: ServerThread, store: FakeStore, rev2: RawClient
) -> None:
    _fill(server, store)
    _ok(rev2.cmd(b"s", b"SELECT INBOX"), b"s")
    # RFC 9051 6.4.4's examples.
    found = rev2.cmd(b"A282", b"SEARCH RETURN (MIN COUNT) " + SEARCH)
    assert _ok(found, b"A282") == [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n']
    found = rev2.cmd(b"A283", b"SEARCH RETURN () " + SEARCH)
    assert _ok(found, b"A283") == [b'* ESEARCH (TAG "A283") ALL 2,10:11\r\n']
    found = rev2.cmd(b"A284", b'SEARCH TEXT "string not in mailbox"')
    assert _ok(found, b"A284") == [b'* ESEARCH (TAG "A284")\r\n']
    # No RETURN at all is RETURN (ALL): never the SEARCH response.
    assert _ok(rev2.cmd(b"A285", b"SEARCH " + SEARCH), b"A285") == [
        b'* ESEARCH (TAG "A285") ALL 2,10:11\r\n'
    ]


def test_uid_search_answers_esearch_with_uid_after_enable(
    server: ServerThread, store: FakeStore, rev2: RawClient
) -> None:
    _fill(server, store)
    _ok(rev2.cmd(b"s", b"SELECT INBOX"), b"s")
    assert _ok(rev2.cmd(b"u1", b"UID SEARCH " + SEARCH), b"u1") == [
        b'* ESEARCH (TAG "u1") UID ALL 2,10:11\r\n'
    ]
    assert _ok(rev2.cmd(b"u2", b"UID SEARCH SUBJECT nowhere"), b"u2") == [
        b'* ESEARCH (TAG "u2") UID\r\n'
    ]


def test_rev1_session_keeps_the_search_response(
    server: ServerThread, store: FakeStore, rev1: RawClient
) -> None:
    _fill(server, store)
    _ok(rev1.cmd(b"s", b"SELECT INBOX"), b"s")
    assert _ok(rev1.cmd(b"q", b"SEARCH " + SEARCH), b"q") == [b"* SEARCH 2 10 11\r\n"]


def test_select_gives_a_list_response_and_no_recent(
    server: ServerThread, fresh: FakeStore, rev2: RawClient
) -> None:
    _fill(server, fresh)
    lines = _ok(rev2.cmd(b"s", b"SELECT INBOX"), b"s")
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n' in lines
    assert not [line for line in lines if b"RECENT" in line or b"[UNSEEN " in line]
    sent = _ok(rev2.cmd(b"t", 'SELECT "Envoyés"'.encode()), b"t")
    assert '* LIST (\\HasNoChildren \\Sent) "/" "Envoyés"\r\n'.encode() in sent


def test_no_recent_flag_nor_response_after_enable(
    server: ServerThread, fresh: FakeStore, rev2: RawClient
) -> None:
    _fill(server, fresh)
    _ok(rev2.cmd(b"s", b"SELECT INBOX"), b"s")
    flags = _ok(rev2.cmd(b"f", b"FETCH 1:* (FLAGS)"), b"f")
    assert len(flags) == 12 and not [line for line in flags if b"\\Recent" in line]
    # A message arriving while selected: EXISTS, no RECENT, no \Recent.
    server.run(fresh.deliver, "INBOX", _msg(13))
    assert _ok(rev2.cmd(b"n", b"NOOP"), b"n") == [b"* 13 EXISTS\r\n"]
    assert _ok(rev2.cmd(b"g", b"FETCH 13 (FLAGS)"), b"g") == [b"* 13 FETCH (FLAGS ())\r\n"]
    assert _ok(rev2.cmd(b"r", b"SEARCH RECENT"), b"r") == [b'* ESEARCH (TAG "r")\r\n']


def test_rev2_session_claims_no_recent_message_from_rev1_ones(
    server: ServerThread, pki: Pki, fresh: FakeStore, rev2: RawClient
) -> None:
    _fill(server, fresh)
    _ok(rev2.cmd(b"s", b"SELECT INBOX"), b"s")
    with _client(server, pki, rev2=False) as rev1:
        assert b"* 12 RECENT\r\n" in _ok(rev1.cmd(b"s", b"SELECT INBOX"), b"s")


def test_rev1_search_recent_new_and_old(
    server: ServerThread, fresh: FakeStore, rev1: RawClient
) -> None:
    # RFC 3501 6.4.4: RECENT is \Recent, NEW is RECENT UNSEEN, OLD is NOT RECENT.
    fresh.seen_elsewhere = True
    server.run(fresh.deliver, "INBOX", _msg(1))  # another session was told of it
    fresh.seen_elsewhere = False
    for n in (2, 3):
        server.run(fresh.deliver, "INBOX", _msg(n))
    assert b"* 2 RECENT\r\n" in _ok(rev1.cmd(b"s", b"SELECT INBOX"), b"s")
    _ok(rev1.cmd(b"t", b"STORE 3 +FLAGS.SILENT (\\Seen)"), b"t")
    assert _ok(rev1.cmd(b"a", b"SEARCH RECENT"), b"a") == [b"* SEARCH 2 3\r\n"]
    assert _ok(rev1.cmd(b"b", b"SEARCH NEW"), b"b") == [b"* SEARCH 2\r\n"]
    assert _ok(rev1.cmd(b"c", b"SEARCH OLD"), b"c") == [b"* SEARCH 1\r\n"]


def test_mailbox_names_in_utf8_after_enable(rev1: RawClient, rev2: RawClient) -> None:
    before = _ok(rev1.cmd(b"l", b'LIST "" "Envoy*"'), b"l")
    assert before == [b'* LIST (\\HasNoChildren \\Sent) "/" "Envoy&AOk-s"\r\n']
    after = _ok(rev2.cmd(b"l", b'LIST "" "Envoy*"'), b"l")
    assert after == ['* LIST (\\HasNoChildren \\Sent) "/" "Envoyés"\r\n'.encode()]
    status = _ok(rev2.cmd(b"st", 'STATUS "Envoyés" (MESSAGES)'.encode()), b"st")
    assert status == ['* STATUS "Envoyés" (MESSAGES 0)\r\n'.encode()]


def test_status_deleted_and_size(server: ServerThread, store: FakeStore, rev2: RawClient) -> None:
    server.run(store.deliver, "INBOX", _msg(1), frozenset({"\\Deleted"}))
    server.run(store.deliver, "INBOX", _msg(2))
    size = len(_msg(1)) + len(_msg(2))
    lines = _ok(rev2.cmd(b"st", b"STATUS INBOX (MESSAGES DELETED SIZE)"), b"st")
    assert lines == [b'* STATUS "INBOX" (MESSAGES 2 DELETED 1 SIZE %d)\r\n' % size]


def test_imaplib_enables_rev2_and_uses_a_saved_search(
    server: ServerThread, store: FakeStore, pki: Pki
) -> None:
    _fill(server, store)
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=pki.client_context())
    try:
        assert conn.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
        assert "IMAP4REV2" in conn.capabilities
        assert conn.enable("IMAP4rev2")[0] == "OK"
        assert conn.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
        assert conn.select("INBOX")[0] == "OK"
        typ, data = conn.uid("SEARCH", "RETURN", "(SAVE)", *SEARCH.decode().split(" ", 2))
        assert typ == "OK" and "ESEARCH" not in conn.untagged_responses
        typ, data = conn.uid("FETCH", "$", "(FLAGS)")
        assert typ == "OK"
        assert [bytes(d).split(b" ")[0] for d in data] == [b"2", b"10", b"11"]
        assert conn.uid("SEARCH", "SUBJECT", "10")[0] == "OK"
        # imaplib keeps the untagged ESEARCH it does not parse.
        esearch = [e for e in conn.untagged_responses.pop("ESEARCH") if isinstance(e, bytes)]
        assert [e.split(b")", 1)[1] for e in esearch] == [b" UID ALL 10"]
    finally:
        conn.logout()
