"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3).

Clients that have not enabled UTF8=ACCEPT see and send every mailbox name
in this encoding, so "Envoyés" travels as "Envoy&AOk-s".
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["decode", "encode"]


def _is_direct(ch: str) -> bool:
    return "\x20" <= ch <= "\x7e"


def encode(name: str) -> str:
    """Unicode -> modified UTF-7 (pure ASCII)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            pending.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    """Modified UTF-7 -> Unicode; raises ValueError on malformed input.

    Strictness matters: two spellings of one name would let a client see a
    box twice, so non-canonical forms (encoded printable ASCII, padding,
    adjacent shifts) are refused.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if not _is_direct(ch):
            raise ValueError("mailbox name has a character outside printable ASCII")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified base64 in mailbox name")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            out.append(_decode_chunk(chunk))
            if out and end + 1 < n and text[end + 1] == "&" and text[end + 2 : end + 3] != "-":
                raise ValueError("adjacent encoded sequences in mailbox name")
        i = end + 1
    return "".join(out)


def _decode_chunk(chunk: str) -> str:
    if "=" in chunk or "/" in chunk:
        raise ValueError("invalid modified base64 in mailbox name")
    b64 = chunk.replace(",", "/")
    b64 += "=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(b64, validate=True)
        decoded = raw.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("invalid modified base64 in mailbox name") from exc
    if not decoded or any(_is_direct(c) for c in decoded):
        raise ValueError("non-canonical modified UTF-7 in mailbox name")
    if encode(decoded) != "&" + chunk + "-":
        raise ValueError("non-canonical modified UTF-7 in mailbox name")
    return decoded
