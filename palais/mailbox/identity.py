"""Who is speaking: roles and the identity a verified certificate proves."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    """What an account is; the value is what the directory stores."""

    AVOCAT = "avocat"
    COLLABORATEUR = "collaborateur"
    GREFFIER = "greffier"
    MAGISTRAT = "magistrat"
    # A court's case-management system (a machine, e.g. Portalis), not the
    # court itself: a court ("juridiction") is the name a service and its
    # dossiers belong to. Stored as "juridiction" before migration 0002.
    COURT_SYSTEM = "systeme_juridiction"
    ADMIN = "admin"


class TrustCommunity(enum.StrEnum):
    """A community whose certificates one trust anchor (CA) issues.

    The anchor that issued a certificate bounds the roles it may carry
    (``ROLES_BY_COMMUNITY``). The value names the community's ``[trust]``
    setting and its anchor and CRL files.
    """

    AVOCATS = "avocats"  # bar council's CA: lawyers and their staff
    JUSTICE = "justice"  # Ministry of Justice: clerks and magistrates
    COURT_SYSTEMS = "juridictions"  # court systems' CA (server certificates)
    ADMIN = "admin"


ROLES_BY_COMMUNITY: dict[TrustCommunity, frozenset[Role]] = {
    TrustCommunity.AVOCATS: frozenset({Role.AVOCAT, Role.COLLABORATEUR}),
    TrustCommunity.JUSTICE: frozenset({Role.GREFFIER, Role.MAGISTRAT}),
    TrustCommunity.COURT_SYSTEMS: frozenset({Role.COURT_SYSTEM}),
    TrustCommunity.ADMIN: frozenset({Role.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """What a verified client certificate says about its holder."""

    role: Role
    address: str  # lower-cased e-mail address from the subjectAltName
    display_name: str
    fingerprint: str  # SHA-256 of the DER certificate, lower-case hex
    subject: str  # RFC 4514 string, for logs
    serial_number: str | None = None  # bar number / agent number if present


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated account acting in a session."""

    account_id: int
    address: str
    role: Role
    display_name: str
    fingerprint: str
    # The mailbox owner whose boxes this identity reads: its own address, or
    # the address of the service (greffe) whose shared mailbox a clerk uses.
    mailbox_owner: str
