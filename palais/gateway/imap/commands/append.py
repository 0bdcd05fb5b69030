"""APPEND (with UIDPLUS APPENDUID)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.common import identity, keyword_refusal
from palais.gateway.imap.commands.registry import Reply, command, no, ok
from palais.gateway.imap.parser import Args
from palais.gateway.imap.sequence import format_pairs
from palais.gateway.imap.states import AUTHENTICATED_OR_SELECTED, Selected
from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.message import normalize_line_endings
from palais.mailbox.model import EventKind, MailboxEvent

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


@dataclass(frozen=True, slots=True)
class AppendArgs:
    flags: frozenset[str]
    internaldate: datetime | None
    data: bytes
    # Sent as a literal8 (RFC 3516 4.4): binary content, stored as it came,
    # its bare LFs left alone.
    binary: bool = False


def append_messages(args: Args) -> tuple[AppendArgs, ...]:
    """One message, or several (MULTIAPPEND, RFC 3502): each with its own flags and date."""
    messages = [append_arguments(args)]
    while not args.at_end():
        args.sp()
        messages.append(append_arguments(args))
    return tuple(messages)


def append_arguments(args: Args) -> AppendArgs:
    flags: frozenset[str] = frozenset()
    when: datetime | None = None
    if args.peek() == 0x28:
        flags = args.flag_list()
        args.sp()
    if args.peek() == 0x22:
        when = args.date_time()
        args.sp()
    if args.startswith_ci(b"UTF8 ("):
        # RFC 6855: the message is sent as a literal8 inside parentheses.
        args.expect(b"UTF8 (")
        data = args.literal()
        args.expect(b")")
        return AppendArgs(flags, when, data)
    binary = args.startswith(b"~")
    return AppendArgs(flags, when, args.literal(), binary)


@command("APPEND", syntax=(Args.mailbox, append_messages), states=AUTHENTICATED_OR_SELECTED)
async def append(
    session: Session, tag: bytes, name: str, requests: tuple[AppendArgs, ...]
) -> Reply:
    if any(not r.data for r in requests):
        return no("An empty message cannot be stored", codes.CANNOT)
    messages: list[tuple[bytes, frozenset[str], datetime | None]] = []
    for request in requests:
        flags = frozenset(f for f in request.flags if f != "\\Recent")
        refusal = keyword_refusal(session, flags)
        if refusal is not None:
            return refusal
        data = request.data if request.binary else normalize_line_endings(request.data)
        messages.append((data, flags, request.internaldate))
    try:
        if len(messages) == 1:
            results = [await session.access.append(identity(session), name, *messages[0])]
        else:  # all or none (RFC 3502)
            results = await session.access.append_all(identity(session), name, messages)
    except NoSuchMailbox as exc:
        return no(exc.text, codes.TRYCREATE)
    state = session.state
    if isinstance(state, Selected) and state.mailbox.info.name == name:
        # Report EXISTS before our OK, whenever the store's own event arrives.
        for result in results:
            state.mailbox.on_event(
                MailboxEvent(state.mailbox.info.id, EventKind.ARRIVED, result.uid)
            )
    uids = format_pairs([r.uid for r in results])
    return ok("APPEND completed", b"APPENDUID %d %s" % (results[0].uidvalidity, uids))
