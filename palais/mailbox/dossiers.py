"""A dossier opened with its participants, and what taking part brings.

Whoever gains access to a dossier — the service in charge when it is
opened, a lawyer, a magistrate or a court system when they join it — gets
its five boxes in their mailbox (a clerk's are the service's). The plan
says who joins and whose mailbox gets the boxes; storage writes it in one
transaction and decides nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from palais.mailbox.boxes import DOSSIER_NUMBER
from palais.mailbox.errors import CannotDoThat

__all__ = ["DossierOpening", "Participation", "plan_dossier_opening", "plan_participation"]


@dataclass(frozen=True, slots=True)
class Participation:
    """An account taking part in a dossier, and the mailbox that shows it."""

    account_id: int
    mailbox_owner: str  # the account's address, or its service's for a clerk
    capacity: str  # avocat, magistrat, juridiction...


@dataclass(frozen=True, slots=True)
class DossierOpening:
    number: str
    address: str
    juridiction: str
    service_id: int
    participants: tuple[Participation, ...]
    box_owners: tuple[str, ...]  # mailboxes that get the dossier's five boxes, once each


def plan_dossier_opening(
    *,
    number: str,
    address: str,
    juridiction: str,
    service_id: int,
    service_address: str,
    participants: Sequence[Participation] = (),
) -> DossierOpening:
    """Open a dossier: every rule broken is listed, nothing is half-opened."""
    problems: list[str] = []
    if not DOSSIER_NUMBER.fullmatch(number):
        problems.append(f"{number!r} is not a national dossier number (YYYY-NNNNNNN)")
    local, at, domain = address.strip().partition("@")
    if not (local and at and domain):
        problems.append(f"{address!r} is not a mail address")
    if not juridiction.strip():
        problems.append("the juridiction is missing")
    seen: set[int] = set()
    for p in participants:
        if p.account_id in seen:
            problems.append(f"account {p.account_id} takes part twice")
        seen.add(p.account_id)
    if problems:
        raise CannotDoThat(
            "The dossier cannot be opened",
            details=tuple(problems),
            reason=f"dossier {number}: " + "; ".join(problems),
        )
    owners = [service_address.lower()] + [p.mailbox_owner.lower() for p in participants]
    return DossierOpening(
        number=number,
        address=address.strip().lower(),
        juridiction=juridiction,
        service_id=service_id,
        participants=tuple(participants),
        box_owners=tuple(dict.fromkeys(owners)),
    )


def plan_participation(participant: Participation, already: Sequence[int]) -> tuple[str, ...]:
    """Whose mailbox gets the boxes when ``participant`` joins; refused if already in."""
    if participant.account_id in already:
        raise CannotDoThat(
            "This account already takes part in the dossier",
            reason=f"account {participant.account_id} joins twice",
        )
    return (participant.mailbox_owner.lower(),)
