"""What the domain reads from a message's header, without touching its bytes."""

from __future__ import annotations

import email.header
import email.utils
import functools
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from palais.mailbox.errors import InvalidMessage

_HEADER_PARSER = BytesHeaderParser(policy=compat32)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """Header facts used for routing, indexing and search."""

    header_size: int  # bytes of the header block, blank line included
    subject: str
    from_addr: str
    to_addr: str
    cc_addr: str
    bcc_addr: str
    message_id: str | None
    sent_date: datetime | None
    has_body: bool


def header_size(data: bytes) -> int:
    """Length of the header block including the separating blank line."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    candidates = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    if not candidates:
        return len(data)
    return min(candidates)


def decode_header_value(value: str | None) -> str:
    if not value:
        return ""
    try:
        parts = email.header.decode_header(value)
    except (email.errors.HeaderParseError, ValueError):
        return value
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                text.append(chunk.decode(charset or "ascii", errors="replace"))
            except LookupError:
                text.append(chunk.decode("ascii", errors="replace"))
        else:
            text.append(chunk)
    return "".join(text)


def _addresses(msg: Message, name: str) -> str:
    values = msg.get_all(name)
    if not values:
        return ""
    key = tuple(str(v) for v in values)
    # Correspondents repeat from one message to the next: a short list is
    # parsed once (long ones are not kept, to bound the memory used).
    if sum(map(len, key)) <= 512:
        return _remembered_address_text(key)
    return _address_text(key)


def _address_text(values: tuple[str, ...]) -> str:
    pairs = email.utils.getaddresses([decode_header_value(v) for v in values])
    return ", ".join(f"{display} <{addr}>" if display else addr for display, addr in pairs if addr)


_remembered_address_text = functools.lru_cache(maxsize=4096)(_address_text)


def summarize(data: bytes) -> MessageSummary:
    """Read a message's header. Raises InvalidMessage if there is none."""
    size = header_size(data)
    head = data[:size]
    if not head.strip():
        raise InvalidMessage("The message has no header", reason="empty header block")
    msg = _HEADER_PARSER.parsebytes(head)
    if not msg.keys():
        raise InvalidMessage("The message has no header", reason="unparsable header block")
    sent: datetime | None = None
    raw_date = msg.get("Date")
    if raw_date:
        try:
            sent = email.utils.parsedate_to_datetime(str(raw_date))
        except (TypeError, ValueError, IndexError):
            sent = None
        if sent is not None and sent.tzinfo is None:
            sent = None  # RFC 5322 dates carry a zone; an undated one is unusable
    mid = msg.get("Message-ID")
    return MessageSummary(
        header_size=size,
        subject=decode_header_value(msg.get("Subject")).strip(),
        from_addr=_addresses(msg, "From"),
        to_addr=_addresses(msg, "To"),
        cc_addr=_addresses(msg, "Cc"),
        bcc_addr=_addresses(msg, "Bcc"),
        message_id=str(mid).strip() if mid else None,
        sent_date=sent,
        has_body=bool(data[size:].strip()),
    )
