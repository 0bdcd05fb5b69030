"""The IMAP value tree that computed data (ENVELOPE, BODYSTRUCTURE, ...) is built from.

Producers describe *what* to send; ``response.encode`` alone decides *how*
(quoted or literal, UTF-8 or not), so no producer ever needs to know what
the client has enabled.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["Atom", "ImapValue", "Run"]


class Atom:
    """Bytes sent verbatim: flags, keywords, section names, numbers in sets."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Atom) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Atom({self.raw!r})"


class Run(list["ImapValue"]):
    """Items sent back to back, with neither parentheses nor spaces.

    The grammar wants this for the parts of a multipart (``1*body``) and the
    addresses of an envelope field (``"(" 1*address ")"``).
    """


# None is NIL, int a number, bytes a string, list a parenthesized list.
ImapValue: TypeAlias = int | bytes | Atom | list["ImapValue"] | None
