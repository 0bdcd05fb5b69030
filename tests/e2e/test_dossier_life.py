"""A dossier's life on a running instance: the court system (its certificate,
smtplib on the court listener) pushes dossier events, lawyers see the Fiche
dossier replaced over IMAP (IDLE), refusals come in the SMTP dialogue, and a
terminated dossier is purged after its retention, its receipts kept.

The purge's clock: the gateway counts the retention from the instant the
court system says the dossier was terminated (the event's ``occurred_at``),
so a dossier terminated "366 days ago" is due at the next look (every half
second here) and one terminated 364 days ago is not; the runner's own clock
is moved in tests/storage/test_dossier_life.py.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import re
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from palais.mailbox.documents import DOSSIER_EVENT
from tests.e2e.instance import Instance, create_instance

RECUS = "Re&AOc-us"  # "Reçus" in IMAP's modified UTF-7
ACCUSES = '"Accus&AOk-s de r&AOk-ception"'
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("dossier-life") / "i"
    instance = create_instance(root, extra_config="[dossiers]\npurge_interval = 0.5\n")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def _event_doc(inst: Instance, event: dict[str, Any], occurred: datetime | None = None) -> bytes:
    doc = {
        "dossier": inst.dossier["number"],
        "juridiction_code": "CPH-BORDEAUX",
        "occurred_at": (occurred or datetime.now(UTC)).isoformat(),
        "event": event,
    }
    return json.dumps(doc).encode()


def _court_mail(inst: Instance, payload: bytes) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = inst.address("court1")
    msg["To"] = inst.dossier["address"]
    msg["Subject"] = f"[{inst.dossier['number']}] événement du dossier"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@cph-bordeaux.juridictions.palais.test>"
    msg.set_content("Événement du dossier.")
    maintype, subtype = DOSSIER_EVENT.split("/")
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename="evenement.json")
    return msg


def _push(inst: Instance, event: dict[str, Any], occurred: datetime | None = None) -> None:
    """The court system sends one dossier event, on its own listener."""
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        assert smtp.send_message(_court_mail(inst, _event_doc(inst, event, occurred))) == {}


def _refused(inst: Instance, event: dict[str, Any], **doc: Any) -> tuple[int, str]:
    payload = json.loads(_event_doc(inst, event))
    payload.update(doc)
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.send_message(_court_mail(inst, json.dumps(payload).encode()))
    error = caught.value.smtp_error
    return caught.value.smtp_code, error.decode() if isinstance(error, bytes) else error


def _party(pid: str, quality: str, name: str, town: str) -> dict[str, Any]:
    return {
        "id": pid,
        "quality": quality,
        "person_type": "physique",
        "name": name,
        "address": {
            "number_and_street": "12 cours de l'Intendance",
            "postcode": "33000",
            "town": town,
            "country": "France",
        },
    }


HEARING = {
    "id": "AUD-1",
    "date": "2027-01-14",
    "time": "09:30",
    "formation": "bureau de jugement",
    "type": "audience de jugement",
    "room": "salle 3",
}


def _recus(inst: Instance) -> str:
    return f'"Dossiers/{inst.dossier["number"]}/{RECUS}"'


def _fiches(imap: imaplib.IMAP4_SSL, box: str) -> list[email.message.EmailMessage]:
    """The Fiche dossier messages of ``box``, parsed."""
    assert imap.select(box, readonly=True)[0] == "OK"
    typ, found = imap.uid("SEARCH", "SUBJECT", '"Fiche dossier"')
    assert typ == "OK"
    out = []
    for uid in found[0].split():
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(data[0], tuple)
        parsed = email.message_from_bytes(data[0][1], policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        out.append(parsed)
    return out


def _html_and_calendar(fiche: email.message.EmailMessage) -> tuple[str, Calendar]:
    page = fiche.get_body(("html",))
    assert page is not None
    (ics,) = [p for p in fiche.iter_attachments() if p.get_content_type() == "text/calendar"]
    raw = ics.get_payload(decode=True)
    assert isinstance(raw, bytes)
    return str(page.get_content()), Calendar.from_ical(raw)


def test_a_hearing_event_replaces_the_fiche_seen_by_an_idle_session(inst: Instance) -> None:
    _push(
        inst,
        {
            "kind": "created",
            "service": inst.dossier["service"],
            "dossier_type": "fond",
            "act_nature": "requête",
            "act_date": "2026-11-02",
            "confidential": True,
            "parties": [
                _party("P1", "demandeur", "Jeanne Martin", "Talence"),
                _party("P2", "defendeur", "SARL Dupont", "Mérignac"),
            ],
        },
    )
    _push(
        inst,
        {
            "kind": "lawyer_changed",
            "party_id": "P1",
            "change": "constituted",
            "lawyer_address": inst.address("avocat1"),
        },
    )
    lawyer = inst.imap("avocat1")
    (first,) = _fiches(lawyer, _recus(inst))
    assert "Jeanne Martin" in _html_and_calendar(first)[0]
    # The lawyer's session waits in IDLE on the dossier's Reçus; the court adds a hearing.
    assert lawyer.select(_recus(inst))[0] == "OK"
    tag = lawyer._new_tag()
    lawyer.send(tag + b" IDLE\r\n")
    assert lawyer.readline().startswith(b"+")
    _push(inst, {"kind": "hearing_added", "hearing": HEARING})
    heard: list[bytes] = []
    while not any(re.match(rb"\* \d+ EXISTS", line) for line in heard):
        heard.append(lawyer.readline())
    assert any(re.match(rb"\* \d+ EXPUNGE", line) for line in heard), heard
    lawyer.send(b"DONE\r\n")
    while not lawyer.readline().startswith(tag):
        pass

    (fiche,) = _fiches(lawyer, _recus(inst))  # the old one is gone
    assert fiche["Message-ID"] != first["Message-ID"]
    page, cal = _html_and_calendar(fiche)
    assert "14/01/2027" in page and "salle 3" in page and "audience de jugement" in page
    (hearing,) = cal.walk("VEVENT")
    assert hearing.decoded("dtstart") == datetime(2027, 1, 14, 9, 30, tzinfo=PARIS)
    assert "salle 3" in str(hearing["location"])
    # Confidential: avocat1 sees their client's address, not the other party's.
    assert "Talence" in page and "Mérignac" not in page
    # The Fiche is not in the global INBOX view, and reading it sends no receipt.
    assert lawyer.select("INBOX", readonly=True)[0] == "OK"
    _, found = lawyer.uid("SEARCH", "SUBJECT", '"Fiche dossier"')
    assert found == [b""]
    lawyer.logout()

    # Another lawyer of the dossier sees neither address; the service sees both.
    other = inst.imap("avocat2")
    page, _ = _html_and_calendar(_fiches(other, _recus(inst))[0])
    other.logout()
    assert "Jeanne Martin" in page and "Talence" not in page and "Mérignac" not in page
    clerk = inst.imap("greffier1")
    page, _ = _html_and_calendar(_fiches(clerk, _recus(inst))[0])
    clerk.logout()
    assert "Talence" in page and "Mérignac" in page


def test_a_lawyer_the_court_constitutes_joins_the_dossier(inst: Instance) -> None:
    """The court system constitutes avocat3 for the défendeur: avocat3's
    session lists the dossier's boxes, the Fiche is in its Reçus, and
    avocat3 writes to the dossier's address at once."""
    number = inst.dossier["number"]
    newcomer = inst.imap("avocat3")
    assert not any(number in name for name in _names(newcomer))
    _push(
        inst,
        {
            "kind": "lawyer_changed",
            "party_id": "P2",
            "change": "constituted",
            "lawyer_address": inst.address("avocat3"),
        },
    )
    assert f"Dossiers/{number}/{RECUS}" in _names(newcomer)
    (fiche,) = _fiches(newcomer, _recus(inst))
    assert fiche["To"] == inst.address("avocat3")
    newcomer.logout()
    inst.submit("Constitution pour SARL Dupont", "avocat3", "Je me constitue pour la défenderesse.")


def test_events_that_do_not_fit_are_refused_in_the_dialogue(inst: Instance) -> None:
    moved = {"kind": "hearing_moved", "hearing": {**HEARING, "id": "AUD-404"}}
    assert _refused(inst, moved) == (
        550,
        f"5.6.0 Événement refusé pour le dossier {inst.dossier['number']}\n"
        "5.6.0 event.hearing.id: aucune audience AUD-404",
    )
    status = {"kind": "status_changed", "status": "en_cours"}
    assert _refused(inst, status, dossier="2025-0999999") == (
        550,
        "5.1.1 Événement refusé : dossier 2025-0999999 inconnu",
    )
    cancelled = {"kind": "hearing_cancelled", "hearing_id": "AUD-404"}
    code, text = _refused(inst, cancelled)
    assert code == 550 and text.endswith("event.hearing_id: aucune audience AUD-404")
    # Nothing of them stored: the court system's INBOX copy count is unchanged.
    court = inst.imap("court1")
    assert court.select(_recus(inst), readonly=True)[0] == "OK"
    _, found = court.uid("SEARCH", "BODY", "AUD-404")
    court.logout()
    assert found == [b""]


def test_a_terminated_dossier_is_purged_after_its_retention_receipts_kept(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("dossier-purge")
    inst = create_instance(root / "i", extra_config="[dossiers]\npurge_interval = 0.5\n")
    inst.start()
    try:
        original, receipts = inst.exchange_with_receipts(
            "Conclusions", "Bonjour,\nnos conclusions.\n", b"%PDF-1.4\n%%EOF\n", "c.pdf"
        )
        assert receipts
        now = datetime.now(UTC)
        _push(inst, {"kind": "status_changed", "status": "termine"}, now - timedelta(days=364))
        time.sleep(2)  # four looks of the purge: not due yet
        lawyer = inst.imap("avocat1")
        assert f"Dossiers/{inst.dossier['number']}/{RECUS}" in _names(lawyer)
        # Reopened, then terminated again "366 days ago": due at the next look.
        _push(inst, {"kind": "status_changed", "status": "en_cours"}, now - timedelta(days=367))
        _push(inst, {"kind": "status_changed", "status": "termine"}, now - timedelta(days=366))
        deadline = time.monotonic() + 30
        while any(n.startswith("Dossiers/") for n in _names(lawyer)):
            assert time.monotonic() < deadline, "the dossier was not purged"
            time.sleep(0.3)
        # Its receipts stay in Accusés de réception, and still verify.
        kept = _fetch_all(lawyer, ACCUSES)
        lawyer.logout()
        assert sorted(kept) == sorted(receipts)
        (root / "original.eml").write_bytes(original)
        (root / "accuse.eml").write_bytes(receipts[0])
        checked = subprocess.run(
            [
                sys.executable,
                "-m",
                "palais",
                "verify-receipt",
                str(root / "accuse.eml"),
                "--message",
                str(root / "original.eml"),
                "--trust",
                str(inst.root / str(inst.demo.get("evidence_ca", "pki/ca.pem"))),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        # Nobody takes part in the purged dossier any more: its mail is refused.
        with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
            smtp.starttls(context=inst.client_context("court1"))
            event = {"kind": "status_changed", "status": "en_cours"}
            with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
                smtp.send_message(_court_mail(inst, _event_doc(inst, event)))
        ((code, text),) = caught.value.recipients.values()
        assert code == 550 and text.startswith(b"5.7.1")
    finally:
        inst.stop()


def _names(imap: imaplib.IMAP4_SSL) -> list[str]:
    typ, lines = imap.list()
    assert typ == "OK"
    out = []
    for line in lines:
        assert isinstance(line, bytes)
        out.append(line.decode().rsplit(' "/" ', 1)[1].strip('"'))
    return out


def _fetch_all(imap: imaplib.IMAP4_SSL, box: str) -> list[bytes]:
    assert imap.select(box, readonly=True)[0] == "OK"
    typ, found = imap.uid("SEARCH", "ALL")
    out = []
    for uid in found[0].split():
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(data[0], tuple)
        out.append(bytes(data[0][1]))
    return out
