"""The SMTP address fast path agrees with aiosmtpd's full parser."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given
from hypothesis import strategies as st

from palais.gateway.smtp import PalaisSMTP
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)


def protocol(local_part_limit: int) -> PalaisSMTP:
    """A protocol object for ``_getaddr`` alone: it reads only ``local_part_limit``
    (no loop, handler or transport needed)."""
    proto = PalaisSMTP.__new__(PalaisSMTP)
    proto.local_part_limit = local_part_limit
    return proto


def consumed(
    result: tuple[str | None, str | None],
) -> tuple[str | None, bool, list[str] | None]:
    """What smtp_MAIL and smtp_RCPT use of the result: the address, whether
    parameters follow (refused without EHLO), the parameters as split words."""
    address, rest = result
    return address, bool(rest), (None if rest is None else rest.upper().split())


def agree(arg: str, limit: int) -> None:
    """Palais answers as aiosmtpd does; where aiosmtpd's parser crashes (the email
    package's, on "a@", "a@[", "==@[\t"), Palais calls the address malformed."""
    proto = protocol(limit)
    ours = consumed(PalaisSMTP._getaddr(proto, arg))
    try:
        theirs = consumed(SMTP._getaddr(proto, arg))
    except (IndexError, AttributeError, UnboundLocalError):
        theirs = (None, False, None)
    assert ours == theirs, arg


atom = st.text("abcXYZ09!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=6)
local = st.lists(atom, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ['"a b"', '"a\\"b"', "a..b", ".a", "a.", "", "é", "a b", "a(c)"]
)
label = st.text("abz09-", min_size=1, max_size=6)
domain = st.lists(label, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ["[127.0.0.1]", "[IPv6:::1]", "a_b", "é.fr", "a..b", "", "a.", "-a"]
)
rest = st.sampled_from(
    [
        "",
        " SIZE=10",
        "\tBODY=8BITMIME",
        "  SIZE=1 BODY=7BIT",
        "SIZE=1",
        " (c)",
        "(c)",
        " ",
        "\t",
        ">",
        " <x@y>",
        " \x0b",
        "\x0bX",
        " é=1",
        " SMTPUTF8",
        "\r\n",
        " \u3000X",
    ]
) | st.text(max_size=6)


@FUZZ
@given(
    st.sampled_from(["", " ", "  "]),
    local,
    st.sampled_from(["@", "@@", ""]),
    domain,
    st.sampled_from(["<>", "<", ">", ""]),
    rest,
    st.sampled_from([0, 4, 64]),
)
@example("", "a", "@", "b.c", "<>", " SIZE=10", 0)
@example("", "abcde", "@", "b", "<>", "", 4)
@example("", "a", "@", "b", "<>", "\t(c)", 0)
def test_fast_path_agrees_with_aiosmtpd(
    lead: str, user: str, at: str, host: str, brackets: str, tail: str, limit: int
) -> None:
    address = f"{user}{at}{host}"
    arg = f"{lead}<{address}>{tail}" if brackets == "<>" else f"{lead}{brackets}{address}{tail}"
    agree(arg, limit)


@FUZZ
@given(
    st.text(st.sampled_from('<>@[]()"\\.,:; \t\x0bab0é='), max_size=12) | st.text(max_size=40),
    st.sampled_from([0, 64]),
)
@example("<a@b>(", 0)
@example("<a@b> ", 0)
# Regressions: the email package's exception escaped, the client got 451 4.3.0.
@example("a@", 0)
@example('<"a b"@', 0)
@example("0@[", 0)
@example("==@[\t", 0)
# Regression: parameters that are only whitespace aiosmtpd strips were kept.
@example("<0@0> \x0b", 0)
# Regression: a CR right after the address is no whitespace aiosmtpd strips.
@example("<0@0>\r", 0)
def test_any_argument(arg: str, limit: int) -> None:
    agree(arg, limit)
