"""Domain errors: a kind, a text safe to show, the details, and a reason for the log.

The domain speaks no protocol. Each error has a kind (what went wrong, in
the domain's words), which says whether it is permanent; a text safe to
show to the client; a list of details, each safe to show too (one per
invalid field, say, so that every validation error is reported at once);
and a separate reason for the log, never shown. Each front-end turns a
kind into its own reply code through one table at its edge
(``palais.gateway.replies.REFUSALS`` for SMTP, ``palais.gateway.imap.codes
.REFUSALS`` for IMAP); anything that is not a ``PalaisError`` becomes a
generic temporary failure there, its text never reaching the client.

Raise ``PalaisError(text, kind=ErrorKind.X, ...)``; the subclasses below
(``NotAllowed``, ``CannotDoThat``...) are that with their kind preset, and
stay for the code that raises or catches them by class.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import ClassVar, Final

__all__ = [
    "DEFAULT_TEXTS",
    "AuthenticationRequired",
    "AuthorizationFailed",
    "CannotDoThat",
    "ErrorKind",
    "InvalidMessage",
    "MessageTooBig",
    "ModifiedSince",
    "NoSuchMailbox",
    "NotAllowed",
    "PalaisError",
    "SenderMismatch",
    "TemporaryFailure",
    "UnknownRecipient",
]


class ErrorKind(enum.StrEnum):
    """What the domain refused, and why, in its own words."""

    REFUSED = "refused"  # nothing more precise to say
    UNKNOWN_RECIPIENT = "unknown-recipient"  # no such address here
    SENDER_MISMATCH = "sender-mismatch"  # a sender address that is not the client's
    NOT_ALLOWED = "not-allowed"  # this identity may not do that
    AUTHENTICATION_REQUIRED = "authentication-required"  # no acceptable certificate
    AUTHORIZATION_FAILED = "authorization-failed"  # asked to act as someone else
    INVALID_MESSAGE = "invalid-message"  # the content breaks a rule
    MESSAGE_TOO_BIG = "message-too-big"
    NO_SUCH_MAILBOX = "no-such-mailbox"  # no such box, or no longer that message
    NOT_POSSIBLE = "not-possible"  # a valid request the rules refuse (restore elsewhere...)
    MODIFIED_SINCE = "modified-since"  # a conditional change whose condition failed
    UNAVAILABLE = "unavailable"  # try again later: the only temporary kind

    @property
    def permanent(self) -> bool:
        """False if the same request may succeed later."""
        return self not in _TEMPORARY


_TEMPORARY: Final = frozenset({ErrorKind.UNAVAILABLE})

#: The text shown when a refusal gives none of its own.
DEFAULT_TEXTS: Final[Mapping[ErrorKind, str]] = MappingProxyType(
    {
        ErrorKind.REFUSED: "Request refused",
        ErrorKind.UNKNOWN_RECIPIENT: "No such recipient here",
        ErrorKind.SENDER_MISMATCH: "Sender address must be your own",
        ErrorKind.NOT_ALLOWED: "You are not allowed to do that",
        ErrorKind.AUTHENTICATION_REQUIRED: "A trusted client certificate is required",
        ErrorKind.AUTHORIZATION_FAILED: "That identity is not the one your certificate proves",
        ErrorKind.INVALID_MESSAGE: "The message is not acceptable",
        ErrorKind.MESSAGE_TOO_BIG: "Message too big",
        ErrorKind.NO_SUCH_MAILBOX: "No such mailbox",
        ErrorKind.NOT_POSSIBLE: "That operation is not possible on this mailbox",
        ErrorKind.MODIFIED_SINCE: "Modified since",
        ErrorKind.UNAVAILABLE: "Temporary failure, please try again later",
    }
)


class PalaisError(Exception):
    """A refusal by the domain.

    ``text`` and each of ``details`` are shown to the client; ``reason`` only
    goes to the log (it defaults to the text).
    """

    kind: ErrorKind = ErrorKind.REFUSED
    default_text: ClassVar[str] = DEFAULT_TEXTS[ErrorKind.REFUSED]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "default_text" not in cls.__dict__:
            cls.default_text = DEFAULT_TEXTS[cls.kind]

    def __init__(
        self,
        text: str | None = None,
        *,
        kind: ErrorKind | None = None,
        details: Iterable[str] = (),
        reason: str | None = None,
    ) -> None:
        if kind is not None and kind is not self.kind:
            self.kind = kind
            self.text = text or DEFAULT_TEXTS[kind]
        else:
            self.text = text or self.default_text
        self.details: tuple[str, ...] = tuple(details)
        self.reason = reason or self.text
        super().__init__(self.reason)

    @property
    def permanent(self) -> bool:
        return self.kind.permanent


class UnknownRecipient(PalaisError):
    kind = ErrorKind.UNKNOWN_RECIPIENT


class SenderMismatch(PalaisError):
    kind = ErrorKind.SENDER_MISMATCH


class NotAllowed(PalaisError):
    kind = ErrorKind.NOT_ALLOWED


class AuthenticationRequired(PalaisError):
    kind = ErrorKind.AUTHENTICATION_REQUIRED


class AuthorizationFailed(PalaisError):
    kind = ErrorKind.AUTHORIZATION_FAILED


class InvalidMessage(PalaisError):
    kind = ErrorKind.INVALID_MESSAGE


class MessageTooBig(PalaisError):
    kind = ErrorKind.MESSAGE_TOO_BIG


class NoSuchMailbox(PalaisError):
    kind = ErrorKind.NO_SUCH_MAILBOX


class CannotDoThat(PalaisError):
    """A valid request the domain refuses (e.g. restoring to the wrong box)."""

    kind = ErrorKind.NOT_POSSIBLE


class ModifiedSince(PalaisError):
    kind = ErrorKind.MODIFIED_SINCE


class TemporaryFailure(PalaisError):
    kind = ErrorKind.UNAVAILABLE
