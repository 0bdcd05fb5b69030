"""SEARCH and UID SEARCH, with ESEARCH RETURN options, SEARCHRES's SAVE and
CONDSTORE MODSEQ; after ENABLE IMAP4rev2 always answered by ESEARCH (RFC 9051 6.4.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palais.gateway.imap import codes, searchres
from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.registry import Reply, command, no, ok
from palais.gateway.imap.response import quoted
from palais.gateway.imap.searching import Searcher
from palais.gateway.imap.searchspec import SearchRequest, parse_search
from palais.gateway.imap.sequence import format_set
from palais.gateway.imap.states import SELECTED_ONLY

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


_ALL = frozenset({"ALL"})
_SAVE_ONLY = frozenset({searchres.SAVE})


async def do_search(session: Session, tag: bytes, request: SearchRequest, *, uid: bool) -> Reply:
    view = selected(session)
    returns = request.returns
    if returns is None and session.rev2:
        returns = _ALL  # IMAP4rev2 has no SEARCH response: RETURN (ALL) is the default
    saving = returns is not None and searchres.SAVE in returns
    refusal = (
        over_limits(session, request, view.exists)
        if request.charset_ok
        else no("Unsupported charset", codes.BADCHARSET)
    )
    if refusal is not None:
        if saving:  # a failed SEARCH leaves "$" empty (RFC 5182 2.1)
            view.saved = searchres.EMPTY
        return refusal
    searcher = Searcher(session.access, identity(session), view, session.pacer())
    try:
        uids = await searcher.run(request.key)  # a "$" in it is the result so far
    except BaseException:
        if saving:
            view.saved = searchres.EMPTY
        raise
    numbers = uids
    if not uid:
        known = [(u, n) for u in uids if (n := view.seq_of(u)) is not None]
        uids = [u for u, _ in known]
        numbers = [n for _, n in known]
    if saving:
        assert returns is not None
        view.saved = searchres.result(uids, returns)
        if returns == _SAVE_ONLY:  # no ESEARCH response for SAVE alone (RFC 5182 2.4)
            if request.uses_modseq:
                session.condstore = True
            return ok("SEARCH completed, result saved")
    modseq = 0
    if request.uses_modseq:
        session.condstore = True
        modseq = await searcher.modseq_of(_reported(uids, returns))
    if returns is None:
        line = b"SEARCH" + b"".join(b" %d" % n for n in numbers)
        if modseq and numbers:
            line += b" (MODSEQ %d)" % modseq
        session.untagged(line)
        return ok("SEARCH completed")
    line = b"ESEARCH (TAG " + quoted(tag) + b")"
    if uid:
        line += b" UID"
    if numbers:
        if "MIN" in returns:
            line += b" MIN %d" % numbers[0]
        if "MAX" in returns:
            line += b" MAX %d" % numbers[-1]
    if "COUNT" in returns:
        line += b" COUNT %d" % len(numbers)
    if numbers and "ALL" in returns:
        line += b" ALL " + format_set(numbers)
    if modseq and numbers:
        line += b" MODSEQ %d" % modseq
    session.untagged(line)
    return ok("SEARCH completed")


def _reported(uids: list[int], returns: frozenset[str] | None) -> list[int]:
    """The messages whose highest MODSEQ the response carries: with RETURN of
    MIN and/or MAX only, just those (RFC 4731 section 3.2, RFC 7162 3.1.5)."""
    if returns is None or not uids or not returns - {searchres.SAVE} <= {"MIN", "MAX"}:
        return uids
    return [u for u, wanted in ((uids[0], "MIN"), (uids[-1], "MAX")) if wanted in returns]


def over_limits(session: Session, request: SearchRequest, messages: int) -> Reply | None:
    """NO [LIMIT] for a program too long, or too costly for the size of the box."""
    limits = session.limits
    if request.written > limits.max_search_keys:
        session.limit_hit("max_search_keys")
        return no(f"Too many search keys (at most {limits.max_search_keys})", codes.LIMIT)
    keys = request.distinct
    if keys * messages > limits.max_search_cost:
        session.limit_hit("max_search_cost")
        most = max(limits.max_search_cost // max(messages, 1), 1)
        return no(
            f"Search too costly for a mailbox of {messages} messages:"
            f" use at most {most} distinct keys",
            codes.LIMIT,
        )
    return None


@command("SEARCH", syntax=(parse_search,), states=SELECTED_ONLY, defers_expunge=True)
async def search(session: Session, tag: bytes, request: SearchRequest) -> Reply:
    return await do_search(session, tag, request, uid=False)


@command("UID SEARCH", syntax=(parse_search,), states=SELECTED_ONLY)
async def uid_search(session: Session, tag: bytes, request: SearchRequest) -> Reply:
    return await do_search(session, tag, request, uid=True)
