from __future__ import annotations

import asyncio
import logging

import pytest
from aiosmtpd.smtp import Session

from palais.gateway import replies
from palais.gateway.smtp import PalaisSMTP, SubmissionHandler
from palais.mailbox import errors
from palais.mailbox.identity import Identity
from palais.mailbox.submission import SubmissionDesk


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


def test_reply_text_never_carries_control_characters() -> None:
    assert replies.printable("550 5.1.1 <a@b> unknown") == "550 5.1.1 <a@b> unknown"
    assert replies.printable("500 FOO\x01\x1b[2J\r\nX\x7f") == "500 FOO??[2J??X?"
    # An undecodable byte (surrogateescape) and a Unicode line separator too.
    assert replies.printable("501 <\udcff@x>\u2028é") == "501 <?@x>?é"


def test_tls_refusal_words_are_a_closed_vocabulary() -> None:
    import ssl

    no_cert = ssl.SSLError(1, "[SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE] peer did not return")
    no_cert.reason = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    expired = ssl.SSLCertVerificationError(1, "certificate verify failed")
    expired.reason, expired.verify_message = "CERTIFICATE_VERIFY_FAILED", "certificate has expired"
    protocol = ssl.SSLError(1, "wrong version number")
    protocol.reason = "WRONG_VERSION_NUMBER"
    assert replies.tls_refusal(no_cert)[0] == "no_certificate"
    assert replies.tls_refusal(expired) == (
        "certificate",
        "CERTIFICATE_VERIFY_FAILED: certificate has expired",
    )
    assert replies.tls_refusal(protocol)[0] == "handshake"
    for error in (no_cert, expired, protocol):
        assert replies.tls_refusal(error)[0] in replies.TLS_REFUSAL_REASONS
    # The client left during the handshake: no refusal.
    for left in (ConnectionResetError(), None):
        assert replies.tls_refusal(left)[0] == "aborted"


class _Writer:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        return None


def _pushed(status: str) -> bytes:
    """What ``PalaisSMTP.push`` puts on the wire for ``status``."""

    async def resolve(der: bytes) -> Identity:
        raise AssertionError("no identity needed")

    async def push() -> bytes:
        desk = SubmissionDesk(None, None, max_size=1)  # type: ignore[arg-type]
        server = PalaisSMTP(
            SubmissionHandler(desk, listener="test", max_recipients=1),
            listener="test",
            resolve_identity=resolve,
            allowed_roles=frozenset(),
        )
        writer = _Writer()
        server._writer = writer  # type: ignore[assignment]
        server.session = Session(server.loop)
        await server.push(status)
        return writer.written

    return asyncio.run(push())


def test_a_multiline_refusal_reaches_the_wire_one_line_per_detail() -> None:
    error = errors.InvalidMessage("Not valid", details=["a: required", "b: too long"])
    reply = replies.reply_for(error, logging.getLogger("t"), "ctx")
    assert _pushed(reply) == (
        b"550-5.6.0 Not valid\r\n550-5.6.0 a: required\r\n550 5.6.0 b: too long\r\n"
    )


def test_a_one_line_reply_cannot_smuggle_a_line_break() -> None:
    error = errors.InvalidMessage("Not valid\r\n250 2.0.0 OK")
    reply = replies.reply_for(error, logging.getLogger("t"), "ctx")
    assert _pushed(reply) == b"550 5.6.0 Not valid??250 2.0.0 OK\r\n"
