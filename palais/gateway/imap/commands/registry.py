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
        if line is None:
            return self.parse(args)
        key = (self.name, line, args.utf8)
        known = _PARSED.get(key)
        if known is None:
            known = tuple(self.parse(args))
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()
            _PARSED[key] = known
        return list(known)


_PARSED: dict[tuple[str, bytes, bool], tuple[object, ...]] = {}
_PARSED_LIMIT = 1024


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
