"""Response codes (RFC 3501, 4315, 5530, 7162) and capability lists as named constants,
and the table that turns the domain's error kinds into response codes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from palais.mailbox.errors import ErrorKind

__all__ = [
    "ALREADYEXISTS",
    "AUTHENTICATIONFAILED",
    "AUTHORIZATIONFAILED",
    "BADCHARSET",
    "CANNOT",
    "CAPABILITIES_AFTER_AUTH",
    "CAPABILITIES_BEFORE_AUTH",
    "CLIENTBUG",
    "EXPUNGEISSUED",
    "LIMIT",
    "MODIFIED",
    "NONEXISTENT",
    "NOPERM",
    "REFUSALS",
    "SERVERBUG",
    "TOOBIG",
    "TRYCREATE",
    "UNAVAILABLE",
    "UNKNOWN_CTE",
]

ALREADYEXISTS = b"ALREADYEXISTS"
AUTHENTICATIONFAILED = b"AUTHENTICATIONFAILED"
AUTHORIZATIONFAILED = b"AUTHORIZATIONFAILED"
BADCHARSET = b"BADCHARSET (UTF-8 US-ASCII)"
CANNOT = b"CANNOT"
CLIENTBUG = b"CLIENTBUG"
EXPUNGEISSUED = b"EXPUNGEISSUED"
LIMIT = b"LIMIT"
MODIFIED = b"MODIFIED"
NONEXISTENT = b"NONEXISTENT"
NOPERM = b"NOPERM"
SERVERBUG = b"SERVERBUG"
TOOBIG = b"TOOBIG"
TRYCREATE = b"TRYCREATE"
UNAVAILABLE = b"UNAVAILABLE"
UNKNOWN_CTE = b"UNKNOWN-CTE"  # RFC 3516: BINARY cannot decode a part
READ_ONLY = b"READ-ONLY"
READ_WRITE = b"READ-WRITE"

#: Each domain error kind as a tagged ``NO [code] text`` (None: a NO without
#: a response code). Every kind has an entry (tested); anything else that
#: fails a command is ``NO [SERVERBUG]`` (``palais.gateway.imap.refusals``).
REFUSALS: Final[Mapping[ErrorKind, bytes | None]] = MappingProxyType(
    {
        ErrorKind.REFUSED: None,
        ErrorKind.UNKNOWN_RECIPIENT: NONEXISTENT,
        ErrorKind.SENDER_MISMATCH: NOPERM,
        ErrorKind.NOT_ALLOWED: NOPERM,
        ErrorKind.AUTHENTICATION_REQUIRED: AUTHENTICATIONFAILED,
        ErrorKind.AUTHORIZATION_FAILED: AUTHORIZATIONFAILED,
        ErrorKind.INVALID_MESSAGE: CANNOT,
        ErrorKind.MESSAGE_TOO_BIG: TOOBIG,
        ErrorKind.NO_SUCH_MAILBOX: NONEXISTENT,
        ErrorKind.NOT_POSSIBLE: CANNOT,
        ErrorKind.MODIFIED_SINCE: MODIFIED,
        ErrorKind.UNAVAILABLE: UNAVAILABLE,
    }
)

# LOGINDISABLED is deliberately absent: LOGIN only selects the identity the
# client certificate already proves, so it is safe to offer.
CAPABILITIES_BEFORE_AUTH = (
    b"IMAP4rev1",
    b"IMAP4rev2",
    b"SASL-IR",
    b"LITERAL+",
    b"ID",
    b"ENABLE",
    b"AUTH=EXTERNAL",
)
CAPABILITIES_AFTER_AUTH = (
    b"IMAP4rev1",
    # RFC 9051: what it folds in is all here (LITERAL- within LITERAL+); a
    # session behaves rev2 only after ENABLE IMAP4rev2 (Appendix A).
    b"IMAP4rev2",
    b"SASL-IR",
    b"LITERAL+",
    b"ID",
    b"ENABLE",
    b"IDLE",
    b"UIDPLUS",
    b"MOVE",
    b"SPECIAL-USE",
    b"NAMESPACE",
    b"UNSELECT",
    b"CHILDREN",
    b"ESEARCH",
    b"CONDSTORE",
    b"UTF8=ACCEPT",
    b"LIST-EXTENDED",
    # RFC 5256 and RFC 5267 (no CONTEXT=SORT: no PARTIAL, no UPDATE).
    b"SORT",
    b"ESORT",
    b"THREAD=ORDEREDSUBJECT",
    b"THREAD=REFERENCES",
)
