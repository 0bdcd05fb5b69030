"""Grammar of FETCH attributes, macros and modifiers (RFC 3501, RFC 7162)."""

from __future__ import annotations

from dataclasses import dataclass

from palais.gateway.imap.mime import SectionSpec
from palais.gateway.imap.parser import Args, ParseError

__all__ = ["FetchItem", "FetchModifiers", "parse_fetch_atts", "parse_fetch_modifiers"]

_SIMPLE = frozenset(
    {
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "MODSEQ",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
    }
)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_MSGTEXT = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


@dataclass(frozen=True, slots=True)
class FetchItem:
    name: str  # "BODY[]" for any section fetch, else the attribute name
    section: SectionSpec | None = None
    label: bytes = b""  # the section text echoed in the response, e.g. b"1.HEADER"
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def sets_seen(self) -> bool:
        return (self.name in _SECTIONED and not self.peek) or self.name in ("RFC822", "RFC822.TEXT")

    @property
    def needs_message(self) -> bool:
        """Whether the full bytes are needed (as opposed to the header block or nothing)."""
        if self.name in ("BODYSTRUCTURE", "BODY", "RFC822", "RFC822.TEXT", "BINARY[]"):
            return True
        if self.name == "BINARY.SIZE[]":
            return True
        return self.name == "BODY[]" and self.section is not None and self.section.needs_body

    @property
    def needs_header(self) -> bool:
        return self.name in ("ENVELOPE", "RFC822.HEADER") or self.name == "BODY[]"

    @property
    def sectioned(self) -> bool:
        """BODY[...], BINARY[...], BINARY.SIZE[...]: one response per section asked."""
        return self.name in _SECTIONED or self.name == "BINARY.SIZE[]"

    def response_key(self) -> bytes:
        if self.name == "BINARY.SIZE[]":
            return b"BINARY.SIZE[" + self.label + b"]"
        if self.name not in _SECTIONED:
            return self.name.encode("ascii")
        key = (b"BODY[" if self.name == "BODY[]" else b"BINARY[") + self.label + b"]"
        if self.partial is not None:
            key += b"<%d>" % self.partial[0]
        return key


# Items naming a section of the message: BODY[...] and BINARY[...] (RFC 3516).
_SECTIONED = frozenset({"BODY[]", "BINARY[]"})

# Attributes without arguments are immutable values: one of each is enough.
_SIMPLE_ITEMS = {name: FetchItem(name) for name in _SIMPLE}


def parse_fetch_atts(args: Args) -> tuple[FetchItem, ...]:
    if args.peek() == 0x28:
        args.expect(b"(")
        items: list[FetchItem] = []
        while not args.maybe(b")"):
            if items:
                args.sp()
            items.append(_fetch_att(args))
        if not items:
            raise ParseError("Empty fetch attribute list")
        return tuple(items)
    for macro, names in _MACROS.items():
        if args.startswith_ci(macro.encode()) and args.peek_at(len(macro)) in (None, 0x20):
            args.expect(macro.encode())
            return tuple(FetchItem(n) for n in names)
    return (_fetch_att(args),)


def _fetch_att(args: Args) -> FetchItem:
    name = _name(args)
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        args.expect(b"[")
        return _binary_item(args, name)
    if args.peek() == 0x5B:  # "[": a section follows BODY or BODY.PEEK
        if name not in ("BODY", "BODY.PEEK"):
            raise ParseError(f"Unknown fetch attribute {name[:40]}")
        args.expect(b"[")
        return _section_item(args, peek=name == "BODY.PEEK")
    if name == "BODY":
        return FetchItem("BODY")
    if name not in _SIMPLE:
        raise ParseError(f"Unknown fetch attribute {name[:40]}")
    return _SIMPLE_ITEMS[name]


def _name(args: Args) -> str:
    name = args.word()
    if not name:
        raise ParseError("Expected a fetch attribute")
    return name


def _section_item(args: Args, *, peek: bool) -> FetchItem:
    section, label = parse_section(args)
    return FetchItem("BODY[]", section, label, peek, _partial(args))


def _partial(args: Args) -> tuple[int, int] | None:
    if not args.maybe(b"<"):
        return None
    start = args.number()
    args.expect(b".")
    length = args.nz_number()
    args.expect(b">")
    return (start, length)


def _binary_item(args: Args, name: str) -> FetchItem:
    """After ``BINARY[``: a part number only (RFC 3516 section-binary), then ``]``."""
    path: list[int] = []
    while not args.maybe(b"]"):
        if path:
            args.expect(b".")
        path.append(args.nz_number())
    label = b".".join(b"%d" % n for n in path)
    section = SectionSpec(tuple(path))
    if name == "BINARY.SIZE":
        return FetchItem("BINARY.SIZE[]", section, label)
    return FetchItem("BINARY[]", section, label, name == "BINARY.PEEK", _partial(args))


def parse_section(args: Args) -> tuple[SectionSpec, bytes]:
    """After ``[``: the section spec up to and including ``]``."""
    path: list[int] = []
    label = bytearray()
    while args.peek() is not None and 0x30 <= (args.peek() or 0) <= 0x39:
        number = args.nz_number()
        path.append(number)
        label += b"%d" % number
        if not args.maybe(b"."):
            break
        label += b"."
    kind = ""
    fields: tuple[str, ...] = ()
    if not args.startswith(b"]"):
        for candidate in _MSGTEXT:
            if args.startswith_ci(candidate.encode()):
                kind = candidate
                break
        if not kind or (kind == "MIME" and not path):
            raise ParseError("Invalid section")
        args.expect(kind.encode())
        label += kind.encode()
        if kind.startswith("HEADER.FIELDS"):
            args.sp()
            names = args.paren_list(item="astring")
            if not names:
                raise ParseError("Empty header field list")
            fields = tuple(n.decode("ascii", "replace").lower() for n in names)
            label += b" (" + b" ".join(n.upper() for n in names) + b")"
    elif label.endswith(b"."):
        raise ParseError("Invalid section")
    args.expect(b"]")
    return SectionSpec(tuple(path), kind, fields), bytes(label)


@dataclass(frozen=True, slots=True)
class FetchModifiers:
    """``(CHANGEDSINCE n)`` (RFC 7162 3.1.4), with QRESYNC's ``VANISHED`` (3.2.6)."""

    changed_since: int | None = None
    vanished: bool = False


def parse_fetch_modifiers(args: Args) -> FetchModifiers:
    args.expect(b"(")
    changed_since: int | None = None
    vanished = False
    first = True
    while not args.maybe(b")"):
        if not first:
            args.sp()
        first = False
        name = args.keyword()
        if name == "CHANGEDSINCE" and changed_since is None:
            args.sp()
            changed_since = args.number64()
        elif name == "VANISHED" and not vanished:
            vanished = True
        else:
            raise ParseError(f"Unsupported FETCH modifier {name[:40]}")
    if first:
        raise ParseError("Empty FETCH modifier list")
    if vanished and changed_since is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")
    return FetchModifiers(changed_since, vanished)
