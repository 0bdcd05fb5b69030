"""Saisine: filing a new case with a juridiction.

General information (juridiction, dossier type, receiving service, nature of
the act; for a conseil de prud'hommes the employee's status, the section and
the collective agreement), with or without a date booking (then the nature
of the dispute, a slot the juridiction opened and the draft summons
attached), and the actors: each a demandeur or a défendeur, a natural
person, a legal person or an administrative authority, each with its own
mandatory fields. Free texts are at most 100 characters.

The model states the shape (its JSON Schema is published); ``check_saisine``
the rules that need several fields or the context. The saisine's states
(enregistrée, envoyée, rejetée, acceptée) are where it is filed, not fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from palais.mailbox.court_events import DossierType
from palais.mailbox.document_context import DocumentContext
from palais.mailbox.fields import Doc, Document, FieldError, FreeText, table, tables


class JuridictionType(StrEnum):
    CPH = "CPH"  # conseil de prud'hommes
    TPROX = "TPROX"  # tribunal de proximité
    TJ = "TJ"  # tribunal judiciaire


class Civility(StrEnum):
    MADAME = "madame"
    MONSIEUR = "monsieur"


class CphSection(StrEnum):
    """The five sections of a conseil de prud'hommes."""

    ENCADREMENT = "encadrement"
    INDUSTRIE = "industrie"
    COMMERCE = "commerce"
    AGRICULTURE = "agriculture"
    ACTIVITES_DIVERSES = "activites_diverses"


class AuthorityType(StrEnum):
    PROCUREUR_DE_LA_REPUBLIQUE = "procureur_de_la_republique"
    AUTRE = "autre"


SaisineQuality = Literal["demandeur", "defendeur"]


class Address(Document):
    number_and_street: FreeText
    postcode: Annotated[str, Field(min_length=1, max_length=10)]
    town: FreeText
    country: FreeText


class NaturalPerson(Document):
    """Personne physique: civility, surname, first given name and address."""

    person_type: Literal["physique"]
    quality: SaisineQuality
    civility: Civility
    surname: FreeText
    given_name: FreeText
    other_given_names: FreeText | None = None
    address: Address


class LegalPerson(Document):
    """Personne morale: company name and address."""

    person_type: Literal["morale"]
    quality: SaisineQuality
    company_name: FreeText
    siren: Annotated[str, Field(pattern=r"^[0-9]{9}$")] | None = None
    address: Address


class Authority(Document):
    """Autorité administrative: its type and address (and its name, for "autre")."""

    person_type: Literal["autorite_administrative"]
    quality: SaisineQuality
    authority_type: AuthorityType
    authority_name: FreeText | None = Field(None, description="obligatoire pour « autre »")
    address: Address


Actor = Annotated[NaturalPerson | LegalPerson | Authority, Field(discriminator="person_type")]
ACTOR_TAGS = {
    "physique": "personne physique",
    "morale": "personne morale",
    "autorite_administrative": "autorité administrative",
}


class JuridictionRef(Document):
    type: JuridictionType
    code: FreeText  # as in the juridictions directory
    city: FreeText


class DateBooking(Document):
    """A hearing picked among the juridiction's opened slots, and the draft
    summons (projet d'assignation) attached under ``draft_summons``."""

    slot_id: FreeText
    dispute_nature: FreeText
    draft_summons: FreeText = Field(description="nom du fichier joint au message, un PDF")


class Saisine(Document):
    juridiction: JuridictionRef
    date_booking: DateBooking | None = Field(
        None,
        description="prise de date : un créneau ouvert par la juridiction, "
        "le projet d'assignation joint en PDF",
    )
    dossier_type: DossierType
    service: FreeText  # the receiving service
    act_nature: FreeText
    # A conseil de prud'hommes only, and mandatory there.
    employee_status: FreeText | None = Field(
        None, description="conseil de prud'hommes (CPH) seulement, et obligatoire devant lui"
    )
    section: CphSection | None = Field(
        None, description="conseil de prud'hommes (CPH) seulement, et obligatoire devant lui"
    )
    collective_agreement: FreeText | None = Field(
        None, description="conseil de prud'hommes (CPH) seulement, et obligatoire devant lui"
    )
    actors: list[Actor] = Field(min_length=1, description="au moins un demandeur et un défendeur")
    message: FreeText | None = None


_CPH_ONLY = ("employee_status", "section", "collective_agreement")


def check_saisine(saisine: Doc, context: DocumentContext) -> list[FieldError]:
    """The rules beyond the shape, on the parsed document: every error, in order."""
    errors: list[FieldError] = []
    juridiction = table(saisine.get("juridiction"))
    kind = juridiction.get("type")
    if kind in tuple(JuridictionType):  # an unknown type is the shape's error
        cph = kind == JuridictionType.CPH
        for name in _CPH_ONLY:
            given = saisine.get(name) is not None
            if cph and not given:
                errors.append(
                    FieldError(name, "champ obligatoire devant un conseil de prud'hommes")
                )
            elif given and not cph:
                errors.append(FieldError(name, "réservé au conseil de prud'hommes"))
    booking = table(saisine.get("date_booking"))
    slot_id, code = booking.get("slot_id"), juridiction.get("code")
    opened = () if context.slots is None else context.slots.get(str(code), ())
    # Slots unknown here (None): the gateway, which knows them, checks it.
    if (
        isinstance(slot_id, str)
        and context.slots is not None
        and not any(slot.id == slot_id for slot in opened)
    ):
        errors.append(
            FieldError("date_booking.slot_id", "ce créneau n'est pas ouvert par la juridiction")
        )
    summons = booking.get("draft_summons")
    if isinstance(summons, str):
        attached = context.attachment(summons)
        if attached is None:
            errors.append(
                FieldError(
                    "date_booking.draft_summons",
                    "le projet d'assignation n'est pas joint au message",
                )
            )
        elif not attached.is_pdf:
            errors.append(
                FieldError("date_booking.draft_summons", "le projet d'assignation doit être un PDF")
            )
    actors = tables(saisine.get("actors"))
    for i, actor in enumerate(actors):
        if (
            actor.get("person_type") == "autorite_administrative"
            and actor.get("authority_type") == AuthorityType.AUTRE
            and actor.get("authority_name") is None
        ):
            errors.append(
                FieldError(
                    f"actors[{i}].authority_name", "champ obligatoire pour une autre autorité"
                )
            )
    if actors:  # none at all is the shape's error
        qualities = {actor.get("quality") for actor in actors}
        if "demandeur" not in qualities:
            errors.append(FieldError("actors", "au moins un demandeur"))
        if "defendeur" not in qualities:
            errors.append(FieldError("actors", "au moins un défendeur"))
    return errors
