"""The text a search looks in: a message's body decoded, and what a substring
index keeps of it.

SEARCH BODY, TEXT and HEADER match a needle, case-folded, against several
renderings of a message: its raw bytes (ASCII needles), its decoded body
text, its decoded header block, each decoded field value. ``documents``
gives two strings (header side, body side) that contain every one of those
renderings, case-folded, separated by line feeds: a needle without a line
feed that one rendering contains is in one of them. An index built on them
can therefore only narrow the candidates of a search, never lose a match;
the exact test still decides.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

from palais.mailbox.message import decode_header_value

__all__ = ["SearchDocuments", "body_text", "documents", "indexable"]

# The shortest needle an index of three-character sequences can narrow.
MIN_NEEDLE = 3

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LOGICAL_LINE_END = re.compile(rb"\n(?![ \t])")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_HEADERS_ONLY = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def body_text(data: bytes) -> str:
    """The decoded text of a message's text and message parts, joined by line feeds."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    return _parts_text(message)


def _parts_text(message: Message) -> str:
    chunks: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() not in ("text", "message"):
            continue
        chunks.append(_decoded(part))
    return "\n".join(chunks)


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def indexable(needle: str) -> bool:
    """Whether an index of ``documents`` can narrow a search for this
    (case-folded) needle: long enough, and no separator of theirs in it."""
    return len(needle) >= MIN_NEEDLE and "\n" not in needle and "\0" not in needle


@dataclass(frozen=True, slots=True)
class SearchDocuments:
    head: str  # HEADER keys, and TEXT
    body: str  # BODY, and TEXT


def documents(data: bytes) -> SearchDocuments:
    """What an index keeps of a message (see the module's docstring)."""
    # The header block as TEXT splits it (first CRLF CRLF), and as the
    # header fields are read (first blank line of either style).
    crlf = data.find(b"\r\n\r\n")
    body_start = crlf + 4 if crlf >= 0 else 0
    block = data[:body_start]
    plain_block = block.decode("utf-8", "replace")
    decoded_block = decode_header_value(plain_block).casefold()
    head = [decoded_block]
    if decoded_block != plain_block.casefold():
        # Encoded words decoded: the raw bytes, which ASCII needles are matched against.
        head.append(_ascii_lower(block))
    for value in _field_values(data):
        text = decode_header_value(value.decode("utf-8", "replace")).casefold()
        if text not in decoded_block:
            head.append(text)
    raw_body = data[body_start:]
    fast = _fast_body_text(data)
    folded = (body_text(data) if fast is None else fast).casefold()
    body = [folded]
    if raw_body.decode("utf-8", "replace").casefold() != folded:
        body.append(_ascii_lower(raw_body))
    return SearchDocuments(_clean("\n".join(head)), _clean("\n".join(body)))


def _ascii_lower(data: bytes) -> str:
    # What "needle in data.lower()" sees of an ASCII needle, one character a byte.
    return data.lower().decode("ascii", "replace")


def _clean(text: str) -> str:
    # NUL is no character a database keeps in text; a needle with none in it
    # cannot straddle the line feed that replaces it.
    return text.replace("\0", "\n") if "\0" in text else text


def _field_values(data: bytes) -> list[bytes]:
    """The raw value of every logical line of the header block that has a colon:
    each header field's value as IMAP reads it, and maybe some more."""
    if data.startswith(b"\r\n"):
        end = 2
    elif data.startswith(b"\n"):
        end = 1
    else:
        m = _BLANK_LINE.search(data)
        end = len(data) if m is None else m.end()
    out: list[bytes] = []
    for line in _LOGICAL_LINE_END.split(data[:end]):
        _, colon, value = line.partition(b":")
        if colon:
            out.append(_FOLD.sub(b"", value).strip(b" \t\r\n"))
    return out


def _fast_body_text(data: bytes) -> str | None:
    """``body_text`` of a message of one part that is neither multipart nor
    message/*: its header alone parsed (the usual message), else None."""
    message = _HEADERS_ONLY.parsebytes(data)
    if message.get_content_maintype() in ("multipart", "message"):
        return None
    if message.get_content_maintype() != "text":
        return ""
    return _decoded(message)
