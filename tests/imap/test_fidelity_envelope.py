"""ENVELOPE address lists as RFC 5322 section 3.4 writes them (issue "Protocol fidelity")."""

from __future__ import annotations

from palais.gateway.imap.envelope import parse_addresses
from tests.imap.conftest import RawClient, ServerThread
from tests.imap.fake_store import FakeStore

END = [None, None, None, None]


def test_comment_only_group_member_is_no_address() -> None:
    assert parse_addresses(b"group:;, group2: (foo) ;") == [
        [None, None, b"group", None],
        END,
        [None, None, b"group2", None],
        END,
    ]
    assert parse_addresses(b"(just a comment)") == []
    assert parse_addresses(b"g: (c1), a@b.test (Name), (c2) ;") == [
        [None, None, b"g", None],
        [b"Name", None, b"a", b"b.test"],
        END,
    ]


def test_envelope_on_the_wire_has_no_invented_address(
    server: ServerThread, store: FakeStore, raw: RawClient
) -> None:
    server.run(
        store.deliver,
        "INBOX",
        b"From: a@b.test\r\nTo: x@y.test\r\nCc: group:;, group2: (foo) ;\r\n"
        b"Subject: s\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n\r\nbody\r\n",
    )
    raw.login()
    raw.cmd(b"s", b"SELECT INBOX")
    lines = raw.cmd(b"a", b"FETCH 1 ENVELOPE")
    assert lines[-1].startswith(b"a OK")
    assert (
        b'((NIL NIL "x" "y.test")) '
        b'((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) '
        b"NIL NIL NIL)"
    ) in lines[0], lines[0]
