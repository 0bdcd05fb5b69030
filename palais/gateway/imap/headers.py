"""Header blocks located by byte offset: fields, unfolding, MIME parameters.

Everything works on the stored bytes and remembers where each field
starts and ends, so sections such as BODY[HEADER.FIELDS (...)] can be cut
from the original without re-serialising anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ContentValue",
    "Field",
    "find_body_start",
    "parse_content_value",
    "parse_fields",
    "unfold",
]

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
# A field name: printable ASCII but the colon, as palais.mailbox.message reads
# it, so that clients are shown the fields the gateway checked and routed on.
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # lower-case field name
    raw: bytes  # the exact bytes, continuation lines and final line ending included

    @property
    def value(self) -> bytes:
        """The unfolded value without surrounding whitespace."""
        _, _, value = self.raw.partition(b":")
        return unfold(value)


def unfold(value: bytes) -> bytes:
    return _FOLD.sub(b"", value).strip(b" \t\r\n")


def find_body_start(data: bytes, start: int, end: int) -> int:
    """Offset just past the blank line that ends the header block at ``start``.

    A part with no blank line is all header and has an empty body.
    """
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    match = _BLANK_LINE.search(data, start, end)
    if match is None:
        return end
    # The first line ending closes the last field, the second is the blank line.
    return match.end()


def parse_fields(data: bytes, start: int, end: int) -> list[Field]:
    """The fields of the header block ``data[start:end]`` in order."""
    fields: list[Field] = []
    pos = start
    current_start = -1
    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        if data[pos : pos + 1] in (b" ", b"\t"):
            # Continues the current field; with none (after a line that is not
            # a field), skipped: it is no field of its own.
            pos = line_end
            continue
        if current_start >= 0:
            _append(fields, data[current_start:pos])
        colon = data.find(b":", pos, line_end)
        is_field = colon > pos and _FIELD_NAME.fullmatch(data[pos:colon].rstrip(b" \t"))
        current_start = pos if is_field else -1
        pos = line_end
    if current_start >= 0:
        _append(fields, data[current_start:end])
    return fields


def _append(fields: list[Field], raw: bytes) -> None:
    name = raw.split(b":", 1)[0].rstrip(b" \t")
    fields.append(Field(name.decode("ascii").lower(), raw))


@dataclass(frozen=True, slots=True)
class ContentValue:
    """A structured MIME value: ``token; name=value; ...``."""

    token: bytes  # lower-cased, comments removed
    params: list[tuple[bytes, bytes]]  # names lower-cased, values unquoted


def parse_content_value(value: bytes) -> ContentValue:
    pieces = _split_top_level(value, ord(";"))
    token = _strip_comments(pieces[0]).strip().lower() if pieces else b""
    params: list[tuple[bytes, bytes]] = []
    for piece in pieces[1:]:
        name, eq, raw = piece.partition(b"=")
        if not eq:
            continue
        name = _strip_comments(name).strip().lower()
        raw = raw.strip()
        text = _unquote(raw) if raw.startswith(b'"') else _strip_comments(raw).strip()
        if name:
            params.append((name, text))
    return ContentValue(token, params)


def _split_top_level(value: bytes, sep: int) -> list[bytes]:
    """Split on ``sep`` outside quoted strings and comments."""
    parts: list[bytes] = []
    start = 0
    depth = 0
    in_quote = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == 0x5C:  # backslash escapes the next byte
                i += 1
            elif c == 0x22:
                in_quote = False
        elif c == 0x22 and depth == 0:
            in_quote = True
        elif c == 0x28:
            depth += 1
        elif c == 0x29 and depth:
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def _strip_comments(value: bytes) -> bytes:
    out = bytearray()
    depth = 0
    escaped = False
    for c in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(c)
            continue
        if c == 0x5C and depth:
            escaped = True
        elif c == 0x28:
            depth += 1
        elif c == 0x29 and depth:
            depth -= 1
        elif depth == 0:
            out.append(c)
    return bytes(out)


def _unquote(raw: bytes) -> bytes:
    out = bytearray()
    i = 1
    while i < len(raw):
        c = raw[i]
        if c == 0x5C and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
            continue
        if c == 0x22:
            break
        out.append(c)
        i += 1
    return bytes(out)
