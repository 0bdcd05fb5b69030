"""Mailbox-level commands: LIST (RFC 5258 basics), LSUB, (UN)SUBSCRIBE, NAMESPACE, STATUS,
CREATE, DELETE, RENAME."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.common import identity
from palais.gateway.imap.commands.registry import Reply, command, no, ok
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.recent import marks_for
from palais.gateway.imap.response import mailbox_name
from palais.gateway.imap.states import AUTHENTICATED_OR_SELECTED, Selected
from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.model import DELIMITER, MailboxInfo

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session

_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
# RFC 3501, RFC 7162 (HIGHESTMODSEQ), RFC 8438 (SIZE), RFC 9051 (DELETED).
_STATUS_ITEMS = (
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",
    "DELETED",
)


@dataclass(frozen=True, slots=True)
class ListRequest:
    select: frozenset[str]
    reference: str
    patterns: tuple[str, ...]
    returns: frozenset[str]
    status: tuple[str, ...] = ()  # RETURN (STATUS (...)): LIST-STATUS (RFC 5819)


def _options(args: Args, allowed: frozenset[str], what: str) -> frozenset[str]:
    opts = {o.decode("ascii").upper() for o in args.paren_list()}
    unknown = opts - allowed
    if unknown:
        raise ParseError(f"Unsupported {what} option {sorted(unknown)[0][:40]}")
    return frozenset(opts)


def list_arguments(args: Args) -> ListRequest:
    select: frozenset[str] = frozenset()
    if args.peek() == 0x28:
        select = _options(args, _SELECT_OPTIONS, "LIST selection")
        if "RECURSIVEMATCH" in select and not select - {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 section 3.1: it only qualifies another selection option.
            raise ParseError("RECURSIVEMATCH needs another selection option")
        args.sp()
    reference = args.decode_name(args.astring(), pattern=True)
    args.sp()
    if args.peek() == 0x28:
        args.expect(b"(")
        patterns = [args.list_mailbox()]
        while not args.maybe(b")"):
            args.sp()
            patterns.append(args.list_mailbox())
    else:
        patterns = [args.list_mailbox()]
    returns: frozenset[str] = frozenset()
    status: tuple[str, ...] = ()
    if not args.at_end():
        args.sp()
        if args.keyword() != "RETURN":
            raise ParseError("Expected RETURN")
        args.sp()
        returns, status = _return_options(args)
    return ListRequest(select, reference, tuple(patterns), returns, status)


def _return_options(args: Args) -> tuple[frozenset[str], tuple[str, ...]]:
    """``(CHILDREN STATUS (MESSAGES UNSEEN) ...)``."""
    args.expect(b"(")
    opts: set[str] = set()
    status: tuple[str, ...] | None = None
    while not args.maybe(b")"):
        if opts or status is not None:
            args.sp()
        name = args.keyword()
        if name == "STATUS" and status is None:
            args.sp()
            status = tuple(status_items(args))
        elif name in _RETURN_OPTIONS:
            opts.add(name)
        else:
            raise ParseError(f"Unsupported LIST return option {name[:40]}")
    return frozenset(opts), status or ()


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _matches(name: str, regexes: list[re.Pattern[str]], patterns: tuple[str, ...]) -> bool:
    for regex, pattern in zip(regexes, patterns, strict=True):
        if regex.fullmatch(name):
            return True
        # INBOX is case-insensitive, also as the first level of a pattern.
        in_inbox = name == "INBOX" or name.startswith("INBOX" + DELIMITER)
        inbox_pattern = pattern[:5].upper() == "INBOX"
        if in_inbox and inbox_pattern and _pattern_regex("INBOX" + pattern[5:]).fullmatch(name):
            return True
    return False


def _has_children(box: MailboxInfo, names: set[str]) -> bool:
    prefix = box.name + DELIMITER
    return any(n.startswith(prefix) for n in names)


def _attributes(box: MailboxInfo, names: set[str], *, subscribed: bool) -> bytes:
    attrs: list[bytes] = []
    if not box.selectable:
        attrs.append(b"\\Noselect")
    has_children = _has_children(box, names)
    attrs.append(b"\\HasChildren" if has_children else b"\\HasNoChildren")
    if box.special_use is not None:
        attrs.append(str(box.special_use).encode("ascii"))
    if subscribed:
        attrs.append(b"\\Subscribed")
    return b"(" + b" ".join(attrs) + b")"


async def _list(session: Session, request: ListRequest, verb: bytes) -> Reply:
    if request.patterns == ("",):
        # The special case that only asks for the hierarchy delimiter.
        session.untagged(verb + b' (\\Noselect) "' + DELIMITER.encode() + b'" ""')
        return ok(f"{verb.decode()} completed")
    boxes = await session.access.list_mailboxes(identity(session))
    names = {b.name for b in boxes}
    full = tuple(_join(request.reference, p) for p in request.patterns)
    regexes = [_pattern_regex(p) for p in full]
    subscribed = (
        "SUBSCRIBED" in request.select or "SUBSCRIBED" in request.returns or verb == b"LSUB"
    )
    for box in sorted(boxes, key=lambda b: (b.name != "INBOX", b.name)):
        if "SPECIAL-USE" in request.select and box.special_use is None:
            continue
        if not _matches(box.name, regexes, full):
            continue
        line = (
            verb
            + b" "
            + _attributes(box, names, subscribed=subscribed and verb != b"LSUB")
            + b' "'
            + DELIMITER.encode()
            + b'" '
            + mailbox_name(box.name, utf8=session.utf8_names)
        )
        if (
            "RECURSIVEMATCH" in request.select
            and "SUBSCRIBED" in request.select
            and _has_children(box, names)
        ):
            # Every box shown is subscribed, so its descendants are too (RFC 5258 3.5).
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        session.untagged(line)
        if request.status and box.selectable:
            # LIST-STATUS: right after the box's LIST line (RFC 5819 2).
            session.untagged(await _status_line(session, box, request.status))
    return ok(f"{verb.decode()} completed")


async def list_line(session: Session, box: MailboxInfo) -> bytes:
    """The LIST response of one box, as IMAP4rev2's SELECT and EXAMINE give it
    (RFC 9051 6.3.2): its attributes as LIST would show them."""
    names = {b.name for b in await session.access.list_mailboxes(identity(session))}
    return (
        b"LIST "
        + _attributes(box, names, subscribed=False)
        + b' "'
        + DELIMITER.encode()
        + b'" '
        + mailbox_name(box.name, utf8=session.utf8_names)
    )


def _join(reference: str, pattern: str) -> str:
    if not reference or pattern.startswith(DELIMITER):
        return pattern
    if reference.endswith(DELIMITER):
        return reference + pattern
    return reference + DELIMITER + pattern if pattern else reference


@command("LIST", syntax=(list_arguments,), states=AUTHENTICATED_OR_SELECTED)
async def list_(session: Session, tag: bytes, request: ListRequest) -> Reply:
    return await _list(session, request, b"LIST")


def _lsub_arguments(args: Args) -> ListRequest:
    reference = args.decode_name(args.astring(), pattern=True)
    args.sp()
    return ListRequest(frozenset(), reference, (args.list_mailbox(),), frozenset())


@command("LSUB", syntax=(_lsub_arguments,), states=AUTHENTICATED_OR_SELECTED)
async def lsub(session: Session, tag: bytes, request: ListRequest) -> Reply:
    # Every visible box counts as subscribed: the gateway owns the tree.
    return await _list(session, request, b"LSUB")


@command("SUBSCRIBE", "UNSUBSCRIBE", syntax=(Args.mailbox,), states=AUTHENTICATED_OR_SELECTED)
async def subscribe(session: Session, tag: bytes, name: str) -> Reply:
    return ok("Subscriptions follow the dossiers you can see")


@command("NAMESPACE", states=AUTHENTICATED_OR_SELECTED)
async def namespace(session: Session, tag: bytes) -> Reply:
    session.untagged(b'NAMESPACE (("" "' + DELIMITER.encode() + b'")) NIL NIL')
    return ok("NAMESPACE completed")


def status_items(args: Args) -> list[str]:
    items = [i.decode("ascii").upper() for i in args.paren_list()]
    if not items:
        raise ParseError("Empty STATUS item list")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ParseError(f"Unsupported STATUS item {item[:40]}")
    return items


@command("STATUS", syntax=(Args.mailbox, status_items), states=AUTHENTICATED_OR_SELECTED)
async def status(session: Session, tag: bytes, name: str, items: list[str]) -> Reply:
    box = await session.access.mailbox(identity(session), name)
    if not box.selectable:
        return no("That is a folder of mailboxes, not a mailbox", codes.NONEXISTENT)
    session.untagged(await _status_line(session, box, items))
    return ok("STATUS completed")


async def _status_line(session: Session, box: MailboxInfo, items: Sequence[str]) -> bytes:
    """``STATUS name (...)``; SIZE and DELETED are only computed when asked for."""
    values = {
        "MESSAGES": box.messages,
        "RECENT": 0,
        "UIDNEXT": box.uidnext,
        "UIDVALIDITY": box.uidvalidity,
        "UNSEEN": box.unseen,
        "HIGHESTMODSEQ": box.highestmodseq,
    }
    who = identity(session)
    if "RECENT" in items:
        values["RECENT"] = await _recent_count(session, box)
    if "SIZE" in items:  # RFC 8438
        values["SIZE"] = await session.access.box_size(who, box.id)
    if "DELETED" in items:  # RFC 9051 6.3.11: messages with \Deleted
        table = await session.access.entries(who, box.id)
        values["DELETED"] = sum(
            n
            for n, flags in zip(table.counts, table.flag_sets, strict=True)
            if "\\Deleted" in flags
        )
    body = b" ".join(b"%s %d" % (i.encode(), values[i]) for i in items)
    return b"STATUS " + mailbox_name(box.name, utf8=session.utf8_names) + b" (" + body + b")"


async def _recent_count(session: Session, box: MailboxInfo) -> int:
    """The box's \\Recent messages: those no session was told of yet, and, when
    this session has it selected, the ones recent here."""
    who = identity(session)
    known = marks_for(session.access).get(box.id)
    mark = known if known is not None else await session.access.recent_mark(who, box.id)
    uids = (await session.access.entries(who, box.id)).uids
    count = len(uids) - bisect.bisect_right(uids, mark)
    state = session.state
    if isinstance(state, Selected) and state.mailbox.info.id == box.id:
        recent = state.mailbox.recent
        if recent and not state.mailbox.read_only:
            count += recent.count(uids)
    return count


@command("CREATE", syntax=(Args.mailbox,), states=AUTHENTICATED_OR_SELECTED)
async def create(session: Session, tag: bytes, name: str) -> Reply:
    try:
        await session.access.mailbox(identity(session), name.rstrip(DELIMITER))
    except NoSuchMailbox:
        return no("Mailboxes are created by the gateway, with the dossiers", codes.CANNOT)
    return no("That mailbox already exists", codes.ALREADYEXISTS)


@command("DELETE", syntax=(Args.mailbox,), states=AUTHENTICATED_OR_SELECTED)
async def delete(session: Session, tag: bytes, name: str) -> Reply:
    await session.access.mailbox(identity(session), name)
    return no("Mailboxes are removed by the gateway, with the dossiers", codes.CANNOT)


@command("RENAME", syntax=(Args.mailbox, Args.mailbox), states=AUTHENTICATED_OR_SELECTED)
async def rename(session: Session, tag: bytes, old: str, new: str) -> Reply:
    await session.access.mailbox(identity(session), old)
    return no("Mailbox names are set by the gateway", codes.CANNOT)
