from __future__ import annotations

import logging

import pytest

from palais.gateway import replies
from palais.mailbox import errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("552 Error: Too much mail data", "552 5.3.4 Too much mail data"),
        ("503 Error: need MAIL command", "503 5.5.1 need MAIL command"),
        ("550 5.1.1 already coded", "550 5.1.1 already coded"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("220 localhost Palais ESMTP", "220 localhost Palais ESMTP"),
        ("221 Bye", "221 2.0.0 Bye"),
    ],
)
def test_enhanced_codes_added(raw: str, expected: str) -> None:
    assert replies.with_enhanced_code(raw) == expected


def test_constants_are_well_formed() -> None:
    for name in dir(replies):
        value = getattr(replies, name)
        if name.isupper() and isinstance(value, str):
            code, enhanced, text = value.split(" ", 2)
            assert code.isdigit() and len(code) == 3, name
            assert enhanced[0] == code[0] and enhanced.count(".") == 2, name
            assert text, name


def test_domain_error_reply_uses_safe_text() -> None:
    err = errors.UnknownRecipient("No such <x@y>", reason="secret internal detail")
    assert replies.reply_for(err, logging.getLogger("t"), "ctx") == "550 5.1.1 No such <x@y>"


def test_unknown_error_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    reply = replies.reply_for(RuntimeError("password=hunter2"), logging.getLogger("t"), "ctx")
    assert reply == "451 4.3.0 Internal error, please try again later"
    assert "hunter2" not in reply
    assert any("internal error" in r.message for r in caplog.records)
