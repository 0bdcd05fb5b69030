"""Decoded text of a message for SEARCH BODY/TEXT: transfer encodings and charsets undone.

Lawyers search in French; "é" is "=C3=A9" in a quoted-printable body, so a
raw byte search would miss most accented words.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message

from palais.mailbox.message import decode_header_value as decode_text

__all__ = ["body_text", "decode_header_value"]


def decode_header_value(raw: bytes) -> str:
    """A header's raw bytes as text, as the store indexes them (RFC 2047 and RFC 6532)."""
    return decode_text(raw.decode("utf-8", "replace"))


def body_text(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
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
