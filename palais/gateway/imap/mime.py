"""MIME structure located by byte offsets, BODYSTRUCTURE, and section extraction.

The message is never re-serialised: every section is a slice of the stored
bytes, which is what makes BODY[] byte-exact and lets a client verify a
signature or a receipt's SHA-256 on what it fetched.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field

from palais.gateway.imap.envelope import envelope
from palais.gateway.imap.headers import Field, find_body_start, parse_content_value, parse_fields
from palais.gateway.imap.values import ImapValue, Run

__all__ = [
    "Part",
    "SectionSpec",
    "UnknownEncoding",
    "binary_section",
    "bodystructure",
    "extract",
    "parse_message",
]

# A hostile message nested thousands deep must not exhaust the stack; past
# this depth, parts are treated as opaque leaves.
_MAX_DEPTH = 40
_TOKEN_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`{|}~")


@dataclass(eq=False, slots=True)
class Part:
    header_start: int
    body_start: int
    end: int
    fields: list[Field]
    maintype: bytes
    subtype: bytes
    params: list[tuple[bytes, bytes]]
    children: list[Part] = field(default_factory=list)
    message: Part | None = None  # the encapsulated message of a message/rfc822

    @property
    def is_multipart(self) -> bool:
        return self.maintype == b"multipart"

    def header(self, name: str) -> bytes | None:
        for f in self.fields:
            if f.name == name:
                return f.value
        return None


def parse_message(data: bytes) -> Part:
    return _parse(data, 0, len(data), (b"text", b"plain"), 0)


def _parse(data: bytes, start: int, end: int, default: tuple[bytes, bytes], depth: int) -> Part:
    body_start = find_body_start(data, start, end)
    fields = parse_fields(data, start, body_start)
    ctype = None
    for f in fields:
        if f.name == "content-type":
            ctype = parse_content_value(f.value)
            break
    maintype, subtype = default
    params: list[tuple[bytes, bytes]] = []
    if ctype is not None and b"/" in ctype.token:
        main, _, sub = ctype.token.partition(b"/")
        if main.strip() and sub.strip():
            maintype, subtype = main.strip(), sub.strip()
            params = ctype.params
    if maintype == b"text" and not any(n == b"charset" for n, _ in params):
        params = [(b"charset", b"us-ascii"), *params]
    part = Part(start, body_start, end, fields, maintype, subtype, params)
    if depth >= _MAX_DEPTH:
        return part
    if maintype == b"multipart":
        boundary = next((v for n, v in params if n == b"boundary"), b"")
        child_default = (b"message", b"rfc822") if subtype == b"digest" else (b"text", b"plain")
        if boundary:
            for cstart, cend in _split_multipart(data, body_start, end, boundary):
                part.children.append(_parse(data, cstart, cend, child_default, depth + 1))
    elif maintype == b"message" and subtype == b"rfc822":
        part.message = _parse(data, body_start, end, (b"text", b"plain"), depth + 1)
    return part


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between delimiter lines."""
    marker = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1
    pos = start
    while True:
        hit = data.find(marker, pos, end)
        if hit < 0:
            break
        pos = hit + len(marker)
        if hit != start and data[hit - 1 : hit] != b"\n":
            continue
        after = hit + len(marker)
        closing = data.startswith(b"--", after) and after + 2 <= end
        if closing:
            after += 2
        line_end = data.find(b"\n", after, end)
        rest = data[after : end if line_end < 0 else line_end]
        if rest.strip(b" \t\r"):
            continue  # a longer boundary that merely starts with ours
        if part_start >= 0:
            # The line ending before the delimiter belongs to the delimiter.
            stop = hit
            if stop > part_start and data[stop - 1 : stop] == b"\n":
                stop -= 1
                if stop > part_start and data[stop - 1 : stop] == b"\r":
                    stop -= 1
            spans.append((part_start, stop))
        if closing:
            return spans
        part_start = end if line_end < 0 else line_end + 1
    if part_start >= 0:
        spans.append((part_start, end))
    return spans


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """A parsed section: ``1.2.HEADER.FIELDS (FROM)`` is path (1, 2), kind HEADER.FIELDS."""

    path: tuple[int, ...] = ()
    kind: str = ""  # "", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"
    fields: tuple[str, ...] = ()  # lower-case names for HEADER.FIELDS[.NOT]

    @property
    def needs_body(self) -> bool:
        """False when the top-level header block alone answers it."""
        return bool(self.path) or self.kind not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")


def find_part(root: Part, path: Sequence[int]) -> Part | None:
    part = root
    for i, number in enumerate(path):
        if i and part.message is not None:
            part = part.message  # numbers below a message/rfc822 count its parts
        elif i and not part.is_multipart:
            return None
        if part.is_multipart:
            if not 1 <= number <= len(part.children):
                return None
            part = part.children[number - 1]
        elif number != 1:
            return None
    return part


def extract(data: bytes, root: Part, spec: SectionSpec) -> bytes | None:
    """The section's exact bytes, or None when the message has no such part."""
    if spec.path:
        part = find_part(root, spec.path)
        if part is None:
            return None
        if spec.kind == "":
            return data[part.body_start : part.end]
        if spec.kind == "MIME":
            return data[part.header_start : part.body_start]
        if part.message is None:
            return None
        msg = part.message
    else:
        msg = root
        if spec.kind == "":
            return data[msg.header_start : msg.end]
    if spec.kind == "HEADER":
        return data[msg.header_start : msg.body_start]
    if spec.kind == "TEXT":
        return data[msg.body_start : msg.end]
    return select_fields(msg.fields, spec.fields, exclude=spec.kind == "HEADER.FIELDS.NOT")


class UnknownEncoding(Exception):
    """A part's Content-Transfer-Encoding the gateway cannot decode (RFC 3516 UNKNOWN-CTE)."""


_IDENTITY = frozenset({b"7bit", b"8bit", b"binary"})


def binary_section(data: bytes, root: Part, path: Sequence[int]) -> bytes | None:
    """BINARY[path]: the section with its Content-Transfer-Encoding undone (RFC 3516).

    A multipart or message/rfc822 section is never encoded: its bytes as
    they are. ``BINARY[]`` of a single part is its header and decoded body.
    None when there is no such part; raises UnknownEncoding.
    """
    part = find_part(root, path) if path else root
    if part is None:
        return None
    if part.is_multipart or part.message is not None:
        return data[part.body_start if path else part.header_start : part.end]
    decoded = decode_body(
        data[part.body_start : part.end], part.header("content-transfer-encoding")
    )
    return decoded if path else data[part.header_start : part.body_start] + decoded


def decode_body(body: bytes, encoding: bytes | None) -> bytes:
    token = b"7bit" if encoding is None else encoding.strip().lower()
    if token in _IDENTITY or not token:
        return body
    if token == b"base64":
        # Lenient as mail readers are: characters outside the alphabet are
        # skipped, a missing "=" padding tolerated.
        clean = bytes(c for c in body if c in _BASE64)
        clean = clean.rstrip(b"=")
        clean += b"=" * (-len(clean) % 4)
        if len(clean) % 4 == 1:
            clean = clean[:-1]  # a lone trailing character carries no byte
        try:
            return binascii.a2b_base64(clean)
        except binascii.Error as exc:
            raise UnknownEncoding("base64 that does not decode") from exc
    if token == b"quoted-printable":
        return binascii.a2b_qp(body)
    raise UnknownEncoding(token.decode("ascii", "replace")[:40])


_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def select_fields(fields: Sequence[Field], names: Sequence[str], *, exclude: bool) -> bytes:
    wanted = set(names)
    kept = [f.raw for f in fields if (f.name in wanted) != exclude]
    # Each kept field keeps its own line ending; the blank line ends the block.
    fixed = [raw if raw.endswith(b"\n") else raw + b"\r\n" for raw in kept]
    return b"".join(fixed) + b"\r\n"


def header_fields(header: bytes) -> list[Field]:
    """Fields of a bare header block (as returned by read_header)."""
    return parse_fields(header, 0, find_body_start(header, 0, len(header)))


def bodystructure(data: bytes, part: Part, *, extended: bool) -> list[ImapValue]:
    if part.is_multipart:
        children = part.children or [_empty_text_part(part.end)]
        items: list[ImapValue] = [
            Run([bodystructure(data, c, extended=extended) for c in children]),
            part.subtype,
        ]
        if extended:
            items += [
                _params(part.params),
                _disposition(part),
                _language(part),
                part.header("content-location"),
            ]
        return items
    size = part.end - part.body_start
    items = [
        part.maintype,
        part.subtype,
        _params(part.params),
        part.header("content-id"),
        part.header("content-description"),
        _encoding(part),
        size,
    ]
    lines = data.count(b"\n", part.body_start, part.end)
    if part.message is not None:
        items += [
            envelope(part.message.fields),
            bodystructure(data, part.message, extended=extended),
            lines,
        ]
    elif part.maintype == b"text":
        items.append(lines)
    if extended:
        items += [
            part.header("content-md5"),
            _disposition(part),
            _language(part),
            part.header("content-location"),
        ]
    return items


def _empty_text_part(at: int) -> Part:
    return Part(at, at, at, [], b"text", b"plain", [(b"charset", b"us-ascii")])


def _params(params: list[tuple[bytes, bytes]]) -> ImapValue:
    if not params:
        return None
    flat: list[ImapValue] = []
    for name, value in params:
        flat += [name, value]
    return flat


def _encoding(part: Part) -> bytes:
    raw = part.header("content-transfer-encoding")
    if raw is None:
        return b"7bit"
    token = raw.strip().lower()
    if not token or any(c not in _TOKEN_CHARS for c in token):
        return b"7bit"
    return token


def _disposition(part: Part) -> ImapValue:
    raw = part.header("content-disposition")
    if raw is None:
        return None
    value = parse_content_value(raw)
    if not value.token:
        return None
    return [value.token, _params(value.params)]


def _language(part: Part) -> ImapValue:
    raw = part.header("content-language")
    if raw is None:
        return None
    langs: list[ImapValue] = [t.strip() for t in raw.split(b",") if t.strip()]
    return langs or None
