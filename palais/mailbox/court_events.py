"""What court systems send: hearing slots, dossier events, registry decisions.

A juridiction's case-management system pushes the life of its dossiers
(created, status changed, hearings added, moved or cancelled, a party or a
lawyer changed), its registry's decisions on what lawyers sent (a saisine,
a constitution, a message: accepted, or rejected with a reason) and the
hearing slots it opens for date booking. Each is a JSON document of its own
media type (``palais.mailbox.documents``); the flows that apply them to
dossiers read these models.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from palais.mailbox.fields import (
    Doc,
    Document,
    DossierNumber,
    FieldError,
    FreeText,
    table,
    tables,
)

# A registry's reason, a rejection's explanation: longer than a form's field.
Reason = Annotated[str, Field(min_length=1, max_length=1000)]
# An RFC 5322 Message-ID, as the lawyer's message carried it.
MessageId = Annotated[str, Field(min_length=3, max_length=998)]


class Quality(StrEnum):
    DEMANDEUR = "demandeur"
    DEFENDEUR = "defendeur"
    INTERVENANT_FORCE = "intervenant_force"


class PersonType(StrEnum):
    PHYSIQUE = "physique"
    MORALE = "morale"
    AUTORITE_ADMINISTRATIVE = "autorite_administrative"


class DossierType(StrEnum):
    FOND = "fond"
    REFERE = "refere"
    PROCEDURE_ACCELEREE_AU_FOND = "procedure_acceleree_au_fond"


class DossierStatus(StrEnum):
    PROVISOIRE = "provisoire"
    EN_COURS = "en_cours"
    TERMINE = "termine"


# -- hearing slots ---------------------------------------------------------------


class HearingSlot(Document):
    """One hearing a lawyer may book when filing a saisine."""

    id: FreeText
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    formation: FreeText
    room: FreeText | None = None
    service: FreeText | None = None
    # How many saisines may book it: each booking takes a place until the
    # registry rejects that saisine (``palais.mailbox.hearing_slots``).
    places: int = Field(default=1, ge=1, le=10_000)


class HearingSlots(Document):
    """The slots a juridiction opens for date booking (replaces the previous list)."""

    juridiction_code: FreeText
    published_at: AwareDatetime
    slots: list[HearingSlot]


def check_hearing_slots(document: Doc) -> list[FieldError]:
    errors = []
    seen: set[object] = set()
    for i, slot in enumerate(tables(document.get("slots"))):
        ident = slot.get("id")
        if isinstance(ident, str) and ident in seen:
            errors.append(FieldError(f"slots[{i}].id", "identifiant de créneau en double"))
        seen.add(ident)
        starts, ends = _instant(slot.get("starts_at")), _instant(slot.get("ends_at"))
        if starts is not None and ends is not None and ends <= starts:
            errors.append(FieldError(f"slots[{i}].ends_at", "la fin précède le début"))
    return errors


def _instant(value: object) -> datetime | None:
    """An instant with its offset; None for anything else (the shape's error)."""
    if not isinstance(value, str):
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


# -- dossier events --------------------------------------------------------------


class PartyAddress(Document):
    number_and_street: FreeText
    postcode: FreeText
    town: FreeText
    country: FreeText


class Party(Document):
    id: FreeText
    quality: Quality
    person_type: PersonType
    name: FreeText
    address: PartyAddress | None = None  # hidden from others when the dossier is confidential


class Hearing(Document):
    id: FreeText
    date: date
    time: time
    formation: FreeText
    type: FreeText
    room: FreeText | None = None


class Created(Document):
    kind: Literal["created"]
    status: DossierStatus = DossierStatus.PROVISOIRE
    service: FreeText
    dossier_type: DossierType
    nac: FreeText | None = None  # nature de l'affaire civile
    act_nature: FreeText
    act_date: date
    confidential: bool = False
    parties: list[Party] = Field(min_length=1)


class StatusChanged(Document):
    kind: Literal["status_changed"]
    status: DossierStatus


class HearingAdded(Document):
    kind: Literal["hearing_added"]
    hearing: Hearing


class HearingMoved(Document):
    kind: Literal["hearing_moved"]
    hearing: Hearing  # its id names the hearing moved


class HearingCancelled(Document):
    kind: Literal["hearing_cancelled"]
    hearing_id: FreeText
    reason: FreeText | None = None


class PartyChanged(Document):
    kind: Literal["party_changed"]
    party: Party  # added, or replacing the party of the same id


class LawyerChanged(Document):
    kind: Literal["lawyer_changed"]
    party_id: FreeText
    change: Literal["constituted", "withdrawn", "replaced"]
    lawyer_address: FreeText
    replaces_address: FreeText | None = Field(
        None, description="l'avocat remplacé, avec « replaced » seulement"
    )


Event = Annotated[
    Created
    | StatusChanged
    | HearingAdded
    | HearingMoved
    | HearingCancelled
    | PartyChanged
    | LawyerChanged,
    Field(discriminator="kind"),
]
EVENT_TAGS = {
    "created": "création du dossier",
    "status_changed": "changement de statut",
    "hearing_added": "audience ajoutée",
    "hearing_moved": "audience déplacée",
    "hearing_cancelled": "audience annulée",
    "party_changed": "partie modifiée",
    "lawyer_changed": "avocat modifié",
}


class DossierEvent(Document):
    """One change in a dossier's life, as the court system records it."""

    dossier: DossierNumber
    juridiction_code: FreeText
    occurred_at: AwareDatetime
    event: Event


def check_dossier_event(document: Doc) -> list[FieldError]:
    event = table(document.get("event"))
    errors = []
    if event.get("kind") == "lawyer_changed":
        replaced = event.get("change") == "replaced"
        if replaced and event.get("replaces_address") is None:
            errors.append(
                FieldError("event.replaces_address", "obligatoire quand un avocat est remplacé")
            )
        if not replaced and event.get("replaces_address") is not None:
            errors.append(
                FieldError("event.replaces_address", "seulement quand un avocat est remplacé")
            )
    if event.get("kind") == "created":
        seen: set[object] = set()
        for i, party in enumerate(tables(event.get("parties"))):
            ident = party.get("id")
            if isinstance(ident, str) and ident in seen:
                errors.append(FieldError(f"event.parties[{i}].id", "identifiant en double"))
            seen.add(ident)
    return errors


# -- registry decisions ------------------------------------------------------------


class RegistryDecision(Document):
    """The registry's answer to what a lawyer sent, named by its Message-ID."""

    about: Literal["saisine", "constitution", "message"]
    message_id: MessageId
    decision: Literal["accepted", "rejected"]
    reason: Reason | None = Field(None, description="obligatoire pour un rejet")
    dossier: DossierNumber | None = Field(
        None, description="obligatoire sauf pour une saisine rejetée (acceptée : le numéro donné)"
    )
    decided_at: AwareDatetime


def check_registry_decision(document: Doc) -> list[FieldError]:
    errors = []
    rejected = document.get("decision") == "rejected"
    if rejected and document.get("reason") is None:
        errors.append(FieldError("reason", "obligatoire pour un rejet"))
    # Everything but a rejected saisine concerns a dossier that exists.
    if document.get("dossier") is None and not (document.get("about") == "saisine" and rejected):
        errors.append(FieldError("dossier", "champ obligatoire (numéro du dossier)"))
    return errors
