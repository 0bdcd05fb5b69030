from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

import pytest

from palais.gateway.imap.fetchspec import parse_fetch_atts, parse_fetch_modifiers
from palais.gateway.imap.framing import (
    CommandTooBig,
    Limits,
    LineTooLong,
    Literal,
    RawCommand,
    read_command,
)
from palais.gateway.imap.mime import SectionSpec
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.searchspec import (
    AllOf,
    AnyOf,
    DateKey,
    HasFlag,
    HeaderKey,
    InSequence,
    ModSeqKey,
    Negation,
    parse_search,
)
from palais.gateway.imap.sequence import STAR, format_set, parse_sequence_set


def frame(data: bytes, limits: Limits | None = None) -> tuple[RawCommand | None, int]:
    """Run the framer over ``data``; also count the "+" continuations it asked for."""

    async def go() -> tuple[RawCommand | None, int]:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(data)
        reader.feed_eof()
        asked = 0

        async def cont() -> None:
            nonlocal asked
            asked += 1

        return await read_command(reader, cont, limits or Limits()), asked

    return asyncio.run(go())


def args_of(text: bytes) -> Args:
    raw, _ = frame(text + b"\r\n")
    assert raw is not None
    return Args(raw)


def test_plain_line() -> None:
    raw, asked = frame(b"a1 NOOP\r\n")
    assert raw == RawCommand((b"a1 NOOP",))
    assert asked == 0


def test_bare_lf_is_accepted() -> None:
    raw, _ = frame(b"a1 NOOP\n")
    assert raw == RawCommand((b"a1 NOOP",))


def test_synchronizing_literal_asks_for_continuation() -> None:
    raw, asked = frame(b"a LOGIN {5}\r\nhello {3}\r\nabc\r\n")
    assert asked == 2
    assert raw == RawCommand((b"a LOGIN {5}", Literal(b"hello"), b" {3}", Literal(b"abc"), b""))
    args = Args(raw)
    assert args.atom() == b"a"
    args.sp()
    assert args.keyword() == "LOGIN"
    args.sp()
    assert args.astring() == b"hello"
    args.sp()
    assert args.astring() == b"abc"
    args.end()


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    raw, asked = frame(b"a LOGIN {5+}\r\nhe\r\no {2+}\r\n\r\n\r\n")
    assert asked == 0
    assert raw is not None
    args = Args(raw)
    args.atom()
    args.sp()
    args.keyword()
    args.sp()
    assert args.astring() == b"he\r\no"  # literals are byte-exact, CRLF included
    args.sp()
    assert args.astring() == b"\r\n"
    args.end()


def test_literal_too_big_is_refused_before_reading() -> None:
    with pytest.raises(CommandTooBig) as info:
        frame(b"a APPEND INBOX {2000}\r\n", Limits(max_append=1000))
    assert info.value.tag == b"a" and info.value.is_append


def test_non_synchronizing_literal_too_big_is_discarded() -> None:
    data = b"a APPEND INBOX {20+}\r\n" + b"x" * 20 + b"\r\nb NOOP\r\n"

    async def go() -> RawCommand | None:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(data)
        reader.feed_eof()

        async def cont() -> None:
            raise AssertionError("no continuation for LITERAL+")

        with pytest.raises(CommandTooBig):
            await read_command(reader, cont, Limits(max_append=10))
        return await read_command(reader, cont, Limits())

    assert asyncio.run(go()) == RawCommand((b"b NOOP",))


def test_line_too_long_keeps_stream_in_step() -> None:
    data = b"a1 NOOP " + b"x" * 500 + b"\r\nb NOOP\r\n"

    async def go() -> RawCommand | None:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(data)
        reader.feed_eof()

        async def cont() -> None:
            pass

        with pytest.raises(LineTooLong) as info:
            await read_command(reader, cont, Limits(max_line=100))
        assert info.value.tag == b"a1"
        return await read_command(reader, cont, Limits(max_line=100))

    assert asyncio.run(go()) == RawCommand((b"b NOOP",))


def test_quoted_strings_with_escapes() -> None:
    args = args_of(b'"a \\"quoted\\" \\\\ string" NIL "x"')
    assert args.string() == b'a "quoted" \\ string'
    args.sp()
    assert args.nstring() is None
    args.sp()
    assert args.nstring() == b"x"
    args.end()


@pytest.mark.parametrize("text", [b'"unterminated', b'"bad \\x escape"', b"", b"(list)"])
def test_bad_strings(text: bytes) -> None:
    args = args_of(b"x " + text)
    args.atom()
    args.sp()
    with pytest.raises(ParseError):
        args.string()


def test_mailbox_names_are_decoded() -> None:
    args = args_of(b'"Envoy&AOk-s" inbox Dossiers/2025-0000138/Re&AOc-us')
    assert args.mailbox() == "Envoyés"
    args.sp()
    assert args.mailbox() == "INBOX"
    args.sp()
    assert args.mailbox() == "Dossiers/2025-0000138/Reçus"


def test_name_that_is_not_modified_utf7_is_kept_as_written() -> None:
    # Still a valid astring (RFC 3501 section 9); it designates no box.
    assert args_of(b'"Envoy&AOk"').mailbox() == "Envoy&AOk"
    assert args_of(b"a&b").mailbox() == "a&b"


def test_utf8_names_after_enable() -> None:
    raw, _ = frame('"Envoyés"\r\n'.encode())
    assert raw is not None
    assert Args(raw, utf8=True).mailbox() == "Envoyés"


def test_sequence_sets() -> None:
    seq = parse_sequence_set(b"1:3,5,7:*,9:8")
    assert seq.ranges == ((1, 3), (5, 5), (8, 9), (7, STAR))  # merged, "*" ranges last
    assert seq.seqnums(10) == [1, 2, 3, 5, 7, 8, 9, 10]
    assert parse_sequence_set(b"4:*").uids([2, 4, 9, 12]) == [4, 9, 12]
    assert parse_sequence_set(b"100:*").uids([2, 4, 9, 12]) == [12]  # RFC 3501: * is always in
    assert parse_sequence_set(b"1:*").seqnums(0) == []
    assert format_set([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"
    for bad in (b"", b"0", b"1:", b"a", b"1,,2", b"01"):
        with pytest.raises(ValueError):
            parse_sequence_set(bad)
    with pytest.raises(ValueError):
        parse_sequence_set(b"5").seqnums(3)


def test_flags_and_dates() -> None:
    args = args_of(b'(\\Seen \\DELETED $Label1) "14-Mar-2025" " 1-Jan-2025 08:05:09 -0230"')
    assert args.flag_list() == frozenset({"\\Seen", "\\Deleted", "$Label1"})
    args.sp()
    assert args.date() == date(2025, 3, 14)
    args.sp()
    when = args.date_time()
    assert when == datetime(2025, 1, 1, 8, 5, 9, tzinfo=timezone(-timedelta(hours=2, minutes=30)))
    with pytest.raises(ParseError):
        args_of(b"(\\Unknown)").flag_list()
    with pytest.raises(ParseError):
        args_of(b"31-Feb-2025").date()


def test_fetch_attributes() -> None:
    items = parse_fetch_atts(
        args_of(b"(UID FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BODY[1.2.MIME] RFC822.SIZE)")
    )
    assert [i.name for i in items] == ["UID", "FLAGS", "BODY[]", "BODY[]", "RFC822.SIZE"]
    peek = items[2]
    assert peek.peek and peek.partial == (0, 100) and not peek.sets_seen
    assert peek.section == SectionSpec((), "HEADER.FIELDS", ("from", "to"))
    assert peek.response_key() == b"BODY[HEADER.FIELDS (FROM TO)]<0>"
    assert items[3].section == SectionSpec((1, 2), "MIME")
    assert items[3].sets_seen
    assert [i.name for i in parse_fetch_atts(args_of(b"FAST"))] == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
    ]
    assert [i.name for i in parse_fetch_atts(args_of(b"full"))][-1] == "BODY"
    assert parse_fetch_atts(args_of(b"BODY[]"))[0].section == SectionSpec()
    assert parse_fetch_modifiers(args_of(b"(CHANGEDSINCE 12345)")).changed_since == 12345


@pytest.mark.parametrize(
    "text",
    [b"(UID", b"BODY[MIME]", b"BODY[1.]", b"BODY[HEADER.FIELDS ()]", b"BOGUS", b"BODY[]<1>", b"()"],
)
def test_bad_fetch_attributes(text: bytes) -> None:
    with pytest.raises(ParseError):
        args = args_of(text)
        parse_fetch_atts(args)
        args.end()


def test_search_program() -> None:
    request = parse_search(
        args_of(
            b"RETURN (MIN COUNT) CHARSET UTF-8 OR FROM dupont NOT SEEN 1:5 UID 3:* "
            b'(SINCE 1-Feb-2025 SENTBEFORE 2-Mar-2025) HEADER X-Dossier "2025" MODSEQ 7'
        )
    )
    assert request.returns == frozenset({"MIN", "COUNT"})
    assert request.charset_ok and request.uses_modseq
    assert isinstance(request.key, AllOf)
    first, seq, uid, dates, header, modseq = request.key.keys
    assert first == AnyOf((HeaderKey("from", "dupont"), Negation(HasFlag("\\Seen", True))))
    assert isinstance(seq, InSequence) and not seq.uid
    assert isinstance(uid, InSequence) and uid.uid
    assert dates == AllOf(
        (DateKey("SINCE", date(2025, 2, 1), False), DateKey("BEFORE", date(2025, 3, 2), True))
    )
    assert header == HeaderKey("x-dossier", "2025")
    assert modseq == ModSeqKey(7)
    assert not parse_search(args_of(b"CHARSET KOI8-R ALL")).charset_ok
    assert parse_search(args_of(b"RETURN () ALL")).returns == frozenset({"ALL"})


@pytest.mark.parametrize("text", [b"", b"FROM", b"OR SEEN", b"BOGUS", b"(SEEN", b"SINCE yesterday"])
def test_bad_search(text: bytes) -> None:
    with pytest.raises(ParseError):
        parse_search(args_of(text))


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(ParseError):
        parse_search(args_of(b"NOT " * 500 + b"ALL"))


def test_fetch_lines_are_parsed_once() -> None:
    import palais.gateway.imap.commands  # noqa: F401  (registers the commands)
    from palais.gateway.imap.commands import registry

    handler = registry.REGISTRY["UID FETCH"]
    line = b" 1:* (UID FLAGS) (CHANGEDSINCE 4242)"
    first = handler.parse_memo(Args(RawCommand((line,))))
    assert registry._PARSED[("UID FETCH", line, False)] == tuple(first)
    again = handler.parse_memo(Args(RawCommand((line,))))
    assert again == first and again is not first
    # A line with a literal is parsed every time; so are other commands.
    with_literal = RawCommand((b" 1 (BODY[HEADER.FIELDS ({4}", Literal(b"FROM"), b")])"))
    handler.parse_memo(Args(with_literal))
    assert not any(b"{4}" in key[1] for key in registry._PARSED)
    assert not registry.REGISTRY["SELECT"].memo_parse
    # A bad line is refused each time, never remembered.
    for _ in range(2):
        with pytest.raises(ParseError):
            handler.parse_memo(Args(RawCommand((b" 1:* (NOPE)",))))
    assert ("UID FETCH", b" 1:* (NOPE)", False) not in registry._PARSED
