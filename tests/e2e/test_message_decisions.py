"""The registry's decision on a lawyer's message in a dossier, over real sockets.

avocat1 sends a message to the demo dossier (smtplib over SMTPS, its card);
the court system (court1's certificate, STARTTLS on the court listener)
sends a registry decision about it to the dossier's address: avocat1 finds
the acceptation-greffe receipt in its Accusés de réception over IMAP, and it
verifies with `palais verify-receipt` against the message; a rejection
brings the rejet-greffe receipt with its reason; a decision about a
Message-ID the dossier has no lawyer's message under is refused naming the
field.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from palais.mailbox.documents import REGISTRY_DECISION
from tests.e2e.instance import Instance, create_instance
from tests.e2e.test_saisine_flow import (
    ACCUSES,
    _attach_json,
    _court_sends,
    _fetch,
    _fixed,
    _lawyer_sends,
    _message,
    _with_id,
)


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = create_instance(tmp_path_factory.mktemp("decisions") / "i")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def _lawyer_message(inst: Instance, subject: str) -> EmailMessage:
    number = inst.dossier["number"]
    msg = _message(
        inst.address("avocat1"), inst.dossier["address"], f"[{number}] {subject}", "Ci-joint."
    )
    _lawyer_sends(inst, "avocat1", msg)
    return msg


def _decision(inst: Instance, message_id: str, **fields: object) -> EmailMessage:
    number = inst.dossier["number"]
    msg = _message(
        inst.address("court1"), inst.dossier["address"], f"[{number}] Décision du greffe", "Vu."
    )
    # Filed as any court message is: the dossier's service, and the lawyer in copy.
    msg["Cc"] = inst.address("avocat1")
    doc = {
        "about": "message",
        "message_id": message_id,
        "dossier": number,
        "decided_at": "2026-11-30T11:00:00+01:00",
        **fields,
    }
    _attach_json(msg, REGISTRY_DECISION, doc, "decision.json")
    return msg


def _receipts(inst: Instance, message_id: str, title: str) -> list[bytes]:
    imap = inst.imap("avocat1")
    try:
        found = _with_id(_fetch(imap, ACCUSES), message_id)
    finally:
        imap.logout()
    return [m for m in found if title in _subject(m)]


def _subject(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=email.policy.default)["Subject"])


def _text(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return "".join(
        p.get_content()
        for p in parsed.walk()
        if p.get_content_type() in ("text/plain", "text/html")
    )


def test_an_accepted_message_brings_a_receipt_that_verifies(inst: Instance) -> None:
    sent = _lawyer_message(inst, "Conclusions")
    accepted = _decision(inst, sent["Message-ID"], decision="accepted")
    _court_sends(inst, accepted)
    # Sent again (its 250 lost) in another second, its trace line other: filed
    # once, one receipt.
    time.sleep(1.01 - time.time() % 1)
    _court_sends(inst, accepted)
    (receipt,) = _receipts(inst, sent["Message-ID"], "Acceptation par le greffe")
    # Decided once: another decision about it is refused.
    again = _fixed(_decision(inst, sent["Message-ID"], decision="rejected", reason="Non."))
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.send_message(again)
    assert caught.value.smtp_code == 550 and b"message_id" in caught.value.smtp_error
    number = inst.dossier["number"]
    imap = inst.imap("avocat1")
    try:
        (original,) = _with_id(_fetch(imap, f'"Dossiers/{number}/Envoy&AOk-s"'), sent["Message-ID"])
        decisions = _with_id(_fetch(imap, f'"Dossiers/{number}/Re&AOc-us"'), accepted["Message-ID"])
    finally:
        imap.logout()
    assert len(decisions) == 1  # the decision mail, filed in the dossier like any court message
    root = inst.root
    (root / "conclusions.eml").write_bytes(original)
    (root / "acceptation-message.eml").write_bytes(receipt)
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "palais",
            "verify-receipt",
            str(root / "acceptation-message.eml"),
            "--message",
            str(root / "conclusions.eml"),
            "--trust",
            str(root / str(inst.demo.get("evidence_ca", "pki/ca.pem"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_rejected_message_brings_the_reason(inst: Instance) -> None:
    sent = _lawyer_message(inst, "Pièce 12")
    reason = "Pièce illisible : numérisation incomplète"
    _court_sends(inst, _decision(inst, sent["Message-ID"], decision="rejected", reason=reason))
    (receipt,) = _receipts(inst, sent["Message-ID"], "Rejet par le greffe")
    assert "numérisation incomplète" in _text(receipt)
    assert not _receipts(inst, sent["Message-ID"], "Acceptation par le greffe")


def test_a_decision_about_an_unknown_message_is_refused(inst: Instance) -> None:
    msg = _fixed(_decision(inst, "<inconnu@palais.test>", decision="accepted"))
    with smtplib.SMTP("localhost", inst.port("court"), timeout=10) as smtp:
        smtp.starttls(context=inst.client_context("court1"))
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.send_message(msg)
    assert caught.value.smtp_code == 550
    assert b"5.6.0" in caught.value.smtp_error
    assert b"message_id" in caught.value.smtp_error
