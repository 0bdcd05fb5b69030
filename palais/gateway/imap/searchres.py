"""The search result variable of SEARCHRES (RFC 5182, part of IMAP4rev2: RFC
9051 6.4.4.1): ``SEARCH RETURN (SAVE)`` keeps what it found, and ``$`` stands
for it in a later command's sequence set or search program.

The result is kept as UIDs on the selected box's view, so it is empty again
on every SELECT, EXAMINE, UNSELECT or CLOSE (a new view) and the messages
expunged since simply drop out (UIDs are never reused); a ``$`` in a command
by sequence number names those messages' current numbers. A command pays for
this only when it holds ``$``: the parsed marker is one object, tested by identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from palais.gateway.imap.parser import Args
from palais.gateway.imap.sequence import SequenceSet, runs

if TYPE_CHECKING:
    from palais.gateway.imap.view import SelectedMailbox

__all__ = ["EMPTY", "SAVE", "SAVED", "bind", "result", "sequence_set"]

SAVE = "SAVE"
#: ``$`` as parsed: resolved against the view when the command runs.
SAVED: Final = SequenceSet(())
#: An empty result (before any SAVE, or after a failed one).
EMPTY: Final = SequenceSet(())


def sequence_set(args: Args) -> SequenceSet:
    """A sequence set, or ``$`` (RFC 5182 ``seq-last-command``)."""
    if args.maybe(b"$"):
        return SAVED
    return args.sequence_set()


def result(uids: Sequence[int], returns: frozenset[str]) -> SequenceSet:
    """What a SEARCH with RETURN (SAVE ...) keeps: with MIN and/or MAX and no
    other option, only the messages those name (RFC 5182 2.4); else all."""
    if uids and returns - {SAVE} and returns - {SAVE} <= {"MIN", "MAX"}:
        uids = sorted(
            {u for u, wanted in ((uids[0], "MIN"), (uids[-1], "MAX")) if wanted in returns}
        )
    return SequenceSet(tuple(runs(list(uids)))) if uids else EMPTY


def bind(view: SelectedMailbox, numbers: SequenceSet, *, uid: bool) -> SequenceSet:
    """``numbers`` itself, or for ``$`` the saved messages still in the box: as
    UIDs, or as their sequence numbers in a command by number."""
    if numbers is not SAVED:
        return numbers
    saved = view.saved
    if uid:
        return saved
    return SequenceSet(tuple((start + 1, stop) for start, stop in saved.uid_spans(view.uids)))
