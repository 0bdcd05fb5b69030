"""SMTP reply codes as named constants, and the one translator of errors."""

from __future__ import annotations

import logging
import ssl

from palais.gateway import tls
from palais.mailbox.errors import PalaisError

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
    code = str(error.reason or type(error).__name__)
    verify = getattr(error, "verify_message", None)
    detail = f"{code}: {verify}" if verify else code
    if code == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return tls.TLS_NO_CERTIFICATE, detail
    if isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE" in code:
        return tls.TLS_CERTIFICATE, detail
    return tls.TLS_PROTOCOL, detail


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


def reply_for(error: BaseException, log: logging.Logger, context: str) -> str:
    """The one place where an exception becomes an SMTP reply."""
    if isinstance(error, PalaisError):
        log.info("refused %s reason=%r", context, error.reason)
        return f"{error.smtp_code} {error.enhanced} {error.text}"
    log.error("internal error %s", context, exc_info=error)
    return INTERNAL_ERROR
