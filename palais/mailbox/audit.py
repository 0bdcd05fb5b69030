"""The audit log's vocabulary: what is recorded, and the port refusals go through.

Stdlib only, like the rest of the domain: the front-ends report refusals
through ``RefusalAudit`` without knowing that storage keeps them, and
operators' tools name their changes with ``AuditAction``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from palais.mailbox.errors import ErrorKind


class AuditAction(enum.StrEnum):
    """Every kind of audit event; the value is what the log stores and exports."""

    TRUST_ADDED = "trust-added"
    TRUST_REMOVED = "trust-removed"
    CRL_IMPORTED = "crl-imported"
    CRL_FETCHED = "crl-fetched"
    ACCOUNT_DEACTIVATED = "account-deactivated"
    ACCOUNT_REACTIVATED = "account-reactivated"
    ACCOUNT_MERGED = "account-merged"
    CERTIFICATE_LINKED = "certificate-linked"
    DELEGATION_GRANTED = "delegation-granted"
    DELEGATION_REVOKED = "delegation-revoked"
    ACTED_FOR = "acted-for"  # a delegate's act for a lawyer: "X for Y"
    DEPARTURE_SET = "departure-set"
    DEPARTURE_CANCELLED = "departure-cancelled"
    DEPARTURE_CARRIED_OUT = "departure-carried-out"
    CONNECTION_REFUSED = "connection-refused"
    COMMAND_REFUSED = "command-refused"
    SESSION_CLOSED = "session-closed"


# The domain refusals of a command that the audit log keeps: the ones that
# say no to someone. A box that does not exist, a conditional STORE whose
# condition failed, or a temporary failure are everyday protocol answers.
AUDITED_REFUSALS: Final = frozenset(
    {
        ErrorKind.REFUSED,
        ErrorKind.UNKNOWN_RECIPIENT,
        ErrorKind.SENDER_MISMATCH,
        ErrorKind.NOT_ALLOWED,
        ErrorKind.AUTHENTICATION_REQUIRED,
        ErrorKind.AUTHORIZATION_FAILED,
        ErrorKind.INVALID_MESSAGE,
        ErrorKind.MESSAGE_TOO_BIG,
        ErrorKind.NOT_POSSIBLE,
    }
)

# Who acted when nobody identified did: the gateway itself refusing a peer.
GATEWAY_ACTOR = "gateway"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event of the log, as read back and exported."""

    id: int
    at: datetime  # UTC
    actor: str  # an address, "operator:<login>", or GATEWAY_ACTOR
    action: AuditAction
    subject: str | None = None  # the account, CA, ... the event is about
    listener: str | None = None  # smtps, submission, court, imaps, https
    peer: str | None = None  # the remote address, "host:port"
    reason: str | None = None  # the reason the log gives, never shown to a client
    detail: Mapping[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """The export format: one JSON object per event (JSON lines)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action.value,
            "subject": self.subject,
            "listener": self.listener,
            "peer": self.peer,
            "reason": self.reason,
            "detail": dict(self.detail),
        }


class RefusalAudit(Protocol):
    """Where a front-end reports what it refused; must never block the caller."""

    def refused(
        self,
        action: AuditAction,
        *,
        listener: str,
        peer: str | None,
        reason: str,
        subject: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None: ...
