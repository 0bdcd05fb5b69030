"""A dossier created by its juridiction: the one way a new dossier comes to exist.

A registry accepting a saisine creates the dossier it opens (number given by
the court system, status provisoire, the filing lawyer constituted); a court
system announcing a dossier created otherwise says the same facts. Both go
through ``plan_new_dossier``: it checks the facts and says what storage
writes in one transaction (``palais.storage.dossiers.create_dossier``): the
dossier, its service if the directory of services lacks it, its parties
(searchable by folded name), who takes part, and their boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from palais.mailbox.boxes import DOSSIER_NUMBER
from palais.mailbox.court_events import DossierStatus
from palais.mailbox.dossier_life import DossierLife, DossierParty
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.juridictions import Juridiction, Service

__all__ = ["DossierParty", "NewDossier", "dossier_address", "plan_new_dossier"]


@dataclass(frozen=True, slots=True)
class NewDossier:
    number: str
    address: str
    juridiction: str  # its code in the juridictions directory
    juridiction_name: str
    service: Service  # the registry service in charge
    status: DossierStatus
    parties: tuple[DossierParty, ...]
    # Accounts taking part besides the service, by address: (address, capacity).
    participants: tuple[tuple[str, str], ...]
    # Its life as known at creation (palais.mailbox.dossier_life: the Fiche
    # dossier shows it; the court system's events change it), if any.
    life: DossierLife | None = None


def dossier_address(number: str, mail_domain: str) -> str:
    """Where writing reaches the dossier's service: ``<number>@dossiers.<domain>``."""
    return f"{number}@dossiers.{mail_domain}".lower()


def plan_new_dossier(
    *,
    number: str,
    juridiction: Juridiction,
    service: Service,
    mail_domain: str,
    parties: Sequence[DossierParty],
    participants: Sequence[tuple[str, str]],
    status: DossierStatus = DossierStatus.PROVISOIRE,
    life: DossierLife | None = None,
) -> NewDossier:
    """The dossier ``number`` of ``juridiction``: every broken rule listed at once."""
    problems: list[str] = []
    if not DOSSIER_NUMBER.fullmatch(number):
        problems.append(f"{number!r} is not a national dossier number (YYYY-NNNNNNN)")
    if service not in juridiction.services:
        problems.append(f"{service.name!r} is not a service of {juridiction.code}")
    if not parties:
        problems.append("a dossier has at least one party")
    if life is not None and (life.number != number or life.status is not status):
        problems.append("its life names another dossier or status")
    addresses = [address.lower() for address, _ in participants]
    if len(set(addresses)) != len(addresses):
        problems.append("an account takes part twice")
    if problems:
        raise CannotDoThat(
            "The dossier cannot be created",
            details=tuple(problems),
            reason=f"new dossier {number}: " + "; ".join(problems),
        )
    return NewDossier(
        number=number,
        address=dossier_address(number, mail_domain),
        juridiction=juridiction.code,
        juridiction_name=juridiction.name,
        service=service,
        status=status,
        parties=tuple(parties),
        participants=tuple((a.lower(), c) for a, c in participants),
        life=life,
    )
