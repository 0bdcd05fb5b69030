"""IMAP command parsing: any bytes give arguments or a ParseError, values round-trip."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from palais.gateway.imap import response
from palais.gateway.imap.framing import FramingError, RawCommand
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.sequence import SequenceSet
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT, fuzz
from tests.fuzz.imapwire import frame_all, parse_command

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

# Pieces of real commands, so that random sequences get deep into each
# command's grammar instead of failing on the first byte.
TOKENS = [
    *(
        b"1 1:* * 2,4:7 4294967295 4294967296 0 01 1: $ ( ) [ ] < > . <0.10> <5.0> "
        b"NIL nil INBOX inbox INBOX/Sub Envoy&AOk-s &AOk &- &Jjo-&Jjo- % * "
        b"BODY BODY.PEEK BODY[] BODY[TEXT] BODY[HEADER.FIELDS BODY.PEEK[1.2.MIME] BODY[1.] "
        b"BINARY[1] FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE ALL FAST FULL MODSEQ "
        b"(FROM TO) (\\Seen) (\\Seen $Label) \\Deleted \\* \\Bogus +FLAGS -FLAGS.SILENT "
        b"(UNCHANGEDSINCE 5) (CHANGEDSINCE 99) (CONDSTORE) (QRESYNC (1 2)) "
        b"OR NOT SINCE BEFORE ON SENTSINCE 1-Jan-2025 31-Feb-2025 1-Foo-2025 "
        b"HEADER Subject FROM TEXT KEYWORD LARGER SMALLER CHARSET UTF-8 ISO-8859-1 "
        b"RETURN (MIN MAX COUNT ALL SAVE) (BOGUS) UTF8 (MESSAGES UIDNEXT) (RETURN (SUBSCRIBED)) "
        b"EXTERNAL PLAIN = ~ + \\ 99999999999999999999 "
        b'"" "a b" "q\\"x" "bad\\x" "unterminated'
    ).split(b" "),
    b'"14-Mar-2025 08:05:09 +0100"',
    b'" 1-Jan-2025 00:00:00 -2400"',
    b'"29-Feb-2023 10:00:00 +0000"',
    b"{3}\r\nabc",
    b"{3+}\r\na\r\n",
    b"~{2}\r\n\x00\xff",
    b"{0}\r\n",
    b"{5}\r\nab",
    b"\xc3\xa9",
    b"\xff",
    b"\x00",
    b"\t",
]
token = st.sampled_from(TOKENS) | st.binary(max_size=6)


# One valid command per grammar: the mutations below start from these, so
# that most inputs get deep into a command's grammar before going wrong.
SEEDS = [
    b"a1 CAPABILITY",
    b'a1 ID ("name" "x" "version" NIL)',
    b"a1 LOGIN avocat {3}\r\nabc",
    b"a1 AUTHENTICATE EXTERNAL =",
    b"a1 ENABLE UTF8=ACCEPT CONDSTORE",
    b"a1 SELECT Envoy&AOk-s (CONDSTORE)",
    b'a1 EXAMINE "INBOX/Sub"',
    b"a1 CREATE ~{3+}\r\nabc",
    b'a1 RENAME a "b c"',
    b'a1 LIST (SUBSCRIBED) "" ("*" %) RETURN (CHILDREN SUBSCRIBED)',
    b'a1 LSUB "" *',
    b"a1 STATUS INBOX (MESSAGES UIDNEXT HIGHESTMODSEQ)",
    b'a1 APPEND INBOX (\\Seen $Label) "14-Mar-2025 08:05:09 +0100" {3+}\r\na\r\n',
    b"a1 APPEND INBOX UTF8 (~{2}\r\n\x00\xff)",
    b"a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>) (CHANGEDSINCE 99)",
    b"a1 UID FETCH 2,4:7 (BODY[1.2.MIME] BODY[] RFC822.SIZE ENVELOPE MODSEQ)",
    b"a1 FETCH * FULL",
    b"a1 STORE 1 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen $Label)",
    b"a1 UID STORE 1:3 -FLAGS \\Deleted \\Flagged",
    b"a1 SEARCH RETURN (MIN MAX COUNT) CHARSET UTF-8 OR SINCE 1-Jan-2025 NOT SEEN",
    b"a1 UID SEARCH HEADER Subject {3}\r\nabc LARGER 10 (UID 1:* MODSEQ 4)",
    b'a1 SEARCH TEXT "\xc3\xa9" KEYWORD $Label SENTBEFORE 31-Dec-2024 1,3',
    b"a1 COPY 1:2 Envoy&AOk-s",
    b"a1 UID MOVE 3 INBOX",
    b"a1 UID EXPUNGE 1:*",
    b"a1 NOOP",
]


@st.composite
def command_lines(draw: st.DrawFn, seeds: list[bytes] = SEEDS) -> bytes:
    line = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        width = draw(st.integers(1, 6))
        if op != "delete":
            piece = draw(token)
            line[at : at + (width if op == "replace" else 0)] = piece
        else:
            del line[at : at + width]
    return bytes(line) + draw(st.sampled_from([b"\r\n", b"\n", b""]))


def parse_everything(data: bytes, utf8: bool) -> int:
    """Frame and parse every command of ``data``; the number that parsed."""
    parsed = 0
    commands, _ = frame_all(data)
    for raw in commands:
        if isinstance(raw, FramingError):
            continue
        try:
            if parse_command(raw, utf8=utf8) is not None:
                parsed += 1
        except ParseError as exc:
            assert exc.text  # becomes the BAD text: never empty
    return parsed


@fuzz(600)
@given(command_lines(), st.booleans())
@example(b"a FETCH 1 (BODY[1.2.HEADER.FIELDS (FROM)]<0.10>)\r\n", False)
@example(b"a UID SEARCH RETURN (MIN) CHARSET UTF-8 OR 1:* NOT SEEN\r\n", False)
@example(b'a APPEND INBOX (\\Seen) "14-Mar-2025 08:05:09 +0100" UTF8 (~{1}\r\nx)\r\n', False)
@example(b'a LIST (SUBSCRIBED) "" * RETURN (CHILDREN)\r\n', True)
@example(b"a SEARCH " + b"NOT " * 150 + b"ALL\r\n", False)
@example(b"a SEARCH " + b"(" * 150 + b"ALL\r\n", False)
def test_commands_parse_or_refuse(data: bytes, utf8: bool) -> None:
    parse_everything(data, utf8)


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_parse_or_refuse(data: bytes, utf8: bool) -> None:
    parse_everything(data, utf8)


def test_the_generator_reaches_the_grammars() -> None:
    """The vocabulary does get commands through: a harness that only ever
    produced BAD would prove nothing."""
    good = [
        b"a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>) (CHANGEDSINCE 99)\r\n",
        b"a1 UID STORE 2,4:7 +FLAGS (\\Seen $Label) \r\n".replace(b" \r", b"\r"),
        b"a1 SEARCH CHARSET UTF-8 OR SINCE 1-Jan-2025 HEADER Subject {3}\r\nabc\r\n",
        b'a1 APPEND INBOX (\\Seen) "14-Mar-2025 08:05:09 +0100" {3+}\r\na\r\n\r\n',
    ]
    assert parse_everything(b"".join(good), utf8=False) == len(good)


# -- Args primitives on arbitrary input --------------------------------------

PRIMITIVES: list[tuple[str, Any]] = [
    (name, getattr(Args, name))
    for name in [
        "atom",
        "keyword",
        "number",
        "number64",
        "nz_number",
        "quoted",
        "string",
        "astring",
        "nstring",
        "nil",
        "mailbox",
        "list_mailbox",
        "sequence_set",
        "flag",
        "flag_list",
        "flags_maybe_parenthesized",
        "date",
        "date_time",
        "paren_list",
        "literal",
        "word",
        "sp",
        "end",
    ]
]


@FUZZ
@given(
    st.lists(st.sampled_from(TOKENS) | st.binary(max_size=8), max_size=6).map(b"".join),
    st.lists(st.sampled_from(PRIMITIVES), min_size=1, max_size=6),
    st.booleans(),
)
@example(b'"14-Mar-2025 08:05:09 +9999"', [("date_time", Args.date_time)], False)
@example(b"0-Jan-0000", [("date", Args.date)], False)
@example(b"\\", [("flag", Args.flag)], False)
def test_primitives_parse_or_refuse(data: bytes, calls: list[tuple[str, Any]], utf8: bool) -> None:
    commands, _ = frame_all(data + b"\r\n")
    for raw in commands:
        if isinstance(raw, FramingError):
            continue
        args = Args(raw, utf8=utf8)
        for _name, method in calls:
            try:
                value = method(args)
            except ParseError:
                break
            if _name == "sequence_set":
                assert isinstance(value, SequenceSet)


# -- round trips: what the server writes, a parser reads back ------------------


def read_back(encoded: bytes, read: Any, *, utf8: bool = False) -> Any:
    commands, _ = frame_all(b"x " + encoded + b"\r\n")
    assert len(commands) == 1
    raw = commands[0]
    assert isinstance(raw, RawCommand)
    args = Args(raw, utf8=utf8)
    args.atom()
    args.sp()
    value = read(args)
    args.end()
    return value


@FUZZ
@given(st.binary(max_size=1100) | st.text(max_size=30).map(str.encode), st.booleans())
@example(b"", False)
@example(b'\\"', False)
@example(b"NIL", False)
@example(b"a\r\nb", False)
@example(b"x" * 1025, False)
@example("é".encode(), True)
def test_string_round_trip(data: bytes, utf8: bool) -> None:
    encoded = response.string(data, utf8=utf8)
    assert read_back(encoded, Args.string, utf8=utf8) == data
    assert read_back(encoded, Args.astring, utf8=utf8) == data


mailbox_names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


def normalized(name: str) -> str:
    """INBOX in any ASCII case is INBOX (RFC 9051 5.1); nothing else is."""
    if name.lower() == "inbox" and name.isascii():
        return "INBOX"
    if name[:6].lower() == "inbox/" and name[:6].isascii():
        return "INBOX" + name[5:]
    return name


@FUZZ
@given(mailbox_names, st.booleans())
@example("Envoyés", False)
@example("inbox/Reçus", False)
@example('a"b\\c', True)
@example("&", False)
@example("ınbox", False)  # regression: the dotless i upper-cased to INBOX
@example("ınbox/Dossiers", True)
def test_mailbox_name_round_trip(name: str, utf8: bool) -> None:
    encoded = response.mailbox_name(name, utf8=utf8)
    assert read_back(encoded, Args.mailbox, utf8=utf8) == normalized(name)


@FUZZ
@given(
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
def test_internaldate_round_trip(when: datetime, offset_minutes: int) -> None:
    moment = when.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    back = read_back(response.internaldate(moment), Args.date_time)
    assert back == moment and back.utcoffset() == moment.utcoffset()


keywords = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='(){%*"\\]'),
    min_size=1,
    max_size=12,
)
system = st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"])


@FUZZ
@given(st.frozensets(keywords | system, max_size=6))
def test_flag_list_round_trip(flags: frozenset[str]) -> None:
    assert read_back(response.flag_list(flags), Args.flag_list) == flags
