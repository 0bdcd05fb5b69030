"""Grammar primitives of client commands (RFC 3501 / RFC 9051 section 9).

``Args`` is a cursor over one framed command; each method reads one
grammar element or raises ``ParseError``, whose text becomes the BAD
response. Command-specific grammars (FETCH attributes, search keys) build
on these in their own modules.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from palais.gateway.imap import mutf7
from palais.gateway.imap.framing import Literal, RawCommand
from palais.gateway.imap.sequence import SequenceSet, SequenceSetError, parse_sequence_set

__all__ = ["Args", "ParseError"]

# ATOM-CHAR: any CHAR except atom-specials: "(" ")" "{" SP CTL list-wildcards
# quoted-specials resp-specials.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_ASTRING_SPECIALS = _ATOM_SPECIALS - {ord("]")}
_LIST_SPECIALS = _ASTRING_SPECIALS - {ord("%"), ord("*")}
_SEQUENCE_RUN = re.compile(rb"[0-9:,*]*")


def _scanner(specials: frozenset[int], *, ascii_only: bool) -> re.Pattern[bytes]:
    """A pattern for the longest run of bytes outside ``specials`` (one C loop
    rather than a Python one per byte: every command is scanned this way)."""
    excluded = set(specials) | (set(range(0x80, 0x100)) if ascii_only else set())
    return re.compile(b"[^" + b"".join(re.escape(bytes([c])) for c in sorted(excluded)) + b"]*")


_ATOM_RUN = _scanner(_ATOM_SPECIALS, ascii_only=True)
# Some clients send raw UTF-8 in atoms (mailbox names): astrings and list
# patterns accept it.
_ASTRING_RUN = _scanner(_ASTRING_SPECIALS, ascii_only=False)
_LIST_RUN = _scanner(_LIST_SPECIALS, ascii_only=False)
_WORD = re.compile(rb"[A-Za-z0-9.\-]*")
_DIGITS = re.compile(rb"[0-9]*")
_LITERAL = re.compile(rb"~?\{(\d{1,20})\+?\}$")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        (
            b"jan",
            b"feb",
            b"mar",
            b"apr",
            b"may",
            b"jun",
            b"jul",
            b"aug",
            b"sep",
            b"oct",
            b"nov",
            b"dec",
        )
    )
}
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_DATE_TIME = re.compile(
    rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})


class ParseError(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Args:
    """A cursor over a command's text segments and literals."""

    __slots__ = ("_index", "_pos", "_segments", "_text", "utf8")

    def __init__(self, raw: RawCommand, *, utf8: bool = False) -> None:
        self._segments = raw.segments
        self._index = 0
        first = raw.segments[0]
        self._text = first if isinstance(first, bytes) else b""
        self._pos = 0
        self.utf8 = utf8

    # -- low level -----------------------------------------------------

    def peek(self) -> int | None:
        """The next byte of the current text segment, None at its end."""
        return self._text[self._pos] if self._pos < len(self._text) else None

    def peek_at(self, offset: int) -> int | None:
        pos = self._pos + offset
        return self._text[pos] if pos < len(self._text) else None

    def word(self) -> str:
        """Letters, digits, dots and dashes, upper-cased: a keyword such as RFC822.SIZE."""
        match = _WORD.match(self._text, self._pos)
        assert match is not None  # the pattern matches the empty run
        self._pos = match.end()
        return match.group().decode("ascii").upper()

    def rest_of_line(self) -> bytes | None:
        """What is left to read, if it is plain text (no literal follows)."""
        if self._index != len(self._segments) - 1:
            return None
        return self._text[self._pos :]

    def at_end(self) -> bool:
        return self._pos >= len(self._text) and self._index >= len(self._segments) - 1

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("Unexpected extra arguments")

    def startswith(self, prefix: bytes) -> bool:
        return self._text.startswith(prefix, self._pos)

    def startswith_ci(self, prefix: bytes) -> bool:
        return self._text[self._pos : self._pos + len(prefix)].upper() == prefix.upper()

    def expect(self, literal: bytes) -> None:
        if not self.startswith_ci(literal):
            raise ParseError(f"Expected {literal.decode('ascii')}")
        self._pos += len(literal)

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("Missing argument" if self.at_end() else "Expected a space")
        self._pos += 1

    def maybe(self, literal: bytes) -> bool:
        if self.startswith_ci(literal):
            self._pos += len(literal)
            return True
        return False

    def _scan(self, pattern: re.Pattern[bytes]) -> bytes:
        match = pattern.match(self._text, self._pos)
        assert match is not None  # the patterns match the empty run
        self._pos = match.end()
        return match.group()

    def _digits(self) -> bytes:
        return self._scan(_DIGITS)

    def at_literal(self) -> bool:
        return bool(_LITERAL.match(self._text, self._pos)) and self._index + 1 < len(self._segments)

    def _literal(self) -> bytes:
        match = _LITERAL.match(self._text, self._pos)
        if match is None or self._index + 1 >= len(self._segments):
            raise ParseError("Expected a literal")
        literal = self._segments[self._index + 1]
        assert isinstance(literal, Literal)  # framing alternates text and literals
        self._index += 2
        following = self._segments[self._index] if self._index < len(self._segments) else b""
        self._text = following if isinstance(following, bytes) else b""
        self._pos = 0
        return literal.data

    # -- grammar elements ----------------------------------------------

    def atom(self) -> bytes:
        value = self._scan(_ATOM_RUN)
        if not value:
            raise ParseError("Expected an atom")
        return value

    def keyword(self) -> str:
        """An atom compared case-insensitively (command names, options)."""
        return self.atom().decode("ascii").upper()

    def number(self) -> int:
        digits = self._digits()
        if not digits:
            raise ParseError("Expected a number")
        value = int(digits)
        if value > 0xFFFFFFFF:
            raise ParseError("Number out of range")
        return value

    def number64(self) -> int:
        digits = self._digits()
        if not digits or len(digits) > 19:
            raise ParseError("Expected a number")
        return int(digits)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("Expected a non-zero number")
        return value

    def quoted(self) -> bytes:
        if self.peek() != 0x22:
            raise ParseError("Expected a quoted string")
        out = bytearray()
        pos = self._pos + 1
        text = self._text
        while pos < len(text):
            c = text[pos]
            if c == 0x5C:
                if pos + 1 >= len(text) or text[pos + 1] not in (0x5C, 0x22):
                    raise ParseError("Invalid escape in quoted string")
                out.append(text[pos + 1])
                pos += 2
                continue
            if c == 0x22:
                self._pos = pos + 1
                return bytes(out)
            if c in (0x0D, 0x0A, 0x00):
                break
            out.append(c)
            pos += 1
        raise ParseError("Unterminated quoted string")

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.at_literal():
            return self._literal()
        raise ParseError("Expected a string")

    def literal(self) -> bytes:
        """A literal (or literal8), as APPEND requires."""
        return self._literal()

    def astring(self) -> bytes:
        if self.peek() == 0x22 or self.at_literal():
            return self.string()
        value = self._scan(_ASTRING_RUN)
        if not value:
            raise ParseError("Expected a string or atom")
        return value

    def nstring(self) -> bytes | None:
        if self.startswith_ci(b"NIL") and self._nil_ends():
            self._pos += 3
            return None
        return self.string()

    def nil(self) -> bool:
        if self.startswith_ci(b"NIL") and self._nil_ends():
            self._pos += 3
            return True
        return False

    def _nil_ends(self) -> bool:
        after = self._pos + 3
        return after >= len(self._text) or self._text[after] in b" )"

    def mailbox(self) -> str:
        raw = self.astring()
        return self.decode_name(raw)

    def list_mailbox(self) -> str:
        """A LIST pattern: wildcards allowed unquoted."""
        if self.peek() == 0x22 or self.at_literal():
            raw = self.string()
        else:
            raw = self._scan(_LIST_RUN)
            if not raw:
                raise ParseError("Expected a mailbox pattern")
        return self.decode_name(raw, pattern=True)

    def decode_name(self, raw: bytes, *, pattern: bool = False) -> str:
        if self.utf8 or not raw.isascii():
            try:
                name = raw.decode("utf-8")
            except ValueError as exc:
                raise ParseError("Invalid mailbox name encoding") from exc
        else:
            text = raw.decode("ascii")
            try:
                name = mutf7.decode(text)
            except ValueError:
                # Any astring is a valid name (RFC 3501 section 9): one that is
                # not canonical modified UTF-7 is kept as written. Every name
                # the gateway makes is free of "&", so it designates no box
                # (SELECT: NO [NONEXISTENT], LIST: nothing) and cannot alias one.
                name = text
        # Case-insensitive in ASCII only: "ınbox" (dotless i) upper-cases to
        # INBOX but is another name.
        if not pattern and name.isascii() and name.upper() == "INBOX":
            return "INBOX"
        if not pattern and name[:6].isascii() and name[:6].upper() == "INBOX/":
            return "INBOX" + name[5:]
        return name

    def sequence_set(self) -> SequenceSet:
        text = self._scan(_SEQUENCE_RUN)
        try:
            return parse_sequence_set(text)
        except SequenceSetError as exc:
            raise ParseError(str(exc)) from exc

    def flag(self) -> str:
        if self.peek() == 0x5C:
            self._pos += 1
            if self.peek() == 0x2A:  # "\*" appears only in PERMANENTFLAGS
                raise ParseError("Invalid flag")
            name = "\\" + self.atom().decode("ascii")
            if name.lower() not in SYSTEM_FLAGS and name.lower() != "\\recent":
                raise ParseError("Unknown system flag")
            return _canonical_flag(name)
        return self.atom().decode("ascii")

    def flag_list(self) -> frozenset[str]:
        self.expect(b"(")
        flags: list[str] = []
        while not self.maybe(b")"):
            if flags:
                self.sp()
            flags.append(self.flag())
        return frozenset(flags)

    def flags_maybe_parenthesized(self) -> frozenset[str]:
        if self.peek() == 0x28:
            return self.flag_list()
        flags = [self.flag()]
        while self.maybe(b" "):
            flags.append(self.flag())
        return frozenset(flags)

    def date(self) -> date:
        raw = self.quoted() if self.peek() == 0x22 else self.atom()
        match = _DATE.match(raw)
        month = _MONTHS.get(match.group(2).lower()) if match else None
        if match is None or month is None:
            raise ParseError("Invalid date")
        try:
            return date(int(match.group(3)), month, int(match.group(1)))
        except ValueError as exc:
            raise ParseError("Invalid date") from exc

    def date_time(self) -> datetime:
        raw = self.quoted()
        match = _DATE_TIME.match(raw)
        month = _MONTHS.get(match.group(2).lower()) if match else None
        if match is None or month is None:
            raise ParseError("Invalid date-time")
        sign = -1 if match.group(7) == b"-" else 1
        offset = timedelta(hours=int(match.group(8)), minutes=int(match.group(9)))
        try:
            return datetime(
                int(match.group(3)),
                month,
                int(match.group(1)),
                int(match.group(4)),
                int(match.group(5)),
                int(match.group(6)),
                tzinfo=timezone(sign * offset),
            )
        except ValueError as exc:
            raise ParseError("Invalid date-time") from exc

    def paren_list(self, item: str = "atom") -> list[bytes]:
        """``(a b c)`` of atoms or astrings; ``()`` is allowed."""
        self.expect(b"(")
        items: list[bytes] = []
        while not self.maybe(b")"):
            if items:
                self.sp()
            items.append(self.atom() if item == "atom" else self.astring())
        return items


def _canonical_flag(name: str) -> str:
    lower = name.lower()
    return "\\" + lower[1].upper() + lower[2:]
