"""The one place where an error becomes an IMAP NO (``codes.REFUSALS``).

A domain error's kind picks the response code and its text is shown, each
of its details as an untagged ``NO`` line before the tagged one; anything
else is a bug or an outage: logged with its traceback, answered with
``NO [SERVERBUG] Internal error``, its text never reaching the client.
"""

from __future__ import annotations

import logging

from palais.gateway.imap import codes
from palais.gateway.imap.commands.registry import Reply
from palais.mailbox.errors import PalaisError

__all__ = ["INTERNAL_ERROR", "detail_lines", "reply_for"]

INTERNAL_ERROR = Reply(b"NO", "Internal error", codes.SERVERBUG)
# As many detail lines as an SMTP reply shows (palais.gateway.replies).
MAX_DETAILS = 50


def reply_for(error: Exception, log: logging.Logger, context: str) -> Reply:
    """The tagged NO for ``error`` (a refusal, or an internal error)."""
    if isinstance(error, PalaisError) and error.kind in codes.REFUSALS:
        return Reply(b"NO", error.text, codes.REFUSALS[error.kind])
    # Never show the exception to the client: its text may carry paths,
    # SQL or another user's data.
    log.error("imap command failed %s", context, exc_info=error)
    return INTERNAL_ERROR


def detail_lines(error: Exception) -> list[bytes]:
    """The untagged ``* NO`` lines that list a refusal's details, CRLF included."""
    if not isinstance(error, PalaisError) or error.kind not in codes.REFUSALS:
        return []
    details = list(error.details[:MAX_DETAILS])
    if len(error.details) > MAX_DETAILS:
        details.append(f"... and {len(error.details) - MAX_DETAILS} more")
    return [b"* NO " + _one_line(detail) + b"\r\n" for detail in details]


def _one_line(text: str) -> bytes:
    return text.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
