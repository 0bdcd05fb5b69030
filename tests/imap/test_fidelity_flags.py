"""Protocol fidelity of flags: keywords in FLAGS/PERMANENTFLAGS (RFC 3501 7.2.6),
UID and MODSEQ after CONDSTORE enabling (RFC 7162 3.1), EXPUNGEISSUED (RFC 5530)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

MSG = b"From: a@b.test\r\nSubject: s\r\n\r\nbody\r\n"
SYSTEM = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft"


@pytest.fixture
def pair(server: ServerThread, store: FakeStore, pki: Pki) -> Iterator[tuple[RawClient, RawClient]]:
    for _ in range(3):
        server.run(store.deliver, "INBOX", MSG)
    with (
        RawClient(server.port, pki.client_context()) as one,
        RawClient(server.port, pki.client_context()) as two,
    ):
        for client in (one, two):
            client.login()
            client.cmd(b"s", b"SELECT INBOX")
        yield one, two


def _flag_lines(lines: list[bytes]) -> tuple[bytes, bytes]:
    flags = next(x for x in lines if x.startswith(b"* FLAGS "))
    permanent = next(x for x in lines if b"[PERMANENTFLAGS " in x)
    return flags, permanent


def test_keyword_is_announced_before_the_fetch_and_after_a_new_select(
    pair: tuple[RawClient, RawClient],
) -> None:
    one, _ = pair
    lines = one.cmd(b"a", b"STORE 1 +FLAGS ($Dossier)")
    assert lines == [
        b"* FLAGS (" + SYSTEM + b" $Dossier)\r\n",
        b"* 1 FETCH (FLAGS ($Dossier))\r\n",
        b"a OK STORE completed\r\n",
    ]
    # Known now: not announced again.
    assert one.cmd(b"b", b"STORE 2 +FLAGS ($Dossier)")[0] == b"* 2 FETCH (FLAGS ($Dossier))\r\n"
    flags, permanent = _flag_lines(one.cmd(b"c", b"SELECT INBOX"))
    assert flags == b"* FLAGS (" + SYSTEM + b" $Dossier)\r\n"
    assert permanent.startswith(b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Dossier \\*)] ")
    _, permanent = _flag_lines(one.cmd(b"d", b"EXAMINE INBOX"))
    assert permanent.startswith(b"* OK [PERMANENTFLAGS ()] ")


def test_keyword_set_by_another_session_is_announced_first(
    pair: tuple[RawClient, RawClient],
) -> None:
    one, two = pair
    one.cmd(b"a", b"STORE 3 +FLAGS.SILENT ($Urgent)")
    assert two.cmd(b"b", b"NOOP") == [
        b"* FLAGS (" + SYSTEM + b" $Urgent)\r\n",
        b"* 3 FETCH (UID 3 FLAGS ($Urgent))\r\n",
        b"b OK NOOP completed\r\n",
    ]
    # A FETCH of flags the client was never told of announces them too.
    one.cmd(b"c", b"STORE 2 +FLAGS.SILENT ($Pieces)")
    lines = two.cmd(b"d", b"FETCH 2 FLAGS")
    assert lines[0] == b"* FLAGS (" + SYSTEM + b" $Urgent $Pieces)\r\n"
    assert b"$Pieces" in lines[1]


def test_store_after_condstore_enabling_carries_uid_and_modseq(
    pair: tuple[RawClient, RawClient],
) -> None:
    one, two = pair
    lines = one.cmd(b"a", b"FETCH 1 MODSEQ")
    # The first enabling command with a box selected: HIGHESTMODSEQ before all else.
    assert re.fullmatch(rb"\* OK \[HIGHESTMODSEQ \d+\] .*\r\n", lines[0]), lines
    assert re.fullmatch(rb"\* 1 FETCH \(MODSEQ \(\d+\)\)\r\n", lines[1]), lines
    assert not any(b"HIGHESTMODSEQ" in x for x in one.cmd(b"b", b"FETCH 2 MODSEQ"))
    lines = one.cmd(b"c", b"STORE 2 +FLAGS (\\Flagged)")
    assert re.fullmatch(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)\r\n", lines[0])
    lines = one.cmd(b"d", b"UID STORE 3 +FLAGS (\\Answered)")
    assert re.fullmatch(rb"\* 3 FETCH \(UID 3 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)\r\n", lines[0])
    # A FETCH that sets \Seen, CONDSTORE enabled: its flag change has UID and MODSEQ.
    lines = one.cmd(b"e", b"FETCH 1 BODY[TEXT]")
    assert re.search(rb"FLAGS \(\\Seen\) UID 1 MODSEQ \(\d+\)\)\r\n$", lines[0]), lines
    # Without CONDSTORE the other session is not told of HIGHESTMODSEQ.
    assert not any(b"HIGHESTMODSEQ" in x for x in two.cmd(b"f", b"STORE 1 +FLAGS (\\Draft)"))


def test_messages_expunged_elsewhere_answer_expungeissued(
    pair: tuple[RawClient, RawClient],
) -> None:
    one, two = pair
    one.cmd(b"a", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert one.cmd(b"b", b"EXPUNGE")[0] == b"* 2 EXPUNGE\r\n"
    # Not yet announced to the other session: FETCH and STORE must not announce it.
    for tag, command in ((b"c", b"FETCH 2 FLAGS"), (b"d", b"FETCH 2 BODY[]")):
        lines = two.cmd(tag, command)
        assert lines[-1].startswith(tag + b" NO [EXPUNGEISSUED] "), lines
    lines = two.cmd(b"e", b"STORE 2 +FLAGS (\\Seen)")
    assert lines[-1].startswith(b"e NO [EXPUNGEISSUED] "), lines
    # The others still answer, with their data.
    lines = two.cmd(b"f", b"FETCH 1:3 (FLAGS)")
    assert [x[:10] for x in lines[:-1]] == [b"* 1 FETCH ", b"* 3 FETCH "]
    assert lines[-1] == b"f OK FETCH completed\r\n"
    assert two.cmd(b"g", b"NOOP")[0] == b"* 2 EXPUNGE\r\n"
