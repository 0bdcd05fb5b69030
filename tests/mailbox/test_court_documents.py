"""Structured documents: one test per field rule, each naming the field it is about."""

from __future__ import annotations

import json
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

import palais.mailbox
from palais.mailbox.court_events import HearingSlot
from palais.mailbox.document_context import Attached, DocumentContext
from palais.mailbox.documents import (
    CONSTITUTION,
    DOSSIER_EVENT,
    HEARING_SLOTS,
    KINDS,
    REGISTRY_DECISION,
    SAISINE,
    document_errors,
    document_schemas,
    may_carry_documents,
    message_errors,
    refuse_invalid,
)
from palais.mailbox.errors import InvalidMessage, NotAllowed
from palais.mailbox.identity import Role
from tests.mailbox import court_samples as samples
from tests.mailbox.court_samples import PDF, REMOVE, SLOT, changed

OPENED = {
    samples.JURIDICTION: (
        HearingSlot(
            id=SLOT,
            starts_at=datetime.fromisoformat("2027-01-14T09:30:00+01:00"),
            formation="bureau de conciliation et d'orientation",
        ),
    )
}
SUMMONS = Attached.of("projet-assignation.pdf", "application/pdf", PDF)
CONSTITUTION_PDF = Attached.of("constitution.pdf", "application/pdf", PDF)
CONTEXT = DocumentContext(slots=OPENED, attachments=(SUMMONS, CONSTITUTION_PDF))


def errors(media_type: str, doc: dict[str, Any], context: DocumentContext = CONTEXT) -> list[str]:
    return [str(e) for e in document_errors(media_type, json.dumps(doc).encode(), context)]


def only(media_type: str, doc: dict[str, Any], context: DocumentContext = CONTEXT) -> str:
    (error,) = errors(media_type, doc, context)
    return error


# -- the samples are valid ------


@pytest.mark.parametrize(
    ("media_type", "doc"),
    [
        (SAISINE, samples.saisine()),
        (SAISINE, samples.saisine(cph=False)),
        (SAISINE, samples.saisine(booking=True)),
        (CONSTITUTION, samples.constitution()),
        (DOSSIER_EVENT, samples.dossier_event()),
        (REGISTRY_DECISION, samples.registry_decision()),
        (HEARING_SLOTS, samples.hearing_slots()),
    ],
)
def test_the_samples_are_valid(media_type: str, doc: dict[str, Any]) -> None:
    assert errors(media_type, doc) == []


# -- saisine: mandatory fields per person type ------


@pytest.mark.parametrize("field", ["civility", "surname", "given_name", "address"])
def test_a_natural_person_needs_its_fields(field: str) -> None:
    doc = changed(samples.saisine(), f"actors.0.{field}", REMOVE)
    assert only(SAISINE, doc) == f"actors[0].{field}: champ obligatoire (personne physique)"


@pytest.mark.parametrize("field", ["number_and_street", "postcode", "town", "country"])
def test_an_address_needs_street_postcode_town_and_country(field: str) -> None:
    doc = changed(samples.saisine(), f"actors.0.address.{field}", REMOVE)
    assert only(SAISINE, doc) == f"actors[0].address.{field}: champ obligatoire (personne physique)"


@pytest.mark.parametrize("field", ["company_name", "address"])
def test_a_legal_person_needs_its_name_and_address(field: str) -> None:
    doc = changed(samples.saisine(), f"actors.1.{field}", REMOVE)
    assert only(SAISINE, doc) == f"actors[1].{field}: champ obligatoire (personne morale)"


def test_a_legal_person_needs_no_given_name_but_refuses_one() -> None:
    doc = changed(samples.saisine(), "actors.1.given_name", "Jean")
    assert only(SAISINE, doc) == "actors[1].given_name: champ inconnu"


def _authority(**fields: Any) -> dict[str, Any]:
    authority = {
        "person_type": "autorite_administrative",
        "quality": "defendeur",
        "authority_type": "procureur_de_la_republique",
        "address": samples.address(),
    } | fields
    return changed(samples.saisine(), "actors.1", authority)


def test_an_administrative_authority_is_valid_with_its_type_and_address() -> None:
    assert errors(SAISINE, _authority()) == []


@pytest.mark.parametrize("field", ["authority_type", "address"])
def test_an_administrative_authority_needs_its_type_and_address(field: str) -> None:
    doc = changed(_authority(), f"actors.1.{field}", REMOVE)
    assert only(SAISINE, doc) == f"actors[1].{field}: champ obligatoire (autorité administrative)"


def test_an_other_authority_needs_its_name() -> None:
    doc = _authority(authority_type="autre")
    assert (
        only(SAISINE, doc) == "actors[1].authority_name: champ obligatoire pour une autre autorité"
    )
    assert errors(SAISINE, _authority(authority_type="autre", authority_name="Préfet")) == []


def test_an_actor_needs_a_person_type() -> None:
    doc = changed(samples.saisine(), "actors.0.person_type", REMOVE)
    assert only(SAISINE, doc) == "actors[0].person_type: champ obligatoire"


def test_an_unknown_person_type_is_named() -> None:
    doc = changed(samples.saisine(), "actors.0.person_type", "association")
    error = only(SAISINE, doc)
    assert error.startswith("actors[0].person_type: valeur non admise")
    assert "physique" in error and "morale" in error


def test_a_saisine_quality_is_demandeur_or_defendeur() -> None:
    doc = changed(samples.saisine(), "actors.0.quality", "intervenant_force")
    wrong, no_demandeur = errors(SAISINE, doc)
    assert wrong.startswith("actors[0].quality: valeur non admise")
    assert no_demandeur == "actors: au moins un demandeur"


def test_a_saisine_needs_a_demandeur_and_a_defendeur() -> None:
    doc = changed(samples.saisine(), "actors.1.quality", "demandeur")
    assert only(SAISINE, doc) == "actors: au moins un défendeur"
    doc = changed(samples.saisine(), "actors.0.quality", "defendeur")
    assert only(SAISINE, doc) == "actors: au moins un demandeur"


@pytest.mark.parametrize(
    "field", ["juridiction", "dossier_type", "service", "act_nature", "actors"]
)
def test_the_general_information_is_mandatory(field: str) -> None:
    doc = changed(samples.saisine(), field, REMOVE)
    assert only(SAISINE, doc) == f"{field}: champ obligatoire"


def test_the_juridiction_type_is_cph_tprox_or_tj() -> None:
    doc = changed(samples.saisine(), "juridiction.type", "TGI")
    assert (
        only(SAISINE, doc)
        == "juridiction.type: valeur non admise (attendu : 'CPH', 'TPROX' ou 'TJ')"
    )


# -- saisine: CPH-only fields -------------------------------------------------------------


@pytest.mark.parametrize("field", ["employee_status", "section", "collective_agreement"])
def test_a_cph_saisine_needs_the_employee_s_fields(field: str) -> None:
    doc = changed(samples.saisine(), field, REMOVE)
    assert only(SAISINE, doc) == f"{field}: champ obligatoire devant un conseil de prud'hommes"


@pytest.mark.parametrize(
    ("field", "value"),
    [("employee_status", "cadre"), ("section", "industrie"), ("collective_agreement", "Syntec")],
)
def test_the_cph_fields_are_refused_elsewhere(field: str, value: str) -> None:
    doc = changed(samples.saisine(cph=False), field, value)
    assert only(SAISINE, doc) == f"{field}: réservé au conseil de prud'hommes"


def test_the_cph_section_is_one_of_the_five() -> None:
    doc = changed(samples.saisine(), "section", "commerciale")
    assert only(SAISINE, doc).startswith("section: valeur non admise")


# -- saisine: free texts of 100 characters ------


@pytest.mark.parametrize(
    "path",
    [
        "service",
        "act_nature",
        "employee_status",
        "collective_agreement",
        "message",
        "actors.0.surname",
        "actors.0.address.number_and_street",
        "actors.1.company_name",
        "date_booking.dispute_nature",
    ],
)
def test_free_texts_are_at_most_100_characters(path: str) -> None:
    doc = samples.saisine(booking=True)
    assert errors(SAISINE, changed(doc, path, "é" * 100)) == []
    shown = path.replace(".0.", "[0].").replace(".1.", "[1].")
    assert only(SAISINE, changed(doc, path, "é" * 101)) == f"{shown}: 100 caractères au plus"


def test_a_free_text_is_not_empty() -> None:
    assert only(SAISINE, changed(samples.saisine(), "service", "")) == "service: ne peut être vide"


# -- saisine: date booking ------


def test_a_date_booking_takes_an_opened_slot() -> None:
    doc = changed(samples.saisine(booking=True), "date_booking.slot_id", "CPH-BX-2027-02-01")
    assert only(SAISINE, doc) == (
        "date_booking.slot_id: ce créneau n'est pas ouvert par la juridiction"
    )


def test_a_slot_of_another_juridiction_is_not_opened() -> None:
    doc = changed(samples.saisine(booking=True), "juridiction.code", "CPH-LYON")
    assert only(SAISINE, doc).startswith("date_booking.slot_id: ")


def test_without_opened_slots_no_date_is_booked() -> None:
    context = DocumentContext(attachments=(SUMMONS,))
    assert only(SAISINE, samples.saisine(booking=True), context).startswith(
        "date_booking.slot_id: "
    )


def test_unknown_slots_are_left_to_the_gateway() -> None:
    context = DocumentContext(slots=None, attachments=(SUMMONS,))
    assert errors(SAISINE, samples.saisine(booking=True), context) == []


def test_a_date_booking_attaches_the_draft_summons() -> None:
    context = DocumentContext(slots=OPENED, attachments=(CONSTITUTION_PDF,))
    assert only(SAISINE, samples.saisine(booking=True), context) == (
        "date_booking.draft_summons: le projet d'assignation n'est pas joint au message"
    )


def test_the_draft_summons_is_a_pdf() -> None:
    text = Attached.of("projet-assignation.pdf", "text/plain", b"brouillon")
    context = DocumentContext(slots=OPENED, attachments=(text,))
    assert only(SAISINE, samples.saisine(booking=True), context) == (
        "date_booking.draft_summons: le projet d'assignation doit être un PDF"
    )


@pytest.mark.parametrize("field", ["slot_id", "dispute_nature", "draft_summons"])
def test_a_date_booking_names_slot_dispute_and_summons(field: str) -> None:
    doc = changed(samples.saisine(booking=True), f"date_booking.{field}", REMOVE)
    assert only(SAISINE, doc) == f"date_booking.{field}: champ obligatoire"


def test_every_error_is_listed_at_once() -> None:
    # Shape errors and the rules between fields, in one answer.
    doc = changed(samples.saisine(booking=True), "actors.0.surname", REMOVE)
    doc = changed(doc, "actors.1.company_name", "x" * 101)
    doc = changed(doc, "service", REMOVE)
    doc = changed(doc, "section", REMOVE)
    doc = changed(doc, "date_booking.slot_id", "fermé")
    assert errors(SAISINE, doc, DocumentContext(slots=OPENED)) == [
        "service: champ obligatoire",
        "actors[0].surname: champ obligatoire (personne physique)",
        "actors[1].company_name: 100 caractères au plus",
        "section: champ obligatoire devant un conseil de prud'hommes",
        "date_booking.slot_id: ce créneau n'est pas ouvert par la juridiction",
        "date_booking.draft_summons: le projet d'assignation n'est pas joint au message",
    ]


def test_a_document_nested_too_deep_is_unreadable() -> None:
    assert [str(e) for e in document_errors(SAISINE, b"[" * 200_000)] == ["document JSON illisible"]


def test_a_document_is_a_json_object() -> None:
    assert [str(e) for e in document_errors(SAISINE, b"[1, 2]")] == [
        "le document doit être un objet JSON"
    ]


def test_an_unknown_field_is_named() -> None:
    doc = changed(samples.saisine(), "urgence", True)
    assert only(SAISINE, doc) == "urgence: champ inconnu"


def test_a_document_that_is_not_json_is_said_so() -> None:
    assert [str(e) for e in document_errors(SAISINE, b"{not json")] == ["document JSON illisible"]


# -- constitution ------


def test_never_for_a_demandeur_and_a_defendeur_at_once() -> None:
    doc = changed(
        samples.constitution(),
        "parties",
        [{"quality": "demandeur", "name": "A"}, {"quality": "defendeur", "name": "B"}],
    )
    assert only(CONSTITUTION, doc) == (
        "parties: un avocat ne peut être constitué à la fois pour un demandeur et un défendeur"
    )


@pytest.mark.parametrize("other", ["demandeur", "defendeur"])
def test_an_intervenant_force_goes_with_either(other: str) -> None:
    doc = changed(
        samples.constitution(),
        "parties",
        [{"quality": other, "name": "A"}, {"quality": "intervenant_force", "name": "B"}],
    )
    assert errors(CONSTITUTION, doc) == []


def test_en_lieu_et_place_picks_no_party() -> None:
    doc = changed(samples.constitution(), "in_place_of", {"lawyer_name": "Maître Lambert"})
    assert only(CONSTITUTION, doc) == (
        "parties: aucune partie ne se choisit pour une constitution en lieu et place"
    )
    assert errors(CONSTITUTION, changed(doc, "parties", [])) == []


def test_a_constitution_represents_someone() -> None:
    doc = changed(samples.constitution(), "parties", [])
    assert only(CONSTITUTION, doc) == (
        "parties: choisir au moins une partie représentée, ou en lieu et place"
    )


def test_the_constitution_is_attached() -> None:
    context = DocumentContext(attachments=(SUMMONS,))
    assert only(CONSTITUTION, samples.constitution(), context) == (
        "document: la constitution n'est pas jointe au message"
    )


def test_the_constitution_is_attached_as_a_pdf() -> None:
    fake = Attached.of("constitution.pdf", "application/pdf", b"not a pdf at all")
    assert only(CONSTITUTION, samples.constitution(), DocumentContext(attachments=(fake,))) == (
        "document: la constitution doit être jointe en PDF"
    )


def test_the_dossier_number_has_its_shape() -> None:
    doc = changed(samples.constitution(), "dossier.number", "25-138")
    assert only(CONSTITUTION, doc) == (
        "dossier.number: numéro de dossier attendu sous la forme AAAA-NNNNNNN"
    )


# -- dossier events, registry decisions, hearing slots ------


@pytest.mark.parametrize(
    "event",
    [
        {"kind": "status_changed", "status": "en_cours"},
        {"kind": "hearing_cancelled", "hearing_id": "H1"},
        {
            "kind": "party_changed",
            "party": {
                "id": "P3",
                "quality": "intervenant_force",
                "person_type": "morale",
                "name": "X",
            },
        },
        {
            "kind": "lawyer_changed",
            "party_id": "P1",
            "change": "constituted",
            "lawyer_address": "sarah.petit@avocats.palais.test",
        },
        {
            "kind": "created",
            "service": "CPH BORDEAUX - Commerce",
            "dossier_type": "fond",
            "act_nature": "requête",
            "act_date": "2026-11-30",
            "parties": [
                {"id": "P1", "quality": "demandeur", "person_type": "physique", "name": "A"}
            ],
        },
    ],
)
def test_each_event_kind_is_valid(event: dict[str, Any]) -> None:
    assert errors(DOSSIER_EVENT, changed(samples.dossier_event(), "event", event)) == []


def test_an_event_kind_is_one_of_the_known() -> None:
    doc = changed(samples.dossier_event(), "event.kind", "dossier_lost")
    assert only(DOSSIER_EVENT, doc).startswith("event.kind: valeur non admise")


def test_a_moved_hearing_states_its_new_date() -> None:
    doc = changed(samples.dossier_event(), "event.kind", "hearing_moved")
    doc = changed(doc, "event.hearing.date", REMOVE)
    assert only(DOSSIER_EVENT, doc) == "event.hearing.date: champ obligatoire (audience déplacée)"


def test_a_replaced_lawyer_is_named() -> None:
    event = {
        "kind": "lawyer_changed",
        "party_id": "P1",
        "change": "replaced",
        "lawyer_address": "sarah.petit@avocats.palais.test",
    }
    doc = changed(samples.dossier_event(), "event", event)
    assert only(DOSSIER_EVENT, doc) == (
        "event.replaces_address: obligatoire quand un avocat est remplacé"
    )


def test_an_event_time_carries_its_offset() -> None:
    doc = changed(samples.dossier_event(), "occurred_at", "2026-11-30T10:00:00")
    assert only(DOSSIER_EVENT, doc).startswith("occurred_at: date et heure invalides")


def test_a_rejection_gives_its_reason() -> None:
    doc = changed(samples.registry_decision(), "decision", "rejected")
    assert only(REGISTRY_DECISION, changed(doc, "dossier", REMOVE)) == (
        "reason: obligatoire pour un rejet"
    )


@pytest.mark.parametrize("about", ["saisine", "constitution", "message"])
def test_an_acceptance_names_its_dossier(about: str) -> None:
    doc = changed(samples.registry_decision(), "about", about)
    assert only(REGISTRY_DECISION, changed(doc, "dossier", REMOVE)) == (
        "dossier: champ obligatoire (numéro du dossier)"
    )


def test_a_decision_is_accepted_or_rejected() -> None:
    doc = changed(samples.registry_decision(), "decision", "pending")
    assert only(REGISTRY_DECISION, doc).startswith("decision: valeur non admise")


def test_slot_ids_are_unique() -> None:
    doc = samples.hearing_slots()
    doc["slots"].append(dict(doc["slots"][0]))
    assert only(HEARING_SLOTS, doc) == "slots[1].id: identifiant de créneau en double"


def test_a_slot_ends_after_it_starts() -> None:
    doc = changed(samples.hearing_slots(), "slots.0.ends_at", "2027-01-14T09:00:00+01:00")
    assert only(HEARING_SLOTS, doc) == "slots[0].ends_at: la fin précède le début"


# -- in a message ------


def _message(*parts: tuple[str, bytes, str | None]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "camille.dupont@avocats.palais.test"
    msg["Subject"] = "Saisine"
    msg.set_content("Veuillez trouver ma saisine.")
    for media_type, payload, name in parts:
        maintype, subtype = media_type.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def test_a_message_without_documents_is_not_parsed() -> None:
    plain = b"Subject: x\r\nContent-Type: text/plain\r\n\r\nvnd.palais.saisine in the body\r\n"
    assert not may_carry_documents(plain)
    assert not may_carry_documents(_message(("application/pdf", PDF, "a.pdf")))
    assert may_carry_documents(_message((SAISINE, b"{}", "saisine.json")))


def test_a_message_s_documents_are_checked_with_its_attachments() -> None:
    doc = samples.saisine(booking=True)
    data = _message(
        (SAISINE, _json(doc), "saisine.json"), ("application/pdf", PDF, "projet-assignation.pdf")
    )
    assert message_errors(data, OPENED) == []
    assert message_errors(_message((SAISINE, _json(doc), "saisine.json")), OPENED) == [
        "date_booking.draft_summons: le projet d'assignation n'est pas joint au message"
    ]


def test_an_invalid_document_refuses_the_message_listing_each_field() -> None:
    doc = changed(changed(samples.saisine(), "actors.0.surname", REMOVE), "section", "x")
    with pytest.raises(InvalidMessage) as caught:
        refuse_invalid(_message((SAISINE, _json(doc), "saisine.json")), OPENED)
    assert caught.value.details == (
        "section: valeur non admise (attendu : 'encadrement', 'industrie', 'commerce', "
        "'agriculture' ou 'activites_diverses')",
        "actors[0].surname: champ obligatoire (personne physique)",
    )
    assert caught.value.text == "Document structuré invalide : 2 erreur(s)"


def test_an_unknown_document_type_of_ours_is_refused() -> None:
    data = _message(("application/vnd.palais.plainte+json", b"{}", "plainte.json"))
    assert message_errors(data, {}) == [
        "Content-Type: type de document inconnu : application/vnd.palais.plainte+json"
    ]


def test_a_forwarded_message_s_document_is_not_checked() -> None:
    bad = changed(samples.saisine(), "service", REMOVE)
    inner = EmailMessage()
    inner["Subject"] = "Saisine rejetée"
    inner.set_content("voir pièce")
    inner.add_attachment(_json(bad), maintype="application", subtype="vnd.palais.saisine+json")
    outer = EmailMessage()
    outer["Subject"] = "Fwd: Saisine rejetée"
    outer.set_content("Pour information.")
    outer.add_attachment(inner)
    data = outer.as_bytes()
    assert not may_carry_documents(data)
    assert message_errors(data, {}) == []


def test_a_document_in_a_nested_multipart_is_found() -> None:
    bad = changed(samples.saisine(), "service", REMOVE)
    inner = EmailMessage()
    inner.set_content("texte")
    inner.add_alternative("<p>texte</p>", subtype="html")
    inner.add_attachment(_json(bad), maintype="application", subtype="vnd.palais.saisine+json")
    outer = EmailMessage()
    outer["Subject"] = "Saisine"
    outer.set_content("x")
    outer.add_attachment(PDF, maintype="application", subtype="pdf", filename="a.pdf")
    outer.attach(inner)
    data = outer.as_bytes().replace(b"\n", b"\r\n")
    assert data.count(b"boundary=") == 3  # mixed > mixed (the saisine) > alternative
    assert may_carry_documents(data)
    assert message_errors(data, {}) == ["service: champ obligatoire"]


@pytest.mark.parametrize(
    ("media_type", "doc", "allowed", "refused"),
    [
        (SAISINE, samples.saisine(), Role.COLLABORATEUR, Role.COURT_SYSTEM),
        (CONSTITUTION, samples.constitution(), Role.AVOCAT, Role.GREFFIER),
        (REGISTRY_DECISION, samples.registry_decision(), Role.GREFFIER, Role.AVOCAT),
        (DOSSIER_EVENT, samples.dossier_event(), Role.COURT_SYSTEM, Role.GREFFIER),
        (HEARING_SLOTS, samples.hearing_slots(), Role.COURT_SYSTEM, Role.AVOCAT),
    ],
)
def test_each_document_has_its_senders(
    media_type: str, doc: dict[str, Any], allowed: Role, refused: Role
) -> None:
    parts: list[tuple[str, bytes, str | None]] = [(media_type, _json(doc), "document.json")]
    if media_type == CONSTITUTION:
        parts.append(("application/pdf", PDF, "constitution.pdf"))
    data = _message(*parts)
    assert message_errors(data, {}, allowed) == []
    with pytest.raises(NotAllowed) as caught:
        refuse_invalid(data, {}, refused)
    assert caught.value.text.startswith(f"Un document {KINDS[media_type].name} ne peut")


def test_a_lawyer_never_sends_a_court_s_decision() -> None:
    data = _message((REGISTRY_DECISION, _json(samples.registry_decision()), "decision.json"))
    with pytest.raises(NotAllowed) as caught:
        refuse_invalid(data, {}, Role.AVOCAT)
    assert caught.value.text == (
        "Un document registry-decision ne peut être envoyé que par un greffe"
        " ou le système d'une juridiction"
    )


def test_several_documents_name_theirs() -> None:
    bad = changed(samples.constitution(), "document", REMOVE)
    data = _message(
        (SAISINE, _json(samples.saisine()), "saisine.json"),
        (CONSTITUTION, _json(bad), "constitution.json"),
    )
    assert message_errors(data, {}) == ["constitution document: champ obligatoire"]


# -- schemas ------


def test_the_published_schemas_are_the_models() -> None:
    published = Path(palais.mailbox.__file__).parent / "schemas"
    schemas = document_schemas()
    assert sorted(p.name for p in published.glob("*.json")) == sorted(schemas)
    for name, schema in schemas.items():
        assert json.loads((published / name).read_text(encoding="utf-8")) == schema, name


def test_each_schema_names_its_media_type() -> None:
    assert {s["x-media-type"] for s in document_schemas().values()} == set(KINDS)
