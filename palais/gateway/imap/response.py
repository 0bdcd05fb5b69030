"""Wire encoding of server responses: strings, lists, names, dates, flags."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime

from palais.gateway.imap import mutf7
from palais.gateway.imap.values import Atom, ImapValue, Run

__all__ = [
    "encode",
    "flag_list",
    "internaldate",
    "mailbox_name",
    "quoted",
    "string",
]

# Long values go as literals: some clients cap the length of a quoted string.
_MAX_QUOTED = 1024
_LINE_BREAK_OR_NUL = re.compile(rb"[\r\n\0]")
_MONTHS = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)


def _needs_literal(data: bytes, utf8: bool) -> bool:
    if len(data) > _MAX_QUOTED or _LINE_BREAK_OR_NUL.search(data):
        return True
    if data.isascii():
        return False
    if not utf8:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def quoted(data: bytes) -> bytes:
    if b"\\" in data or b'"' in data:
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + data + b'"'


def string(data: bytes, *, utf8: bool = False) -> bytes:
    """A string as quoted when it can be, as a literal otherwise."""
    if _needs_literal(data, utf8):
        return b"{%d}\r\n" % len(data) + data
    return quoted(data)


def encode(value: ImapValue, *, utf8: bool = False) -> bytes:
    out: list[bytes] = []
    _encode_into(value, utf8, out)
    return b"".join(out)


_KINDS = (bytes, type(None), list, Run, Atom, int)


def _kind(value: object) -> type:
    """The IMAP kind of a value of a subclass (an IntEnum, a list subclass...)."""
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP encoding")
    for kind in (int, bytes, Atom, Run):
        if isinstance(value, kind):
            return kind
    return list  # any other iterable is a parenthesized list


def _encode_into(value: ImapValue, utf8: bool, out: list[bytes]) -> None:
    # Dispatch on the exact type, most frequent first (an envelope is mostly
    # strings); isinstance() on every value cost a third of the encoding.
    kind = type(value)
    if kind not in _KINDS:
        kind = _kind(value)
    if kind is bytes:
        out.append(string(value, utf8=utf8))  # type: ignore[arg-type]
    elif value is None:
        out.append(b"NIL")
    elif kind is list:
        out.append(b"(")
        first = True
        for item in value:  # type: ignore[union-attr]
            if not first:
                out.append(b" ")
            first = False
            _encode_into(item, utf8, out)
        out.append(b")")
    elif kind is Run:
        for item in value:  # type: ignore[union-attr]
            _encode_into(item, utf8, out)
    elif kind is Atom:
        out.append(value.raw)  # type: ignore[union-attr]
    else:
        out.append(b"%d" % value)  # type: ignore[str-format]


def mailbox_name(name: str, *, utf8: bool = False) -> bytes:
    if utf8:
        return string(name.encode("utf-8"), utf8=True)
    return quoted(mutf7.encode(name).encode("ascii"))


def flag_list(flags: Iterable[str]) -> bytes:
    if isinstance(flags, frozenset):
        return _shared_flag_list(flags)
    return _flag_list(flags)


@functools.lru_cache(maxsize=1024)
def _shared_flag_list(flags: frozenset[str]) -> bytes:
    # The store shares one frozenset per distinct flag set; every FETCH line
    # of a page renders one of a handful of them.
    return _flag_list(flags)


def _flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in sorted(flags)) + b")"


def internaldate(when: datetime) -> bytes:
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.day,
        _MONTHS[when.month - 1],
        when.year,
        when.hour,
        when.minute,
        when.second,
        sign,
        minutes // 60,
        minutes % 60,
    )


def atoms(items: Iterable[str]) -> list[ImapValue]:
    return [Atom(i.encode("ascii")) for i in items]
