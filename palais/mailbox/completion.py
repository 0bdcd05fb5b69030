"""Completing a submitted message: its trace line and the fields it lacks.

RFC 6409 section 8 lets a submission server complete a message: Date and
Message-ID when missing (8.2, 8.3), and the sender's address in From when
missing (8.1: the authenticated identity is the one to name). RFC 5321
section 4.4 has every SMTP server that receives a message prepend a
Received line; here it also names who sent it as a court would want it
named: the authenticated address and the SHA-256 fingerprint of the card
certificate that proved it.

Everything is prepended, in one block of bytes computed from the header
block alone: the message itself is never parsed or re-serialised (SMTP DATA
is a hot path), and the bytes filed, hashed into receipts and served back
are exactly the completed ones.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from palais.mailbox.digest import sha256
from palais.mailbox.identity import Identity

__all__ = ["Arrival", "HeaderPresence", "arrival_digest", "completion", "header_presence"]

# The three fields completion may add, at the start of a header line. A
# field's name may be followed by blanks before its colon (RFC 5322 obs-ftext).
_FIELD = re.compile(rb"^(date|message-id|from)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_CONTINUATION = re.compile(rb"\r?\n[ \t]")
# RFC 5321 Domain: dot-separated labels of letters, digits and inner hyphens.
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# Folding keeps each line of the trace under RFC 5322's 78 characters.
_FOLD = "\r\n\t"


@dataclass(frozen=True, slots=True)
class HeaderPresence:
    """Which of the fields completion cares about a header block has."""

    date: bool
    from_: bool
    message_id: str | None  # its value as written (unfolded, stripped); None if absent


def header_presence(head: bytes) -> HeaderPresence:
    """Read the header block ``head`` for Date, From and Message-ID.

    Only the names at the start of lines are looked at (plus the value of
    Message-ID): a few microseconds for a usual header, whatever the size
    of the body after it.
    """
    date = from_ = False
    message_id: str | None = None
    for found in _FIELD.finditer(head):
        name = found.group(1).lower()
        if name == b"date":
            date = True
        elif name == b"from":
            from_ = True
        elif message_id is None:
            message_id = _field_value(head, found.end())
    return HeaderPresence(date=date, from_=from_, message_id=message_id)


def _field_value(head: bytes, start: int) -> str:
    end = start
    while True:
        nl = head.find(b"\n", end)
        if nl < 0:
            end = len(head)
            break
        if head[nl + 1 : nl + 2] not in (b" ", b"\t"):
            end = nl
            break
        end = nl + 1
    value = _CONTINUATION.sub(b" ", head[start:end]).strip()
    return value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Arrival:
    """How a message reached the gateway: what its Received line says."""

    who: Identity  # the authenticated identity (its address and certificate fingerprint)
    helo: str  # the name the client gave in EHLO
    peer: str | None  # the client's IP address
    by: str  # the gateway's host name
    protocol: str  # RFC 3848: "ESMTPS" (TLS), "ESMTPSA" (TLS and SMTP AUTH)
    at: datetime  # when the message was received (an aware datetime)


def completion(
    presence: HeaderPresence, arrival: Arrival, new_message_id: Callable[[], str]
) -> bytes:
    """The header lines to prepend to a submitted message, CRLF-terminated.

    Always the Received line; then Date, Message-ID and From when the
    header block (``presence``) lacks them. ``new_message_id`` gives a
    unique left part for a Message-ID (asked only when one is needed).
    """
    who = arrival.who
    date = email.utils.format_datetime(arrival.at)
    lines = [_received(arrival, date)]
    if not presence.date:
        lines.append(f"Date: {date}")
    if presence.message_id is None:
        lines.append(f"Message-ID: <{new_message_id()}@{_domain_or(arrival.by, 'localhost')}>")
    if not presence.from_:
        lines.append(f"From: {email.utils.formataddr((who.display_name, who.address), 'utf-8')}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _received(arrival: Arrival, date: str) -> str:
    """RFC 5321 section 4.4 Stamp: From-domain, a comment naming the
    authenticated identity, By-domain, With; then the date-time."""
    literal = _address_literal(arrival.peer)
    helo = arrival.helo if _DOMAIN.fullmatch(arrival.helo or "") else None
    if helo is not None and literal is not None:
        source = f"{helo} ({literal})"
    else:
        source = helo or literal or "unknown"
    who = arrival.who
    return (
        f"Received: from {source}{_FOLD}"
        f"(authenticated by certificate {_comment(who.address)}{_FOLD}"
        f"sha256 {who.fingerprint}){_FOLD}"
        f"by {_domain_or(arrival.by, 'localhost')} with {arrival.protocol};{_FOLD}{date}"
    )


def _address_literal(peer: str | None) -> str | None:
    if not peer:
        return None
    if ":" in peer:
        return f"[IPv6:{peer}]"
    return f"[{peer}]"


def _domain_or(name: str, fallback: str) -> str:
    return name if _DOMAIN.fullmatch(name or "") else fallback


def _comment(text: str) -> str:
    """``text`` inside a comment: parentheses and backslashes quoted, no control characters."""
    cleaned = "".join(c for c in text if c.isprintable())
    return cleaned.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def arrival_digest(sender: str, data: bytes) -> str:
    """What identifies a submission on every node: its sender and its bytes as
    submitted, before completion (whose trace line names the node and the
    time). A client that lost the 250 and sends the message again, to this
    node or another behind the load balancer, sends the same; the filer then
    answers with the first filing (``palais.mailbox.filing.resend_of``)."""
    return str(sha256(sender.encode("utf-8", "replace") + b"\0", data).hexdigest())
