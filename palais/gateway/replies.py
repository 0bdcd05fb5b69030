"""SMTP reply codes as named constants, and the one translator of errors."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, NamedTuple

from palais.gateway import tls
from palais.mailbox.errors import ErrorKind, PalaisError

OK = "250 2.0.0 OK"
AUTH_OK = "235 2.7.0 Authentication successful (certificate identity)"
STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
CERT_REFUSED = "530 5.7.0 Your client certificate is not accepted here"
ENCRYPTION_REQUIRED = "538 5.7.11 Encryption required for requested authentication mechanism"
ALREADY_AUTHENTICATED = "503 5.5.1 Already authenticated"
ONLY_EXTERNAL = "504 5.5.4 Only AUTH EXTERNAL (your certificate) is accepted; passwords never"
AUTHZ_MISMATCH = "535 5.7.8 Authorization identity does not match your certificate"
AUTH_ABORTED = "501 5.7.0 Authentication aborted"
BAD_BASE64 = "501 5.5.2 Cannot decode base64"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
NEED_MAIL = "503 5.5.1 need MAIL command"
NEED_RCPT = "503 5.5.1 Need RCPT command"
BAD_SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax"
AUTH_LINE_TOO_LONG = "500 5.5.6 Authentication exchange line is too long"
MESSAGE_TOO_BIG = "552 5.3.4 Message exceeds the size limit"
INTERNAL_ERROR = "451 4.3.0 Internal error, please try again later"

# Enhanced status codes (RFC 3463) for replies that aiosmtpd words without one.
DEFAULT_ENHANCED: dict[str, str] = {
    "221": "2.0.0",
    "235": "2.7.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.7.0",
    "451": "4.3.0",
    "452": "4.5.3",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
    "555": "5.5.4",
}
_NO_ENHANCED = {"220", "334", "354"}


# Why a STARTTLS handshake was refused, for the refusal metric: a closed
# vocabulary, the implicit-TLS listeners' words (palais.gateway.tls).
TLS_REFUSAL_REASONS = (tls.TLS_NO_CERTIFICATE, tls.TLS_CERTIFICATE, tls.TLS_PROTOCOL)


def printable(text: str) -> str:
    """A reply text safe to send: each control character, line break or
    undecodable byte (a lone surrogate) becomes "?"."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def tls_refusal(error: BaseException | None) -> tuple[str, str]:
    """(word, detail) for a failed TLS handshake.

    The word is one of ``TLS_REFUSAL_REASONS``, or ``tls.TLS_ABORTED`` when the
    client left (no refusal); the detail is OpenSSL's wording (a reason code
    or a verification message), never client text.
    """
    if error is None or not isinstance(error, ssl.SSLError):
        return tls.TLS_ABORTED, type(error).__name__ if error is not None else "unknown"
    return tls.handshake_failure(error)


def with_enhanced_code(status: str) -> str:
    """Insert an enhanced status code into a one-line reply that lacks one."""
    code, sep, text = status.partition(" ")
    if not sep or code in _NO_ENHANCED or len(code) != 3:
        return status
    first = text.split(" ", 1)[0]
    if first.count(".") == 2 and first.replace(".", "").isdigit():
        return status
    enhanced = DEFAULT_ENHANCED.get(code)
    if enhanced is None:
        return status
    text = text.removeprefix("Error: ").removeprefix("Error ")
    return f"{code} {enhanced} {text}"


# -- refusals: the domain's error kinds as SMTP replies --------------------------

# A detail line stays within the 512 octets RFC 5321 allows a reply line
# (4.5.3.1.5): past this many characters it is cut.
MAX_LINE = 400
# Details beyond this many are summed up in one last line.
MAX_DETAILS = 50


class Status(NamedTuple):
    """A reply code with its enhanced status code (RFC 3463)."""

    code: int
    enhanced: str

    def reply(self, text: str, details: Sequence[str] = ()) -> str:
        """The reply: one line, or the text then one line per detail.

        A one-line reply is made printable by ``PalaisSMTP.push``; a
        multi-line one is a ``MultilineReply`` whose lines already are.
        """
        if not details:
            return f"{self.code} {self.enhanced} {text}"
        shown = list(details[:MAX_DETAILS])
        if len(details) > MAX_DETAILS:
            shown.append(f"... and {len(details) - MAX_DETAILS} more")
        lines = [_cut(printable(line)) for line in (text, *shown)]
        last = len(lines) - 1
        return MultilineReply(
            "\r\n".join(
                f"{self.code}{' ' if i == last else '-'}{self.enhanced} {line}"
                for i, line in enumerate(lines)
            )
        )


class MultilineReply(str):
    """A reply of several lines (joined by CRLF), each already printable."""

    __slots__ = ()


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


S451_TRY_AGAIN = Status(451, "4.3.0")
S530_AUTHENTICATION_REQUIRED = Status(530, "5.7.0")
S535_AUTHORIZATION_FAILED = Status(535, "5.7.8")
S550_REFUSED = Status(550, "5.0.0")
S550_NO_SUCH_ADDRESS = Status(550, "5.1.1")
S550_NOT_PERMITTED = Status(550, "5.7.1")
S550_INVALID_CONTENT = Status(550, "5.6.0")
S552_TOO_BIG = Status(552, "5.3.4")

#: Each error kind's reply. Every kind has one (tested); a temporary kind a 4xx.
REFUSALS: Final[Mapping[ErrorKind, Status]] = MappingProxyType(
    {
        ErrorKind.REFUSED: S550_REFUSED,
        ErrorKind.UNKNOWN_RECIPIENT: S550_NO_SUCH_ADDRESS,
        ErrorKind.SENDER_MISMATCH: S550_NOT_PERMITTED,
        ErrorKind.NOT_ALLOWED: S550_NOT_PERMITTED,
        ErrorKind.AUTHENTICATION_REQUIRED: S530_AUTHENTICATION_REQUIRED,
        ErrorKind.AUTHORIZATION_FAILED: S535_AUTHORIZATION_FAILED,
        ErrorKind.INVALID_MESSAGE: S550_INVALID_CONTENT,
        ErrorKind.MESSAGE_TOO_BIG: S552_TOO_BIG,
        ErrorKind.NO_SUCH_MAILBOX: S550_NO_SUCH_ADDRESS,
        ErrorKind.NOT_POSSIBLE: S550_NOT_PERMITTED,
        ErrorKind.MODIFIED_SINCE: S550_REFUSED,
        ErrorKind.UNAVAILABLE: S451_TRY_AGAIN,
    }
)


def reply_for(error: BaseException, log: logging.Logger, context: str) -> str:
    """The one place where an exception becomes an SMTP reply.

    A domain error's kind picks the code, its text and details are shown,
    its reason logged; anything else is a bug or an outage: logged with its
    traceback, answered with a generic 451 that says nothing of it.
    """
    if isinstance(error, PalaisError):
        status = REFUSALS.get(error.kind)
        if status is not None:
            log.info("refused %s reason=%r", context, error.reason)
            return status.reply(error.text, error.details)
    log.error("internal error %s", context, exc_info=error)
    return INTERNAL_ERROR
