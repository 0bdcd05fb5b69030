"""The tables that turn the domain's error kinds into SMTP and IMAP replies."""

from __future__ import annotations

import logging
import re

import pytest

from palais.gateway import replies
from palais.gateway.imap import codes, refusals
from palais.mailbox import errors
from palais.mailbox.errors import ErrorKind, PalaisError

_ENHANCED = re.compile(r"[245]\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})")
# RFC 5530's response codes, RFC 4315's and RFC 7162's MODIFIED.
_IMAP_CODES = {
    b"UNAVAILABLE",
    b"AUTHENTICATIONFAILED",
    b"AUTHORIZATIONFAILED",
    b"EXPIRED",
    b"PRIVACYREQUIRED",
    b"CONTACTADMIN",
    b"NOPERM",
    b"INUSE",
    b"EXPUNGEISSUED",
    b"CORRUPTION",
    b"SERVERBUG",
    b"CLIENTBUG",
    b"CANNOT",
    b"LIMIT",
    b"OVERQUOTA",
    b"ALREADYEXISTS",
    b"NONEXISTENT",
    b"TOOBIG",
    b"MODIFIED",
}

LOG = logging.getLogger("test")


def test_every_kind_has_an_smtp_reply_and_an_imap_code() -> None:
    assert set(replies.REFUSALS) == set(ErrorKind)
    assert set(codes.REFUSALS) == set(ErrorKind)
    assert set(errors.DEFAULT_TEXTS) == set(ErrorKind)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_smtp_status_is_well_formed_and_as_permanent_as_its_kind(kind: ErrorKind) -> None:
    status = replies.REFUSALS[kind]
    assert 400 <= status.code < 600
    assert _ENHANCED.fullmatch(status.enhanced), status
    assert status.enhanced[0] == str(status.code)[0]
    assert (status.code >= 500) is kind.permanent


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_imap_code_is_an_rfc_response_code(kind: ErrorKind) -> None:
    code = codes.REFUSALS[kind]
    assert code is None or code in _IMAP_CODES
    assert (code == codes.UNAVAILABLE) is (not kind.permanent)


def test_named_statuses_say_their_code_in_their_name() -> None:
    named = {n: v for n, v in vars(replies).items() if isinstance(v, replies.Status)}
    assert set(named.values()) == set(replies.REFUSALS.values())
    for name, status in named.items():
        assert name.startswith(f"S{status.code}_"), name


def test_only_unavailable_is_temporary() -> None:
    assert [k for k in ErrorKind if not k.permanent] == [ErrorKind.UNAVAILABLE]
    assert not errors.TemporaryFailure().permanent
    assert errors.NotAllowed().permanent


@pytest.mark.parametrize(
    ("error", "smtp", "imap"),
    [
        (errors.UnknownRecipient("x"), "550 5.1.1 x", b"NONEXISTENT"),
        (errors.SenderMismatch("x"), "550 5.7.1 x", b"NOPERM"),
        (errors.NotAllowed("x"), "550 5.7.1 x", b"NOPERM"),
        (errors.AuthenticationRequired("x"), "530 5.7.0 x", b"AUTHENTICATIONFAILED"),
        (errors.AuthorizationFailed("x"), "535 5.7.8 x", b"AUTHORIZATIONFAILED"),
        (errors.InvalidMessage("x"), "550 5.6.0 x", b"CANNOT"),
        (errors.MessageTooBig("x"), "552 5.3.4 x", b"TOOBIG"),
        (errors.NoSuchMailbox("x"), "550 5.1.1 x", b"NONEXISTENT"),
        (errors.CannotDoThat("x"), "550 5.7.1 x", b"CANNOT"),
        (errors.ModifiedSince("x"), "550 5.0.0 x", b"MODIFIED"),
        (errors.TemporaryFailure("x"), "451 4.3.0 x", b"UNAVAILABLE"),
        (PalaisError("x"), "550 5.0.0 x", None),
    ],
)
def test_the_codes_each_refusal_had_before_kinds(
    error: PalaisError, smtp: str, imap: bytes | None
) -> None:
    """The wire stays byte-identical to the codes the errors used to carry."""
    assert replies.reply_for(error, LOG, "ctx") == smtp
    reply = refusals.reply_for(error, LOG, "ctx")
    assert (reply.status, reply.code, reply.text) == (b"NO", imap, "x")


def test_a_kind_given_at_raise_time_picks_the_codes_and_default_text() -> None:
    error = PalaisError(kind=ErrorKind.NO_SUCH_MAILBOX, reason="box 7 gone")
    assert error.text == "No such mailbox" and error.reason == "box 7 gone"
    assert replies.reply_for(error, LOG, "ctx") == "550 5.1.1 No such mailbox"
    assert refusals.reply_for(error, LOG, "ctx").code == codes.NONEXISTENT
    assert errors.NoSuchMailbox().text == "No such mailbox"


def test_unknown_errors_are_generic_and_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    boom = RuntimeError("SELECT * FROM secret")
    assert replies.reply_for(boom, LOG, "ctx") == replies.INTERNAL_ERROR
    reply = refusals.reply_for(boom, LOG, "ctx")
    assert (reply.status, reply.code, reply.text) == (b"NO", codes.SERVERBUG, "Internal error")
    assert refusals.detail_lines(boom) == []
    assert all(r.exc_info is not None for r in caplog.records if r.levelno >= logging.ERROR)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


def test_the_log_reason_never_reaches_the_client() -> None:
    error = errors.NotAllowed("You may not", reason="secret=42", details=["field a"])
    assert "secret" not in replies.reply_for(error, LOG, "ctx")
    assert "secret" not in refusals.reply_for(error, LOG, "ctx").text
    assert b"secret" not in b"".join(refusals.detail_lines(error))


# -- details: one line each ----------------------------------------------------------


def test_details_make_a_multiline_smtp_reply() -> None:
    error = errors.InvalidMessage(
        "The saisine is not valid",
        details=["actors[0].surname: required", "juridiction: unknown city"],
    )
    reply = replies.reply_for(error, LOG, "ctx")
    assert isinstance(reply, replies.MultilineReply)
    assert reply.split("\r\n") == [
        "550-5.6.0 The saisine is not valid",
        "550-5.6.0 actors[0].surname: required",
        "550 5.6.0 juridiction: unknown city",
    ]


def test_detail_lines_are_printable_short_and_bounded() -> None:
    many = [f"field {i}: bad\r\n250 2.0.0 injected" for i in range(replies.MAX_DETAILS + 5)]
    many[0] = "x" * 1000
    reply = replies.S550_INVALID_CONTENT.reply("Not valid\x00", many)
    lines = reply.split("\r\n")
    assert len(lines) == 1 + replies.MAX_DETAILS + 1
    assert lines[0] == "550-5.6.0 Not valid?"
    assert len(lines[1]) == len("550-5.6.0 ") + replies.MAX_LINE
    assert lines[2] == "550-5.6.0 field 1: bad??250 2.0.0 injected"
    assert lines[-1] == "550 5.6.0 ... and 5 more"
    assert all(line[:4] == "550-" for line in lines[:-1])


def test_imap_details_are_untagged_no_lines() -> None:
    error = errors.InvalidMessage("Not valid", details=["a: required", "b\r\n* BYE"])
    assert refusals.detail_lines(error) == [b"* NO a: required\r\n", b"* NO b  * BYE\r\n"]
    assert refusals.detail_lines(errors.InvalidMessage("Not valid")) == []
