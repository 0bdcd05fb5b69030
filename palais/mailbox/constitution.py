"""Constitution: a lawyer declares they represent parties of an existing dossier.

The dossier is named by its number; the lawyer picks the parties they
represent, or replaces another lawyer ("en lieu et place") and then picks
none. A lawyer is never constituted for a demandeur and a défendeur of the
same dossier at once (an intervenant forcé with either is allowed). The
constitution itself travels as a PDF attached to the message.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from palais.mailbox.court_events import Quality
from palais.mailbox.document_context import DocumentContext
from palais.mailbox.fields import Doc, Document, DossierNumber, FieldError, FreeText, tables


class DossierRef(Document):
    number: DossierNumber
    juridiction_code: FreeText


class RepresentedParty(Document):
    quality: Quality
    name: FreeText


class InPlaceOf(Document):
    """The lawyer replaced."""

    lawyer_name: FreeText
    lawyer_address: FreeText | None = None


class Constitution(Document):
    dossier: DossierRef
    parties: list[RepresentedParty] = Field(
        default_factory=list,
        description="les parties représentées (aucune en lieu et place) ; jamais un "
        "demandeur et un défendeur à la fois",
    )
    in_place_of: InPlaceOf | None = Field(
        None, description="constitution en lieu et place de cet avocat"
    )
    document: FreeText = Field(description="nom du fichier de la constitution joint, un PDF")
    message: Annotated[str, Field(max_length=1000)] | None = None


def check_constitution(constitution: Doc, context: DocumentContext) -> list[FieldError]:
    """The rules beyond the shape, on the parsed document: every error, in order."""
    errors: list[FieldError] = []
    parties = tables(constitution.get("parties"))
    in_place = constitution.get("in_place_of") is not None
    if in_place and parties:
        errors.append(
            FieldError(
                "parties", "aucune partie ne se choisit pour une constitution en lieu et place"
            )
        )
    if not in_place and not parties:
        errors.append(
            FieldError("parties", "choisir au moins une partie représentée, ou en lieu et place")
        )
    qualities = {p.get("quality") for p in parties}
    if Quality.DEMANDEUR in qualities and Quality.DEFENDEUR in qualities:
        errors.append(
            FieldError(
                "parties",
                "un avocat ne peut être constitué à la fois pour un demandeur et un défendeur",
            )
        )
    document = constitution.get("document")
    if isinstance(document, str):
        attached = context.attachment(document)
        if attached is None:
            errors.append(FieldError("document", "la constitution n'est pas jointe au message"))
        elif not attached.is_pdf:
            errors.append(FieldError("document", "la constitution doit être jointe en PDF"))
    return errors
