"""The front-ends' side of the audit log: one call per refusal, the same fields everywhere.

Each listener hands what it refused to a ``RefusalAudit`` (queued, never
blocking the loop): a refused connection with its reason and, when the
client showed a verified certificate, the address it claims; a refused
command with the identity, the verb and the domain's reason. Nothing here
is shown to a client.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509

from palais.gateway.admission import peer_text
from palais.mailbox.audit import AUDITED_REFUSALS, AuditAction, RefusalAudit
from palais.mailbox.errors import PalaisError

__all__ = [
    "LimitReached",
    "certificate_address",
    "command_refused",
    "connection_refused",
    "limit_refused",
    "protocol_refused",
]


def certificate_address(der: bytes | None) -> str | None:
    """The e-mail address a client certificate names (its first rfc822Name), if any.

    The certificate passed the listener's TLS verification, so the address
    is the holder's as its CA vouches for it: the audit's subject, so that
    ``palais admin audit --account`` finds the refusals of that account.
    """
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = names.get_values_for_type(x509.RFC822Name)
    except (ValueError, x509.ExtensionNotFound):
        return None
    return found[0].strip().lower() if found else None


def connection_refused(
    audit: RefusalAudit | None,
    *,
    listener: str,
    peer: Any,
    reason: str,
    der: bytes | None = None,
    outcome: str | None = None,
) -> None:
    """One refused connection: a failed handshake, or a certificate no account may use."""
    if audit is None:
        return
    detail: dict[str, object] = {}
    if der:
        detail["fingerprint"] = hashlib.sha256(der).hexdigest()
    if outcome:
        detail["outcome"] = outcome
    audit.refused(
        AuditAction.CONNECTION_REFUSED,
        listener=listener,
        peer=peer_text(peer),
        reason=reason,
        subject=certificate_address(der),
        detail=detail,
    )


class LimitReached(Exception):
    """A command stopped by a configured limit (IMAP ``NO [LIMIT]``): ``limit`` names the
    setting. Handed to ``command_refused`` like a domain refusal."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


def command_refused(
    audit: RefusalAudit | None,
    *,
    listener: str,
    peer: Any,
    identity: str | None,
    command: str,
    error: BaseException,
) -> None:
    """A command the domain refused (``AUDITED_REFUSALS``; an internal error is no
    refusal), or one a configured limit stopped (``LimitReached``)."""
    if audit is None:
        return
    if isinstance(error, LimitReached):
        audit.refused(
            AuditAction.COMMAND_REFUSED,
            listener=listener,
            peer=peer_text(peer),
            reason=f"limit reached: {error.limit}",
            subject=identity,
            detail={"command": command, "limit": error.limit},
        )
        return
    if not isinstance(error, PalaisError) or error.kind not in AUDITED_REFUSALS:
        return
    audit.refused(
        AuditAction.COMMAND_REFUSED,
        listener=listener,
        peer=peer_text(peer),
        reason=error.reason,
        subject=identity,
        detail={"command": command, "kind": error.kind.value},
    )


def protocol_refused(
    audit: RefusalAudit | None,
    *,
    listener: str,
    peer: Any,
    identity: str | None,
    command: str,
    reply: str,
) -> None:
    """A command the protocol front-end itself refused (no STARTTLS yet, a SASL
    mechanism other than EXTERNAL, an address that is not UTF-8, a message over
    the size limit, an HTTP request the caller's role may not make...).

    ``reply`` is what the client was told, the gateway's own words (an SMTP
    reply, an HTTP status and reason), never client input: it is the reason.
    """
    if audit is None:
        return
    code = reply.split(" ", 1)[0]
    audit.refused(
        AuditAction.COMMAND_REFUSED,
        listener=listener,
        peer=peer_text(peer),
        reason=reply,
        subject=identity,
        detail={"command": command, "reply": code},
    )


def limit_refused(
    audit: RefusalAudit | None,
    *,
    listener: str,
    peer: Any,
    limit: str,
    unrecorded_before: int = 0,
) -> None:
    """A connection refused by a cap (too many connections, from one address...).

    Called at most once per listener and interval by the admission gate, as
    its log line is: a flood is one event per second saying how many refusals
    went unrecorded since the previous one (the metrics count each).
    """
    if audit is None:
        return
    audit.refused(
        AuditAction.CONNECTION_REFUSED,
        listener=listener,
        peer=peer_text(peer),
        reason=f"limit reached: {limit}",
        detail={"outcome": f"limit-{limit}", "unrecorded_before": unrecorded_before},
    )
