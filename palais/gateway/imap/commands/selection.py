"""SELECT, EXAMINE, CLOSE, UNSELECT, CHECK, EXPUNGE and UID EXPUNGE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from palais.gateway.imap import codes, searchres
from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.mailboxes import list_line
from palais.gateway.imap.commands.registry import Optional, Reply, bad, command, no, ok
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.recent import RecentSet, marks_for, persist_later
from palais.gateway.imap.response import flag_list
from palais.gateway.imap.sequence import STAR, SequenceSet, format_set
from palais.gateway.imap.states import (
    AUTHENTICATED_OR_SELECTED,
    SELECTED_ONLY,
    Authenticated,
    Selected,
)
from palais.gateway.imap.view import SelectedMailbox
from palais.mailbox.ports import EntryTable

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


@dataclass(frozen=True, slots=True)
class Resync:
    """QRESYNC's SELECT parameter (RFC 7162 3.2.5): what the client last knew."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None
    # (known sequence numbers, their UIDs): a hint for servers that forget
    # expunges; this one remembers them all, so it is only checked.
    seq_match: tuple[SequenceSet, SequenceSet] | None


@dataclass(frozen=True, slots=True)
class SelectParams:
    condstore: bool = False
    resync: Resync | None = None


def select_params(args: Args) -> SelectParams:
    args.expect(b"(")
    condstore = False
    resync: Resync | None = None
    first = True
    while not args.maybe(b")"):
        if not first:
            args.sp()
        first = False
        name = args.keyword()
        if name == "CONDSTORE" and not condstore:
            condstore = True
        elif name == "QRESYNC" and resync is None:
            args.sp()
            resync = _resync(args)
        else:
            raise ParseError("Unsupported SELECT parameter")
    return SelectParams(condstore, resync)


def _resync(args: Args) -> Resync:
    args.expect(b"(")
    validity = args.nz_number()
    args.sp()
    modseq = args.number64()
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if args.maybe(b" "):
        if args.peek() != 0x28:
            known = args.sequence_set()
            if not args.maybe(b" "):
                args.expect(b")")
                return Resync(validity, modseq, known, None)
        args.expect(b"(")
        seqs = args.sequence_set()
        args.sp()
        uids = args.sequence_set()
        args.expect(b")")
        counts = (_count(seqs), _count(uids))
        if None not in counts and counts[0] != counts[1]:
            raise ParseError("The known sequence numbers and UIDs differ in number")
        match = (seqs, uids)
    args.expect(b")")
    return Resync(validity, modseq, known, match)


def _count(numbers: SequenceSet) -> int | None:
    """How many numbers the set names (None with "*": it depends on the box)."""
    if any(STAR in r for r in numbers.ranges):
        return None
    return sum(abs(b - a) + 1 for a, b in numbers.ranges)


def _deselect(session: Session) -> bool:
    """Leave the selected box, if any; whether there was one."""
    state = session.state
    if isinstance(state, Selected):
        state.mailbox.close()
        session.state = Authenticated(state.identity)
        return True
    return False


async def _select(
    session: Session, name: str, params: SelectParams | None, *, examine: bool
) -> Reply:
    who = identity(session)
    resync = params.resync if params is not None else None
    if resync is not None and not session.qresync:
        return bad("QRESYNC needs ENABLE QRESYNC first")  # RFC 7162 3.2.5
    if _deselect(session):
        # The box selected so far is closed (RFC 7162 3.2.11, RFC 9051 7.1).
        session.untagged(b"OK [CLOSED] Previous mailbox closed")
    if params is not None and params.condstore:
        session.condstore = True
    info = await session.access.mailbox(who, name)
    if not info.selectable:
        return no("That is a folder of mailboxes, not a mailbox", codes.CANNOT)
    # IMAP4rev2 (RFC 9051 6.3.2): a LIST response instead of RECENT and UNSEEN.
    listed = await list_line(session, info) if session.rev2 else None
    view = SelectedMailbox(info, read_only=examine or info.read_only)
    # Subscribe before the snapshot so that no change falls between the two.
    view.attach(session.access.subscribe(info.id, view.on_event))
    try:
        table = await session.access.entries(who, info.id)
    except BaseException:
        view.close()
        raise
    view.load(table.uids)
    recent = 0
    if not session.rev2:
        recent = await _track_recent(session, view, table.uids, claim=not view.read_only)
    for flags in table.flag_sets:  # a handful: the keywords in use (RFC 3501 7.2.6)
        view.learn_keywords(flags)
    highest = max(info.highestmodseq, table.highestmodseq)
    view.highestmodseq = max(view.highestmodseq, highest)
    first = None if listed is not None else table.first_unseen()
    first_unseen = None if first is None else first + 1
    uidnext = max(info.uidnext, table.uidnext)
    resync_lines: list[bytes] = []
    if resync is not None and resync.uidvalidity == info.uidvalidity:
        # Else a SELECT as if without QRESYNC (RFC 7162 3.2.5).
        resync_lines = await _resync_lines(session, view, table, resync)
    del table
    session.untagged(b"FLAGS " + view.flags_text())
    # \\*: new keywords may be created (up to [imap] max_keywords on a message).
    permanent = b"()" if view.read_only else view.flags_text(permanent=True)
    session.untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags you can change")
    session.untagged(b"%d EXISTS" % view.exists)
    if listed is not None:
        session.untagged(listed)
    else:
        session.untagged(b"%d RECENT" % recent)
    if first_unseen is not None:
        session.untagged(b"OK [UNSEEN %d] First unseen" % first_unseen)
    session.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % info.uidvalidity)
    session.untagged(b"OK [UIDNEXT %d] Predicted next UID" % uidnext)
    session.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % highest)
    for line in resync_lines:
        session.write(line)
    session.state = Selected(who, view)
    if view.read_only:
        return ok(
            "EXAMINE completed" if examine else "SELECT completed, read-only", codes.READ_ONLY
        )
    return ok("SELECT completed", codes.READ_WRITE)


async def _track_recent(
    session: Session, view: SelectedMailbox, uids: Sequence[int], *, claim: bool
) -> int:
    """The box's \\Recent messages for this session (RFC 3501 2.3.2): what it is
    the first to be told of, claimed in the store; EXAMINE sees them, claims
    none. How many there are."""
    who = identity(session)
    box = view.info.id
    marks = marks_for(session.access)
    top = uids[-1] if uids else 0
    known = marks.get(box)
    if not claim:
        mark = known if known is not None else await session.access.recent_mark(who, box)
        seen = RecentSet(mark + 1, top)
        view.track_recent(seen, None, lambda: None)
        return seen.count(uids)
    if known is not None and top <= known:
        mark = top  # nothing new since this process last claimed
    else:
        mark = await session.access.claim_recent(who, box, top)
        marks[box] = max(mark, top, marks.get(box, 0))
    recent = RecentSet(mark + 1, top)

    def leave() -> None:
        if recent.arrived_top:  # arrivals claimed while selected: the store's mark follows
            persist_later(session.access.claim_recent(who, box, recent.arrived_top))

    view.track_recent(recent, marks, leave)
    return recent.count(uids)


async def _resync_lines(
    session: Session, view: SelectedMailbox, table: EntryTable, resync: Resync
) -> list[bytes]:
    """What changed since the client's MODSEQ among the UIDs it knows: the
    ones gone (one VANISHED (EARLIER)), then each changed one's flags."""
    known = resync.known_uids
    lines: list[bytes] = []
    if resync.modseq >= table.highestmodseq:
        return lines  # nothing changed, nothing removed
    gone = await session.access.vanished(identity(session), view.info.id, resync.modseq)
    top = max(gone[-1] if gone else 0, table.uids[-1] if table.uids else 0)
    if known is not None:
        gone = [uid for uid in gone if known.contains_uid(uid, top)]
    if gone:
        lines.append(b"* VANISHED (EARLIER) " + format_set(gone) + b"\r\n")
    since = resync.modseq
    for i, modseq in enumerate(table.modseqs):
        if modseq <= since:
            continue
        uid = table.uids[i]
        if known is not None and not known.contains_uid(uid, top):
            continue
        flags = table.flags_at(i)
        lines.append(
            b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (i + 1, uid, flag_list(flags), modseq)
        )
        view.saw(uid, modseq)
    return lines


@command("SELECT", syntax=(Args.mailbox, Optional(select_params)), states=AUTHENTICATED_OR_SELECTED)
async def select(session: Session, tag: bytes, name: str, params: SelectParams | None) -> Reply:
    return await _select(session, name, params, examine=False)


@command(
    "EXAMINE", syntax=(Args.mailbox, Optional(select_params)), states=AUTHENTICATED_OR_SELECTED
)
async def examine(session: Session, tag: bytes, name: str, params: SelectParams | None) -> Reply:
    return await _select(session, name, params, examine=True)


@command("CLOSE", states=SELECTED_ONLY)
async def close(session: Session, tag: bytes) -> Reply:
    view = selected(session)
    if not view.read_only:
        # Silently: CLOSE sends no EXPUNGE responses.
        await session.access.expunge(identity(session), view.info.id)
    _deselect(session)
    return ok("CLOSE completed")


@command("UNSELECT", states=SELECTED_ONLY)
async def unselect(session: Session, tag: bytes) -> Reply:
    _deselect(session)
    return ok("UNSELECT completed")


@command("CHECK", states=SELECTED_ONLY)
async def check(session: Session, tag: bytes) -> Reply:
    return ok("CHECK completed")


async def _expunge(session: Session, uids: list[int] | None) -> Reply:
    view = selected(session)
    if view.read_only:
        # Read-only by permission (a delegation to read), not by EXAMINE: NOPERM.
        return no(
            "Mailbox is open read-only", codes.NOPERM if view.info.read_only else codes.CANNOT
        )
    if uids is not None and not uids:
        return ok("Nothing to expunge")
    gone = await session.access.expunge(identity(session), view.info.id, uids)
    for line in view.expunge_lines(gone, vanished=session.qresync):
        session.write(line)
    if session.qresync and not view.has_pending:
        # The MODSEQ the client is now in sync with (RFC 7162 3.2.10): never
        # past a change it has not been told of, so only with none pending.
        return ok("EXPUNGE completed", b"HIGHESTMODSEQ %d" % view.highestmodseq)
    return ok("EXPUNGE completed")


@command("EXPUNGE", states=SELECTED_ONLY)
async def expunge(session: Session, tag: bytes) -> Reply:
    return await _expunge(session, None)


@command("UID EXPUNGE", syntax=(searchres.sequence_set,), states=SELECTED_ONLY)
async def uid_expunge(session: Session, tag: bytes, numbers: SequenceSet) -> Reply:
    view = selected(session)
    return await _expunge(session, searchres.bind(view, numbers, uid=True).uids(view.uids))
