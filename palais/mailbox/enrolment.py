"""Enrolment: what a verified certificate's connection does to the directory.

Pure rules. The directory gathers the facts (the account this certificate is
linked to, the account with its address) and carries out the decision in one
transaction; the decision itself is made here.

The identity lifecycle (DESIGN.md): the first connection with an unknown but
trusted certificate registers its holder; a renewed card (A) whose old
certificate is still valid is linked to the account by its holder, (B) one
whose old certificate expired or was revoked is linked by an operator; (C) a
duplicate account is merged by an operator.

What the directory records today cannot tell A from B: it keeps no validity
dates for the certificates it has seen, and revocation is checked only for
the certificate presented. A trusted certificate for a known address and the
same role is therefore linked to that account, as the issuing authority
vouches for both; a role that changed, an address already used by a service
or a dossier, or a certificate linked to another account is referred to an
operator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from palais.mailbox.errors import NotAllowed
from palais.mailbox.identity import CertificateIdentity, Identity, Role

__all__ = [
    "AccountFacts",
    "Enrolment",
    "EnrolmentAction",
    "EnrolmentFacts",
    "EnrolmentRefused",
    "ReferredToOperator",
    "decide_enrolment",
]


class EnrolmentAction(enum.Enum):
    KNOWN = "known"  # the certificate's own account
    REGISTER = "register"  # first connection: create the account
    LINK_RENEWED_CARD = "link renewed card"  # a new card for an existing account


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What the directory knows of one account."""

    account_id: int
    address: str
    role: Role
    display_name: str
    active: bool
    service: str | None = None  # the address of the service (greffe) it belongs to

    @property
    def mailbox_owner(self) -> str:
        """Whose boxes it reads: a clerk its service's shared mailbox, others their own."""
        return self.service or self.address


@dataclass(frozen=True, slots=True)
class EnrolmentFacts:
    """What the directory knows that bears on one certificate."""

    holder: AccountFacts | None  # the account this certificate is linked to
    # For a certificate linked to no account (the others need no more):
    same_address: AccountFacts | None = None  # the account with its address
    address_reserved: bool = False  # its address is a service's or a dossier's


class EnrolmentRefused(NotAllowed):
    """The certificate may not act: its account is deactivated."""

    default_text = "This account is deactivated"


class ReferredToOperator(NotAllowed):
    """The directory and the certificate disagree; an operator must settle it."""

    default_text = "Your certificate does not match your account; an operator must review it"


@dataclass(frozen=True, slots=True)
class Enrolment:
    action: EnrolmentAction
    account: AccountFacts | None  # None for REGISTER: the account does not exist yet

    def identity(self, cert: CertificateIdentity, account_id: int | None = None) -> Identity:
        """The identity the certificate proves once the decision is carried out.

        ``account_id``: the account created for REGISTER.
        """
        if self.account is None:
            if account_id is None:
                raise ValueError("a registration's identity needs the created account's id")
            return Identity(
                account_id=account_id,
                address=cert.address,
                role=cert.role,
                display_name=cert.display_name,
                fingerprint=cert.fingerprint,
                mailbox_owner=cert.address,
            )
        a = self.account
        return Identity(
            account_id=a.account_id,
            address=a.address,
            role=a.role,
            display_name=a.display_name,
            fingerprint=cert.fingerprint,
            mailbox_owner=a.mailbox_owner,
        )


def decide_enrolment(cert: CertificateIdentity, facts: EnrolmentFacts) -> Enrolment:
    """KNOWN, REGISTER or LINK_RENEWED_CARD; raises ``EnrolmentRefused`` or
    ``ReferredToOperator`` otherwise."""
    holder = facts.holder
    if holder is not None:
        if not holder.active:
            raise EnrolmentRefused(reason=f"inactive account {holder.address}")
        if holder.address != cert.address or holder.role != cert.role:
            raise ReferredToOperator(
                reason=f"certificate {cert.fingerprint} bound to {holder.address} "
                f"({holder.role}), certificate says {cert.address} ({cert.role})"
            )
        return Enrolment(EnrolmentAction.KNOWN, holder)
    account = facts.same_address
    if account is None:
        if facts.address_reserved:
            raise ReferredToOperator(
                reason=f"certificate {cert.fingerprint} names {cert.address}, "
                "a service's or a dossier's address"
            )
        return Enrolment(EnrolmentAction.REGISTER, None)
    if not account.active:
        raise EnrolmentRefused(
            reason=f"new certificate {cert.fingerprint} for inactive account {account.address}"
        )
    if account.role != cert.role:
        raise ReferredToOperator(
            reason=f"{cert.address} is a {account.role}, certificate says {cert.role}"
        )
    return Enrolment(EnrolmentAction.LINK_RENEWED_CARD, account)
