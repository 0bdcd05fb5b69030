"""Valid structured documents, as a lawyer's form or a court system writes them.

Each test copies one and changes what its rule is about.
"""

from __future__ import annotations

import copy
from typing import Any

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
JURIDICTION = "CPH-BORDEAUX"
SLOT = "CPH-BX-2027-01-14-0930"


def address() -> dict[str, Any]:
    return {
        "number_and_street": "12 cours de l'Intendance",
        "postcode": "33000",
        "town": "Bordeaux",
        "country": "France",
    }


def saisine(*, cph: bool = True, booking: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "juridiction": (
            {"type": "CPH", "code": JURIDICTION, "city": "Bordeaux"}
            if cph
            else {"type": "TJ", "code": "TJ-BORDEAUX", "city": "Bordeaux"}
        ),
        "dossier_type": "fond",
        "service": "Section commerce",
        "act_nature": "requête",
        "actors": [
            {
                "person_type": "physique",
                "quality": "demandeur",
                "civility": "madame",
                "surname": "Léger",
                "given_name": "Amélie",
                "address": address(),
            },
            {
                "person_type": "morale",
                "quality": "defendeur",
                "company_name": "Vins du Médoc SAS",
                "siren": "552100554",
                "address": address(),
            },
        ],
    }
    if cph:
        doc |= {
            "employee_status": "salariée",
            "section": "commerce",
            "collective_agreement": "Convention collective des vins et spiritueux",
        }
    if booking:
        doc["date_booking"] = {
            "slot_id": SLOT,
            "dispute_nature": "licenciement",
            "draft_summons": "projet-assignation.pdf",
        }
    return doc


def constitution() -> dict[str, Any]:
    return {
        "dossier": {"number": "2025-0000138", "juridiction_code": JURIDICTION},
        "parties": [{"quality": "defendeur", "name": "Vins du Médoc SAS"}],
        "document": "constitution.pdf",
        "message": "Je me constitue pour la défenderesse.",
    }


def dossier_event() -> dict[str, Any]:
    return {
        "dossier": "2025-0000138",
        "juridiction_code": JURIDICTION,
        "occurred_at": "2026-11-30T10:00:00+01:00",
        "event": {
            "kind": "hearing_added",
            "hearing": {
                "id": "H1",
                "date": "2027-01-14",
                "time": "09:30",
                "formation": "bureau de jugement",
                "type": "audience de jugement",
                "room": "salle 3",
            },
        },
    }


def registry_decision() -> dict[str, Any]:
    return {
        "about": "saisine",
        "message_id": "<saisine-1@avocats.palais.test>",
        "decision": "accepted",
        "dossier": "2026-0000201",
        "decided_at": "2026-11-30T11:00:00+01:00",
    }


def hearing_slots() -> dict[str, Any]:
    return {
        "juridiction_code": JURIDICTION,
        "published_at": "2026-11-30T08:00:00+01:00",
        "slots": [
            {
                "id": SLOT,
                "starts_at": "2027-01-14T09:30:00+01:00",
                "ends_at": "2027-01-14T12:00:00+01:00",
                "formation": "bureau de conciliation et d'orientation",
                "room": "salle 2",
            }
        ],
    }


def changed(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the field at ``path`` ("actors.0.surname") set,
    or removed when ``value`` is ``REMOVE``."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is REMOVE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return out


REMOVE = object()
