"""ENVELOPE (RFC 3501 section 7.4.2) from a header block's fields.

Values are sent raw, encoded-words included: decoding is the client's job
and re-encoding here would change what the sender wrote.
"""

from __future__ import annotations

from collections.abc import Sequence

from palais.gateway.imap.headers import Field
from palais.gateway.imap.values import ImapValue, Run

__all__ = ["envelope", "parse_addresses"]

_SPECIALS = b"<>@,;:"
_Token = tuple[str, bytes]  # kind: "atom" | "quoted" | "comment" | "special"


def envelope(fields: Sequence[Field]) -> list[ImapValue]:
    first: dict[str, bytes] = {}
    for f in fields:
        first.setdefault(f.name, f.value)

    def text(name: str) -> ImapValue:
        return first.get(name)

    def addresses(name: str) -> ImapValue:
        raw = first.get(name)
        if raw is None:
            return None
        parsed = parse_addresses(raw)
        return [Run(parsed)] if parsed else None

    sender_from = addresses("from")
    sender = addresses("sender") or sender_from
    reply_to = addresses("reply-to") or sender_from
    return [
        text("date"),
        text("subject"),
        sender_from,
        sender,
        reply_to,
        addresses("to"),
        addresses("cc"),
        addresses("bcc"),
        text("in-reply-to"),
        text("message-id"),
    ]


def _tokenize(value: bytes) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i : i + 1]
        if c in (b" ", b"\t", b"\r", b"\n"):
            i += 1
        elif c == b'"':
            out = bytearray()
            i += 1
            while i < n and value[i : i + 1] != b'"':
                if value[i : i + 1] == b"\\" and i + 1 < n:
                    i += 1
                out += value[i : i + 1]
                i += 1
            tokens.append(("quoted", bytes(out)))
            i += 1
        elif c == b"(":
            depth = 1
            start = i + 1
            i += 1
            while i < n and depth:
                ch = value[i : i + 1]
                if ch == b"\\":
                    i += 1
                elif ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                i += 1
            tokens.append(("comment", value[start : i - 1 if depth == 0 else i].strip()))
        elif c in _SPECIALS and c:
            tokens.append(("special", c))
            i += 1
        else:
            start = i
            while (
                i < n
                and value[i : i + 1] not in (b" ", b"\t", b"\r", b"\n", b'"', b"(")
                and value[i] not in _SPECIALS
            ):
                i += 1
            tokens.append(("atom", value[start:i]))
    return tokens


def parse_addresses(value: bytes) -> list[ImapValue]:
    """RFC 5322 address-list -> IMAP address structures, groups included."""
    out: list[ImapValue] = []
    current: list[_Token] = []
    in_group = False
    angle = False
    for tok in _tokenize(value):
        kind, text = tok
        if kind == "special" and text == b"<":
            angle = True
        elif kind == "special" and text == b">":
            angle = False
        if kind == "special" and not angle:
            if text == b",":
                _flush(current, out)
                current = []
                continue
            if (
                text == b":"
                and not in_group
                and not any(k == "special" and t == b"<" for k, t in current)
            ):
                out.append([None, None, _phrase(current) or b"", None])
                in_group = True
                current = []
                continue
            if text == b";" and in_group:
                _flush(current, out)
                current = []
                out.append([None, None, None, None])
                in_group = False
                continue
        current.append(tok)
    _flush(current, out)
    if in_group:
        out.append([None, None, None, None])
    return out


def _phrase(tokens: Sequence[_Token]) -> bytes | None:
    words = [t for k, t in tokens if k in ("atom", "quoted")]
    return b" ".join(words) if words else None


def _flush(tokens: list[_Token], out: list[ImapValue]) -> None:
    if not tokens:
        return
    opens = [i for i, (k, t) in enumerate(tokens) if k == "special" and t == b"<"]
    if opens:
        lt = opens[0]
        name = _phrase(tokens[:lt])
        gt = next(
            (i for i in range(lt, len(tokens)) if tokens[i] == ("special", b">")), len(tokens)
        )
        spec = tokens[lt + 1 : gt]
    else:
        spec = [t for t in tokens if t[0] != "comment"]
        if not spec:
            # Comments alone are no mailbox (RFC 5322 section 3.4), as in the
            # empty group "undisclosed: (nobody) ;".
            return
        comments = [t for k, t in tokens if k == "comment" and t]
        name = comments[-1] if comments else None
    adl: bytes | None = None
    if spec and spec[0] == ("special", b"@"):
        colon = next((i for i, t in enumerate(spec) if t == ("special", b":")), None)
        if colon is not None:
            adl = b"".join(t for k, t in spec[:colon] if k != "comment")
            spec = spec[colon + 1 :]
    spec = [t for t in spec if t[0] != "comment"]
    at = max((i for i, t in enumerate(spec) if t == ("special", b"@")), default=-1)
    local_tokens = spec if at < 0 else spec[:at]
    domain_tokens: list[_Token] = [] if at < 0 else spec[at + 1 :]
    local = b"".join(_quote_local(k, t) for k, t in local_tokens)
    domain = b"".join(t for _, t in domain_tokens)
    if not local and not domain and name is None:
        return
    out.append([name, adl, local, domain])


def _quote_local(kind: str, text: bytes) -> bytes:
    if kind == "quoted":
        return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return text
