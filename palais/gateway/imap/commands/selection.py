"""SELECT, EXAMINE, CLOSE, UNSELECT, CHECK, EXPUNGE and UID EXPUNGE."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.registry import Optional, Reply, command, no, ok
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.sequence import SequenceSet
from palais.gateway.imap.states import (
    AUTHENTICATED_OR_SELECTED,
    SELECTED_ONLY,
    Authenticated,
    Selected,
)
from palais.gateway.imap.view import SelectedMailbox

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


def select_params(args: Args) -> frozenset[str]:
    params = {p.decode("ascii").upper() for p in args.paren_list()}
    if params - {"CONDSTORE"}:
        raise ParseError("Unsupported SELECT parameter")
    return frozenset(params)


def _deselect(session: Session) -> None:
    state = session.state
    if isinstance(state, Selected):
        state.mailbox.close()
        session.state = Authenticated(state.identity)


async def _select(
    session: Session, name: str, params: frozenset[str] | None, *, examine: bool
) -> Reply:
    who = identity(session)
    _deselect(session)
    if params and "CONDSTORE" in params:
        session.condstore = True
    info = await session.access.mailbox(who, name)
    if not info.selectable:
        return no("That is a folder of mailboxes, not a mailbox", codes.CANNOT)
    view = SelectedMailbox(info, read_only=examine or info.read_only)
    # Subscribe before the snapshot so that no change falls between the two.
    view.attach(session.access.subscribe(info.id, view.on_event))
    try:
        table = await session.access.entries(who, info.id)
    except BaseException:
        view.close()
        raise
    view.load(table.uids)
    for flags in table.flag_sets:  # a handful: the keywords in use (RFC 3501 7.2.6)
        view.learn_keywords(flags)
    highest = max(info.highestmodseq, table.highestmodseq)
    view.highestmodseq = max(view.highestmodseq, highest)
    first = table.first_unseen()
    first_unseen = None if first is None else first + 1
    uidnext = max(info.uidnext, table.uidnext)
    del table
    session.untagged(b"FLAGS " + view.flags_text())
    # \\*: new keywords may be created (up to [imap] max_keywords on a message).
    permanent = b"()" if view.read_only else view.flags_text(permanent=True)
    session.untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags you can change")
    session.untagged(b"%d EXISTS" % view.exists)
    session.untagged(b"0 RECENT")
    if first_unseen is not None:
        session.untagged(b"OK [UNSEEN %d] First unseen" % first_unseen)
    session.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % info.uidvalidity)
    session.untagged(b"OK [UIDNEXT %d] Predicted next UID" % uidnext)
    session.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % highest)
    session.state = Selected(who, view)
    if view.read_only:
        return ok(
            "EXAMINE completed" if examine else "SELECT completed, read-only", codes.READ_ONLY
        )
    return ok("SELECT completed", codes.READ_WRITE)


@command("SELECT", syntax=(Args.mailbox, Optional(select_params)), states=AUTHENTICATED_OR_SELECTED)
async def select(session: Session, tag: bytes, name: str, params: frozenset[str] | None) -> Reply:
    return await _select(session, name, params, examine=False)


@command(
    "EXAMINE", syntax=(Args.mailbox, Optional(select_params)), states=AUTHENTICATED_OR_SELECTED
)
async def examine(session: Session, tag: bytes, name: str, params: frozenset[str] | None) -> Reply:
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
        return no("Mailbox is open read-only", codes.CANNOT)
    if uids is not None and not uids:
        return ok("Nothing to expunge")
    gone = await session.access.expunge(identity(session), view.info.id, uids)
    for seq in view.remove(gone):
        session.untagged(b"%d EXPUNGE" % seq)
    return ok("EXPUNGE completed")


@command("EXPUNGE", states=SELECTED_ONLY)
async def expunge(session: Session, tag: bytes) -> Reply:
    return await _expunge(session, None)


@command("UID EXPUNGE", syntax=(Args.sequence_set,), states=SELECTED_ONLY)
async def uid_expunge(session: Session, tag: bytes, numbers: SequenceSet) -> Reply:
    view = selected(session)
    return await _expunge(session, numbers.uids(view.uids))
