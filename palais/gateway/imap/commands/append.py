"""APPEND (with UIDPLUS APPENDUID)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.common import identity, keyword_refusal
from palais.gateway.imap.commands.registry import Reply, command, no, ok
from palais.gateway.imap.parser import Args
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


@command("APPEND", syntax=(Args.mailbox, append_arguments), states=AUTHENTICATED_OR_SELECTED)
async def append(session: Session, tag: bytes, name: str, request: AppendArgs) -> Reply:
    if not request.data:
        return no("An empty message cannot be stored", codes.CANNOT)
    flags = frozenset(f for f in request.flags if f != "\\Recent")
    refusal = keyword_refusal(session, flags)
    if refusal is not None:
        return refusal
    try:
        result = await session.access.append(
            identity(session),
            name,
            request.data if request.binary else normalize_line_endings(request.data),
            flags,
            request.internaldate,
        )
    except NoSuchMailbox as exc:
        return no(exc.text, codes.TRYCREATE)
    state = session.state
    if isinstance(state, Selected) and state.mailbox.info.name == name:
        # Report EXISTS before our OK, whenever the store's own event arrives.
        state.mailbox.on_event(MailboxEvent(state.mailbox.info.id, EventKind.ARRIVED, result.uid))
    return ok("APPEND completed", b"APPENDUID %d %d" % (result.uidvalidity, result.uid))
