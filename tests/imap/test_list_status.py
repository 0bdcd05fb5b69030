"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and STATUS=SIZE (RFC 8438)
over a real TLS connection, after the RFCs' examples; imap-tools and imaplib too."""

from __future__ import annotations

from imap_tools import MailBox

from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

ONE = b"From: a@b.test\r\nSubject: un\r\n\r\nbody\r\n"
TWO = b"From: a@b.test\r\nSubject: deux\r\n\r\nlonger body\r\n"


def test_capabilities(raw: RawClient) -> None:
    raw.login()
    caps = raw.cmd(b"a", b"CAPABILITY")[0].split()
    assert b"LIST-EXTENDED" in caps and b"LIST-STATUS" in caps and b"STATUS=SIZE" in caps


def test_status_size_rfc8438_example(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    server.run(store.deliver, "INBOX", ONE)
    server.run(store.deliver, "INBOX", TWO, frozenset({"\\Deleted"}))
    raw.login()
    # RFC 8438: "t STATUS INBOX (MESSAGES SIZE UIDNEXT)" answers
    # "* STATUS INBOX (MESSAGES 12 SIZE 3477 UIDNEXT 29)".
    lines = raw.cmd(b"t", b"STATUS INBOX (MESSAGES SIZE UIDNEXT)")
    assert lines[0] == b'* STATUS "INBOX" (MESSAGES 2 SIZE %d UIDNEXT 3)\r\n' % (
        len(ONE) + len(TWO)
    )
    # RFC 9051's DELETED: the messages with \Deleted.
    assert raw.cmd(b"u", b"STATUS INBOX (DELETED)")[0] == b'* STATUS "INBOX" (DELETED 1)\r\n'
    assert raw.cmd(b"v", b"STATUS INBOX (BOGUS)")[-1].startswith(b"v BAD")


def test_list_status_rfc5819_example(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    server.run(store.deliver, "INBOX", ONE)
    server.run(store.deliver, "INBOX", TWO, frozenset({"\\Seen"}))
    raw.login()
    # 'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))': each selectable box's
    # STATUS right after its LIST line, none for a \Noselect one.
    lines = raw.cmd(b"A01", b'LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')
    assert lines[-1] == b"A01 OK LIST completed\r\n"
    inbox = lines.index(b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n')
    assert lines[inbox + 1] == b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1)\r\n'
    dossiers = next(i for i, line in enumerate(lines) if line.endswith(b'"Dossiers"\r\n'))
    assert b"\\Noselect" in lines[dossiers]
    assert dossiers + 1 == len(lines) - 1 or not lines[dossiers + 1].startswith(b"* STATUS")
    statuses = [line for line in lines if line.startswith(b"* STATUS")]
    assert len(statuses) == 5  # the five global boxes
    # With other return options and several patterns (RFC 5258 3).
    lines = raw.cmd(
        b"A02", b'LIST "" ("INBOX" "Dossiers/*") RETURN (CHILDREN STATUS (SIZE MESSAGES))'
    )
    assert lines[1] == b'* STATUS "INBOX" (SIZE %d MESSAGES 2)\r\n' % (len(ONE) + len(TWO))
    assert any(line.endswith(b'"Dossiers/2025-0000138/Re&AOc-us"\r\n') for line in lines)
    assert raw.cmd(b"A03", b'LIST "" % RETURN (STATUS ())')[-1].startswith(b"A03 BAD")
    assert raw.cmd(b"A04", b'LIST "" % RETURN (BOGUS)')[-1].startswith(b"A04 BAD")


def test_list_extended_selection_options(raw: RawClient) -> None:
    raw.login()
    # RFC 5258 example 5.1: LIST (SUBSCRIBED) "" "*": every box, \Subscribed.
    lines = raw.cmd(b"A02", b'LIST (SUBSCRIBED) "" "*"')
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n' in lines
    assert all(b"\\Subscribed" in line for line in lines[:-1])
    # RECURSIVEMATCH with SUBSCRIBED: a parent whose descendants are
    # subscribed says so with CHILDINFO (RFC 5258 3.5, example 5.9).
    lines = raw.cmd(b"A05", b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    (dossiers,) = [line for line in lines if b'"Dossiers"' in line]
    assert dossiers.endswith(b'"Dossiers" ("CHILDINFO" ("SUBSCRIBED"))\r\n')
    inbox = next(line for line in lines if b'"INBOX"' in line)
    assert b"CHILDINFO" not in inbox
    # RECURSIVEMATCH alone is a syntax error; REMOTE names no other server's box.
    assert raw.cmd(b"A06", b'LIST (RECURSIVEMATCH) "" "%"')[-1].startswith(b"A06 BAD")
    remote = raw.cmd(b"A07", b'LIST (REMOTE) "" "%"')
    assert remote[-1].startswith(b"A07 OK") and len(remote) > 5
    # RETURN (SUBSCRIBED) on a plain LIST.
    lines = raw.cmd(b"A08", b'LIST "" "INBOX" RETURN (SUBSCRIBED)')
    assert lines[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n'


def test_clients_status(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    server.run(store.deliver, "INBOX", ONE)
    with MailBox("127.0.0.1", server.port, ssl_context=pki.client_context()) as mailbox:
        mailbox.client.authenticate("EXTERNAL", lambda _: b"")
        # imap-tools knows no SIZE: its default items; imaplib sends SIZE as given.
        status = mailbox.folder.status("INBOX")
        assert status["MESSAGES"] == 1 and status["UIDNEXT"] == 2 and status["UNSEEN"] == 1
        typ, data = mailbox.client.status("INBOX", "(SIZE)")
        assert typ == "OK" and data == [b'"INBOX" (SIZE %d)' % len(ONE)]
