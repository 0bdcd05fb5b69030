"""MULTIAPPEND (RFC 3502) over a real TLS connection: several messages in one
APPEND, each with its flags and date, stored all or none."""

from __future__ import annotations

import re

from tests.imap.conftest import RawClient
from tests.imap.fake_store import FakeStore

FIRST = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example>"
    b"\r\nSubject: afternoon meeting\r\nTo: mooch@owatagu.siam.edu.example\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\nHello Joe, do you think we can meet at"
    b" 3:30 tomorrow?\r\n"
)
SECOND = (
    b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\n"
    b"From: Joe Mooch <mooch@OWaTaGu.siam.EDU.example>"
    b"\r\nSubject: Re: afternoon meeting\r\nTo: foobar@blurdybloop.example\r\n"
    b"Message-Id: <a0434793874930@OWaTaGu.siam.EDU.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n3:30 is fine with me.\r\n"
)


def _send_multi(
    raw: RawClient, tag: bytes, box: bytes, *messages: tuple[bytes, bytes]
) -> list[bytes]:
    """APPEND with synchronizing literals: each waits for the server's "+"."""
    head = tag + b" APPEND " + box
    for i, (prefix, data) in enumerate(messages):
        raw.send(head + b" " + prefix + b"{%d}\r\n" % len(data))
        go_on = raw.read_response()
        if not go_on.startswith(b"+"):
            return [go_on]
        raw.send(data)
        head = b""
        if i == len(messages) - 1:
            raw.send(b"\r\n")
    return raw.until_tagged(tag)


def test_capability(raw: RawClient) -> None:
    raw.login()
    assert b" MULTIAPPEND" in raw.cmd(b"a", b"CAPABILITY")[0]


def test_rfc3502_example_appends_both(raw: RawClient, store: FakeStore) -> None:
    raw.login()
    lines = _send_multi(
        raw,
        b"A003",
        b"Brouillons",
        (b"(\\Seen) ", FIRST),
        (b'(\\Seen) " 7-Feb-1994 22:43:04 -0800" ', SECOND),
    )
    assert re.fullmatch(rb"A003 OK \[APPENDUID \d+ 1:2\] APPEND completed\r\n", lines[-1]), lines
    box = store.boxes["Brouillons"]
    assert store.blobs[box.messages[1].blob] == FIRST
    assert store.blobs[box.messages[2].blob] == SECOND
    assert box.messages[2].internaldate.utcoffset() is not None
    assert box.messages[2].internaldate.isoformat() == "1994-02-07T22:43:04-08:00"
    assert ("append_all", "Brouillons", 2) in store.calls


def test_all_or_none(raw: RawClient, store: FakeStore) -> None:
    raw.login()
    refused = SECOND.replace(b"MIME-Version", b"X-Refuse: yes\r\nMIME-Version")
    lines = _send_multi(raw, b"A004", b"Brouillons", (b"", FIRST), (b"", refused))
    assert lines[-1].startswith(b"A004 NO [CANNOT]")
    assert store.boxes["Brouillons"].messages == {}
    # LITERAL+: the client sends everything at once.
    raw.send(
        b"A005 APPEND Brouillons {%d+}\r\n" % len(FIRST)
        + FIRST
        + b" (\\Flagged) {%d+}\r\n" % len(SECOND)
        + SECOND
        + b"\r\n"
    )
    assert raw.until_tagged(b"A005")[-1].startswith(b"A005 OK [APPENDUID ")
    assert store.flags_of("Brouillons", 2) == frozenset({"\\Flagged"})
    # A mailbox that does not exist: TRYCREATE, nothing stored.
    lines = _send_multi(raw, b"A006", b"Nowhere", (b"", FIRST), (b"", SECOND))
    assert lines[-1].startswith(b"A006 NO [TRYCREATE]")
    # An empty message among them refuses the whole command.
    raw.send(b"A007 APPEND Brouillons {%d+}\r\n" % len(FIRST) + FIRST + b" {0+}\r\n\r\n")
    assert raw.until_tagged(b"A007")[-1].startswith(b"A007 NO")
    assert len(store.boxes["Brouillons"].messages) == 2
