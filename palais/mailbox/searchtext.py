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
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

from palais.mailbox.message import decode_header_value, header_size

__all__ = ["SearchDocuments", "body_text", "documents", "indexable"]

# The shortest needle an index of three-character sequences can narrow.
MIN_NEEDLE = 3

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LOGICAL_LINE_END = re.compile(rb"\n(?![ \t])")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


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
    plain_block = block.decode("utf-8", "replace").casefold()
    head = [plain_block]
    if b"=?" in block:
        # Encoded words: decoded as TEXT reads them; the raw bytes stay for
        # ASCII needles, which are matched against those.
        decoded_block = decode_header_value(block.decode("utf-8", "replace")).casefold()
        head[0] = decoded_block
        if decoded_block != plain_block:
            head.append(_ascii_lower(block))
    fields = _fields(data, body_start)
    for folded_or_encoded, _, value in fields:
        # A value of one line without encoded words is already in the block.
        if folded_or_encoded:
            text = decode_header_value(value.decode("utf-8", "replace")).casefold()
            if text not in head[0]:
                head.append(text)
    raw_body = data[body_start:]
    fast = _plain_body_text(data, body_start, fields)
    folded = (body_text(data) if fast is None else fast).casefold()
    body = [folded]
    if fast is None and raw_body.decode("utf-8", "replace").casefold() != folded:
        body.append(_ascii_lower(raw_body))
    return SearchDocuments(_clean("\n".join(head)), _clean("\n".join(body)))


def _ascii_lower(data: bytes) -> str:
    # What "needle in data.lower()" sees of an ASCII needle, one character a byte.
    return data.lower().decode("ascii", "replace")


def _clean(text: str) -> str:
    # NUL is no character a database keeps in text; a needle with none in it
    # cannot straddle the line feed that replaces it.
    return text.replace("\0", "\n") if "\0" in text else text


_HEADER_LINE = re.compile(rb"(From |[\041-\071\073-\176]*:|[\t ])")
_TEXT_TYPE = re.compile(
    rb"[ \t]*text/[A-Za-z0-9!#$&^_.+-]+[ \t]*"
    rb"(?:;[ \t]*charset[ \t]*=[ \t]*(\"?)([A-Za-z0-9_.:-]+)\1[ \t]*)?",
    re.IGNORECASE,
)
_MIME_FIELD = re.compile(
    rb"^(content-type|content-transfer-encoding):([^\n]*)", re.IGNORECASE | re.MULTILINE
)
_RAW_ENCODINGS = frozenset({b"7bit", b"8bit", b"binary"})


def _fields(data: bytes, covered: int) -> list[tuple[bool, bytes, bytes]]:
    """(folded or holding an encoded word, name, raw value) of every logical line of
    the header block that has a colon: each header field's value as IMAP
    reads it, and maybe some more; marked False when it is already in
    ``data[:covered]`` as it is (one line, no encoded word), in which case
    only the MIME fields are listed (for the body's decoding)."""
    if data.startswith(b"\r\n"):
        end = 2
    elif data.startswith(b"\n"):
        end = 1
    else:
        m = _BLANK_LINE.search(data)
        end = len(data) if m is None else m.end()
    # The block the submission read the fields in (a Subject there is SEARCH
    # SUBJECT's) may end later, with bare line feeds: the longer of the two.
    end = max(end, header_size(data))
    head = data[:end]
    if end <= covered and b"=?" not in head and _FOLD.search(head) is None:
        # The usual header: every value is one line of the block already;
        # only the MIME fields are wanted (for the body's decoding).
        return [
            (False, m.group(1), m.group(2).strip(b" \t\r\n")) for m in _MIME_FIELD.finditer(head)
        ]
    beyond = end > covered
    out: list[tuple[bool, bytes, bytes]] = []
    for line in _LOGICAL_LINE_END.split(head):
        name, colon, value = line.partition(b":")
        if colon:
            folded = _FOLD.search(value) is not None
            value = _FOLD.sub(b"", value).strip(b" \t\r\n")
            out.append((beyond or folded or b"=?" in value, name, value))
    return out


def _plain_body_text(
    data: bytes, body_start: int, fields: list[tuple[bool, bytes, bytes]]
) -> str | None:
    """``body_text`` of the usual message, a single text part neither
    quoted-printable nor base64, without parsing it; None for any other
    (or any header the mail parser could read differently)."""
    if body_start <= 0 or data.startswith(b"\r\n"):
        return None
    block = data[: body_start - 2]
    if block.count(b"\r") != block.count(b"\n") or block.count(b"\r\n") != block.count(b"\n"):
        return None
    if not all(_HEADER_LINE.match(line) for line in block.split(b"\r\n")[:-1]):
        return None
    charset = b"utf-8"
    seen_type = seen_encoding = False
    for folded, name, value in fields:
        lowered = name.lower()
        if lowered == b"content-type":
            match = _TEXT_TYPE.fullmatch(value)
            if folded or seen_type or match is None:
                return None
            seen_type = True
            if match.group(2):
                charset = match.group(2).lower()
        elif lowered == b"content-transfer-encoding":
            if folded or seen_encoding or value.lower() not in _RAW_ENCODINGS:
                return None
            seen_encoding = True
    payload = data[body_start:]
    try:
        return payload.decode(charset.decode("ascii"), "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")
