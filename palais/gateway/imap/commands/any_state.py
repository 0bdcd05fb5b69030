"""CAPABILITY, NOOP, LOGOUT, ID: valid in every state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palais import __version__
from palais.gateway.imap.commands.registry import Reply, command, ok
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.response import quoted
from palais.gateway.imap.states import ANY, Logout, Selected

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session

_MAX_ID_FIELDS = 30


@command("CAPABILITY", states=ANY)
async def capability(session: Session, tag: bytes) -> Reply:
    session.untagged(b"CAPABILITY " + session.capabilities())
    return ok("Capability completed")


@command("NOOP", states=ANY)
async def noop(session: Session, tag: bytes) -> Reply:
    return ok("NOOP completed")


@command("LOGOUT", states=ANY)
async def logout(session: Session, tag: bytes) -> Reply:
    session.untagged(b"BYE Logging out")
    if isinstance(session.state, Selected):
        session.state.mailbox.close()
    session.state = Logout()
    session.outcome = "logout"
    return ok("Logout completed")


def id_params(args: Args) -> list[tuple[bytes, bytes | None]] | None:
    if args.nil():
        return None
    args.expect(b"(")
    pairs: list[tuple[bytes, bytes | None]] = []
    while not args.maybe(b")"):
        if pairs:
            args.sp()
        key = args.string()
        args.sp()
        pairs.append((key, args.nstring()))
        if len(pairs) > _MAX_ID_FIELDS:
            raise ParseError("Too many ID fields")
    return pairs


@command("ID", syntax=(id_params,), states=ANY)
async def id_(
    session: Session, tag: bytes, params: list[tuple[bytes, bytes | None]] | None
) -> Reply:
    # The client's ID is not logged verbatim: it is client-controlled text.
    session.untagged(
        b"ID ("
        + quoted(b"name")
        + b" "
        + quoted(b"Palais")
        + b" "
        + quoted(b"version")
        + b" "
        + quoted(__version__.encode())
        + b")"
    )
    return ok("ID completed")
