"""What the domain reads from a message's header, without touching its bytes."""

from __future__ import annotations

import email.header
import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass
from datetime import datetime

from palais.mailbox.errors import InvalidMessage

# A field name: printable ASCII but the colon (RFC 5322 section 2.2).
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_BARE_LF = re.compile(rb"(?<!\r)\n")
# The header block of a submitted message, at most (Postfix's header_size_limit
# default): reading a header costs CPU in proportion (deeply nested comments in
# an address field cost seconds per megabyte), and no real message needs more.
MAX_HEADER_SIZE = 100 * 1024


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


def normalize_line_endings(data: bytes) -> bytes:
    """Stored messages are CRLF: a bare LF (a file sent as it lies on disk) becomes CRLF.

    The one rule for every way a message comes in (SMTP DATA, IMAP APPEND):
    the bytes stored, served back and hashed into receipts are these.
    """
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def header_size(data: bytes) -> int:
    """Length of the header block including the separating blank line."""
    # A first line that is blank: no header at all, the rest is the body (as
    # IMAP clients are shown it), not fields for routing.
    if data.startswith(b"\r\n"):
        return 2
    if data.startswith(b"\n"):
        return 1
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
            # Text between encoded words comes back as raw-unicode-escape bytes.
            try:
                text.append(chunk.decode(charset or "raw-unicode-escape", errors="replace"))
            except (LookupError, ValueError):
                # An unknown charset, a codec that cannot replace (idna:
                # "=?idna?q?x?=" in a Subject: the submission failed with 451),
                # a charset name with a NUL in it (ValueError).
                text.append(chunk.decode("utf-8", errors="replace"))
        else:
            text.append(chunk)
    return "".join(text)


def _addresses(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    if not values:
        return ""
    key = tuple(values)
    # Correspondents repeat from one message to the next: a short list is
    # parsed once (long ones are not kept, to bound the memory used).
    if sum(map(len, key)) <= 512:
        return _remembered_address_text(key)
    return _address_text(key)


def header_fields(head: bytes) -> dict[str, list[str]]:
    """The header block's fields by lower-case name, unfolded, in order.

    Values are read as UTF-8 (RFC 6532; anything else is replaced, never
    passed on as undecodable text). A line that is neither a field nor a
    continuation is skipped, as mail readers do.
    """
    fields: dict[str, list[str]] = {}
    current: list[bytes] | None = None
    name = ""
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            fields.setdefault(name, []).append(_unfold(current))
            current = None
        colon = line.find(b":")
        if colon <= 0:
            continue
        raw_name = line[:colon].rstrip(b" \t")
        if not _FIELD_NAME.fullmatch(raw_name):
            continue
        name = raw_name.decode("ascii").lower()
        current = [line[colon + 1 :]]
    if current is not None:
        fields.setdefault(name, []).append(_unfold(current))
    return fields


def _unfold(lines: list[bytes]) -> str:
    return b"".join(lines).strip(b" \t").decode("utf-8", "replace")


def _address_text(values: tuple[str, ...]) -> str:
    """The text SEARCH FROM/TO/CC/BCC look in: each mailbox, then the names
    of the groups (RFC 5322 section 3.4), which getaddresses drops."""
    decoded = [decode_header_value(v) for v in values]
    try:
        pairs = email.utils.getaddresses(decoded)
    except RecursionError:  # comments nested a few hundred deep: "From: ((((..."
        return ""
    parts = [f"{display} <{addr}>" if display else addr for display, addr in pairs if addr]
    parts.extend(f"{name}:;" for v in decoded if ":" in v for name in _group_names(v))
    return ", ".join(parts)


def _group_names(value: str) -> list[str]:
    """The display names of the groups in an address list (only asked of a
    value with a colon: groups and source routes are rare)."""
    try:
        header = _ADDRESS_HEADER("to", value)
    except (RecursionError, ValueError, TypeError, IndexError, AttributeError):
        return []
    return [g.display_name for g in header.groups if g.display_name]


_ADDRESS_HEADER = email.policy.default.header_factory


_remembered_address_text = functools.lru_cache(maxsize=4096)(_address_text)


def check_header_block(head: bytes, fields: dict[str, list[str]]) -> None:
    """What a submitted message's header must be, beyond being readable.

    ``head`` has CRLF line endings (``normalize_line_endings``). No NUL and
    no CR outside a line ending (they would reach ENVELOPE and the clients'
    lists as they are), and one Subject only (the dossier rules check the
    first, a mail reader may show another). InvalidMessage otherwise.
    """
    if b"\0" in head:
        raise InvalidMessage("The header contains a NUL character", reason="NUL in header")
    if len(head) > MAX_HEADER_SIZE:
        raise InvalidMessage(
            f"The header is larger than {MAX_HEADER_SIZE // 1024} KiB",
            reason=f"header block of {len(head)} bytes",
        )
    if head.count(b"\r") != head.count(b"\r\n"):
        raise InvalidMessage(
            "The header contains a CR outside a line ending", reason="bare CR in header"
        )
    subjects = fields.get("subject")
    if subjects is not None and len(subjects) > 1:
        raise InvalidMessage(
            "The message has more than one Subject header",
            reason=f"{len(subjects)} Subject headers",
        )


def summarize(data: bytes, *, submitted: bool = False) -> MessageSummary:
    """Read a message's header. Raises InvalidMessage if there is none.

    ``submitted``: the message is being submitted, its header must also pass
    ``check_header_block`` (a stored draft is indexed as it is).
    """
    size = header_size(data)
    head = data[:size]
    if not head.strip():
        raise InvalidMessage("The message has no header", reason="empty header block")
    if submitted and len(head) > MAX_HEADER_SIZE:
        check_header_block(head, {})  # refuses before the costly parse
    fields = header_fields(head)
    if not fields:
        raise InvalidMessage("The message has no header", reason="unparsable header block")
    if submitted:
        check_header_block(head, fields)

    def first(name: str) -> str | None:
        values = fields.get(name)
        return values[0] if values else None

    sent: datetime | None = None
    raw_date = first("date")
    if raw_date:
        try:
            sent = email.utils.parsedate_to_datetime(raw_date)
        except (TypeError, ValueError, IndexError, OverflowError):  # huge year, hour or zone
            sent = None
        if sent is not None and sent.tzinfo is None:
            sent = None  # RFC 5322 dates carry a zone; an undated one is unusable
    mid = first("message-id")
    return MessageSummary(
        header_size=size,
        subject=decode_header_value(first("subject")).strip(),
        from_addr=_addresses(fields, "from"),
        to_addr=_addresses(fields, "to"),
        cc_addr=_addresses(fields, "cc"),
        bcc_addr=_addresses(fields, "bcc"),
        message_id=mid or None,
        sent_date=sent,
        has_body=bool(data[size:].strip()),
    )
