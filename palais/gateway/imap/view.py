"""One session's view of its selected mailbox: UID <-> sequence numbers and pending changes.

The store tells every subscriber about every change, this session's own
included. Changes are coalesced here (so a burst of events costs memory
bounded by the mailbox, not by the burst) and turned into untagged
responses only when the protocol allows: EXPUNGE never while answering a
FETCH, STORE or SEARCH (RFC 3501 7.4.1), everything at once while idling.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterator, Sequence

from palais.gateway.imap.recent import RECENT, RecentSet
from palais.gateway.imap.response import flag_list
from palais.gateway.imap.sequence import SequenceSet, format_set
from palais.mailbox.model import EventKind, MailboxEvent, MailboxInfo
from palais.mailbox.ports import Unsubscribe

__all__ = ["SYSTEM_FLAGS", "SelectedMailbox"]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_RECENT = frozenset({RECENT})

# Own changes we already reported, awaiting the store's echo. Bounded: if
# echoes never come, forgetting them only costs a duplicate FETCH response.
_MAX_REPORTED = 10_000


class SelectedMailbox:
    __slots__ = (
        "_expunged",
        "_flags",
        "_known",
        "_marks",
        "_new",
        "_on_close",
        "_own_uids",
        "_reported",
        "_unsubscribe",
        "_wake",
        "highestmodseq",
        "info",
        "keywords",
        "read_only",
        "recent",
        "saved",
        "uids",
    )

    def __init__(self, info: MailboxInfo, *, read_only: bool) -> None:
        self.info = info
        self.read_only = read_only
        self.uids = array("I")  # ascending; index + 1 is the sequence number
        self._own_uids = True  # False while ``uids`` is shared with the store's snapshot
        self._unsubscribe: Unsubscribe | None = None
        self._new: list[int] = []
        self._flags: dict[int, tuple[frozenset[str], int]] = {}
        self._expunged: set[int] = set()
        self._reported: dict[int, int] = {}
        self._wake: Callable[[], None] | None = None
        # The keywords the client was told of (FLAGS, PERMANENTFLAGS), in order.
        self.keywords: list[str] = []
        self._known: set[str] = set(SYSTEM_FLAGS)
        # The highest modseq this view knows of: the SELECT's, then the events'.
        self.highestmodseq = info.highestmodseq
        # \Recent here (IMAP4rev1): None when the session does not track it.
        self.recent: RecentSet | None = None
        self._marks: dict[int, int] | None = None  # the process's claims, to claim arrivals
        self._on_close: Callable[[], None] | None = None
        # The search result variable (RFC 5182, ``palais.gateway.imap.searchres``): UIDs.
        self.saved = SequenceSet(())

    # -- wiring ----------------------------------------------------------

    def attach(self, unsubscribe: Unsubscribe) -> None:
        self._unsubscribe = unsubscribe

    def load(self, uids: array[int]) -> None:
        """Take the UIDs of a snapshot; they stay shared with it until this view changes them."""
        self.uids = uids
        self._own_uids = False

    def track_recent(
        self, recent: RecentSet, marks: dict[int, int] | None, on_close: Callable[[], None]
    ) -> None:
        """Show \\Recent on ``recent``; claim arrivals in ``marks`` (None: EXAMINE,
        which claims nothing); ``on_close`` runs when the box is left."""
        self.recent = recent
        self._marks = marks
        self._on_close = on_close

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._wake = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def set_waker(self, wake: Callable[[], None] | None) -> None:
        self._wake = wake

    def on_event(self, event: MailboxEvent) -> None:
        """The store's listener: record, never answer (that is the session's job)."""
        if event.modseq > self.highestmodseq:
            self.highestmodseq = event.modseq
        if event.kind is EventKind.ARRIVED:
            self._new.append(event.uid)
        elif event.kind is EventKind.FLAGS_CHANGED:
            seen = self._flags.get(event.uid)
            if seen is None or seen[1] <= event.modseq:
                self._flags[event.uid] = (event.flags, event.modseq)
        elif event.kind is EventKind.REMOVED:
            if self.seq_of(event.uid) is None and event.uid not in self._new:
                return  # already taken out (this session's own EXPUNGE or MOVE)
            self._expunged.add(event.uid)
            self._flags.pop(event.uid, None)
        else:
            return
        if self._wake is not None:
            self._wake()

    # -- lookups ---------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    @property
    def has_pending(self) -> bool:
        return bool(self._new or self._flags or self._expunged)

    # -- keywords ----------------------------------------------------------

    def flags_text(self, *, permanent: bool = False) -> bytes:
        """The FLAGS (or PERMANENTFLAGS) list: system flags, the keywords in use, \\*."""
        names = [*SYSTEM_FLAGS, *self.keywords]
        if permanent:
            names.append("\\*")
        return b"(" + " ".join(names).encode("utf-8") + b")"

    def learn_keywords(self, flags: frozenset[str]) -> bytes | None:
        """An untagged FLAGS response if ``flags`` hold keywords the client was
        not told of (RFC 3501 7.2.6: it comes before the FETCH that shows them)."""
        if flags <= self._known:
            return None
        new = sorted(f for f in flags if f not in self._known and not f.startswith("\\"))
        self._known.update(flags)
        if not new:
            return None
        self.keywords.extend(new)
        return b"* FLAGS " + self.flags_text() + b"\r\n"

    # -- own changes -----------------------------------------------------

    def note_reported(self, uid: int, modseq: int) -> None:
        if len(self._reported) >= _MAX_REPORTED:
            self._reported.clear()
        self._reported[uid] = modseq

    def saw(self, uid: int, modseq: int) -> None:
        """A FETCH showed this UID at ``modseq``: a change no newer, pending or
        still on its way, must not be reported after it (MODSEQ never goes back)."""
        pending = self._flags.get(uid)
        if pending is not None and pending[1] <= modseq:
            del self._flags[uid]
        if modseq > self.highestmodseq:
            self.note_reported(uid, modseq)

    def pending_flag_uids(self) -> list[int]:
        return list(self._flags)

    def is_expunged(self, uid: int) -> bool:
        """Expunged by another session, not yet announced to this one."""
        return uid in self._expunged

    def remove(self, uids: Sequence[int]) -> list[int]:
        """Drop expunged UIDs; their sequence numbers, highest first, as EXPUNGE wants them."""
        gone = set(uids)
        if self._expunged:  # their events may have come first: told now, not again
            self._expunged -= gone
        if len(gone) > 64:
            # Many at once (EXPUNGE or MOVE of a whole box): one pass over the
            # view rather than a bisection per UID.
            seqs = [i for i, u in enumerate(self.uids, 1) if u in gone]
            seqs.reverse()
            if seqs:
                self.uids = array("I", (u for u in self.uids if u not in gone))
                self._own_uids = True
            for uid in gone:
                self._reported.pop(uid, None)
            return seqs
        found = [self.seq_of(uid) for uid in gone]
        seqs = sorted((s for s in found if s is not None), reverse=True)
        if seqs:
            if not self._own_uids:
                self.uids = self.uids[:]
                self._own_uids = True
            for seq in seqs:  # highest first: the others keep their place
                del self.uids[seq - 1]
        for uid in gone:
            self._reported.pop(uid, None)
        return seqs

    def expunge_lines(self, uids: Sequence[int], *, vanished: bool) -> list[bytes]:
        """Drop expunged UIDs and say so: one EXPUNGE per message, highest first,
        or with QRESYNC enabled one VANISHED naming the UIDs the client knew
        (RFC 7162 3.2.10: never a UID it was not told of, it counts them)."""
        if not vanished:
            return [b"* %d EXPUNGE\r\n" % seq for seq in self.remove(uids)]
        known = [uid for uid in uids if self.seq_of(uid) is not None]
        self.remove(uids)
        if not known:
            return []
        return [b"* VANISHED " + format_set(known) + b"\r\n"]

    # -- turning changes into responses ------------------------------------

    def take_updates(
        self, *, allow_expunge: bool, condstore: bool, vanished: bool = False
    ) -> list[bytes]:
        return list(
            self.updates(allow_expunge=allow_expunge, condstore=condstore, vanished=vanished)
        )

    def updates(
        self, *, allow_expunge: bool, condstore: bool, vanished: bool = False
    ) -> Iterator[bytes]:
        """The pending changes as untagged responses, taken from the view as they go.

        A caller may pause between lines (a flag change on every message of a
        big box is that many lines): changes that arrive meanwhile stay
        pending for the next call, none is lost.
        """
        gone: set[int] = set()
        if allow_expunge and self._expunged:
            gone, self._expunged = self._expunged, set()
            yield from self.expunge_lines(sorted(gone), vanished=vanished)
        if self._new:
            new, self._new = self._new, []
            before = len(self.uids)
            top = self.uids[-1] if self.uids else 0
            marks = self._marks
            for uid in sorted(set(new)):
                # Arrived and gone before being announced: never shown.
                if uid > top and uid not in self._expunged and uid not in gone:
                    if not self._own_uids:
                        self.uids = self.uids[:]
                        self._own_uids = True
                    self.uids.append(uid)
                    top = uid
                    if marks is not None and self.recent is not None:
                        # First in this process to announce it: recent here.
                        box = self.info.id
                        if uid > marks.get(box, 0):
                            marks[box] = uid
                            self.recent.add(uid)
            if len(self.uids) != before:
                yield b"* %d EXISTS\r\n" % len(self.uids)
                if self.recent is not None:  # rev1: RECENT goes with EXISTS
                    yield b"* %d RECENT\r\n" % self.recent.count(self.uids)
        if self._flags:
            changed, self._flags = self._flags, {}
            uids = self.uids
            count = len(uids)
            texts: dict[frozenset[str], bytes] = {}
            reported = self._reported
            recent = self.recent if self.recent else None
            i = 0
            for uid, (flags, modseq) in sorted(changed.items()):
                own = reported.get(uid, -1)
                if own >= modseq:
                    if own == modseq:
                        del reported[uid]
                    continue
                # Ascending UIDs in an ascending array: one bisection in all, usually.
                if i < count and uids[i] != uid:
                    i = bisect.bisect_left(uids, uid, i)
                if i >= count or uids[i] != uid:
                    continue
                if recent is not None and uid in recent:
                    flags = flags | _RECENT
                text = texts.get(flags)
                if text is None:
                    text = texts[flags] = flag_list(flags)
                    announce = self.learn_keywords(flags)
                    if announce is not None:
                        yield announce
                i += 1  # the sequence number; and where the next UID likely is
                line = b"* %d FETCH (UID %d FLAGS %s" % (i, uid, text)
                if condstore:
                    line += b" MODSEQ (%d)" % modseq
                yield line + b")\r\n"
