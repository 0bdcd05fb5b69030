"""Reads one client command off the stream: lines, literals and continuations.

Framing is separate from grammar: this module only knows where a command
ends and what bytes it carries, enforces the size limits before buffering
anything big, and answers ``+`` to synchronizing literals. ``parser`` then
reads arguments out of the resulting segments.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "CommandTooBig",
    "Limits",
    "LineTooLong",
    "Literal",
    "RawCommand",
    "read_command",
    "read_line",
]

_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,20})(\+?)\}$")
_DISCARD_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_line: int = 64 * 1024
    max_literal: int = 1024 * 1024  # any command but APPEND
    max_append: int = 64 * 1024 * 1024
    max_literals: int = 64  # per command, so many small literals cannot add up
    # What one command may cost once read (NO [LIMIT] beyond): the [imap] settings.
    max_search_keys: int = 256  # keys in one SEARCH program, as written
    max_search_cost: int = 20_000_000  # distinct search keys x messages in the mailbox
    max_keywords: int = 64  # distinct keywords on one message
    max_keyword_length: int = 64  # characters in one keyword


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes


@dataclass(frozen=True, slots=True)
class RawCommand:
    # Text segments (without line ending) alternate with literals; a text
    # segment followed by a literal ends with its "{n}" announcement.
    segments: tuple[bytes | Literal, ...]


class FramingError(Exception):
    def __init__(self, tag: bytes | None, text: str) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text


class LineTooLong(FramingError):
    pass


class CommandTooBig(FramingError):
    def __init__(self, tag: bytes | None, text: str, *, is_append: bool) -> None:
        super().__init__(tag, text)
        self.is_append = is_append


def tag_of(line: bytes) -> bytes | None:
    tag = line.split(b" ", 1)[0]
    if not tag or any(c in b'(){%*"\\]+' or c <= 0x20 or c >= 0x7F for c in tag):
        return None
    return tag


def _is_append(first_line: bytes) -> bool:
    words = first_line.split(b" ", 2)
    return len(words) > 1 and words[1].upper() == b"APPEND"


async def read_line(reader: asyncio.StreamReader, max_line: int) -> bytes | None:
    """One line without its ending (CRLF or bare LF); None at end of stream.

    A longer line is consumed to its end and then refused, so the stream
    stays in step with the client and the connection survives.
    """
    pieces: list[bytes] = []
    head = b""  # kept so an over-long line is still answered with its tag
    size = 0
    too_long = False
    while True:
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as exc:
            chunk = await reader.readexactly(exc.consumed)
            head = head or chunk[:64]
            size += len(chunk)
            if size > max_line + 1:  # the piece may end with the CR of CRLF
                too_long = True
                pieces.clear()
            if not too_long:
                pieces.append(chunk)
            continue
        size += len(chunk)
        if size > max_line + 2 or too_long:
            raise LineTooLong(tag_of(head or chunk[:64]), "Command line too long")
        pieces.append(chunk)
        line = b"".join(pieces)
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if len(line) > max_line:  # a bare LF ends it one byte shorter than CRLF would
            raise LineTooLong(tag_of(head or line[:64]), "Command line too long")
        return line


async def read_command(
    reader: asyncio.StreamReader,
    send_continuation: Callable[[], Awaitable[None]],
    limits: Limits,
) -> RawCommand | None:
    """The next complete command, or None when the client went away."""
    segments: list[bytes | Literal] = []
    literals = 0
    total = 0
    tag: bytes | None = None
    is_append = False
    refused: CommandTooBig | None = None
    while True:
        line = await read_line(reader, limits.max_line)
        if line is None:
            return None
        if not segments:
            tag = tag_of(line)
            is_append = _is_append(line)
        segments.append(line)
        match = _LITERAL_AT_END.search(line)
        if match is None:
            if refused is not None:
                raise refused
            return RawCommand(tuple(segments))
        size = int(match.group(1))
        synchronizing = not match.group(2)
        cap = limits.max_append if is_append else limits.max_literal
        literals += 1
        total += size
        if refused is None and (
            size > cap or literals > limits.max_literals or total > cap + limits.max_line
        ):
            text = "Message too big" if is_append else "Literal too big"
            refused = CommandTooBig(tag, text, is_append=is_append)
        if refused is not None:
            if synchronizing:
                # Without our "+" the client sends nothing more for this command.
                raise refused
            await _discard(reader, size)
            continue
        if synchronizing:
            await send_continuation()
        try:
            data = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return None
        segments.append(Literal(data))


async def _discard(reader: asyncio.StreamReader, size: int) -> None:
    # A refused non-synchronizing literal is already on its way: read it in
    # small chunks and drop it rather than buffer it.
    remaining = size
    while remaining:
        chunk = await reader.read(min(remaining, _DISCARD_CHUNK))
        if not chunk:
            return
        remaining -= len(chunk)
