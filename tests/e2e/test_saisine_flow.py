"""A saisine and a constitution end to end, over real sockets.

The court system (its certificate) opens hearing slots; avocat1 saves a
saisine with a date booking in Saisines/Enregistrées, then sends it to the
juridiction's saisine address (smtplib, card certificate), which takes the
slot's one place (avocat3 booking it next is refused); the court system
fetches it over IMAP and rejects it; avocat1 finds it in Saisines/Rejetées
with the reason, corrects it and sends it again, booking the place the
rejection gave back; the court accepts: the
dossier appears in avocat1's LIST and wakes an IDLE session, the acceptance
receipt verifies with `palais verify-receipt`. avocat3 finds the dossier
with curl on the HTTPS API, sends a constitution, and once the court
accepts it the dossier appears for them.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import imaplib
import json
import random
import re
import shutil
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from palais.mailbox.documents import (
    CONSTITUTION,
    DOSSIER_EVENT,
    HEARING_SLOTS,
    REGISTRY_DECISION,
    SAISINE,
)
from tests.e2e.instance import Instance, create_instance
from tests.e2e.test_client_cli import client
from tests.e2e.test_dossier_life import HEARING, PARIS, _fiches, _html_and_calendar
from tests.mailbox import court_samples as samples

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

ENREGISTREES = '"Saisines/Enregistr&AOk-es"'
ENVOYEES = '"Saisines/Envoy&AOk-es"'
REJETEES = '"Saisines/Rejet&AOk-es"'
ACCUSES = '"Accus&AOk-s de r&AOk-ception"'


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = create_instance(tmp_path_factory.mktemp("saisine") / "i")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def _juridiction(inst: Instance) -> dict[str, Any]:
    return next(j for j in inst.demo["juridictions"] if j["code"] == samples.JURIDICTION)


def _attach_json(msg: EmailMessage, media_type: str, doc: dict[str, Any], name: str) -> None:
    payload = json.dumps(doc, ensure_ascii=False).encode()
    msg.add_attachment(
        payload, maintype="application", subtype=media_type.split("/")[1], filename=name
    )


def _message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@palais.test>"
    msg.set_content(text)
    return msg


def _saisine(inst: Instance, doc: dict[str, Any]) -> EmailMessage:
    msg = _message(
        inst.address("avocat1"), _juridiction(inst)["saisine_address"], "Saisine", "Ci-joint."
    )
    _attach_json(msg, SAISINE, doc, "saisine.json")
    msg.add_attachment(
        samples.PDF, maintype="application", subtype="pdf", filename="projet-assignation.pdf"
    )
    return msg


def _fixed(msg: EmailMessage) -> EmailMessage:
    """The same bytes at each sending: the email package draws a new boundary
    at each flattening of a multipart message that has none."""
    if msg.is_multipart() and msg.get_boundary() is None:
        msg.set_boundary(f"=={uuid.uuid4().hex}")
    return msg


def _lawyer_sends(inst: Instance, who: str, msg: EmailMessage) -> None:
    _fixed(msg)
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context(who), timeout=10
    ) as smtp:
        assert smtp.send_message(msg) == {}


def _court_sends(inst: Instance, msg: EmailMessage) -> None:
    _fixed(msg)
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        assert smtp.send_message(msg) == {}


def _court_reply(inst: Instance, msg: EmailMessage) -> str:
    """The 250's text ("2.0.0 Accepted as M<id>") of a message to one address."""
    _fixed(msg)
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        smtp.ehlo()
        code, text = smtp.mail(inst.address("court1"))
        assert code == 250, text
        assert smtp.rcpt(str(msg["To"]).strip("<>"))[0] == 250
        code, text = smtp.data(msg.as_bytes(policy=email.policy.SMTP))
        assert code == 250, text
        return text.decode()


def _decision(inst: Instance, about: str, message_id: str, **fields: Any) -> EmailMessage:
    j = _juridiction(inst)
    to = j["saisine_address"] if about == "saisine" else j["constitution_address"]
    msg = _message(inst.address("court1"), to, f"Décision du greffe ({about})", "Décision.")
    doc = {
        "about": about,
        "message_id": message_id,
        "decided_at": "2026-11-30T11:00:00+01:00",
        **fields,
    }
    _attach_json(msg, REGISTRY_DECISION, doc, "decision.json")
    return msg


def _fetch(imap: imaplib.IMAP4_SSL, box: str) -> list[bytes]:
    assert imap.select(box, readonly=True)[0] == "OK", box
    _, data = imap.fetch("1:*", "(BODY.PEEK[])")
    return [item[1] for item in data if isinstance(item, tuple)]


def _names(imap: imaplib.IMAP4_SSL) -> list[str]:
    _, listed = imap.list()
    return [
        line.decode().rsplit(' "/" ', 1)[1].strip('"') for line in listed if isinstance(line, bytes)
    ]


def _subject(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=email.policy.default)["Subject"])


def _text(error: bytes | str) -> str:
    return error.decode() if isinstance(error, bytes) else error


def _with_id(messages: list[bytes], message_id: str) -> list[bytes]:
    return [m for m in messages if message_id.encode() in m.split(b"\r\n\r\n", 1)[0]]


def test_saisine_rejected_corrected_accepted_then_a_constitution(inst: Instance) -> None:
    j = _juridiction(inst)
    number = f"2026-{random.randrange(10**6, 10**7):07d}"
    # The court system opens its slots for date booking.
    slots = _message(inst.address("court1"), j["saisine_address"], "Créneaux", "Créneaux.")
    _attach_json(slots, HEARING_SLOTS, samples.hearing_slots(), "creneaux.json")
    published = _court_reply(inst, slots)
    # Its 250 lost, the court system sends the list again, in another second
    # (the trace line the gateway adds names it): the first filing's reply.
    time.sleep(1.01 - time.time() % 1)
    assert _court_reply(inst, slots) == published

    # avocat1 saves the saisine, then sends it (same Message-ID: the draft leaves).
    first = _saisine(inst, samples.saisine(booking=True))
    lawyer = inst.imap("avocat1")
    assert {"Saisines/Enregistr&AOk-es", "Saisines/Envoy&AOk-es", "Saisines/Rejet&AOk-es"} <= set(
        _names(lawyer)
    )
    assert lawyer.append(ENREGISTREES, None, None, first.as_bytes())[0] == "OK"
    assert len(_with_id(_fetch(lawyer, ENREGISTREES), first["Message-ID"])) == 1
    _lawyer_sends(inst, "avocat1", first)
    _lawyer_sends(inst, "avocat1", first)  # its 250 lost, say: the same message once
    assert not _with_id(_fetch(lawyer, ENREGISTREES), first["Message-ID"])
    assert len(_with_id(_fetch(lawyer, ENVOYEES), first["Message-ID"])) == 1
    deposit = [r for r in _fetch(lawyer, ACCUSES) if first["Message-ID"].encode() in r]
    assert deposit, "the saisine's deposit receipt"

    # The slot's one place is taken: avocat3's saisine booking it is refused
    # whole (550 5.6.0 naming the field), filed nowhere.
    j3 = _message(inst.address("avocat3"), j["saisine_address"], "Saisine", "Ci-joint.")
    _attach_json(j3, SAISINE, samples.saisine(booking=True), "saisine.json")
    j3.add_attachment(
        samples.PDF, maintype="application", subtype="pdf", filename="projet-assignation.pdf"
    )
    with (
        smtplib.SMTP_SSL(
            "localhost", inst.port("smtps"), context=inst.client_context("avocat3"), timeout=10
        ) as smtp,
        pytest.raises(smtplib.SMTPDataError) as full,
    ):
        smtp.send_message(_fixed(j3))
    assert full.value.smtp_code == 550
    assert _text(full.value.smtp_error) == (
        "5.6.0 date_booking.slot_id: ce créneau est complet, choisissez-en un autre"
    )
    third = inst.imap("avocat3")
    assert not _with_id(_fetch(third, ENVOYEES), j3["Message-ID"])
    third.logout()

    # The court system fetches it from its INBOX over IMAP, and rejects it.
    court = inst.imap("court1")
    received = _with_id(_fetch(court, "INBOX"), first["Message-ID"])
    assert len(received) == 1 and b"vnd.palais.saisine+json" in received[0]
    reason = "Pièce manquante : le bordereau de communication de pièces"
    _court_sends(
        inst,
        _decision(inst, "saisine", first["Message-ID"], decision="rejected", reason=reason),
    )

    # In Saisines/Rejetées: the saisine, and the decision that says why.
    rejected = _fetch(lawyer, REJETEES)
    assert len(_with_id(rejected, first["Message-ID"])) == 1
    decisions = [email.message_from_bytes(m) for m in rejected if b"registry-decision+json" in m]
    assert len(decisions) == 1
    parts = [p.get_payload(decode=True) for p in decisions[0].walk() if not p.is_multipart()]
    assert any(isinstance(p, bytes) and reason.encode() in p for p in parts)
    assert not _with_id(_fetch(lawyer, ENVOYEES), first["Message-ID"])
    assert any("Rejet par le greffe" in _subject(r) for r in _fetch(lawyer, ACCUSES))

    # The same saisine sent again unchanged (its 250 lost before the court
    # decided): its first filing's 250; the court does not get it twice, nor
    # does it book the slot again, and the lawyer's copy stays in Rejetées.
    _lawyer_sends(inst, "avocat1", first)
    assert len(_with_id(_fetch(court, "INBOX"), first["Message-ID"])) == 1
    assert not _with_id(_fetch(lawyer, ENVOYEES), first["Message-ID"])
    assert len(_with_id(_fetch(lawyer, REJETEES), first["Message-ID"])) == 1

    # Corrected and sent again (a new message), booking the place the
    # rejection gave back; an IDLE session waits meanwhile.
    second = _saisine(inst, samples.saisine(booking=True))
    _lawyer_sends(inst, "avocat1", second)
    idle = inst.imap("avocat1")
    assert idle.select("INBOX")[0] == "OK"
    tag = idle._new_tag()
    idle.send(tag + b" IDLE\r\n")
    assert idle.readline().startswith(b"+")
    accepted = _decision(inst, "saisine", second["Message-ID"], decision="accepted", dossier=number)
    _court_sends(inst, accepted)
    assert re.match(rb"\* \d+ EXISTS", idle.readline())
    idle.send(b"DONE\r\n")
    while not idle.readline().startswith(tag):
        pass
    idle.logout()

    # Sent again (its 250 lost) in another second, so that the trace line
    # the gateway adds differs: the first 250, nothing twice.
    time.sleep(1.01 - time.time() % 1)
    _court_sends(inst, accepted)

    # The dossier is in the LIST of the session open all along.
    names = _names(lawyer)
    assert f"Dossiers/{number}/Re&AOc-us" in names
    assert f"Dossiers/{number}/Envoy&AOk-s" in names
    sent = _with_id(_fetch(lawyer, f'"Dossiers/{number}/Envoy&AOk-s"'), second["Message-ID"])
    assert len(sent) == 1, "the saisine is the dossier's first sent message"
    decided = _fetch(lawyer, f'"Dossiers/{number}/Re&AOc-us"')
    assert len([m for m in decided if b"registry-decision+json" in m]) == 1
    # Its Fiche dossier names the saisine's parties.
    fiches = [
        email.message_from_bytes(m, policy=email.policy.default)
        for m in decided
        if "Fiche dossier" in _subject(m)
    ]
    assert len(fiches) == 1
    page = fiches[0].get_body(("html",))
    assert isinstance(page, email.message.EmailMessage)
    assert "Vins du Médoc SAS" in page.get_content()
    acceptance = [r for r in _fetch(lawyer, ACCUSES) if "Acceptation par le" in _subject(r)]
    assert len(acceptance) == 1

    # The court system sets the first hearing of the new dossier: its Fiche
    # is replaced, and the iCalendar part holds the hearing.
    domain = inst.dossier["address"].split("@")[1]
    hearing = _message(
        inst.address("court1"), f"{number}@{domain}", f"[{number}] audience", "Audience fixée."
    )
    event = {
        "dossier": number,
        "juridiction_code": samples.JURIDICTION,
        "occurred_at": datetime.now(UTC).isoformat(),
        "event": {"kind": "hearing_added", "hearing": HEARING},
    }
    _attach_json(hearing, DOSSIER_EVENT, event, "evenement.json")
    _court_sends(inst, hearing)
    (fiche,) = _fiches(lawyer, f'"Dossiers/{number}/Re&AOc-us"')
    html, calendar = _html_and_calendar(fiche)
    assert "14/01/2027" in html and "salle 3" in html
    (vevent,) = calendar.walk("VEVENT")
    assert vevent.decoded("dtstart") == datetime(2027, 1, 14, 9, 30, tzinfo=PARIS)
    assert "salle 3" in str(vevent["location"])
    lawyer.logout()
    root = inst.root
    (root / "saisine.eml").write_bytes(sent[0])
    (root / "acceptation.eml").write_bytes(acceptance[0])
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "palais",
            "verify-receipt",
            str(root / "acceptation.eml"),
            "--message",
            str(root / "saisine.eml"),
            "--trust",
            str(root / str(inst.demo.get("evidence_ca", "pki/ca.pem"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # avocat3 finds it, by number and by party names, and constitutes.
    if shutil.which("curl") is not None:
        by_number = _search(inst, f"numero={number}")
        assert by_number == {
            "dossiers": [
                {
                    "number": number,
                    "juridiction": samples.JURIDICTION,
                    "service": "CPH BORDEAUX - Commerce",
                    "status": "provisoire",
                    "demandeur": ["Léger Amélie"],
                    "defendeur": ["Vins du Médoc SAS"],
                }
            ]
        }
        by_names = _search(inst, f"type=CPH&juridiction={samples.JURIDICTION}&defendeur=medoc")
        assert number in [d["number"] for d in by_names["dossiers"]]
    constitution = _message(
        inst.address("avocat3"), j["constitution_address"], "Constitution", "Je me constitue."
    )
    doc = samples.constitution()
    doc["dossier"]["number"] = number
    _attach_json(constitution, CONSTITUTION, doc, "constitution.json")
    constitution.add_attachment(
        samples.PDF, maintype="application", subtype="pdf", filename="constitution.pdf"
    )
    _lawyer_sends(inst, "avocat3", constitution)
    other = inst.imap("avocat3")
    assert not [n for n in _names(other) if number in n]
    _court_sends(
        inst,
        _decision(
            inst, "constitution", constitution["Message-ID"], decision="accepted", dossier=number
        ),
    )
    assert f"Dossiers/{number}/Re&AOc-us" in _names(other)
    # And writes to it at once.
    first_words = _message(
        inst.address("avocat3"), f"{number}@{domain}", "Constitution", "Bonjour."
    )
    _lawyer_sends(inst, "avocat3", first_words)
    assert _with_id(_fetch(other, f'"Dossiers/{number}/Envoy&AOk-s"'), first_words["Message-ID"])
    other.logout()
    court.logout()


def _search(inst: Instance, query: str) -> dict[str, Any]:
    out = inst.curl_https(f"/api/dossiers?{query}", "avocat3")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", out.stdout + out.stderr
    found: dict[str, Any] = json.loads(body)
    return found


@needs_curl
def test_dossier_search_wants_a_juridiction_and_a_name(inst: Instance) -> None:
    out = inst.curl_https("/api/dossiers?type=CPH&demandeur=x", "avocat3")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "400"
    assert json.loads(body)["details"] == [
        "juridiction: champ obligatoire (code de la juridiction)",
        "demandeur: au moins 2 lettres",
    ]
    out = inst.curl_https("/api/dossiers?numero=2025-0000138", "greffier1")
    assert out.stdout.rsplit("\n", 1)[1] == "403"


def test_a_saisine_for_another_juridiction_is_refused(inst: Instance) -> None:
    msg = _saisine(inst, samples.saisine(cph=False))
    with (
        smtplib.SMTP_SSL(
            "localhost", inst.port("smtps"), context=inst.client_context("avocat1"), timeout=10
        ) as smtp,
        pytest.raises(smtplib.SMTPDataError) as caught,
    ):
        smtp.send_message(msg)
    assert caught.value.smtp_code == 550
    assert b"TJ-BORDEAUX" in caught.value.smtp_error


def test_only_lawyers_and_the_court_write_to_the_saisine_address(inst: Instance) -> None:
    with smtplib.SMTP_SSL(
        "localhost", inst.port("smtps"), context=inst.client_context("greffier1"), timeout=10
    ) as smtp:
        smtp.ehlo()
        assert smtp.mail(inst.address("greffier1"))[0] == 250
        code, _ = smtp.rcpt(_juridiction(inst)["saisine_address"])
        assert code == 550


def test_palais_client_search_dossier(inst: Instance) -> None:
    number = inst.dossier["number"]
    done = client(inst, "search-dossier", number, who="avocat3")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"{number}\t") and "CPH BORDEAUX - Commerce" in line
    done = client(inst, "search-dossier", "--type", "TJ", "--juridiction", "CPH-BORDEAUX")
    assert done.returncode == 1
    assert done.stderr.splitlines()[1:] == [
        "  juridiction: CPH-BORDEAUX n'est pas du type TJ",
        "  demandeur: au moins un nom de demandeur ou de défendeur",
    ]
    done = client(inst, "search-dossier")
    assert done.returncode == 2 and "numéro de dossier" in done.stderr
