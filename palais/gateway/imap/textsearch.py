"""Decoded text of a message for SEARCH BODY/TEXT: transfer encodings and charsets undone.

Lawyers search in French; "é" is "=C3=A9" in a quoted-printable body, so a
raw byte search would miss most accented words. The body's decoding lives
with the domain (``palais.mailbox.searchtext``), where the substring index
takes what it keeps of a message from: the index and this exact test read
a message the same way.
"""

from __future__ import annotations

from palais.mailbox.message import decode_header_value as decode_text
from palais.mailbox.searchtext import body_text

__all__ = ["body_text", "decode_header_value"]


def decode_header_value(raw: bytes) -> str:
    """A header's raw bytes as text, as the store indexes them (RFC 2047 and RFC 6532)."""
    return decode_text(raw.decode("utf-8", "replace"))
