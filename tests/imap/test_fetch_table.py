"""FETCH of UID, FLAGS and MODSEQ only: answered from the store's entry table."""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence

import pytest

from palais.gateway.imap.sequence import STAR, SequenceSet, merge_spans, parse_sequence_set
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import FlagMode
from palais.mailbox.ports import EntryTable
from tests.imap.conftest import RawClient, ServerThread
from tests.imap.fake_store import FakeStore

WHO = Identity(1, "me@avocats.test", Role.AVOCAT, "Me", "0" * 64, "me@avocats.test")
SEEN = frozenset({"\\Seen"})


def _fill(server: ServerThread, store: FakeStore, n: int) -> None:
    def fill() -> None:
        for i in range(n):
            flags = SEEN if i % 2 else frozenset({"\\Flagged"}) if i % 3 == 0 else frozenset()
            store.deliver("INBOX", b"Subject: %d\r\n\r\nbody\r\n" % i, flags)

    server.run(fill)


def test_flags_of_a_whole_box_without_records(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 3000)
    raw.login()
    raw.cmd(b"a", b"SELECT INBOX (CONDSTORE)")
    store.calls.clear()
    lines = raw.cmd(b"b", b"UID FETCH 1:* (UID FLAGS MODSEQ)")
    assert len(lines) == 3001 and lines[-1] == b"b OK FETCH completed\r\n"
    assert {c[0] for c in store.calls} == {"entries"}
    for seq in (1, 2, 4, 3000):
        flags = store.flags_of("INBOX", seq)
        modseq = store.boxes["INBOX"].messages[seq].modseq
        text = " ".join(sorted(flags)).encode()
        assert lines[seq - 1] == b"* %d FETCH (UID %d FLAGS (%s) MODSEQ (%d))\r\n" % (
            seq,
            seq,
            text,
            modseq,
        )
    # The items in the order asked; MODSEQ added once CONDSTORE is on.
    assert raw.cmd(b"c", b"FETCH 2,1 (FLAGS UID)")[:2] == [
        b"* 1 FETCH (FLAGS (\\Flagged) UID 1 MODSEQ (2))\r\n",
        b"* 2 FETCH (FLAGS (\\Seen) UID 2 MODSEQ (3))\r\n",
    ]
    assert raw.cmd(b"d", b"UID FETCH 2999:5000 UID") == [
        b"* 2999 FETCH (UID 2999)\r\n",
        b"* 3000 FETCH (UID 3000)\r\n",
        b"d OK FETCH completed\r\n",
    ]


def test_changedsince_from_the_table(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    _fill(server, store, 10)
    raw.login()
    select = b"".join(raw.cmd(b"a", b"SELECT INBOX (CONDSTORE)"))
    found = re.search(rb"HIGHESTMODSEQ (\d+)", select)
    assert found is not None
    highest = int(found.group(1))
    assert raw.cmd(b"b", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest) == [
        b"b OK FETCH completed\r\n"
    ]
    raw.cmd(b"c", b"STORE 4,7 +FLAGS.SILENT (\\Answered)")
    lines = raw.cmd(b"d", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest)
    assert [line.split(b" FLAGS")[0] for line in lines[:-1]] == [
        b"* 4 FETCH (UID 4",
        b"* 7 FETCH (UID 7",
    ]
    assert b"\\Answered" in lines[0] and b"MODSEQ (" in lines[1]


def test_view_behind_the_store(raw: RawClient, server: ServerThread, store: FakeStore) -> None:
    """Changes not yet announced: FETCH answers for the view's messages only."""
    _fill(server, store, 4)
    raw.login()
    raw.cmd(b"a", b"SELECT INBOX")
    server.run(store.deliver, "INBOX", b"Subject: new\r\n\r\nx\r\n")
    lines = raw.cmd(b"b", b"FETCH 1:* (UID FLAGS)")
    assert [line[:9] for line in lines[:4]] == [b"* %d FETCH" % i for i in range(1, 5)]
    # The arrival is \Recent in this session, the first told of it (RFC 3501 7.3.2).
    assert lines[4:] == [b"* 5 EXISTS\r\n", b"* 1 RECENT\r\n", b"b OK FETCH completed\r\n"]
    server.call(store.store_flags(WHO, 1, [2], FlagMode.ADD, frozenset({"\\Deleted"})))
    server.call(store.expunge(WHO, 1, [2]))
    lines = raw.cmd(b"c", b"FETCH 1:* (UID)")
    # FETCH does not announce the expunge, and says nothing of the message gone.
    assert lines == [
        b"* 1 FETCH (UID 1)\r\n",
        b"* 3 FETCH (UID 3)\r\n",
        b"* 4 FETCH (UID 4)\r\n",
        b"* 5 FETCH (UID 5)\r\n",
        b"c OK FETCH completed\r\n",
    ]
    assert raw.cmd(b"d", b"NOOP") == [b"* 2 EXPUNGE\r\n", b"d OK NOOP completed\r\n"]
    assert raw.cmd(b"e", b"FETCH 2 (UID FLAGS)")[0] == b"* 2 FETCH (UID 3 FLAGS ())\r\n"


def test_entry_table() -> None:
    rows = [
        (3, frozenset({"\\Seen"}), 5),
        (7, frozenset(), 9),
        (8, frozenset({"\\Seen"}), 2),
        (9, frozenset(), 4),
    ]
    table = EntryTable.build(rows, uidnext=9)
    assert [(e.uid, e.flags, e.modseq) for e in table] == rows
    assert (len(table), table.unseen, table.first_unseen()) == (4, 2, 1)
    assert (table.highestmodseq, table.uidnext) == (9, 10)
    assert table.index_of(8) == 2 and table.index_of(4) is None
    assert table.flags_at(3) == frozenset()
    empty = EntryTable.build([])
    assert (len(empty), empty.unseen, empty.first_unseen(), empty.uidnext) == (0, 0, None, 1)
    many = EntryTable.build((u, frozenset({f"$k{u}"}), 1) for u in range(1, 70_001))
    assert many.flag_ids.typecode == "I" and many.flags_at(69_999) == {"$k70000"}
    assert many.first_unseen() == 0


@pytest.mark.parametrize(
    "text",
    [b"1:*", b"*", b"3", b"5:2", b"1,3,2:4,9:*", b"7:*", b"2,4,6", b"*:4", b"1:3,3:5,5:7"],
)
@pytest.mark.parametrize("exists", [0, 1, 5, 9])
def test_spans_name_what_the_sets_name(text: bytes, exists: int) -> None:
    numbers = parse_sequence_set(text)
    known = array("I", [2, 3, 5, 8, 13, 21, 34, 55, 89][:exists])
    by_uid = [i for a, b in numbers.uid_spans(known) for i in range(a, b)]
    assert [known[i] for i in by_uid] == numbers.uids(known) == _reference_uids(numbers, known)
    try:
        expected = _reference_seqnums(numbers, exists)
    except ValueError:
        with pytest.raises(ValueError):
            numbers.seq_spans(exists)
        return
    spans = numbers.seq_spans(exists)
    assert [i + 1 for a, b in spans for i in range(a, b)] == expected == numbers.seqnums(exists)


def test_merge_spans() -> None:
    assert merge_spans([(5, 7), (0, 2), (2, 3), (6, 9), (11, 12)]) == [(0, 3), (5, 9), (11, 12)]
    assert merge_spans([]) == []


def _reference_seqnums(numbers: SequenceSet, exists: int) -> list[int]:
    """What a set names by sequence number, computed the plain way (a set of numbers)."""
    chosen: set[int] = set()
    for a, b in numbers.ranges:
        if exists == 0 and STAR in (a, b):
            continue
        lo, hi = (exists if a == STAR else a), (exists if b == STAR else b)
        if lo > hi:
            lo, hi = hi, lo
        if (a != STAR and a > exists) or (b != STAR and b > exists):
            raise ValueError("Invalid sequence number")
        if lo < 1:
            continue
        chosen.update(range(lo, hi + 1))
    return sorted(chosen)


def _reference_uids(numbers: SequenceSet, known: Sequence[int]) -> list[int]:
    """What a set names among ``known`` UIDs, computed the plain way."""
    if not known:
        return []
    top = known[-1]
    picked: set[int] = set()
    for a, b in numbers.ranges:
        lo, hi = (top if a == STAR else a), (top if b == STAR else b)
        if lo > hi:
            lo, hi = hi, lo
        picked.update(uid for uid in known if lo <= uid <= hi)
    return sorted(picked)
