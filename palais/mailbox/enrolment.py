"""Enrolment: what a verified certificate's connection does to the directory.

Pure rules. The directory gathers the facts (the account this certificate is
linked to, the account with its address) and carries out the decision in one
transaction; the decision itself is made here.

The identity lifecycle (DESIGN.md): the first connection with an unknown but
trusted certificate registers its holder; a renewed card (A) whose old
certificate is still valid is linked to the account by its holder, (B) one
whose old certificate expired or was revoked is linked by an operator; (C) a
duplicate account is merged by an operator.

Accounts are keyed by the holder's stable identifier, the card subject's
serialNumber (bar number, agent number), unique within the community whose
CA issues it. What the directory records cannot tell A from B (it keeps no
validity dates for the certificates it has seen, and revocation is checked
only for the certificate presented), and it need not: a trusted card with
the identifier, role and address of an account is that holder's renewed card
(A), linked at once, as the issuing authority vouches for all three. Any
disagreement goes to an operator (B, ``palais admin cert link``): the same
identifier with another role or address, or an address whose account has
another identifier or the card none. Accounts from before identifiers
(none recorded) keep the older rule: a card for their address and role is
linked, and gives them its identifier.

A certificate linked to an account (by its holder's renewal or by an
operator's link or merge) proves that account whatever address it names; a
role other than the account's is referred. A certificate nobody knows is
registered on first use, or refused when the instance says so
(``EnrolmentPolicy``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from palais.mailbox.errors import NotAllowed
from palais.mailbox.identity import (
    ROLES_BY_COMMUNITY,
    CertificateIdentity,
    Identity,
    Role,
    TrustCommunity,
)

__all__ = [
    "AccountFacts",
    "Enrolment",
    "EnrolmentAction",
    "EnrolmentFacts",
    "EnrolmentPolicy",
    "EnrolmentRefused",
    "IdentityChangeRefused",
    "LinkPlan",
    "MergePlan",
    "ReferredToOperator",
    "RegistrationClosed",
    "community_of",
    "decide_enrolment",
    "decide_link",
    "decide_merge",
]


class EnrolmentPolicy(enum.StrEnum):
    """What a trusted certificate nobody knows gets: ``[accounts] enrolment``."""

    REGISTER = "register"  # an account on first use (the default)
    REFUSE = "refuse"  # refused: operators create the accounts


def community_of(role: Role) -> TrustCommunity:
    """The community whose CA issues a role's cards: the scope of its identifiers."""
    for community, roles in ROLES_BY_COMMUNITY.items():
        if role in roles:
            return community
    raise ValueError(f"no community issues {role}")  # pragma: no cover - every role has one


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
    identifier: str | None = None  # bar / agent number, None for accounts from before 0006

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
    # The account with its identifier in its community (None without one).
    same_identifier: AccountFacts | None = None


class EnrolmentRefused(NotAllowed):
    """The certificate may not act: its account is deactivated."""

    default_text = "This account is deactivated"


class ReferredToOperator(NotAllowed):
    """The directory and the certificate disagree; an operator must settle it."""

    default_text = "Your certificate does not match your account; an operator must review it"


class RegistrationClosed(ReferredToOperator):
    """Nobody knows this certificate and the instance registers nobody on first use."""

    default_text = "No account for this certificate; an operator must create it"


@dataclass(frozen=True, slots=True)
class Enrolment:
    action: EnrolmentAction
    account: AccountFacts | None  # None for REGISTER: the account does not exist yet
    # LINK_RENEWED_CARD of an account without an identifier: the card's, to record.
    adopt_identifier: str | None = None

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


def decide_enrolment(
    cert: CertificateIdentity,
    facts: EnrolmentFacts,
    policy: EnrolmentPolicy = EnrolmentPolicy.REGISTER,
) -> Enrolment:
    """KNOWN, REGISTER or LINK_RENEWED_CARD; raises ``EnrolmentRefused`` or
    ``ReferredToOperator`` (``RegistrationClosed``) otherwise."""
    holder = facts.holder
    if holder is not None:
        if not holder.active:
            raise EnrolmentRefused(reason=f"inactive account {holder.address}")
        # The link was decided (a renewal, an operator's link or merge): the
        # account is the holder's whatever address the card names; a role is
        # what the card authorises, and the account's must be the same.
        if holder.role != cert.role:
            raise ReferredToOperator(
                reason=f"certificate {cert.fingerprint} bound to {holder.address} "
                f"({holder.role}), certificate says {cert.address} ({cert.role})"
            )
        return Enrolment(EnrolmentAction.KNOWN, holder)

    number = cert.serial_number
    keyed = facts.same_identifier
    if keyed is not None and number is not None:
        # Case A: a renewed card of the same holder, by identifier.
        if not keyed.active:
            raise EnrolmentRefused(
                reason=f"new certificate {cert.fingerprint} for inactive account {keyed.address}"
            )
        if keyed.role != cert.role:
            raise ReferredToOperator(
                reason=f"{keyed.address} ({number}) is a {keyed.role}, certificate says {cert.role}"
            )
        if keyed.address != cert.address:
            # An address change is an operator's decision: mail to either
            # address would otherwise reach someone unexpected.
            raise ReferredToOperator(
                reason=f"{number} is the identifier of {keyed.address}, "
                f"certificate {cert.fingerprint} says {cert.address}"
            )
        return Enrolment(EnrolmentAction.LINK_RENEWED_CARD, keyed)

    account = facts.same_address
    if account is None:
        if facts.address_reserved:
            raise ReferredToOperator(
                reason=f"certificate {cert.fingerprint} names {cert.address}, "
                "a service's or a dossier's address"
            )
        if policy is EnrolmentPolicy.REFUSE:
            raise RegistrationClosed(
                reason=f"no account for certificate {cert.fingerprint} ({cert.address}) "
                "and registration on first use is off"
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
    if account.identifier is not None:
        # Case B: the address is someone's whose identifier this card does
        # not carry; a holder who cannot prove continuity is linked by an operator.
        raise ReferredToOperator(
            reason=f"{cert.address} has identifier {account.identifier}, certificate "
            f"{cert.fingerprint} has {number or 'none'}"
        )
    # An account from before identifiers: linked by address and role as
    # before, and keyed by this card's identifier from now on.
    return Enrolment(EnrolmentAction.LINK_RENEWED_CARD, account, adopt_identifier=number)


# -- operators' decisions: a card linked (case B), duplicates merged (case C) --


class IdentityChangeRefused(ValueError):
    """An operator's link or merge that would leave the directory wrong; says why."""


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """Link one certificate to one account, and key the account by its identifier."""

    account: AccountFacts
    identifier: str | None  # what the account is keyed by afterwards
    community: TrustCommunity


def decide_link(
    account: AccountFacts,
    cert: CertificateIdentity,
    *,
    holder: AccountFacts | None,
    identifier_holder: AccountFacts | None,
) -> LinkPlan:
    """Case B: an operator vouches that ``cert`` is the holder of ``account``.

    ``holder``: the account the certificate is linked to, if any;
    ``identifier_holder``: the account with the card's identifier in its
    community, if any. The card's identifier becomes the account's (its
    next renewals are then recognised, case A), unless the card has none.
    """
    if not account.active:
        raise IdentityChangeRefused(f"{account.address} is deactivated; reactivate it first")
    if cert.role != account.role:
        raise IdentityChangeRefused(
            f"the certificate is a {cert.role}'s card, {account.address} is a {account.role}"
        )
    if holder is not None:
        if holder.account_id == account.account_id:
            raise IdentityChangeRefused(f"the certificate is already linked to {account.address}")
        raise IdentityChangeRefused(
            f"the certificate is linked to {holder.address}; merge the accounts instead"
        )
    number = cert.serial_number
    if (
        number is not None
        and identifier_holder is not None
        and identifier_holder.account_id != account.account_id
    ):
        raise IdentityChangeRefused(
            f"identifier {number} is {identifier_holder.address}'s; merge the accounts instead"
        )
    return LinkPlan(account, number or account.identifier, community_of(account.role))


@dataclass(frozen=True, slots=True)
class MergePlan:
    """Case C: ``source`` folded into ``target``; what the store carries out.

    ``mailbox_owner``: whose boxes show both histories afterwards;
    ``move_from``: the owners whose placements move there (the source's own
    boxes, and the target's when it joins the source's service);
    ``service``: the service the target belongs to afterwards.
    """

    source: AccountFacts
    target: AccountFacts
    mailbox_owner: str
    move_from: tuple[str, ...]
    service: str | None
    identifier: str | None  # what the target is keyed by afterwards


def decide_merge(source: AccountFacts, target: AccountFacts) -> MergePlan:
    """Merge a duplicate ``source`` into ``target``: same role, one service at most.

    The target keeps its identifier, or takes the source's when it has
    none: merge the older account into the newer one to keep the newer number.
    """
    if source.account_id == target.account_id:
        raise IdentityChangeRefused(f"{source.address} cannot be merged into itself")
    if source.role != target.role:
        raise IdentityChangeRefused(
            f"{source.address} is a {source.role}, {target.address} a {target.role}"
        )
    if not target.active:
        raise IdentityChangeRefused(f"{target.address} is deactivated; reactivate it first")
    if source.service and target.service and source.service != target.service:
        raise IdentityChangeRefused(
            f"{source.address} belongs to {source.service}, {target.address} to "
            f"{target.service}; one account cannot read two services' mailboxes"
        )
    service = target.service or source.service
    owner = service or target.address
    move: list[str] = []
    # A clerk's mail is their service's: it stays where the service reads it.
    if source.service is None and source.address != owner:
        move.append(source.address)
    if target.service is None and target.address != owner:
        move.append(target.address)
    return MergePlan(
        source=source,
        target=target,
        mailbox_owner=owner,
        move_from=tuple(move),
        service=service,
        identifier=target.identifier or source.identifier,
    )
