"""Who is speaking: roles and the identity a verified certificate proves."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    AVOCAT = "avocat"
    COLLABORATEUR = "collaborateur"
    GREFFIER = "greffier"
    MAGISTRAT = "magistrat"
    JURIDICTION = "juridiction"  # a court's case-management system
    ADMIN = "admin"


class AnchorGroup(enum.StrEnum):
    """Which trust anchor vouches for a role: one CA per community."""

    AVOCATS = "avocats"  # bar council's CA: lawyers and their staff
    JUSTICE = "justice"  # Ministry of Justice: clerks and magistrates
    JURIDICTIONS = "juridictions"  # court systems' CA (server certificates)
    ADMIN = "admin"


ROLES_BY_ANCHOR: dict[AnchorGroup, frozenset[Role]] = {
    AnchorGroup.AVOCATS: frozenset({Role.AVOCAT, Role.COLLABORATEUR}),
    AnchorGroup.JUSTICE: frozenset({Role.GREFFIER, Role.MAGISTRAT}),
    AnchorGroup.JURIDICTIONS: frozenset({Role.JURIDICTION}),
    AnchorGroup.ADMIN: frozenset({Role.ADMIN}),
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
