"""Framing a stream of arbitrary bytes: commands or refusals, within limits, never a hang."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from palais.gateway.imap.framing import (
    CommandTooBig,
    FramingError,
    Limits,
    LineTooLong,
    Literal,
    RawCommand,
)
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT
from tests.fuzz.imapwire import frame_all

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

SMALL = Limits(max_line=40, max_literal=16, max_append=48, max_literals=3)

# Bytes that matter to the framer, so announcements and line ends meet often.
framing_bytes = st.lists(
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"\r",
            b"{",
            b"}",
            b"+}",
            b"~{",
            b"{4}",
            b"{17}",
            b"{49+}",
            b"{99999999999999999999}",
            b"{0}",
            b" ",
            b"a APPEND ",
            b"t ",
            b"x" * 30,
            b"\x00",
        ]
    )
    | st.binary(max_size=8),
    max_size=30,
).map(b"".join)


@FUZZ
@given(framing_bytes | st.binary(max_size=300), st.sampled_from([8, 64, 1 << 16]))
@example(b"a APPEND INBOX {49+}\r\n" + b"x" * 49 + b"\r\nb NOOP\r\n", 64)
@example(b"a " + b"x" * 39 + b"\n", 64)
@example(b"a " + b"x" * 38 + b"\r\n", 8)
@example(b"a {5}\r\nab", 64)
def test_any_stream_frames_within_limits(data: bytes, stream_limit: int) -> None:
    results, asked = frame_all(data, SMALL, stream_limit=stream_limit)
    for result in results:
        if isinstance(result, FramingError):
            assert isinstance(result, LineTooLong | CommandTooBig)
            assert result.text
            continue
        segments = result.segments
        assert segments and isinstance(segments[0], bytes)
        text = [s for s in segments if isinstance(s, bytes)]
        literals = [s.data for s in segments if isinstance(s, Literal)]
        # Text and literals alternate, beginning and ending with text.
        assert len(segments) == 2 * len(literals) + 1
        assert all(isinstance(s, bytes) for s in segments[::2])
        assert all(len(t) <= SMALL.max_line for t in text), [len(t) for t in text]
        assert all(b"\n" not in t for t in text)
        is_append = segments[0].split(b" ")[1:2] in ([b"APPEND"], [b"append"])
        cap = SMALL.max_append if is_append else SMALL.max_literal
        assert len(literals) <= SMALL.max_literals
        assert all(len(lit) <= cap for lit in literals)
    assert asked <= data.count(b"}")


text_segment = st.binary(max_size=12).filter(lambda b: b"\n" not in b and b"{" not in b)


@FUZZ
@given(
    st.lists(st.tuples(text_segment, st.binary(max_size=12), st.booleans()), max_size=3),
    text_segment,
)
@example([(b"a LOGIN ", b"\r\n", False)], b"")
@example([(b"", b"}\r\n{1}", True)], b"~")
@example([], b"\r")  # "\r\r\n": only the last CRLF ends the line
def test_framed_command_round_trip(pieces: list[tuple[bytes, bytes, bool]], last: bytes) -> None:
    """Text and literals written as a client would come back exactly."""
    wire = b""
    expected: list[bytes | Literal] = []
    for text, literal, plus in pieces:
        announce = b"{%d%s}" % (len(literal), b"+" if plus else b"")
        wire += text + announce + b"\r\n" + literal
        expected += [text + announce, Literal(literal)]
    wire += last + b"\r\n"
    expected.append(last)
    results, asked = frame_all(wire)
    assert results[0] == RawCommand(tuple(expected))
    assert asked == sum(1 for *_, plus in pieces if not plus)


@pytest.mark.parametrize("stream_limit", [8, 64, 1 << 16])
@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_limit_is_exact(stream_limit: int, ending: bytes) -> None:
    """max_line bytes pass and one more is refused, whatever the line ending
    (a bare LF used to let max_line + 1 through)."""
    at_limit = b"a " + b"x" * (SMALL.max_line - 2)
    results, _ = frame_all(
        at_limit + ending + at_limit + b"y" + ending, SMALL, stream_limit=stream_limit
    )
    assert results[0] == RawCommand((at_limit,))
    assert isinstance(results[1], LineTooLong) and results[1].tag == b"a"
    assert len(results) == 2
