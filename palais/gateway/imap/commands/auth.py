"""AUTHENTICATE EXTERNAL, LOGIN and ENABLE.

The client certificate is the only credential. LOGIN and EXTERNAL merely
*select* the identity the certificate already proves: a password is never
checked (and never accepted as proof), and asking for another identity is
refused with AUTHORIZATIONFAILED.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.registry import Optional, Reply, bad, command, no, ok
from palais.gateway.imap.framing import read_line
from palais.gateway.imap.parser import Args
from palais.gateway.imap.states import (
    AUTHENTICATED_ONLY,
    NOT_AUTHENTICATED_ONLY,
    Authenticated,
    NotAuthenticated,
)
from palais.mailbox.errors import AuthorizationFailed
from palais.mailbox.identity import Identity

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session


def _atom_text(args: Args) -> str:
    return args.atom().decode("ascii")


def _initial_response(args: Args) -> bytes:
    return args.atom()


def _select_identity(session: Session, requested: str | None) -> Reply:
    state = session.state
    assert isinstance(state, NotAuthenticated)  # guaranteed by the command's allowed states
    if state.proven is None:
        refusal = state.refusal
        session.close_after_reply()
        if refusal is not None:
            return no(refusal.text, codes.REFUSALS.get(refusal.kind) or codes.AUTHENTICATIONFAILED)
        return no("A trusted client certificate is required", codes.AUTHENTICATIONFAILED)
    identity: Identity = state.proven
    if requested and requested.casefold() != identity.address.casefold():
        return no(AuthorizationFailed.default_text, codes.AUTHORIZATIONFAILED)
    session.state = Authenticated(identity)
    session.identity_address = identity.address
    session.outcome = "authenticated"
    return ok("Logged in", b"CAPABILITY " + session.capabilities())


@command(
    "AUTHENTICATE", syntax=(_atom_text, Optional(_initial_response)), states=NOT_AUTHENTICATED_ONLY
)
async def authenticate(
    session: Session, tag: bytes, mechanism: str, initial: bytes | None
) -> Reply:
    if mechanism.upper() != "EXTERNAL":
        return no("Only EXTERNAL (client certificate) authentication is offered", codes.CANNOT)
    if initial is None:
        await session.continuation(b"")
        line = await read_line(session.reader, session.limits.max_line)
        if line is None:
            return bad("Connection closed during authentication")
        response = line.strip()
    else:
        response = initial
    if response == b"*":
        return bad("Authentication cancelled")
    if response == b"=":
        authzid = b""
    else:
        try:
            authzid = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            return bad("Invalid base64 in SASL response")
    try:
        requested = authzid.decode("utf-8")
    except UnicodeDecodeError:
        return bad("Invalid authorization identity")
    return _select_identity(session, requested or None)


@command("LOGIN", syntax=(Args.astring, Args.astring), states=NOT_AUTHENTICATED_ONLY)
async def login(session: Session, tag: bytes, user: bytes, password: bytes) -> Reply:
    # The password is ignored on purpose: see the module docstring.
    del password
    try:
        requested = user.decode("utf-8")
    except UnicodeDecodeError:
        return no(AuthorizationFailed.default_text, codes.AUTHORIZATIONFAILED)
    if not requested:
        return no(AuthorizationFailed.default_text, codes.AUTHORIZATIONFAILED)
    return _select_identity(session, requested)


def _capabilities(args: Args) -> list[str]:
    names = [args.atom().decode("ascii").upper()]
    while args.maybe(b" "):
        names.append(args.atom().decode("ascii").upper())
    return names


@command("ENABLE", syntax=(_capabilities,), states=AUTHENTICATED_ONLY)
async def enable(session: Session, tag: bytes, names: list[str]) -> Reply:
    enabled: list[str] = []
    for name in names:
        if name == "CONDSTORE" and not session.condstore:
            session.condstore = True
            enabled.append(name)
        elif name == "QRESYNC" and not session.qresync:
            # It enables CONDSTORE too (RFC 7162 3.2.3), listed or not.
            session.qresync = True
            session.condstore = True
            enabled.append(name)
        elif name == "UTF8=ACCEPT" and not session.utf8:
            session.utf8 = True
            enabled.append(name)
        elif name == "IMAP4REV2" and not session.rev2:
            # RFC 9051 (Appendix A): rev1 behaviour until this, rev2 after:
            # no \Recent, ESEARCH for every SEARCH, UTF-8 mailbox names.
            session.rev2 = True
            enabled.append("IMAP4rev2")
    session.untagged(b"ENABLED" + b"".join(b" " + n.encode() for n in enabled))
    return ok("Enabled")
