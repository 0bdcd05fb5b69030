"""STORE and UID STORE, with .SILENT and CONDSTORE's UNCHANGEDSINCE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from palais.gateway.imap import codes, searchres
from palais.gateway.imap.commands.common import (
    identity,
    keyword_refusal,
    keywords,
    selected,
    too_many_keywords,
)
from palais.gateway.imap.commands.fetch import resolve
from palais.gateway.imap.commands.registry import Reply, bad, command, no, ok
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.recent import RECENT
from palais.gateway.imap.response import flag_list
from palais.gateway.imap.sequence import SequenceSet, SequenceSetError, format_set
from palais.gateway.imap.states import SELECTED_ONLY
from palais.mailbox.model import FlagMode

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session

_MODES = {"FLAGS": FlagMode.REPLACE, "+FLAGS": FlagMode.ADD, "-FLAGS": FlagMode.REMOVE}


@dataclass(frozen=True, slots=True)
class StoreArgs:
    unchanged_since: int | None
    mode: FlagMode
    silent: bool
    flags: frozenset[str]


def store_arguments(args: Args) -> StoreArgs:
    unchanged_since = None
    if args.peek() == 0x28:
        args.expect(b"(")
        if args.keyword() != "UNCHANGEDSINCE":
            raise ParseError("Unsupported STORE modifier")
        args.sp()
        unchanged_since = args.number64()
        args.expect(b")")
        args.sp()
    prefix = ""
    if args.peek() in (0x2B, 0x2D):
        prefix = chr(args.peek() or 0)
        args.expect(prefix.encode())
    name = args.word()
    silent = name.endswith(".SILENT")
    if silent:
        name = name[: -len(".SILENT")]
    if name != "FLAGS":
        raise ParseError("Expected FLAGS, +FLAGS or -FLAGS")
    args.sp()
    flags = args.flags_maybe_parenthesized()
    return StoreArgs(
        unchanged_since,
        _MODES[prefix + name],
        silent,
        frozenset(f for f in flags if f != "\\Recent"),
    )


async def do_store(
    session: Session, numbers: SequenceSet, request: StoreArgs, *, uid: bool
) -> Reply:
    view = selected(session)
    if view.read_only:
        # Read-only by permission (a delegation to read), not by EXAMINE: NOPERM.
        return no(
            "Mailbox is open read-only", codes.NOPERM if view.info.read_only else codes.CANNOT
        )
    try:
        pairs = resolve(session, numbers, uid=uid)
    except SequenceSetError as exc:
        return bad(str(exc))
    if request.unchanged_since is not None:
        session.condstore = True
    if not pairs:
        return ok("STORE completed")
    if request.mode is not FlagMode.REMOVE:
        refusal = keyword_refusal(session, request.flags)
        if refusal is None and request.mode is FlagMode.ADD:
            refusal = await _keywords_overflow(session, [u for _, u in pairs], request.flags)
        if refusal is not None:
            return refusal
    result = await session.access.store_flags(
        identity(session),
        view.info.id,
        [u for _, u in pairs],
        request.mode,
        request.flags,
        request.unchanged_since,
    )
    seq_of = {u: s for s, u in pairs}
    pacer = session.pacer()  # "1:* +FLAGS (\\Seen)" on a big box answers a line per message
    condstore = session.condstore
    # RFC 3501 6.4.8: UID STORE's FETCH responses carry the UID; so does every
    # one once CONDSTORE is enabled, with the MODSEQ (RFC 7162 3.1).
    with_uid = uid or condstore
    recent = view.recent if view.recent else None
    for entry in result.updated:
        if pacer.due():
            await pacer.pause()
        view.note_reported(entry.uid, entry.modseq)
        # A new keyword: FLAGS first, before the FETCH shows it (RFC 3501 7.2.6).
        announce = view.learn_keywords(entry.flags)
        if announce is not None:
            session.write(announce)
        seq = seq_of.get(entry.uid)
        if seq is None or (request.silent and request.unchanged_since is None):
            continue
        items = [b"UID %d" % entry.uid] if with_uid else []
        if not request.silent:
            shown = entry.flags
            if recent is not None and entry.uid in recent:
                shown = shown | {RECENT}
            items.append(b"FLAGS " + flag_list(shown))
        if condstore:
            items.append(b"MODSEQ (%d)" % entry.modseq)
        session.untagged(b"%d FETCH (" % seq + b" ".join(items) + b")")
    if not result.updated and not result.modified and all(view.is_expunged(u) for _, u in pairs):
        return no("Those messages were expunged by another session", codes.EXPUNGEISSUED)
    if result.modified:
        refused = result.modified if uid else [seq_of[u] for u in result.modified if u in seq_of]
        return ok("Conditional STORE failed for some messages", b"MODIFIED " + format_set(refused))
    return ok("STORE completed")


async def _keywords_overflow(
    session: Session, uids: list[int], flags: frozenset[str]
) -> Reply | None:
    """NO [LIMIT] if adding ``flags`` would take one of the messages past the keyword cap."""
    added = keywords(flags)
    if not added:
        return None
    cap = session.limits.max_keywords
    view = selected(session)
    table = await session.access.entries(identity(session), view.info.id)
    # A box holds a handful of distinct flag sets: test those, then find
    # whether one of the messages named holds an offending one.
    over = {
        fid
        for fid, present in enumerate(table.flag_sets)
        if not added <= present and len(keywords(present) | added) > cap
    }
    if not over:
        return None
    flag_ids = table.flag_ids
    for uid in uids:
        i = table.index_of(uid)
        if i is not None and flag_ids[i] in over:
            session.limit_hit("max_keywords")
            return too_many_keywords(session)
    return None


@command(
    "STORE",
    syntax=(searchres.sequence_set, store_arguments),
    states=SELECTED_ONLY,
    defers_expunge=True,
)
async def store(session: Session, tag: bytes, numbers: SequenceSet, request: StoreArgs) -> Reply:
    return await do_store(session, numbers, request, uid=False)


@command("UID STORE", syntax=(searchres.sequence_set, store_arguments), states=SELECTED_ONLY)
async def uid_store(
    session: Session, tag: bytes, numbers: SequenceSet, request: StoreArgs
) -> Reply:
    return await do_store(session, numbers, request, uid=True)
