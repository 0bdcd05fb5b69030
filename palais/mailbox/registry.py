"""The registry's decision on a saisine or a constitution, and what it moves.

A court system answers what a lawyer sent to its juridiction with a
registry-decision document naming the lawyer's message by its Message-ID.
``plan_decision`` turns the decision and the facts of that message into a
plan storage carries out in one transaction:

- saisine rejected: it moves from Saisines/Envoyées to Saisines/Rejetées,
  where the court's decision (the reason in its text and its document)
  is filed beside it; the lawyer gets the rejet-greffe receipt; the
  hearing slot it booked, if any, has its place back;
- saisine accepted: the dossier is created (``plan_new_dossier``: its
  number, status provisoire, the lawyer constituted for the demandeurs),
  the saisine becomes the first message of the dossier's Envoyés, the
  decision arrives in its Reçus, and the acceptation-greffe receipt in the
  lawyer's Accusés de réception;
- constitution accepted: the lawyer joins the dossier for the parties
  named, the constitution moves into the dossier's Envoyés, the decision
  arrives in its Reçus; rejected: the decision arrives in the INBOX. No
  receipt for a constitution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from palais.mailbox.constitution import Constitution
from palais.mailbox.court_events import (
    Party,
    PartyAddress,
    PersonType,
    Quality,
    RegistryDecision,
)
from palais.mailbox.documents import CONSTITUTION, SAISINE, carried_documents
from palais.mailbox.dossier_life import Constituted, DossierLife
from palais.mailbox.errors import CannotDoThat, InvalidMessage
from palais.mailbox.filing import Destination, FilingPlan
from palais.mailbox.identity import Identity
from palais.mailbox.juridictions import Juridiction, Service, folded
from palais.mailbox.model import BoxKind, Placement
from palais.mailbox.new_dossier import DossierParty, NewDossier, plan_new_dossier
from palais.mailbox.saisine import Authority, LegalPerson, NaturalPerson, Saisine

__all__ = [
    "DecisionPlan",
    "ReceiptDecision",
    "SentAct",
    "plan_decision",
    "saisine_parties",
    "service_for",
]

SEEN = frozenset({"\\Seen"})


@dataclass(frozen=True, slots=True)
class SentAct:
    """A saisine or constitution the court system received: the facts a decision needs."""

    message: int  # its row
    lawyer: str  # its sender, whose mailbox holds it
    placement: Placement | None  # the lawyer's copy where it awaits the decision, if still there
    flags: frozenset[str]
    data: bytes  # its bytes, which carry its document


@dataclass(frozen=True, slots=True)
class ReceiptDecision:
    accepted: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class DecisionPlan:
    act: int  # the message decided
    lawyer: str
    moved: Placement | None  # the lawyer's copy, which moves (None: it stays)
    to: BoxKind
    to_dossier: str | None
    flags: frozenset[str]
    dossier: NewDossier | None  # created: a saisine accepted
    joins: str | None  # the dossier the lawyer joins: a constitution accepted
    represents: tuple[tuple[Quality, str], ...]  # (quality, name) of the parties, when joining
    filing: FilingPlan  # the court's decision mail
    receipt: ReceiptDecision | None  # the lawyer's receipt (none for a constitution)
    # A saisine rejected: its date booking's place is given back
    # (``palais.mailbox.hearing_slots``); accepted, it keeps it.
    frees_booking: bool = False


def plan_decision(
    decision: RegistryDecision,
    act: SentAct,
    court: Identity,
    juridiction: Juridiction,
    mail_domain: str,
) -> DecisionPlan:
    if act.placement is None:
        raise CannotDoThat(
            f"The {decision.about} {decision.message_id} was decided already",
            reason=f"{court.address}: second decision on {decision.message_id}",
        )
    if decision.about == "saisine":
        return _on_saisine(decision, act, court, juridiction, mail_domain, act.placement)
    return _on_constitution(decision, act, court, act.placement)


def _document(act: SentAct, media_type: str) -> bytes:
    for found, payload in carried_documents(act.data):
        if found == media_type:
            return payload
    raise CannotDoThat(  # pragma: no cover - filed only with its document
        "The message decided carries no such document",
        reason=f"message {act.message} has no {media_type} part",
    )


def _on_saisine(
    decision: RegistryDecision,
    act: SentAct,
    court: Identity,
    juridiction: Juridiction,
    mail_domain: str,
    placement: Placement,
) -> DecisionPlan:
    accepted = decision.decision == "accepted"
    receipt = ReceiptDecision(accepted, decision.reason)
    court_copy = Destination(court.mailbox_owner, BoxKind.ENVOYES, SEEN)
    if not accepted:
        return DecisionPlan(
            act=act.message,
            lawyer=act.lawyer,
            moved=placement,
            to=BoxKind.SAISINE_REJETEE,
            to_dossier=None,
            flags=act.flags,
            dossier=None,
            joins=None,
            represents=(),
            filing=FilingPlan(None, (court_copy, Destination(act.lawyer, BoxKind.SAISINE_REJETEE))),
            receipt=receipt,
            frees_booking=True,
        )
    number = decision.dossier
    assert number is not None  # check_registry_decision: mandatory unless rejected
    saisine = Saisine.model_validate_json(_document(act, SAISINE))
    service = service_for(juridiction, saisine.service)
    dossier = plan_new_dossier(
        number=number,
        juridiction=juridiction,
        service=service,
        mail_domain=mail_domain,
        parties=saisine_parties(saisine, act.lawyer),
        participants=[(act.lawyer, "avocat"), (court.address, "juridiction")],
        life=saisine_life(number, juridiction, service, saisine, act.lawyer),
    )
    return DecisionPlan(
        act=act.message,
        lawyer=act.lawyer,
        moved=placement,
        to=BoxKind.ENVOYES,
        to_dossier=number,
        flags=act.flags,
        dossier=dossier,
        joins=None,
        represents=(),
        filing=FilingPlan(number, (court_copy, Destination(act.lawyer, BoxKind.RECUS))),
        receipt=receipt,
    )


def _on_constitution(
    decision: RegistryDecision, act: SentAct, court: Identity, placement: Placement
) -> DecisionPlan:
    try:
        constitution = Constitution.model_validate_json(_document(act, CONSTITUTION))
    except ValidationError:  # pragma: no cover - checked when it was sent
        raise CannotDoThat("The constitution decided is unreadable") from None
    number = constitution.dossier.number
    if decision.dossier != number:
        raise InvalidMessage(
            f"dossier: la constitution porte sur le dossier {number}",
            reason=f"decision names {decision.dossier}, constitution {number}",
        )
    court_copy = Destination(court.mailbox_owner, BoxKind.ENVOYES, SEEN)
    accepted = decision.decision == "accepted"
    return DecisionPlan(
        act=act.message,
        lawyer=act.lawyer,
        # Rejected, it stays in Envoyés, outside any dossier.
        moved=placement if accepted else None,
        to=BoxKind.ENVOYES,
        to_dossier=number if accepted else None,
        flags=act.flags,
        dossier=None,
        joins=number if accepted else None,
        represents=tuple((p.quality, p.name) for p in constitution.parties) if accepted else (),
        filing=FilingPlan(
            number if accepted else None,
            (court_copy, Destination(act.lawyer, BoxKind.RECUS)),
        ),
        receipt=None,
    )


def service_for(juridiction: Juridiction, named: str) -> Service:
    """The juridiction's service a saisine names: the one whose name shares a
    word of four letters or more with it ("Section commerce" is "CPH
    BORDEAUX - Commerce"), else its first."""
    words = {w for w in folded(named).split() if len(w) >= 4}
    for service in juridiction.services:
        if words & set(folded(service.name).split()):
            return service
    if not juridiction.services:
        raise CannotDoThat(
            f"The juridiction {juridiction.code} has no registry service",
            reason=f"directory: {juridiction.code} without service",
        )
    return juridiction.services[0]


def saisine_parties(saisine: Saisine, lawyer: str) -> tuple[DossierParty, ...]:
    """The saisine's actors as parties; the filing lawyer is constituted for the demandeurs."""
    parties = []
    for actor in saisine.actors:
        quality = Quality(actor.quality)
        parties.append(
            DossierParty(
                quality=quality,
                person_type=PersonType(actor.person_type),
                name=_name(actor),
                lawyer=lawyer if quality is Quality.DEMANDEUR else None,
            )
        )
    return tuple(parties)


def saisine_life(
    number: str, juridiction: Juridiction, service: Service, saisine: Saisine, lawyer: str
) -> DossierLife:
    """What the saisine tells of the dossier it opens: its parties (ids P1,
    P2... in the saisine's order, with their addresses), the lawyer for the
    demandeurs; not "created" (the court system's own creation event may
    still come, and then says it all)."""
    parties = tuple(
        Party(
            id=f"P{i}",
            quality=Quality(actor.quality),
            person_type=PersonType(actor.person_type),
            name=_name(actor),
            address=PartyAddress.model_validate(actor.address.model_dump()),
        )
        for i, actor in enumerate(saisine.actors, start=1)
    )
    return DossierLife(
        number=number,
        juridiction_code=juridiction.code,
        service=service.name,
        dossier_type=saisine.dossier_type,
        act_nature=saisine.act_nature,
        parties=parties,
        lawyers=tuple(
            Constituted(party_id=p.id, address=lawyer)
            for p in parties
            if p.quality is Quality.DEMANDEUR
        ),
    )


def life_with_lawyer(
    life: DossierLife, lawyer: str, represents: Sequence[tuple[Quality, str]]
) -> DossierLife:
    """The dossier's life once ``lawyer``'s constitution is accepted: constituted
    for each party it names (by quality and name, case and accents aside) and
    not already theirs; the same life if none is new."""
    wanted = {(quality, folded(name)) for quality, name in represents}
    already = life.represented_by(lawyer)
    added = tuple(
        Constituted(party_id=p.id, address=lawyer.lower())
        for p in life.parties
        if (p.quality, folded(p.name)) in wanted and p.id not in already
    )
    if not added:
        return life
    return life.model_copy(update={"lawyers": (*life.lawyers, *added), "version": life.version + 1})


def _name(actor: NaturalPerson | LegalPerson | Authority) -> str:
    if isinstance(actor, NaturalPerson):
        return f"{actor.surname} {actor.given_name}"
    if isinstance(actor, LegalPerson):
        return actor.company_name
    return actor.authority_name or actor.authority_type.value.replace("_", " ")
