"""Sequence sets against a naive reference: parsing, membership, merged spans."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from palais.gateway.imap.sequence import (
    STAR,
    SequenceSet,
    SequenceSetError,
    format_set,
    merge_spans,
    parse_sequence_set,
)
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

MAX = 0xFFFFFFFF
# Small numbers so sets overlap the mailbox; now and then a huge one.
number = st.integers(1, 40) | st.integers(1, MAX)
bound = number.map(str) | st.just("*")
item = st.tuples(bound, st.none() | bound).map(lambda p: p[0] if p[1] is None else f"{p[0]}:{p[1]}")
set_text = st.lists(item, min_size=1, max_size=6).map(",".join)


def naive_members(text: str, top: int) -> set[int]:
    """What RFC 9051 says the set names, "*" standing for ``top``."""
    out: set[int] = set()
    for it in text.split(","):
        a, _, b = it.partition(":")
        lo = top if a == "*" else int(a)
        hi = lo if not b else (top if b == "*" else int(b))
        lo, hi = min(lo, hi), max(lo, hi)
        out.update(range(lo, min(hi, 100) + 1))  # no test mailbox goes past 100
    return out


def check_spans(spans: list[tuple[int, int]]) -> None:
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s1 < e1 and e1 < s2 < e2, f"spans not merged: {spans}"


@FUZZ
@given(set_text, st.integers(0, 60))
@example("1:*", 0)
@example("*:4,3", 3)
@example("5,4:2,*", 5)
def test_seqnums_match_reference(text: str, exists: int) -> None:
    seqset = parse_sequence_set(text.encode())
    # In an empty mailbox a range with "*" names nothing (so "FETCH 1:* ..."
    # there is not an error); otherwise a number past the mailbox is.
    items = [it for it in text.split(",") if exists or "*" not in it]
    bounds = [int(b) for it in items for b in it.split(":") if b != "*"]
    if any(b > exists for b in bounds):
        with pytest.raises(SequenceSetError):
            seqset.seqnums(exists)
        return
    expected = naive_members(",".join(items), exists) if items else set()
    assert seqset.seqnums(exists) == sorted(expected)
    check_spans(seqset.seq_spans(exists))


@FUZZ
@given(set_text, st.lists(st.integers(1, 100), unique=True, max_size=40).map(sorted))
@example("*", [])
@example("3:*", [1, 2])
@example("*:1", [5, 9])
def test_uids_match_reference(text: str, known: list[int]) -> None:
    seqset = parse_sequence_set(text.encode())
    top = known[-1] if known else 0
    members = naive_members(text, top) if known else set()
    assert seqset.uids(known) == [u for u in known if u in members]
    check_spans(seqset.uid_spans(known))
    if known:
        for uid in range(1, 101):
            assert seqset.contains_uid(uid, top) == (uid in members), uid


@FUZZ
@given(st.lists(st.integers(1, MAX) | st.integers(1, 40), unique=True, max_size=30))
def test_format_set_parses_back(numbers: list[int]) -> None:
    # Its callers (SEARCH results, COPYUID, MODIFIED) pass distinct numbers.
    text = format_set(numbers)
    if not numbers:
        assert text == b""
        return
    seqset = parse_sequence_set(text)
    assert seqset.uids(sorted(set(numbers))) == sorted(set(numbers))
    # Compact: no two ranges could have been one.
    ranges = sorted((a, b) for a, b in seqset.ranges)
    assert all(a <= b for a, b in ranges)
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(ranges))


@FUZZ
@given(st.binary(max_size=24) | st.text("0123456789:,*x", max_size=24).map(str.encode))
@example(b"0")
@example(b"1:")
@example(b",")
@example(b"4294967296")
@example(b"01")
def test_any_bytes_parse_or_refuse(text: bytes) -> None:
    try:
        seqset = parse_sequence_set(text)
    except SequenceSetError:
        return
    assert isinstance(seqset, SequenceSet)
    for a, b in seqset.ranges:
        assert a == STAR or 1 <= a <= MAX
        assert b == STAR or 1 <= b <= MAX


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 20)), max_size=12))
def test_merge_spans(raw: list[tuple[int, int]]) -> None:
    spans = [(s, s + n) for s, n in raw]
    merged = merge_spans(spans)
    check_spans(merged)
    covered = {i for s, e in spans for i in range(s, e)}
    assert {i for s, e in merged for i in range(s, e)} == covered
