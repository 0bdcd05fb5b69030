"""A dossier's life: each event applied, each refusal rule, the purge's due date, the Fiche."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from palais.mailbox.court_events import DossierEvent, DossierStatus, HearingSlots
from palais.mailbox.documents import DOSSIER_EVENT, HEARING_SLOTS, SAISINE
from palais.mailbox.dossier_life import (
    DossierLife,
    EventRefused,
    apply_event,
    blank_life,
    carried_events,
    event_digest,
    purge_due,
    unknown_dossier,
)
from palais.mailbox.errors import ErrorKind, InvalidMessage
from palais.mailbox.fiche import FicheFacts, FicheReader, fiche_mail
from palais.mailbox.hearing_slots import (
    SlotBooked,
    booked_juridictions,
    booked_slot,
    opened_slot,
    take_place,
)
from tests.mailbox import court_samples as samples

NUMBER = "2025-0000138"
PARIS = ZoneInfo("Europe/Paris")
AT = "2026-11-30T10:00:00+01:00"


def _event(event: dict[str, Any], *, number: str = NUMBER, code: str = "CPH-BORDEAUX") -> Any:
    return DossierEvent.model_validate(
        {"dossier": number, "juridiction_code": code, "occurred_at": AT, "event": event}
    )


def _party(pid: str, quality: str, name: str, town: str = "Bordeaux") -> dict[str, Any]:
    return {
        "id": pid,
        "quality": quality,
        "person_type": "physique",
        "name": name,
        "address": {**samples.address(), "town": town},
    }


def _created(confidential: bool = False) -> dict[str, Any]:
    return {
        "kind": "created",
        "service": "CPH BORDEAUX - Commerce",
        "dossier_type": "fond",
        "act_nature": "requête",
        "act_date": "2026-11-02",
        "confidential": confidential,
        "parties": [
            _party("P1", "demandeur", "Jeanne Martin", "Talence"),
            _party("P2", "defendeur", "SARL Dupont", "Mérignac"),
        ],
    }


def _hearing(hid: str = "H1", day: str = "2027-01-14", room: str = "salle 3") -> dict[str, Any]:
    return {
        "id": hid,
        "date": day,
        "time": "09:30",
        "formation": "bureau de jugement",
        "type": "audience de jugement",
        "room": room,
    }


def _life(*events: dict[str, Any]) -> DossierLife:
    life = blank_life(NUMBER)
    for event in events:
        life = apply_event(life, _event(event)).after
    return life


def _refused(life: DossierLife, event: Any) -> str:
    with pytest.raises(EventRefused) as caught:
        apply_event(life, event)
    assert caught.value.kind is ErrorKind.INVALID_MESSAGE
    (detail,) = caught.value.details
    return detail


CONSTITUTED = {
    "kind": "lawyer_changed",
    "party_id": "P1",
    "change": "constituted",
    "lawyer_address": "Avocat1@Avocats.palais.test",
}


# -- applied ---------------------------------------------------------------------


def test_created_sets_the_dossier_up() -> None:
    life = _life(_created())
    assert life.created and life.version == 1 and life.juridiction_code == "CPH-BORDEAUX"
    assert [p.id for p in life.parties] == ["P1", "P2"]
    assert life.status is DossierStatus.PROVISOIRE and life.act_nature == "requête"


def test_hearings_are_added_moved_and_cancelled_in_date_order() -> None:
    life = _life(_created(), {"kind": "hearing_added", "hearing": _hearing("H2", "2027-03-01")})
    life = apply_event(life, _event({"kind": "hearing_added", "hearing": _hearing()})).after
    assert [h.id for h in life.hearings] == ["H1", "H2"]
    moved = {"kind": "hearing_moved", "hearing": _hearing("H1", "2027-04-02", "salle 5")}
    life = apply_event(life, _event(moved)).after
    assert [(h.id, h.date.isoformat(), h.room) for h in life.hearings] == [
        ("H2", "2027-03-01", "salle 3"),
        ("H1", "2027-04-02", "salle 5"),
    ]
    life = apply_event(life, _event({"kind": "hearing_cancelled", "hearing_id": "H2"})).after
    assert [h.id for h in life.hearings] == ["H1"] and life.version == 5


def test_a_status_change_to_termine_dates_the_termination() -> None:
    change = apply_event(_life(_created()), _event({"kind": "status_changed", "status": "termine"}))
    assert change.terminated
    assert change.after.terminated_at == datetime.fromisoformat(AT)
    reopened = apply_event(change.after, _event({"kind": "status_changed", "status": "en_cours"}))
    assert reopened.after.terminated_at is None


def test_a_party_changed_replaces_it_in_place_or_is_added() -> None:
    life = _life(_created())
    renamed = {"kind": "party_changed", "party": _party("P1", "demandeur", "Jeanne Martin-Roy")}
    life = apply_event(life, _event(renamed)).after
    assert [p.name for p in life.parties] == ["Jeanne Martin-Roy", "SARL Dupont"]
    added = {"kind": "party_changed", "party": _party("P3", "intervenant_force", "SCI Les Pins")}
    assert [p.id for p in apply_event(life, _event(added)).after.parties] == ["P1", "P2", "P3"]


def test_lawyers_are_constituted_withdrawn_and_replaced() -> None:
    life = _life(_created(), CONSTITUTED)
    assert life.lawyers_of("P1") == ("avocat1@avocats.palais.test",)
    assert life.represented_by("AVOCAT1@avocats.palais.test") == {"P1"}
    replaced = {
        **CONSTITUTED,
        "change": "replaced",
        "lawyer_address": "avocat2@avocats.palais.test",
        "replaces_address": "avocat1@avocats.palais.test",
    }
    life = apply_event(life, _event(replaced)).after
    assert life.lawyers_of("P1") == ("avocat2@avocats.palais.test",)
    withdrawn = {
        **CONSTITUTED,
        "change": "withdrawn",
        "lawyer_address": "avocat2@avocats.palais.test",
    }
    assert apply_event(life, _event(withdrawn)).after.lawyers == ()


def test_events_apply_to_a_dossier_the_court_never_created() -> None:
    # A dossier opened by an accepted saisine or by `palais init`: its life starts blank.
    life = _life({"kind": "hearing_added", "hearing": _hearing()})
    assert not life.created and [h.id for h in life.hearings] == ["H1"]


# -- refused: one test per rule --------------------------------------------------


def test_an_unknown_dossier_is_refused_with_5_1_1_words() -> None:
    error = unknown_dossier("2025-0009999")
    assert error.kind is ErrorKind.UNKNOWN_RECIPIENT
    assert error.text == "Événement refusé : dossier 2025-0009999 inconnu"


def test_an_event_for_another_dossier_is_refused() -> None:
    event = _event({"kind": "status_changed", "status": "en_cours"}, number="2025-0000999")
    assert _refused(_life(), event) == "dossier: l'événement concerne le dossier 2025-0000999"


def test_an_event_from_another_juridiction_is_refused() -> None:
    event = _event({"kind": "status_changed", "status": "en_cours"}, code="TJ-LYON")
    assert _refused(_life(_created()), event) == (
        "juridiction_code: le dossier relève de CPH-BORDEAUX, pas de TJ-LYON"
    )


def test_created_twice_is_refused() -> None:
    assert _refused(_life(_created()), _event(_created())) == (
        "event.kind: le dossier a déjà été créé"
    )


def test_a_terminated_dossier_takes_only_a_status_change() -> None:
    life = _life(_created(), {"kind": "status_changed", "status": "termine"})
    event = _event({"kind": "hearing_added", "hearing": _hearing()})
    assert _refused(life, event) == "event.kind: le dossier est terminé"


def test_a_terminated_dossier_never_becomes_provisoire_again() -> None:
    life = _life(_created(), {"kind": "status_changed", "status": "termine"})
    event = _event({"kind": "status_changed", "status": "provisoire"})
    assert _refused(life, event) == "event.status: un dossier terminé ne redevient pas provisoire"


def test_a_status_already_in_force_is_refused() -> None:
    event = _event({"kind": "status_changed", "status": "provisoire"})
    assert _refused(_life(_created()), event) == (
        "event.status: le dossier est déjà au statut provisoire"
    )


def test_a_hearing_added_twice_is_refused() -> None:
    life = _life({"kind": "hearing_added", "hearing": _hearing()})
    event = _event({"kind": "hearing_added", "hearing": _hearing()})
    assert _refused(life, event) == "event.hearing.id: l'audience H1 existe déjà"


def test_a_hearing_moved_that_does_not_exist_is_refused() -> None:
    event = _event({"kind": "hearing_moved", "hearing": _hearing("H7")})
    assert _refused(_life(_created()), event) == "event.hearing.id: aucune audience H7"


def test_a_hearing_cancelled_that_does_not_exist_is_refused() -> None:
    event = _event({"kind": "hearing_cancelled", "hearing_id": "H7"})
    assert _refused(_life(_created()), event) == "event.hearing_id: aucune audience H7"


def test_a_lawyer_for_an_unknown_party_is_refused() -> None:
    event = _event({**CONSTITUTED, "party_id": "P9"})
    assert _refused(_life(_created()), event) == "event.party_id: aucune partie P9"


def test_a_lawyer_constituted_twice_is_refused() -> None:
    assert _refused(_life(_created(), CONSTITUTED), _event(CONSTITUTED)) == (
        "event.lawyer_address: avocat1@avocats.palais.test est déjà constitué pour P1"
    )


def test_withdrawing_a_lawyer_not_constituted_is_refused() -> None:
    event = _event({**CONSTITUTED, "change": "withdrawn"})
    assert _refused(_life(_created()), event) == (
        "event.lawyer_address: avocat1@avocats.palais.test n'est pas constitué pour P1"
    )


def test_replacing_a_lawyer_not_constituted_is_refused() -> None:
    event = _event(
        {
            **CONSTITUTED,
            "change": "replaced",
            "lawyer_address": "avocat2@avocats.palais.test",
            "replaces_address": "avocat3@avocats.palais.test",
        }
    )
    assert _refused(_life(_created(), CONSTITUTED), event) == (
        "event.replaces_address: avocat3@avocats.palais.test n'est pas constitué pour P1"
    )


def test_a_refusal_reads_as_a_clerk_would_say_it() -> None:
    with pytest.raises(EventRefused) as caught:
        apply_event(_life(), _event({"kind": "hearing_cancelled", "hearing_id": "H7"}))
    assert caught.value.text == f"Événement refusé pour le dossier {NUMBER}"


# -- purge -----------------------------------------------------------------------


def test_a_terminated_dossier_is_due_for_purge_after_the_retention() -> None:
    life = _life(_created(), {"kind": "status_changed", "status": "termine"})
    ended = datetime.fromisoformat(AT)
    year = timedelta(days=365)
    assert not purge_due(life, ended + year - timedelta(seconds=1), year)
    assert purge_due(life, ended + year, year)
    assert not purge_due(_life(_created()), ended + 10 * year, year)


# -- in a message ----------------------------------------------------------------


def test_the_events_a_message_carries_are_read_with_their_digest() -> None:
    payload = json.dumps(samples.dossier_event()).encode()
    msg = EmailMessage()
    msg["Subject"] = f"[{NUMBER}] audience"
    msg.set_content("Audience fixée.")
    msg.add_attachment(
        payload, maintype="application", subtype="vnd.palais.dossier-event+json", filename="e.json"
    )
    ((event, digest),) = carried_events(msg.as_bytes())
    assert event.dossier == NUMBER and digest == event_digest(payload)
    plain = EmailMessage()
    plain.set_content("Bonjour")
    assert carried_events(plain.as_bytes()) == []
    assert DOSSIER_EVENT == "application/vnd.palais.dossier-event+json"


# -- the Fiche -------------------------------------------------------------------

FACTS = FicheFacts(
    number=NUMBER,
    address=f"{NUMBER}@dossiers.palais.test",
    juridiction="CPH BORDEAUX",
    service_address="cph-bordeaux-commerce@greffes.palais.test",
)
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _fiche(life: DossierLife, reader: FicheReader) -> email.message.EmailMessage:
    data = fiche_mail(life, FACTS, reader, now=NOW, zone=PARIS, sender="fiche@palais.test")
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def _parts(msg: email.message.EmailMessage) -> tuple[str, Calendar]:
    html_part = msg.get_body(("html",))
    assert html_part is not None
    (ics,) = [p for p in msg.iter_attachments() if p.get_content_type() == "text/calendar"]
    raw = ics.get_payload(decode=True)
    assert isinstance(raw, bytes)
    return str(html_part.get_content()), Calendar.from_ical(raw)


def test_the_fiche_names_parties_lawyers_status_and_hearings() -> None:
    life = _life(_created(), CONSTITUTED, {"kind": "hearing_added", "hearing": _hearing()})
    msg = _fiche(life, FicheReader("avocat1@avocats.palais.test", lawyer=True))
    assert msg["Subject"] == f"[{NUMBER}] Fiche dossier"
    assert msg["Auto-Submitted"] == "auto-generated"
    page, cal = _parts(msg)
    for shown in ("Jeanne Martin", "SARL Dupont", "avocat1@avocats.palais.test", "provisoire"):
        assert shown in page
    assert "14/01/2027" in page and "salle 3" in page
    (vevent,) = cal.walk("VEVENT")
    assert vevent.decoded("dtstart") == datetime(2027, 1, 14, 9, 30, tzinfo=PARIS)
    assert str(vevent["location"]) == "salle 3, CPH BORDEAUX"
    assert str(vevent["uid"]) == f"H1.{NUMBER}@palais.test"


def test_a_confidential_dossier_hides_the_other_parties_addresses_from_a_lawyer() -> None:
    life = _life(_created(confidential=True), CONSTITUTED)
    page, _ = _parts(_fiche(life, FicheReader("avocat1@avocats.palais.test", lawyer=True)))
    assert "Talence" in page  # their own client's
    assert "Mérignac" not in page and "adresse masquée" in page
    # Another lawyer of the dossier sees neither; the service sees both.
    page, _ = _parts(_fiche(life, FicheReader("avocat3@avocats.palais.test", lawyer=True)))
    assert "Talence" not in page and "Mérignac" not in page
    service = FicheReader("cph-bordeaux-commerce@greffes.palais.test", lawyer=False)
    page, _ = _parts(_fiche(life, service))
    assert "Talence" in page and "Mérignac" in page


def test_an_open_dossier_shows_every_address() -> None:
    life = _life(_created(confidential=False), CONSTITUTED)
    page, _ = _parts(_fiche(life, FicheReader("avocat3@avocats.palais.test", lawyer=True)))
    assert "Talence" in page and "Mérignac" in page


def test_the_same_facts_give_the_same_fiche() -> None:
    life = _life(_created(), {"kind": "hearing_added", "hearing": _hearing()})
    reader = FicheReader("avocat1@avocats.palais.test", lawyer=True)
    one = fiche_mail(life, FACTS, reader, now=NOW, zone=PARIS, sender="fiche@palais.test")
    two = fiche_mail(life, FACTS, reader, now=NOW, zone=PARIS, sender="fiche@palais.test")
    assert one == two
    moved = apply_event(life, _event({"kind": "hearing_moved", "hearing": _hearing(room="s. 9")}))
    other = fiche_mail(moved.after, FACTS, reader, now=NOW, zone=PARIS, sender="fiche@palais.test")
    assert other != one


# -- opened hearing slots ----------------------------------------------------------


def test_a_booking_takes_only_a_slot_its_juridiction_opened_and_not_begun() -> None:
    published = HearingSlots.model_validate(samples.hearing_slots())
    opened = {published.juridiction_code: published.slots}
    found = opened_slot(opened, samples.JURIDICTION, samples.SLOT)
    assert found is not None and found.id == samples.SLOT
    assert opened_slot(opened, samples.JURIDICTION, "CPH-BX-2099") is None
    assert opened_slot(opened, "TJ-LYON", samples.SLOT) is None
    assert opened_slot(opened, samples.JURIDICTION, samples.SLOT, found.starts_at) is None


def test_a_booking_takes_a_place_while_one_is_left() -> None:
    doc = samples.hearing_slots()
    doc["slots"][0]["places"] = 2
    slots = HearingSlots.model_validate(doc).slots
    booking = booked_slot(samples.saisine(booking=True))
    assert booking == SlotBooked(samples.JURIDICTION, samples.SLOT)
    before = slots[0].starts_at - timedelta(days=1)
    assert take_place(slots, booking, 0, before).id == samples.SLOT
    assert take_place(slots, booking, 1, before).id == samples.SLOT
    with pytest.raises(InvalidMessage) as full:
        take_place(slots, booking, 2, before)
    assert full.value.text.startswith("date_booking.slot_id: ce créneau est complet")
    assert full.value.kind is ErrorKind.INVALID_MESSAGE
    for gone, when in (
        (booking, slots[0].starts_at),
        (SlotBooked(samples.JURIDICTION, "X"), before),
    ):
        with pytest.raises(InvalidMessage) as closed:  # begun, or not in the list
            take_place(slots, gone, 0, when)
        assert "n'est pas ouvert" in closed.value.text
    # One place unless the court says otherwise; a saisine without booking books nothing.
    assert HearingSlots.model_validate(samples.hearing_slots()).slots[0].places == 1
    assert booked_slot(samples.saisine()) is None


def test_the_juridictions_a_message_books_are_those_of_its_saisines_with_a_booking() -> None:
    def mail(*documents: tuple[str, dict[str, Any]]) -> bytes:
        msg = EmailMessage()
        msg["Subject"] = "saisine"
        msg.set_content("Ci-joint.")
        for media_type, doc in documents:
            payload = json.dumps(doc).encode()
            msg.add_attachment(payload, maintype="application", subtype=media_type.split("/")[1])
        return msg.as_bytes()

    assert booked_juridictions(mail((SAISINE, samples.saisine(booking=True)))) == {
        samples.JURIDICTION
    }
    assert booked_juridictions(mail((SAISINE, samples.saisine()))) == frozenset()
    assert booked_juridictions(mail((HEARING_SLOTS, samples.hearing_slots()))) == frozenset()
    assert booked_juridictions(b"Subject: rien\r\n\r\ntexte\r\n") == frozenset()
