"""The command table: verb -> handler, argument syntax and permitted states."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from palais.gateway.imap.parser import Args
from palais.gateway.imap.states import StateName

__all__ = ["REGISTRY", "Handler", "Optional", "Reply", "bad", "command", "no", "ok"]

T = TypeVar("T")
Grammar = Callable[[Args], object]


@dataclass(frozen=True, slots=True)
class Reply:
    """The tagged completion of a command."""

    status: bytes  # b"OK" | b"NO" | b"BAD"
    text: str
    code: bytes | None = None


def ok(text: str, code: bytes | None = None) -> Reply:
    return Reply(b"OK", text, code)


def no(text: str, code: bytes | None = None) -> Reply:
    return Reply(b"NO", text, code)


def bad(text: str, code: bytes | None = None) -> Reply:
    return Reply(b"BAD", text, code)


class Optional(Generic[T]):
    """A trailing argument that may be absent; it reads its own leading space."""

    __slots__ = ("grammar",)

    def __init__(self, grammar: Callable[[Args], T]) -> None:
        self.grammar = grammar

    def __call__(self, args: Args) -> T | None:
        if args.at_end():
            return None
        args.sp()
        return self.grammar(args)


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    syntax: tuple[Grammar, ...]
    states: frozenset[StateName]
    run: Callable[..., Awaitable[Reply]]
    # FETCH, STORE and SEARCH by sequence number must not shift numbers
    # under the client's feet (RFC 3501 7.4.1).
    defers_expunge: bool = False
    # Its arguments parse to immutable values: the same line is parsed once
    # (clients repeat their FETCH lines, e.g. the resync on every connection).
    memo_parse: bool = False

    def parse(self, args: Args) -> list[object]:
        values: list[object] = []
        for grammar in self.syntax:
            if not isinstance(grammar, Optional):
                args.sp()
            values.append(grammar(args))
        args.end()
        return values

    def parse_memo(self, args: Args) -> list[object]:
        """``parse``, from memory when the same plain line was parsed before."""
        line = args.rest_of_line() if self.memo_parse else None
        if line is None or len(line) > MEMO_LINE:
            return self.parse(args)
        key = (self.name, line, args.utf8)
        known = _PARSED.get(key)
        if known is None:
            known = tuple(self.parse(args))
            _MEMO.keep(key, known)
        return list(known)


# Only short lines are remembered: the lines clients repeat are short (the
# resync on every connection is "UID FETCH 1:* (FLAGS) (CHANGEDSINCE n)"),
# while a long one is seldom repeated and parses to much more than its own
# size (a 64 KiB sequence set of single numbers is thousands of ranges).
MEMO_LINE = 512
# What the memo may hold, in bytes: a line and its parse cost about this
# much per byte of line, plus a fixed part (measured with tracemalloc).
MEMO_BYTES = 2 * 1024 * 1024
_PER_BYTE = 16
_PER_ENTRY = 512
_PARSED_LIMIT = 1024

MemoKey = tuple[str, bytes, bool]


class _ParseMemo:
    """Parsed lines, the oldest forgotten first, bounded in entries and in bytes."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: dict[MemoKey, tuple[object, ...]] = {}
        self.size = 0  # estimated bytes held

    def keep(self, key: MemoKey, values: tuple[object, ...]) -> None:
        entries = self.entries
        while entries and (
            len(entries) >= _PARSED_LIMIT or self.size + memo_cost(key) > MEMO_BYTES
        ):
            oldest = next(iter(entries))
            del entries[oldest]
            self.size -= memo_cost(oldest)
        entries[key] = values
        self.size += memo_cost(key)


def memo_cost(key: MemoKey) -> int:
    return _PER_ENTRY + _PER_BYTE * len(key[1])


_MEMO = _ParseMemo()
_PARSED = _MEMO.entries


REGISTRY: dict[str, Handler] = {}


def command(
    *names: str,
    syntax: tuple[Grammar, ...] = (),
    states: frozenset[StateName],
    defers_expunge: bool = False,
    memo_parse: bool = False,
) -> Callable[[Callable[..., Awaitable[Reply]]], Callable[..., Awaitable[Reply]]]:
    def register(fn: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[Reply]]:
        for name in names:
            if name in REGISTRY:
                raise RuntimeError(f"IMAP command {name} registered twice")
            REGISTRY[name] = Handler(name, syntax, states, fn, defers_expunge, memo_parse)
        return fn

    return register
