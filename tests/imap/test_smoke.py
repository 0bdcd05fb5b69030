from __future__ import annotations

from tests.imap.conftest import RawClient, ServerThread
from tests.imap.fake_store import FakeStore

MSG = b"From: a@b.test\r\nSubject: hello\r\n\r\nbody\r\n"


def test_greeting_and_login(raw: RawClient, store: FakeStore, server: ServerThread) -> None:
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    assert b"AUTH=EXTERNAL" in raw.greeting
    raw.login()
    server.run(store.deliver, "INBOX", MSG)
    lines = raw.cmd(b"a", b"SELECT INBOX")
    assert lines[-1].startswith(b"a OK [READ-WRITE]")
    lines = raw.cmd(b"b", b"FETCH 1 (UID FLAGS BODY.PEEK[] ENVELOPE BODYSTRUCTURE)")
    print(lines)
    assert lines[-1].startswith(b"b OK")
    assert MSG in lines[0]
