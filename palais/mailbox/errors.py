"""Domain errors that carry what a protocol reply needs, and nothing unsafe.

Each error knows whether it is permanent, its enhanced status code (RFC 3463),
the IMAP response code that fits, a text safe to show to the client, and a
separate reason for the log. One translator per front-end turns them into
replies; anything that is not a ``PalaisError`` becomes a generic temporary
failure without its text ever reaching the client.
"""

from __future__ import annotations


class PalaisError(Exception):
    permanent: bool = True
    smtp_code: int = 550
    enhanced: str = "5.0.0"
    imap_code: str | None = None
    default_text: str = "Request refused"

    def __init__(self, text: str | None = None, *, reason: str | None = None) -> None:
        self.text = text or self.default_text
        self.reason = reason or self.text
        super().__init__(self.reason)


class UnknownRecipient(PalaisError):
    smtp_code, enhanced, imap_code = 550, "5.1.1", "NONEXISTENT"
    default_text = "No such recipient here"


class SenderMismatch(PalaisError):
    smtp_code, enhanced, imap_code = 550, "5.7.1", "NOPERM"
    default_text = "Sender address must be your own"


class NotAllowed(PalaisError):
    smtp_code, enhanced, imap_code = 550, "5.7.1", "NOPERM"
    default_text = "You are not allowed to do that"


class AuthenticationRequired(PalaisError):
    smtp_code, enhanced, imap_code = 530, "5.7.0", "AUTHENTICATIONFAILED"
    default_text = "A trusted client certificate is required"


class AuthorizationFailed(PalaisError):
    smtp_code, enhanced, imap_code = 535, "5.7.8", "AUTHORIZATIONFAILED"
    default_text = "That identity is not the one your certificate proves"


class InvalidMessage(PalaisError):
    smtp_code, enhanced, imap_code = 550, "5.6.0", "CANNOT"
    default_text = "The message is not acceptable"


class MessageTooBig(PalaisError):
    smtp_code, enhanced, imap_code = 552, "5.3.4", "TOOBIG"
    default_text = "Message too big"


class NoSuchMailbox(PalaisError):
    smtp_code, enhanced, imap_code = 550, "5.1.1", "NONEXISTENT"
    default_text = "No such mailbox"


class CannotDoThat(PalaisError):
    """A valid request the domain refuses (e.g. restoring to the wrong box)."""

    smtp_code, enhanced, imap_code = 550, "5.7.1", "CANNOT"
    default_text = "That operation is not possible on this mailbox"


class ModifiedSince(PalaisError):
    smtp_code, enhanced, imap_code = 550, "5.0.0", "MODIFIED"
    default_text = "Modified since"


class TemporaryFailure(PalaisError):
    permanent = False
    smtp_code, enhanced, imap_code = 451, "4.3.0", "UNAVAILABLE"
    default_text = "Temporary failure, please try again later"
