"""Sequence sets (``1:4,7,9:*``) and their resolution against a mailbox view."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SequenceSet", "format_set", "parse_sequence_set", "runs"]

STAR = 0  # stands for "*"; real numbers are never 0
_NUMBERS = re.compile(rb"[1-9][0-9]{0,9}(?:,[1-9][0-9]{0,9})*")


class SequenceSetError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SequenceSet:
    # (a, b) unordered, STAR for "*". As parsed: ranges without "*" first,
    # ascending, disjoint and not adjacent, then at most two "a:*" ones.
    ranges: tuple[tuple[int, int], ...]

    def seqnums(self, exists: int) -> list[int]:
        """Message sequence numbers, ascending; raises on a number past ``exists``."""
        return [i + 1 for start, stop in self.seq_spans(exists) for i in range(start, stop)]

    def uids(self, known: Sequence[int]) -> list[int]:
        """The members of ``known`` (sorted UIDs) that the set names, ascending.

        A UID range never fails: UIDs that do not exist are just not there.
        """
        return [known[i] for start, stop in self.uid_spans(known) for i in range(start, stop)]

    def seq_spans(self, exists: int, *, strict: bool = True) -> list[tuple[int, int]]:
        """What ``seqnums`` names, as 0-based [start, stop) index ranges, merged, ascending.

        Not ``strict`` (SEARCH), numbers past ``exists`` name nothing rather than fail.
        """
        spans: list[tuple[int, int]] = []
        for a, b in self.ranges:
            if exists == 0 and STAR in (a, b):
                continue
            lo, hi = (exists if a == STAR else a), (exists if b == STAR else b)
            if lo > hi:
                lo, hi = hi, lo
            if (a != STAR and a > exists) or (b != STAR and b > exists):
                if strict:
                    raise SequenceSetError("Invalid sequence number")
                hi = min(hi, exists)
            if lo < 1 or lo > hi:
                continue
            spans.append((lo - 1, hi))
        return merge_spans(spans)

    def uid_spans(self, known: Sequence[int]) -> list[tuple[int, int]]:
        """Positions in ``known`` (sorted UIDs) of what ``uids`` names, as ``seq_spans``."""
        if not known:
            return []
        top = known[-1]
        spans: list[tuple[int, int]] = []
        for a, b in self.ranges:
            lo, hi = (top if a == STAR else a), (top if b == STAR else b)
            if lo > hi:
                lo, hi = hi, lo
            i = bisect.bisect_left(known, lo)
            j = bisect.bisect_right(known, hi)
            if i < j:
                spans.append((i, j))
        return merge_spans(spans)

    def contains_uid(self, uid: int, top: int) -> bool:
        for a, b in self.ranges:
            lo, hi = (top if a == STAR else a), (top if b == STAR else b)
            if lo > hi:
                lo, hi = hi, lo
            if lo <= uid <= hi:
                return True
        return False


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, stop) ranges sorted, with overlapping or touching ones joined."""
    if len(spans) <= 1:
        return spans
    out: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            if stop > out[-1][1]:
                out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def parse_sequence_set(text: bytes) -> SequenceSet:
    """The set, its ranges merged: a 64 KiB line of "1,2,3,..." is one range, not
    thousands kept in memory and walked by every lookup."""
    if not text:
        raise SequenceSetError("Empty sequence set")
    if _NUMBERS.fullmatch(text):
        # Only numbers (a client's list of UIDs): one C loop to read them.
        numbers = sorted(set(map(int, text.split(b","))))
        if numbers[-1] > 0xFFFFFFFF:
            raise SequenceSetError("Number out of range in sequence set")
        return SequenceSet(tuple(runs(numbers)))
    plain: list[tuple[int, int]] = []
    starred: list[int] = []  # "a:*" (or "*:a"); "*" alone is STAR
    for item in text.split(b","):
        first, colon, second = item.partition(b":")
        a = _number(first)
        b = _number(second) if colon else a
        if STAR in (a, b):
            starred.append(b if a == STAR else a)
        else:
            plain.append((a, b) if a <= b else (b, a))
    return SequenceSet(tuple(_merge_ranges(plain)) + _merge_starred(starred))


def runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Distinct ascending numbers as ranges of consecutive ones."""
    out: list[tuple[int, int]] = []
    start = prev = numbers[0]
    for n in numbers[1:]:
        if n != prev + 1:
            out.append((start, prev))
            start = n
        prev = n
    out.append((start, prev))
    return out


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted, overlapping or adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _merge_starred(bounds: list[int]) -> tuple[tuple[int, int], ...]:
    """Ranges ending at "*" all contain "*": their union is that of the lowest and
    the highest of them, whatever "*" turns out to be."""
    if not bounds:
        return ()
    numbers = [n for n in bounds if n != STAR]
    if not numbers:
        return ((STAR, STAR),)
    low, high = min(numbers), max(numbers)
    return ((low, STAR),) if low == high else ((low, STAR), (high, STAR))


def _number(text: bytes) -> int:
    if text == b"*":
        return STAR
    if not text.isdigit() or text.startswith(b"0"):
        raise SequenceSetError("Invalid sequence set")
    value = int(text)
    if value > 0xFFFFFFFF:
        raise SequenceSetError("Number out of range in sequence set")
    return value


def format_set(numbers: Iterable[int]) -> bytes:
    """Ascending numbers as a compact set: 1:3,5,7:9 (empty input gives b"")."""
    parts: list[bytes] = []
    start = prev = -2
    for n in sorted(numbers):
        if n == prev + 1:
            prev = n
            continue
        if start >= 0:
            parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    if start >= 0:
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(parts)


def format_pairs(numbers: Sequence[int]) -> bytes:
    """Numbers in their given order (COPYUID pairs source and destination by position)."""
    if list(numbers) == sorted(numbers):
        return format_set(numbers)
    return b",".join(b"%d" % n for n in numbers)
