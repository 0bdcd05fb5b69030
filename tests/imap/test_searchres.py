"""SEARCHRES (RFC 5182, part of IMAP4rev2: RFC 9051 6.4.4.1) over a real TLS
connection, from the RFCs' examples: SEARCH RETURN (SAVE) keeps its result,
``$`` stands for it in FETCH, STORE, COPY, MOVE, UID EXPUNGE and SEARCH,
by sequence number or UID; MIN/MAX narrow it; a failed SEARCH, a new SELECT
and expunges change it as the RFC says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.imap.conftest import RawClient, ServerThread
from tests.imap.fake_store import FakeStore

# UIDs 1..12; \Flagged: 2, 10, 11, 12; from Smith: 12. So FLAGGED NOT FROM
# "Smith" is 2,10:11, the RFC 9051 6.4.4 example's answer.
FLAGGED = {2, 10, 11, 12}
SMITH = {12}
SEARCH = b'FLAGGED NOT FROM "Smith"'


def _msg(n: int) -> bytes:
    sender = "Smith <smith@b.test>" if n in SMITH else "Jones <jones@b.test>"
    return f"From: {sender}\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def box(server: ServerThread, store: FakeStore, raw: RawClient) -> Iterator[RawClient]:
    for n in range(1, 13):
        flags = frozenset({"\\Flagged"}) if n in FLAGGED else frozenset()
        server.run(store.deliver, "INBOX", _msg(n), flags)
    raw.login()
    assert raw.cmd(b"s", b"SELECT INBOX")[-1].startswith(b"s OK")
    yield raw


def _ok(lines: list[bytes], tag: bytes) -> list[bytes]:
    assert lines[-1].startswith(tag + b" OK"), lines
    return lines[:-1]


def _fetched_uids(lines: list[bytes]) -> list[tuple[int, int]]:
    """(sequence number, UID) of each ``* n FETCH (UID u)`` line."""
    out = []
    for line in lines:
        head, _, rest = line.partition(b" FETCH (UID ")
        out.append((int(head[2:]), int(rest.split(b")")[0])))
    return out


def test_capability_lists_searchres(box: RawClient) -> None:
    assert b"SEARCHRES" in box.cmd(b"c", b"CAPABILITY")[0].split()


def test_save_alone_answers_no_esearch(box: RawClient) -> None:
    lines = box.cmd(b"A282", b"SEARCH RETURN (SAVE) " + SEARCH)
    assert _ok(lines, b"A282") == []


def test_fetch_dollar_names_the_saved_messages(box: RawClient) -> None:
    _ok(box.cmd(b"A282", b"SEARCH RETURN (SAVE) " + SEARCH), b"A282")
    lines = _ok(box.cmd(b"A283", b"FETCH $ (UID)"), b"A283")
    assert _fetched_uids(lines) == [(2, 2), (10, 10), (11, 11)]


def test_uid_search_save_then_uid_store_and_fetch_dollar(box: RawClient) -> None:
    _ok(box.cmd(b"A301", b"UID SEARCH RETURN (SAVE) " + SEARCH), b"A301")
    stored = _ok(box.cmd(b"A302", b"UID STORE $ +FLAGS.SILENT (\\Seen)"), b"A302")
    assert stored == []
    seen = _ok(box.cmd(b"A303", b"UID SEARCH SEEN"), b"A303")
    assert seen == [b"* SEARCH 2 10 11\r\n"]
    lines = _ok(box.cmd(b"A304", b"UID FETCH $ (UID)"), b"A304")
    assert _fetched_uids(lines) == [(2, 2), (10, 10), (11, 11)]


def test_dollar_in_a_search_program(box: RawClient) -> None:
    # RFC 5182 2.4: "$" combined with other keys, and in OR.
    _ok(box.cmd(b"A1", b"SEARCH RETURN (SAVE) " + SEARCH), b"A1")
    assert _ok(box.cmd(b"A2", b"SEARCH $ SUBJECT 10"), b"A2") == [b"* SEARCH 10\r\n"]
    assert _ok(box.cmd(b"A3", b"UID SEARCH OR $ 1"), b"A3") == [b"* SEARCH 1 2 10 11\r\n"]
    assert _ok(box.cmd(b"A4", b"SEARCH UID $"), b"A4") == [b"* SEARCH 2 10 11\r\n"]


def test_a_saving_search_uses_the_previous_result(box: RawClient) -> None:
    # "$" in a SEARCH RETURN (SAVE) is the result before this one (RFC 5182 2.1).
    _ok(box.cmd(b"A1", b"SEARCH RETURN (SAVE) " + SEARCH), b"A1")
    _ok(box.cmd(b"A2", b"SEARCH RETURN (SAVE) NOT $"), b"A2")
    lines = _ok(box.cmd(b"A3", b"FETCH $ (UID)"), b"A3")
    assert [uid for _, uid in _fetched_uids(lines)] == [1, 3, 4, 5, 6, 7, 8, 9, 12]


def test_save_with_min_keeps_only_the_min(box: RawClient) -> None:
    lines = _ok(box.cmd(b"A282", b"SEARCH RETURN (SAVE MIN) " + SEARCH), b"A282")
    assert lines == [b'* ESEARCH (TAG "A282") MIN 2\r\n']
    assert _fetched_uids(_ok(box.cmd(b"f", b"FETCH $ (UID)"), b"f")) == [(2, 2)]


def test_save_with_min_and_max_keeps_those_two(box: RawClient) -> None:
    lines = _ok(box.cmd(b"A282", b"SEARCH RETURN (MIN MAX SAVE) " + SEARCH), b"A282")
    assert lines == [b'* ESEARCH (TAG "A282") MIN 2 MAX 11\r\n']
    assert _fetched_uids(_ok(box.cmd(b"f", b"FETCH $ (UID)"), b"f")) == [(2, 2), (11, 11)]


def test_save_with_count_keeps_all(box: RawClient) -> None:
    lines = _ok(box.cmd(b"A282", b"SEARCH RETURN (SAVE COUNT MIN) " + SEARCH), b"A282")
    assert lines == [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n']
    fetched = _fetched_uids(_ok(box.cmd(b"f", b"FETCH $ (UID)"), b"f"))
    assert fetched == [(2, 2), (10, 10), (11, 11)]


def test_failed_search_empties_the_result(box: RawClient) -> None:
    _ok(box.cmd(b"A1", b"SEARCH RETURN (SAVE) " + SEARCH), b"A1")
    refused = box.cmd(b"A2", b"SEARCH RETURN (SAVE) CHARSET KOI8-R " + SEARCH)
    assert refused[-1].startswith(b"A2 NO [BADCHARSET")
    # An empty "$" is no error: the command names no message.
    assert _ok(box.cmd(b"A3", b"FETCH $ (UID)"), b"A3") == []


def test_dollar_before_any_save_names_nothing(box: RawClient) -> None:
    assert _ok(box.cmd(b"A1", b"UID FETCH $ (UID)"), b"A1") == []
    assert _ok(box.cmd(b"A2", b"SEARCH $"), b"A2") == [b"* SEARCH\r\n"]


def test_expunged_messages_leave_the_result(box: RawClient) -> None:
    _ok(box.cmd(b"A1", b"SEARCH RETURN (SAVE) " + SEARCH), b"A1")
    _ok(box.cmd(b"A2", b"UID STORE 1,10 +FLAGS.SILENT (\\Deleted)"), b"A2")
    _ok(box.cmd(b"A3", b"EXPUNGE"), b"A3")
    # UID 10 is gone; by sequence number, UIDs 2 and 11 are now messages 1 and 9.
    assert _fetched_uids(_ok(box.cmd(b"A4", b"FETCH $ (UID)"), b"A4")) == [(1, 2), (9, 11)]
    assert _fetched_uids(_ok(box.cmd(b"A5", b"UID FETCH $ (UID)"), b"A5")) == [(1, 2), (9, 11)]


def test_select_forgets_the_result(box: RawClient) -> None:
    _ok(box.cmd(b"A1", b"SEARCH RETURN (SAVE) " + SEARCH), b"A1")
    _ok(box.cmd(b"A2", b"SELECT INBOX"), b"A2")
    assert _ok(box.cmd(b"A3", b"FETCH $ (UID)"), b"A3") == []


def test_unselect_forgets_the_result(box: RawClient) -> None:
    _ok(box.cmd(b"A1", b"SEARCH RETURN (SAVE) " + SEARCH), b"A1")
    _ok(box.cmd(b"A2", b"UNSELECT"), b"A2")
    _ok(box.cmd(b"A3", b"EXAMINE INBOX"), b"A3")
    assert _ok(box.cmd(b"A4", b"UID FETCH $ (UID)"), b"A4") == []


def test_uid_copy_and_uid_expunge_take_dollar(
    box: RawClient, store: FakeStore, server: ServerThread
) -> None:
    _ok(box.cmd(b"A1", b"UID SEARCH RETURN (SAVE) UID 3:4"), b"A1")
    copied = box.cmd(b"A2", b'UID COPY $ "Brouillons"')
    assert copied[-1].startswith(b"A2 OK [COPYUID "), copied
    assert len(store.boxes["Brouillons"].messages) == 2
    _ok(box.cmd(b"A3", b"UID STORE $ +FLAGS.SILENT (\\Deleted)"), b"A3")
    gone = _ok(box.cmd(b"A4", b"UID EXPUNGE $"), b"A4")
    assert gone == [b"* 4 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n"]


def test_dollar_is_a_whole_sequence_set(box: RawClient) -> None:
    # RFC 5182's seq-last-command is "$" alone, never inside a set.
    assert box.cmd(b"A1", b"FETCH $,1 (UID)")[-1].startswith(b"A1 BAD")
    assert box.cmd(b"A2", b"FETCH 1:$ (UID)")[-1].startswith(b"A2 BAD")
