"""Structured documents and the juridictions directory on a running instance:
curl on the HTTPS API with a card certificate, smtplib sending saisines."""

from __future__ import annotations

import json
import shutil
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from palais.juridictions_file import load_directory
from palais.mailbox.documents import DOSSIER_EVENT, REGISTRY_DECISION, SAISINE
from tests.e2e.instance import Instance, create_instance
from tests.mailbox import court_samples as samples
from tests.mailbox.court_samples import REMOVE, changed

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def _get(instance: Instance, query: str, who: str | None = "avocat1") -> tuple[int, Any]:
    out = instance.curl_https(f"/api/juridictions{query}", who)
    body, code = out.stdout.rsplit("\n", 1)
    return int(code), json.loads(body) if body.startswith("{") else body


def test_demo_json_lists_the_juridictions(instance: Instance) -> None:
    listed = {j["code"]: j for j in instance.demo["juridictions"]}
    directory = load_directory(instance.root / "juridictions.toml")
    assert len(listed) == len(directory) >= 20
    cph = listed["CPH-BORDEAUX"]
    assert cph["saisine_address"] == "saisines@cph-bordeaux.juridictions.palais.test"
    assert cph["constitution_address"] == "constitutions@cph-bordeaux.juridictions.palais.test"
    # The demo court system is CPH Bordeaux's: its certificate is the one the directory names.
    court = x509.load_pem_x509_certificate(instance.cert("court1").read_bytes())
    entry = directory.get("CPH-BORDEAUX")
    assert entry is not None
    assert court.subject.rfc4514_string() == entry.court_system.subject
    assert instance.address("court1") == entry.court_system.address == cph["court_system"]


@needs_curl
def test_the_api_finds_juridictions_by_three_letters(instance: Instance) -> None:
    code, body = _get(instance, "?ville=bor")
    assert code == 200
    assert [j["code"] for j in body["juridictions"]] == ["CPH-BORDEAUX", "TJ-BORDEAUX"]
    cph = body["juridictions"][0]
    assert cph["services"][0] == {
        "name": "CPH BORDEAUX - Commerce",
        "address": "cph-bordeaux-commerce@greffes.palais.test",
    }
    code, body = _get(instance, "?code=tj-lyon")
    assert code == 200 and [j["name"] for j in body["juridictions"]] == [
        "Tribunal judiciaire de Lyon"
    ]
    assert _get(instance, "?code=TGI-LYON") == (200, {"juridictions": []})
    code, body = _get(instance, "?ville=%C3%A9TI&type=cph")  # "éTI"
    assert code == 200 and [j["city"] for j in body["juridictions"]] == ["Saint-Étienne"]


@needs_curl
def test_the_api_wants_three_letters_and_a_certificate(instance: Instance) -> None:
    assert _get(instance, "?ville=bo") == (
        400,
        {"error": "Saisissez au moins 3 lettres de la ville"},
    )
    assert _get(instance, "") == (400, {"error": "paramètre ville manquant"})
    assert _get(instance, "?ville=bor&type=TGI") == (400, {"error": "type : CPH, TPROX ou TJ"})
    assert _get(instance, "?ville=bor", None) == (401, {"error": "client certificate required"})


def _saisine_message(instance: Instance, doc: dict[str, Any], subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = instance.address("avocat1")
    msg["To"] = instance.dossier["address"]
    msg["Subject"] = f"[{instance.dossier['number']}] {subject}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@avocats.palais.test>"
    msg.set_content("Veuillez trouver la saisine ci-jointe.")
    payload = json.dumps(doc, ensure_ascii=False).encode()
    msg.add_attachment(
        payload, maintype="application", subtype=SAISINE.split("/")[1], filename="saisine.json"
    )
    return msg


def _sent_subjects(instance: Instance) -> list[str]:
    imap = instance.imap("avocat1")
    try:
        assert imap.select('"Envoy&AOk-s"', readonly=True)[0] == "OK"
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [item[1].decode() for item in data if isinstance(item, tuple)]
    finally:
        imap.logout()


def test_an_invalid_saisine_is_refused_listing_every_field(instance: Instance) -> None:
    doc = changed(samples.saisine(), "actors.0.surname", REMOVE)
    doc = changed(doc, "service", "x" * 101)
    doc = changed(doc, "section", REMOVE)
    subject = f"saisine invalide {uuid.uuid4().hex[:8]}"
    with (
        smtplib.SMTP_SSL(
            "localhost",
            instance.port("smtps"),
            context=instance.client_context("avocat1"),
            timeout=10,
        ) as smtp,
        pytest.raises(smtplib.SMTPDataError) as caught,
    ):
        smtp.send_message(_saisine_message(instance, doc, subject))
    assert caught.value.smtp_code == 550
    lines = _text(caught.value.smtp_error).split("\n")
    assert lines == [
        "5.6.0 Document structuré invalide : 3 erreur(s)",
        "5.6.0 service: 100 caractères au plus",
        "5.6.0 actors[0].surname: champ obligatoire (personne physique)",
        "5.6.0 section: champ obligatoire devant un conseil de prud'hommes",
    ]
    # Nothing stored: not in the sender's Envoyés.
    assert not any(subject in s for s in _sent_subjects(instance))


def test_a_valid_saisine_passes(instance: Instance) -> None:
    subject = f"saisine valide {uuid.uuid4().hex[:8]}"
    with smtplib.SMTP_SSL(
        "localhost", instance.port("smtps"), context=instance.client_context("avocat1"), timeout=10
    ) as smtp:
        assert smtp.send_message(_saisine_message(instance, samples.saisine(), subject)) == {}
    assert any(subject in s for s in _sent_subjects(instance))


def test_a_date_booking_without_an_opened_slot_is_refused(instance: Instance) -> None:
    msg = _saisine_message(instance, samples.saisine(booking=True), "prise de date")
    msg.add_attachment(
        samples.PDF, maintype="application", subtype="pdf", filename="projet-assignation.pdf"
    )
    with (
        smtplib.SMTP_SSL(
            "localhost",
            instance.port("smtps"),
            context=instance.client_context("avocat1"),
            timeout=10,
        ) as smtp,
        pytest.raises(smtplib.SMTPDataError) as caught,
    ):
        smtp.send_message(msg)
    assert caught.value.smtp_code == 550
    assert _text(caught.value.smtp_error).split("\n")[1:] == [
        "5.6.0 date_booking.slot_id: ce créneau n'est pas ouvert par la juridiction"
    ]


def _text(error: bytes | str) -> str:
    return error.decode() if isinstance(error, bytes) else error


def test_serve_names_an_unusable_directory(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    directory = inst.root / "juridictions.toml"
    directory.write_text(
        directory.read_text(encoding="utf-8").replace('type = "TJ"', 'type = "TGI"', 1),
        encoding="utf-8",
    )
    done = inst.serve_to_the_end()
    assert done.returncode == 1
    assert (
        f"palais serve: cannot start: {directory}: juridiction TJ-BORDEAUX: "
        "type must be CPH, TPROX or TJ"
    ) in done.stderr


def _court_message(instance: Instance, media_type: str, doc: dict[str, Any]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = instance.address("court1")
    msg["To"] = instance.dossier["address"]
    msg["Subject"] = f"[{instance.dossier['number']}] {media_type.split('.')[-1]}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@cph-bordeaux.juridictions.palais.test>"
    msg.set_content("Message du greffe.")
    maintype, subtype = media_type.split("/")
    msg.add_attachment(
        json.dumps(doc).encode(), maintype=maintype, subtype=subtype, filename="document.json"
    )
    return msg


def test_what_a_court_system_sends_is_checked_on_its_listener(instance: Instance) -> None:
    rejection = changed(samples.registry_decision(), "decision", "rejected")
    with smtplib.SMTP("localhost", instance.port("court"), timeout=10) as smtp:
        smtp.starttls(context=instance.client_context("court1"))
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.send_message(_court_message(instance, REGISTRY_DECISION, rejection))
        assert caught.value.smtp_code == 550
        assert _text(caught.value.smtp_error).split("\n")[1:] == [
            "5.6.0 reason: obligatoire pour un rejet"
        ]
        event = _court_message(instance, DOSSIER_EVENT, samples.dossier_event())
        assert smtp.send_message(event) == {}


def test_a_lawyer_cannot_send_a_registry_decision(instance: Instance) -> None:
    forged = _court_message(instance, REGISTRY_DECISION, samples.registry_decision())
    forged.replace_header("From", instance.address("avocat1"))
    with (
        smtplib.SMTP_SSL(
            "localhost",
            instance.port("smtps"),
            context=instance.client_context("avocat1"),
            timeout=10,
        ) as smtp,
        pytest.raises(smtplib.SMTPDataError) as caught,
    ):
        smtp.send_message(forged)
    assert (caught.value.smtp_code, _text(caught.value.smtp_error)) == (
        550,
        "5.7.1 Un document registry-decision ne peut être envoyé que par un greffe"
        " ou le système d'une juridiction",
    )
