"""SORT, UID SORT (RFC 5256, with ESORT's RETURN of RFC 5267) and THREAD, UID THREAD."""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.common import identity, selected
from palais.gateway.imap.commands.registry import Reply, command, no, ok
from palais.gateway.imap.commands.search import over_limits
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.response import quoted
from palais.gateway.imap.searching import Searcher
from palais.gateway.imap.searchspec import CHARSETS, RETURN_OPTIONS, SearchRequest, parse_program
from palais.gateway.imap.sorting import (
    SORT_KEYS,
    FactTable,
    SortKey,
    box_facts,
    digest,
    sort_uids,
)
from palais.gateway.imap.states import SELECTED_ONLY
from palais.gateway.imap.threads import Node, format_threads, ordered_subject, references

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session

THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@dataclass(frozen=True, slots=True)
class SortRequest:
    keys: tuple[SortKey, ...]
    search: SearchRequest  # its ``returns``: ESORT's RETURN options, or None


@dataclass(frozen=True, slots=True)
class ThreadRequest:
    algorithm: str
    search: SearchRequest


def _charset(args: Args) -> bool:
    charset = args.astring().decode("ascii", "replace").upper()
    args.sp()
    return charset in CHARSETS


def parse_sort(args: Args) -> SortRequest:
    returns: frozenset[str] | None = None
    if args.startswith_ci(b"RETURN ") or args.startswith_ci(b"RETURN("):
        args.expect(b"RETURN")
        args.sp()
        options = {o.decode("ascii").upper() for o in args.paren_list()}
        unknown = options - RETURN_OPTIONS
        if unknown:
            raise ParseError(f"Unsupported RETURN option {sorted(unknown)[0][:40]}")
        returns = frozenset(options or {"ALL"})
        args.sp()
    args.expect(b"(")
    keys: list[SortKey] = []
    reverse = False
    while True:
        word = args.word()
        if word == "REVERSE":
            if reverse:
                raise ParseError("REVERSE twice")
            reverse = True
        elif word in SORT_KEYS:
            keys.append(SortKey(word, reverse))
            reverse = False
        else:
            raise ParseError(f"Unknown sort key {word[:40]}" if word else "Expected a sort key")
        if args.maybe(b")"):
            break
        args.sp()
    if reverse:
        raise ParseError("REVERSE without a sort key")
    args.sp()
    charset_ok = _charset(args)
    key, written = parse_program(args)
    return SortRequest(tuple(keys), SearchRequest(key, returns, charset_ok, written))


def parse_thread(args: Args) -> ThreadRequest:
    algorithm = args.atom().decode("ascii", "replace").upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise ParseError(f"Unknown thread algorithm {algorithm[:40]}")
    args.sp()
    charset_ok = _charset(args)
    key, written = parse_program(args)
    return ThreadRequest(algorithm, SearchRequest(key, None, charset_ok, written))


async def _matching(session: Session, request: SearchRequest) -> list[int] | Reply:
    """The matching UIDs (ascending), or the refusal."""
    if not request.charset_ok:
        return no("Unsupported charset", codes.BADCHARSET)
    view = selected(session)
    refusal = over_limits(session, request, view.exists)
    if refusal is not None:
        return refusal
    return await Searcher(session.access, identity(session), view, session.pacer()).run(request.key)


async def _facts(session: Session, uids: list[int]) -> tuple[list[int], FactTable]:
    """The facts of ``uids``; a message expunged meanwhile has none and is left out."""
    view = selected(session)
    facts = await box_facts(session.access).of(
        session.access,
        identity(session),
        view.info.id,
        view.info.uidvalidity,
        uids,
        session.pacer(),
    )
    return [u for u in uids if u in facts], facts


def _answer_key(
    session: Session, kind: object, uids: list[int], *, uid: bool
) -> tuple[object, ...]:
    """What an answer depends on: the messages asked of, how they are numbered."""
    view = selected(session)
    numbering = None if uid else digest(view.uids)
    return (kind, view.info.id, view.info.uidvalidity, uid, digest(uids), numbering)


def _numbers(session: Session, uids: Sequence[int], *, uid: bool) -> list[int]:
    if uid:
        return list(uids)
    view = selected(session)
    return [n for u in uids if (n := view.seq_of(u)) is not None]


async def _sorted(
    session: Session, request: SortRequest, uids: list[int], *, uid: bool
) -> list[int]:
    """The numbers of ``uids`` in sort order (kept for a repeat)."""
    kept = box_facts(session.access)
    key = _answer_key(session, ("ORDER", request.keys), uids, uid=uid)
    answer = kept.answer(key)
    if answer is not None:
        return array("I", answer).tolist()
    present, facts = await _facts(session, uids)
    for sort_key in request.keys:
        facts.column(sort_key.name)  # built here: the table may grow meanwhile, never while built
    # A sort of a big box in a worker thread: the interpreter is shared, but
    # the event loop gets its turns and the other clients theirs.
    order = await asyncio.to_thread(sort_uids, present, facts, request.keys)
    ordered = _numbers(session, order, uid=uid)
    kept.keep_answer(key, array("I", ordered).tobytes())
    return ordered


async def do_sort(session: Session, tag: bytes, request: SortRequest, *, uid: bool) -> Reply:
    found = await _matching(session, request.search)
    if isinstance(found, Reply):
        return found
    returns = request.search.returns
    if returns is None and not request.search.uses_modseq:
        kept = box_facts(session.access)
        key = _answer_key(session, ("SORT", request.keys), found, uid=uid)
        line = kept.answer(key)
        if line is None:
            ordered = await _sorted(session, request, found, uid=uid)
            line = b"SORT" + b"".join(b" %d" % n for n in ordered)
            kept.keep_answer(key, line)
        session.untagged(line)
        return ok("SORT completed")
    ordered = await _sorted(session, request, found, uid=uid)
    modseq = await _modseq(session, request.search, ordered, found, uid=uid)
    if returns is None:
        line = b"SORT" + b"".join(b" %d" % n for n in ordered)
        if modseq:
            line += b" (MODSEQ %d)" % modseq
        session.untagged(line)
        return ok("SORT completed")
    # ESORT (RFC 5267 3.2): MIN and MAX are the first and last in sort order,
    # ALL lists the messages in sort order.
    line = b"ESEARCH (TAG " + quoted(tag) + b")"
    if uid:
        line += b" UID"
    if ordered:
        if "MIN" in returns:
            line += b" MIN %d" % ordered[0]
        if "MAX" in returns:
            line += b" MAX %d" % ordered[-1]
    if "COUNT" in returns:
        line += b" COUNT %d" % len(ordered)
    if ordered and "ALL" in returns:
        line += b" ALL " + ordered_set(ordered)
    if modseq:
        line += b" MODSEQ %d" % modseq
    session.untagged(line)
    return ok("SORT completed")


async def _modseq(
    session: Session, search: SearchRequest, ordered: list[int], found: list[int], *, uid: bool
) -> int:
    """With a MODSEQ search key (RFC 7162 3.1.5): the highest MODSEQ of the
    messages the response names (with RETURN MIN and/or MAX only, those: the
    first and last in sort order); 0 without one, or with no message."""
    if not search.uses_modseq or not ordered:
        return 0
    session.condstore = True
    view = selected(session)
    uids = found
    returns = search.returns
    if returns is not None and returns <= {"MIN", "MAX"}:
        ends = [n for n, wanted in ((ordered[0], "MIN"), (ordered[-1], "MAX")) if wanted in returns]
        uids = ends if uid else [view.uid_at(n) for n in ends]
    return await Searcher(session.access, identity(session), view).modseq_of(uids)


def ordered_set(numbers: Sequence[int]) -> bytes:
    """Numbers in their given order as a sequence-set: ascending runs as ``a:b``."""
    parts: list[bytes] = []
    i = 0
    count = len(numbers)
    while i < count:
        j = i
        while j + 1 < count and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(b"%d" % numbers[i] if i == j else b"%d:%d" % (numbers[i], numbers[j]))
        i = j + 1
    return b",".join(parts)


async def do_thread(session: Session, request: ThreadRequest, *, uid: bool) -> Reply:
    found = await _matching(session, request.search)
    if isinstance(found, Reply):
        return found
    kept = box_facts(session.access)
    key = _answer_key(session, ("THREAD", request.algorithm), found, uid=uid)
    line = kept.answer(key)
    if line is None:
        uids, facts = await _facts(session, found)
        if uid:
            numbers = uids
        else:
            view = selected(session)
            known = [(u, n) for u in uids if (n := view.seq_of(u)) is not None]
            uids = [u for u, _ in known]
            numbers = [n for _, n in known]
        build = references if request.algorithm == "REFERENCES" else ordered_subject
        # Seconds on a box of 100,000 messages: off the event loop (see _sorted).
        threads = await asyncio.to_thread(_threads, build, uids, facts, numbers)
        # thread-data = "THREAD" [SP 1*thread-list]: nothing after it when none.
        line = b"THREAD " + threads if threads else b"THREAD"
        kept.keep_answer(key, line)
    session.untagged(line)
    return ok("THREAD completed")


def _threads(
    build: Callable[[list[int], FactTable, list[int]], list[Node]],
    uids: list[int],
    facts: FactTable,
    numbers: list[int],
) -> bytes:
    return format_threads(build(uids, facts, numbers))


@command("SORT", syntax=(parse_sort,), states=SELECTED_ONLY, defers_expunge=True)
async def sort(session: Session, tag: bytes, request: SortRequest) -> Reply:
    return await do_sort(session, tag, request, uid=False)


@command("UID SORT", syntax=(parse_sort,), states=SELECTED_ONLY)
async def uid_sort(session: Session, tag: bytes, request: SortRequest) -> Reply:
    return await do_sort(session, tag, request, uid=True)


@command("THREAD", syntax=(parse_thread,), states=SELECTED_ONLY, defers_expunge=True)
async def thread(session: Session, tag: bytes, request: ThreadRequest) -> Reply:
    return await do_thread(session, request, uid=False)


@command("UID THREAD", syntax=(parse_thread,), states=SELECTED_ONLY)
async def uid_thread(session: Session, tag: bytes, request: ThreadRequest) -> Reply:
    return await do_thread(session, request, uid=True)
