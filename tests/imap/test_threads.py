"""Base subject (RFC 5256 2.1) and the two THREAD algorithms (2.2) on hand-made facts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from palais.gateway.imap.sorting import FactTable, SortFacts, base_subject, facts_of
from palais.gateway.imap.threads import format_threads, ordered_subject, references
from palais.mailbox.model import MessageRecord


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("foo", "foo", False),
        ("Re: foo", "foo", True),
        ("re:RE: Fwd: foo", "foo", True),
        ("Fw: foo", "foo", True),
        ("re : foo", "foo", True),
        ("Re[2]: foo", "foo", True),
        ("fwd [x] [y]: foo", "fwd [x] [y]: foo", False),  # one blob only before ":"
        ("Fwd[x]: foo", "foo", True),
        ("[greffe] foo", "foo", False),
        ("[greffe] Re: foo", "foo", True),
        ("[a][b] Re: [c] foo", "foo", True),
        ("[greffe]", "[greffe]", False),  # the blob alone stays: the base is not empty
        ("[greffe]   ", "[greffe]", False),
        ("foo (fwd)", "foo", True),
        ("foo (FWD) (fwd)  ", "foo", True),
        ("foo(fwd)", "foo", True),
        ("[Fwd: foo]", "foo", True),
        ("Re: [fwd: Re: foo (fwd)]", "foo", True),
        ("[fwd: [fwd: foo]]", "foo", True),
        ("  foo \t bar  ", "foo bar", False),
        ("foo\r\n bar", "foo bar", False),
        ("Refrain: foo", "Refrain: foo", False),
        ("Re:", "", True),
        ("", "", False),
        ("[2025-0000138] Re: Convocation", "Convocation", True),
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def _record(uid: int, when: datetime, size: int = 10) -> MessageRecord:
    return MessageRecord(uid, frozenset(), 1, when, size, "0" * 64, 0)


def test_facts_decode_rfc2047_and_take_the_first_mailbox() -> None:
    header = (
        b"Subject: =?utf-8?q?Re=3A_proc=C3=A9dure?= =?utf-8?q?_civile?=\r\n"
        b'From: "Dupont, Jean" <jdupont@x.test>, other@x.test\r\n'
        b"To: Greffe: Jean <j@x.test>;\r\n"
        b'Cc: <"quoted local"@x.test>\r\n'
        b"Date: Tue, 25 Mar 2025 00:30:00 +0200\r\n"
        b"Message-ID: < id@x.test >\r\n"
        b"References: <a@x> junk <b\r\n @x>\r\n"
        b"In-Reply-To: <c@x>\r\n\r\n"
    )
    f = facts_of(_record(1, datetime(2025, 4, 1, tzinfo=UTC)), header)
    assert f.subject == "procédure civile".encode().upper()
    assert f.reply
    assert f.from_ == b"JDUPONT"
    assert f.to == b"GREFFE"  # a group: its name is the first addr-mailbox
    assert f.cc == b"QUOTED LOCAL"
    assert f.sent == datetime(2025, 3, 24, 22, 30, tzinfo=UTC).timestamp()
    assert f.message_id == "id@x.test"
    assert f.references == ("a@x", "b@x")


def test_facts_fall_back_to_in_reply_to_and_internaldate() -> None:
    when = datetime(2025, 4, 1, tzinfo=UTC)
    f = facts_of(
        _record(1, when),
        b"Date: not a date\r\nReferences: none\r\nIn-Reply-To: <c@x> <d@x>\r\n\r\n",
    )
    assert f.references == ("c@x",)
    assert f.sent == when.timestamp()
    assert f.message_id is None
    assert (f.subject, f.from_, f.to, f.cc) == (b"", b"", b"", b"")


def _facts(*messages: tuple[str, str | None, tuple[str, ...]]) -> tuple[list[int], FactTable]:
    """(subject, message id, references) per message, sent one day apart."""
    table = FactTable()
    uids: list[int] = []
    for i, (subject, mid, refs) in enumerate(messages, 1):
        base, reply = base_subject(subject)
        day = float(i * 86400)
        table.add(
            i,
            SortFacts(day, day, 1, base.upper().encode(), b"", b"", b"", reply, mid, refs),
        )
        uids.append(i)
    return uids, table


def _thread(*messages: tuple[str, str | None, tuple[str, ...]]) -> bytes:
    uids, table = _facts(*messages)
    return format_threads(references(uids, table, uids))


def test_references_rfc_example_shape() -> None:
    # RFC 5256's "(2)(3 6 (4 23)(44 7 96))", numbered 1..8 in date order.
    assert (
        _thread(
            ("a", "2", ()),
            ("b", "3", ()),
            ("Re: b", "6", ("3",)),
            ("Re: b", "4", ("3", "6")),
            ("Re: b", "23", ("3", "6", "4")),
            ("Re: b", "44", ("3", "6")),
            ("Re: b", "7", ("3", "6", "44")),
            ("Re: b", "96", ("3", "6", "44", "7")),
        )
        == b"(1)(2 3 (4 5)(6 7 8))"
    )


def test_references_in_any_order() -> None:
    # The replies arrive before what they answer.
    assert _thread(("Re: b", "c", ("a", "b")), ("Re: b", "b", ("a",)), ("b", "a", ())) == b"(3 2 1)"


def test_dummy_parent_kept_at_the_top_with_several_children() -> None:
    # Both answer a message not in the box (a dummy): it stays as their parent.
    assert _thread(("x", "1", ("gone",)), ("y", "2", ("gone",))) == b"((1)(2))"


def test_dummy_with_one_child_is_promoted_even_to_the_top() -> None:
    assert _thread(("x", "1", ("gone", "gone2")), ("y", "2", ())) == b"(1)(2)"


def test_dummy_in_the_middle_is_replaced_by_its_children() -> None:
    # 2 and 3 answer a missing message that answered 1.
    assert (
        _thread(("x", "1", ()), ("Re: x", "2", ("1", "gone")), ("Re: x", "3", ("1", "gone")))
        == b"(1 (2)(3))"
    )


def test_reference_loops_are_not_made() -> None:
    # Each claims the other as parent: the later link would close a loop.
    out = _thread(("x", "a", ("b",)), ("y", "b", ("a",)))
    assert out in (b"(1 2)", b"(2 1)")
    assert _thread(("x", "a", ("a",))) == b"(1)"  # a message referring to itself


def test_own_references_win_over_earlier_links() -> None:
    # 3's references first make 2 a child of 1; 2's own say its parent is none
    # of those (empty): it stays where 3's chain put it, as the RFC says only
    # the message's last reference re-links it.
    assert _thread(("x", "1", ()), ("y", "2", ()), ("z", "3", ("1", "2"))) == b"(1 2 3)"
    # 2's own References name 4: that link replaces 3's 1 -> 2.
    assert (
        _thread(("x", "1", ()), ("y", "2", ("4",)), ("z", "3", ("1", "2")), ("w", "4", ()))
        == b"(1)(4 2 3)"
    )


def test_duplicate_message_ids_stay_distinct() -> None:
    assert _thread(("x", "a", ()), ("y", "a", ()), ("Re: x", "b", ("a",))) == b"(1 3)(2)"


def test_missing_message_ids_are_unique() -> None:
    assert _thread(("x", None, ()), ("y", None, ())) == b"(1)(2)"


def test_subject_gathering() -> None:
    # A reply by subject under the original; two originals under a new dummy;
    # an empty subject is never gathered.
    assert _thread(("Re: s", "1", ()), ("s", "2", ())) == b"(2 1)"
    assert _thread(("s", "1", ()), ("s", "2", ())) == b"((1)(2))"
    assert _thread(("", "1", ()), ("", "2", ())) == b"(1)(2)"
    # A dummy (two answers to a missing message) takes the lone original.
    assert _thread(("s", "1", ("gone",)), ("s", "2", ("gone",)), ("s", "3", ())) == (b"((1)(2)(3))")


def test_ordered_subject() -> None:
    uids, table = _facts(("b", None, ()), ("a", None, ()), ("Re: b", None, ()), ("Re: a", None, ()))
    numbers = [10, 20, 30, 40]
    assert format_threads(ordered_subject(uids, table, numbers)) == b"(10 30)(20 40)"
    uids, table = _facts(*[("s", None, ())] * 4)
    assert format_threads(ordered_subject(uids, table, uids)) == b"(1 (2)(3)(4))"


def test_a_very_long_chain() -> None:
    n = 5000
    messages = [("s", str(i), tuple(str(j) for j in range(max(0, i - 3), i))) for i in range(n)]
    out = _thread(*messages)
    assert out == b"(" + b" ".join(b"%d" % i for i in range(1, n + 1)) + b")"


@pytest.mark.parametrize(
    "value",
    [
        b"a@x.test",
        b"Jean Dupont <jdupont@x.test>",
        b"Jean Dupont <jdupont@x.test>, autre@x.test",
        b" , second@x.test",
        b"<a@x.test>",
        b"local",
        b"Name <local>",
        b"Name <bad, still@x.test>",
        b"a b@x.test",
        b"user@sub@x.test",
        b'"Dupont, Jean" <j@x.test>',
        b"(comment) a@x.test",
        b"Group: a@x.test, b@x.test;",
        b"@route:a@x.test",
        b"<>",
        b"",
        b",",
    ],
)
def test_first_mailbox_is_what_envelope_shows(value: bytes) -> None:
    from palais.gateway.imap.envelope import parse_addresses
    from palais.gateway.imap.sorting import _first_mailbox

    parsed = parse_addresses(value)
    expected = b""
    if parsed and isinstance(parsed[0], list) and isinstance(parsed[0][2], bytes):
        expected = parsed[0][2].strip(b'"').upper()
    assert _first_mailbox(value) == expected
