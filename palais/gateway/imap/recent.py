"""\\Recent as IMAP4rev1 defines it (RFC 3501 2.3.2): a message is recent in
exactly one session, the first one told of it since it arrived in the box.

The store keeps, per box, the highest UID a session was told of first (its
recent mark, across restarts and nodes): a SELECT claims what lies above it
in one atomic step. While a box stays selected, the messages arriving are
claimed by the first session of this process that announces them (a mark
kept here per store), and the store's mark follows when that session leaves
the box. EXAMINE sees the recent messages without claiming them.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import weakref
from collections.abc import Sequence

__all__ = ["RECENT", "RecentSet", "marks_for", "persist_later"]

RECENT = "\\Recent"
_LOG = logging.getLogger("palais.imap")

# Per store object (one per process in production; one per test server in
# tests): box id -> the highest UID a session of this process claimed.
_MARKS: weakref.WeakKeyDictionary[object, dict[int, int]] = weakref.WeakKeyDictionary()
# Claims being written to the store when a session left its box.
_PENDING: set[asyncio.Task[object]] = set()


def marks_for(store: object) -> dict[int, int]:
    marks = _MARKS.get(store)
    if marks is None:
        marks = _MARKS[store] = {}
    return marks


class RecentSet:
    """The UIDs recent in one session: a few ranges (what a SELECT claimed, then
    each arrival claimed), never one object per message of a big box."""

    __slots__ = ("arrived_top", "ranges")

    def __init__(self, low: int, high: int) -> None:
        # Inclusive UID ranges, ascending.
        self.ranges: list[list[int]] = [[low, high]] if low <= high else []
        self.arrived_top = 0  # highest UID claimed after the SELECT (to store on leaving)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, uid: int) -> bool:
        return any(low <= uid <= high for low, high in self.ranges)

    def add(self, uid: int) -> None:
        self.arrived_top = max(self.arrived_top, uid)
        if self.ranges and self.ranges[-1][1] == uid - 1:
            self.ranges[-1][1] = uid
        else:
            self.ranges.append([uid, uid])

    def count(self, uids: Sequence[int]) -> int:
        """How many of the box's current UIDs (ascending) are recent here."""
        return sum(
            bisect.bisect_right(uids, high) - bisect.bisect_left(uids, low)
            for low, high in self.ranges
        )


def persist_later(claim: object) -> None:
    """Run a store claim (a coroutine) without waiting: a session leaving its box
    must not wait for the writer, and a failed claim only means the messages
    are recent once more for the next session (RFC 3501: when in doubt, recent)."""
    if not asyncio.iscoroutine(claim):
        return
    task: asyncio.Task[object] = asyncio.get_running_loop().create_task(claim)
    _PENDING.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task[object]) -> None:
    _PENDING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        _LOG.warning("imap recent mark not stored: %s", type(task.exception()).__name__)
