"""QRESYNC (RFC 7162 section 3.2) over a real TLS connection, from the RFC's examples:
ENABLE, SELECT (QRESYNC ...) with VANISHED (EARLIER) and the changed flags,
UID FETCH (CHANGEDSINCE n VANISHED), VANISHED instead of EXPUNGE, [CLOSED]."""

from __future__ import annotations

import re

from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore


def _msg(n: int) -> bytes:
    return (
        f"From: a@b.test\r\nSubject: {n}\r\nMessage-ID: <{n}@b.test>\r\n\r\nbody {n}\r\n".encode()
    )


def _fill(server: ServerThread, store: FakeStore, count: int) -> None:
    for n in range(1, count + 1):
        server.run(store.deliver, "INBOX", _msg(n))


def _validity(store: FakeStore) -> int:
    return store.boxes["INBOX"].uidvalidity


def _highest(lines: list[bytes]) -> int:
    found = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", b"".join(lines))
    assert found is not None
    return int(found.group(1))


def _expunge_uids(raw: RawClient, uids: bytes) -> list[bytes]:
    assert raw.cmd(b"x1", b"UID STORE " + uids + b" +FLAGS.SILENT (\\Deleted)")[-1].startswith(
        b"x1 OK"
    )
    return raw.cmd(b"x2", b"UID EXPUNGE " + uids)


def test_capability_and_enable(raw: RawClient) -> None:
    raw.login()
    assert b" QRESYNC" in raw.cmd(b"a", b"CAPABILITY")[0]
    # RFC 7162 3.2.3: "A01 ENABLE QRESYNC" answers "* ENABLED QRESYNC".
    lines = raw.cmd(b"b", b"ENABLE QRESYNC")
    assert lines == [b"* ENABLED QRESYNC\r\n", b"b OK Enabled\r\n"]
    # Enabled once: a second ENABLE lists nothing.
    assert raw.cmd(b"c", b"ENABLE QRESYNC")[0] == b"* ENABLED\r\n"


def test_qresync_select_needs_enable(raw: RawClient, store: FakeStore) -> None:
    raw.login()
    line = b"SELECT INBOX (QRESYNC (%d 1))" % _validity(store)
    assert raw.cmd(b"a", line)[-1].startswith(b"a BAD")
    assert raw.cmd(b"b", b"UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"b BAD")


def test_select_qresync_reports_vanished_and_changes(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 10)
    raw.login()
    raw.cmd(b"e", b"ENABLE QRESYNC")
    first = raw.cmd(b"s", b"SELECT INBOX")
    known = _highest(first)
    # Another session's changes, while this client is away: 3, 4 and 8 go,
    # 6 is flagged.
    _expunge_uids(raw, b"3:4,8")
    raw.cmd(b"f", b"UID STORE 6 +FLAGS.SILENT (\\Flagged)")
    raw.cmd(b"u", b"UNSELECT")
    # The RFC's example shape: SELECT INBOX (QRESYNC (uidvalidity modseq known-uids)).
    lines = raw.cmd(b"A03", b"SELECT INBOX (QRESYNC (%d %d 1:10))" % (_validity(store), known))
    assert lines[-1] == b"A03 OK [READ-WRITE] SELECT completed\r\n"
    assert b"* 7 EXISTS\r\n" in lines
    vanished = lines.index(b"* VANISHED (EARLIER) 3:4,8\r\n")
    fetch = [line for line in lines if b" FETCH " in line]
    assert len(fetch) == 1
    assert re.fullmatch(rb"\* 4 FETCH \(UID 6 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)\r\n", fetch[0])
    # VANISHED (EARLIER) comes before the FETCH responses (RFC 7162 3.2.5.2).
    assert vanished < lines.index(fetch[0])


def test_select_qresync_known_uids_limit_the_report(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 6)
    raw.login()
    raw.cmd(b"e", b"ENABLE QRESYNC")
    known = _highest(raw.cmd(b"s", b"SELECT INBOX"))
    _expunge_uids(raw, b"2,5")
    raw.cmd(b"u", b"UNSELECT")
    lines = raw.cmd(b"a", b"SELECT INBOX (QRESYNC (%d %d 4:6))" % (_validity(store), known))
    assert b"* VANISHED (EARLIER) 5\r\n" in lines
    # With seq-match-data (here consistent: sequence numbers 1:2 were UIDs 1,3).
    raw.cmd(b"u2", b"UNSELECT")
    lines = raw.cmd(
        b"b", b"SELECT INBOX (QRESYNC (%d %d 1:6 (1:2 1,3)))" % (_validity(store), known)
    )
    assert b"* VANISHED (EARLIER) 2,5\r\n" in lines and lines[-1].startswith(b"b OK")
    # Two sets of different sizes are a client bug.
    bad = raw.cmd(b"c", b"SELECT INBOX (QRESYNC (%d %d 1:6 (1:3 1,3)))" % (_validity(store), known))
    assert bad[-1].startswith(b"c BAD")


def test_select_qresync_with_another_uidvalidity_is_a_plain_select(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 3)
    raw.login()
    raw.cmd(b"e", b"ENABLE QRESYNC")
    raw.cmd(b"s", b"SELECT INBOX")
    _expunge_uids(raw, b"2")
    raw.cmd(b"u", b"UNSELECT")
    lines = raw.cmd(b"a", b"SELECT INBOX (QRESYNC (%d 1))" % (_validity(store) + 1))
    assert lines[-1].startswith(b"a OK")
    assert not any(b"VANISHED" in line or b"FETCH" in line for line in lines)


def test_uid_fetch_changedsince_vanished(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 8)
    raw.login()
    raw.cmd(b"e", b"ENABLE QRESYNC")
    known = _highest(raw.cmd(b"s", b"SELECT INBOX"))
    _expunge_uids(raw, b"2,7")
    raw.cmd(b"f", b"UID STORE 5 +FLAGS.SILENT (\\Seen)")
    # RFC 7162 3.2.6: UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED).
    lines = raw.cmd(b"a", b"UID FETCH 1:6 (FLAGS) (CHANGEDSINCE %d VANISHED)" % known)
    assert lines[0] == b"* VANISHED (EARLIER) 2\r\n"
    assert re.fullmatch(rb"\* 4 FETCH \(UID 5 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)\r\n", lines[1]), (
        lines
    )
    assert lines[-1].startswith(b"a OK")
    whole = raw.cmd(b"b", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % known)
    assert whole[0] == b"* VANISHED (EARLIER) 2,7\r\n"
    # VANISHED without CHANGEDSINCE, or in a FETCH by sequence number: BAD.
    assert raw.cmd(b"c", b"UID FETCH 1:* FLAGS (VANISHED)")[-1].startswith(b"c BAD")
    assert raw.cmd(b"d", b"FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"d BAD")


def test_vanished_replaces_expunge(
    server: ServerThread, store: FakeStore, raw: RawClient, pki: Pki
) -> None:
    _fill(server, store, 5)
    raw.login()
    raw.cmd(b"e", b"ENABLE QRESYNC")
    raw.cmd(b"s", b"SELECT INBOX")
    # Own EXPUNGE: one VANISHED, and the tagged OK carries HIGHESTMODSEQ.
    lines = _expunge_uids(raw, b"2,4")
    assert lines[0] == b"* VANISHED 2,4\r\n"
    assert re.fullmatch(rb"x2 OK \[HIGHESTMODSEQ \d+\] EXPUNGE completed\r\n", lines[-1])
    # MOVE (RFC 6851 4.3): VANISHED too.
    moved = raw.cmd(b"m", b"UID MOVE 5 Supprim&AOk-s")
    assert b"* VANISHED 5\r\n" in moved and moved[-1].startswith(b"m OK")
    # Another session's expunge reaches this one as VANISHED at its next command;
    # that session, without QRESYNC, gets EXPUNGE.
    with RawClient(server.port, pki.client_context()) as other:
        other.login()
        other.cmd(b"s", b"SELECT INBOX")
        assert _expunge_uids(other, b"1")[0] == b"* 1 EXPUNGE\r\n"
    assert raw.cmd(b"n", b"NOOP")[0] == b"* VANISHED 1\r\n"


def test_closed_when_another_box_is_selected(raw: RawClient) -> None:
    raw.login()
    assert not any(b"CLOSED" in line for line in raw.cmd(b"a", b"SELECT INBOX"))
    lines = raw.cmd(b"b", b"EXAMINE Brouillons")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed\r\n"


def test_condstore_client_still_gets_expunge(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 3)
    raw.login()
    raw.cmd(b"s", b"SELECT INBOX (CONDSTORE)")
    lines = _expunge_uids(raw, b"2")
    assert lines[0] == b"* 2 EXPUNGE\r\n" and lines[-1] == b"x2 OK EXPUNGE completed\r\n"


def test_a_message_gone_before_announced_is_never_shown(
    server: ServerThread, store: FakeStore, raw: RawClient, pki: Pki
) -> None:
    _fill(server, store, 2)
    raw.login()
    raw.cmd(b"e", b"ENABLE QRESYNC")
    raw.cmd(b"s", b"SELECT INBOX")
    # Delivered and expunged by another session while this one says nothing.
    uid = server.run(store.deliver, "INBOX", _msg(3), frozenset({"\\Deleted"}))
    with RawClient(server.port, pki.client_context()) as other:
        other.login()
        other.cmd(b"s", b"SELECT INBOX")
        assert _expunge_uids(other, b"%d" % uid)[-1].startswith(b"x2 OK")
    lines = raw.cmd(b"n", b"NOOP")
    assert lines == [b"n OK NOOP completed\r\n"]  # no EXISTS, no VANISHED for it
    assert raw.cmd(b"f", b"UID FETCH 1:* (UID)")[:-1] == [
        b"* 1 FETCH (UID 1)\r\n",
        b"* 2 FETCH (UID 2)\r\n",
    ]
