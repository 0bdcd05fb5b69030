"""Grammar of SEARCH: keys (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 5182 ``$``) and
RETURN options (RFC 4731, RFC 5182 SAVE)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TypeAlias

from palais.gateway.imap import searchres
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.sequence import SequenceSet

__all__ = [
    "CHARSETS",
    "RETURN_OPTIONS",
    "SearchKey",
    "SearchRequest",
    "leaves",
    "parse_program",
    "parse_search",
]

CHARSETS = ("UTF-8", "US-ASCII")
RETURN_OPTIONS = frozenset({"MIN", "MAX", "COUNT", "ALL"})
# SEARCH's, with SEARCHRES (SORT's ESORT options stay RETURN_OPTIONS).
_SEARCH_RETURN_OPTIONS = RETURN_OPTIONS | {searchres.SAVE}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT"})
_DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})


@dataclass(frozen=True, slots=True)
class Everything:
    pass


@dataclass(frozen=True, slots=True)
class Nothing:
    """A key no message matches."""


@dataclass(frozen=True, slots=True)
class Recent:
    """RECENT: \\Recent in this session (IMAP4rev1; none after ENABLE IMAP4rev2)."""


@dataclass(frozen=True, slots=True)
class HasFlag:
    flag: str
    present: bool


@dataclass(frozen=True, slots=True)
class InSequence:
    numbers: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class DateKey:
    op: str  # "BEFORE" | "ON" | "SINCE"
    day: date
    sent: bool  # Date: header rather than the internal date


@dataclass(frozen=True, slots=True)
class HeaderKey:
    name: str  # lower-case field name
    text: str


@dataclass(frozen=True, slots=True)
class TextKey:
    text: str
    headers_too: bool  # TEXT searches header and body, BODY only the body


@dataclass(frozen=True, slots=True)
class SizeKey:
    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    modseq: int


@dataclass(frozen=True, slots=True)
class AllOf:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    key: SearchKey


SearchKey: TypeAlias = (
    Everything
    | Nothing
    | Recent
    | HasFlag
    | InSequence
    | DateKey
    | HeaderKey
    | TextKey
    | SizeKey
    | ModSeqKey
    | AllOf
    | AnyOf
    | Negation
)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    key: SearchKey
    returns: frozenset[str] | None  # None: classic SEARCH response; else ESEARCH
    charset_ok: bool = True
    written: int = 1  # search keys as the client wrote them, repeats and NOT/OR included

    @property
    def uses_modseq(self) -> bool:
        return _uses_modseq(self.key)

    @property
    def distinct(self) -> int:
        """Distinct keys that test messages: what a search costs per message."""
        return len(leaves(self.key))


def leaves(key: SearchKey) -> set[SearchKey]:
    """The keys of a program that test messages (not AND, OR, NOT), each once."""
    out: set[SearchKey] = set()
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, (AllOf, AnyOf)):
            stack.extend(k.keys)
        elif isinstance(k, Negation):
            stack.append(k.key)
        else:
            out.add(k)
    return out


def _uses_modseq(key: SearchKey) -> bool:
    if isinstance(key, ModSeqKey):
        return True
    if isinstance(key, (AllOf, AnyOf)):
        return any(_uses_modseq(k) for k in key.keys)
    if isinstance(key, Negation):
        return _uses_modseq(key.key)
    return False


def parse_search(args: Args) -> SearchRequest:
    returns: frozenset[str] | None = None
    if args.startswith_ci(b"RETURN ") or args.startswith_ci(b"RETURN("):
        args.expect(b"RETURN")
        args.sp()
        options = {o.decode("ascii").upper() for o in args.paren_list()}
        unknown = options - _SEARCH_RETURN_OPTIONS
        if unknown:
            raise ParseError(f"Unsupported RETURN option {sorted(unknown)[0][:40]}")
        returns = frozenset(options or {"ALL"})
        args.sp()
    charset_ok = True
    if args.startswith_ci(b"CHARSET "):
        args.expect(b"CHARSET")
        args.sp()
        charset = args.astring().decode("ascii", "replace").upper()
        charset_ok = charset in CHARSETS
        args.sp()
    key, written = parse_program(args)
    return SearchRequest(key, returns, charset_ok, written)


def parse_program(args: Args) -> tuple[SearchKey, int]:
    """The search keys up to the end of the command (SEARCH, SORT and THREAD
    end with them), and how many the client wrote."""
    count = [0]
    keys = [_key(args, 0, count)]
    while not args.at_end():
        args.sp()
        keys.append(_key(args, 0, count))
    return _all_of(keys), count[0]


def _all_of(keys: list[SearchKey]) -> SearchKey:
    # A key repeated adds nothing to AND or OR: "SEEN SEEN ..." is tested once.
    unique = tuple(dict.fromkeys(keys))
    return unique[0] if len(unique) == 1 else AllOf(unique)


def _text(args: Args) -> str:
    raw = args.astring()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# Deeply nested NOT/OR/() must not exhaust the stack.
_MAX_NESTING = 100


def _key(args: Args, depth: int, count: list[int]) -> SearchKey:
    if depth > _MAX_NESTING:
        raise ParseError("Search program too deeply nested")
    count[0] += 1
    c = args.peek()
    if c == 0x28:
        args.expect(b"(")
        keys = [_key(args, depth + 1, count)]
        while not args.maybe(b")"):
            args.sp()
            keys.append(_key(args, depth + 1, count))
        return _all_of(keys)
    if c is not None and (0x30 <= c <= 0x39 or c == 0x2A or c == 0x24):
        return InSequence(searchres.sequence_set(args), uid=False)
    name = args.word()
    if not name:
        raise ParseError("Expected a search key")
    if name == "ALL":
        return Everything()
    # RFC 3501 6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
    if name == "RECENT":
        return Recent()
    if name == "NEW":
        return AllOf((Recent(), HasFlag("\\Seen", False)))
    if name == "OLD":
        return Negation(Recent())
    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return HasFlag(flag, present)
    if name in ("KEYWORD", "UNKEYWORD"):
        args.sp()
        return HasFlag(args.atom().decode("ascii"), name == "KEYWORD")
    if name == "NOT":
        args.sp()
        return Negation(_key(args, depth + 1, count))
    if name == "OR":
        args.sp()
        first = _key(args, depth + 1, count)
        args.sp()
        second = _key(args, depth + 1, count)
        return first if first == second else AnyOf((first, second))
    if name == "UID":
        args.sp()
        return InSequence(searchres.sequence_set(args), uid=True)
    if name in _HEADER_KEYS:
        args.sp()
        return HeaderKey(name.lower(), _text(args))
    if name == "HEADER":
        args.sp()
        field = args.astring().decode("ascii", "replace").lower()
        args.sp()
        return HeaderKey(field, _text(args))
    if name in ("BODY", "TEXT"):
        args.sp()
        return TextKey(_text(args), headers_too=name == "TEXT")
    if name in _DATE_KEYS:
        args.sp()
        sent = name.startswith("SENT")
        return DateKey(name[4:] if sent else name, args.date(), sent)
    if name in ("LARGER", "SMALLER"):
        args.sp()
        return SizeKey(name == "LARGER", args.number())
    if name == "MODSEQ":
        args.sp()
        if args.peek() == 0x22:
            # entry-name and entry-type-req: per-flag modseqs are not kept, so ignored.
            args.quoted()
            args.sp()
            args.word()
            args.sp()
        return ModSeqKey(args.number64())
    raise ParseError(f"Unknown search key {name[:40]}")
