"""What receipts say and who gets them: the domain's rules, without I/O."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

import palais.pki
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.evidence import (
    GENESIS,
    Deposit,
    EventCode,
    attachments_of,
    canonical_json,
    deposit_and_delivery,
    evidence_document,
    first_reads,
    message_facts,
    non_delivery_of,
    registry_decision,
    timestamp,
)
from palais.mailbox.identity import Identity, Role
from palais.pki.evidence_model import Evidence, evidence_schema

LAWYER = Identity(1, "avocat@x.test", Role.AVOCAT, "Maître A", "a" * 64, "avocat@x.test")
CLERK = Identity(2, "clerk@x.test", Role.GREFFIER, "Greffier", "b" * 64, "greffe@x.test")
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


def _with_attachments() -> bytes:
    msg = EmailMessage()
    msg["From"] = LAWYER.address
    msg["Subject"] = "[2025-0000138] Conclusions"
    msg["Message-ID"] = "<c@x.test>"
    msg.set_content("Veuillez trouver ci-joint.")
    msg.add_attachment(
        b"%PDF-1.4 conclusions", maintype="application", subtype="pdf", filename="conclusions.pdf"
    )
    msg.add_attachment(
        "pièce n°2 é".encode(), maintype="text", subtype="plain", filename="pièce 2.txt"
    )
    return msg.as_bytes().replace(b"\n", b"\r\n")


def _document(position: int = 0) -> dict[str, object]:
    data = _with_attachments()
    order = deposit_and_delivery(LAWYER, [("d@x.test", "greffe@x.test")], "2025-0000138", NOW)
    return evidence_document(
        order,
        message_facts(data, "<c@x.test>", "[2025-0000138] Conclusions"),
        evidence_id="e-1",
        issuer="Palais",
        issuer_certificate_sha256="c" * 64,
        position=position,
        previous=GENESIS,
    )


def _deposit(delivered: datetime = NOW, message_id: int = 7) -> Deposit:
    return Deposit(message_id, LAWYER.address, delivered, _document())


def test_the_published_schema_is_the_model_s() -> None:
    published = Path(palais.pki.__file__).parent / "schemas" / "evidence.schema.json"
    assert json.loads(published.read_text(encoding="utf-8")) == evidence_schema()


def test_a_deposit_and_delivery_document_is_valid_evidence() -> None:
    document = _document()
    Evidence.model_validate(document)
    assert [e["code"] for e in document["events"]] == ["depot", "remise"]  # type: ignore[attr-defined]
    assert [e["etsi"] for e in document["events"]] == [  # type: ignore[attr-defined]
        "SubmissionAcceptance",
        "ContentConsignment",
    ]
    recipient = document["events"][0]["recipients"][0]  # type: ignore[index]
    assert recipient["address"] == "d@x.test" and recipient["mailbox"] == "greffe@x.test"
    assert document["sender"]["certificate_sha256"] == LAWYER.fingerprint  # type: ignore[index]


def test_evidence_is_written_one_way_only() -> None:
    document = _document()
    text = canonical_json(document)
    assert canonical_json(json.loads(text)) == text
    assert b" " not in text.replace(b"Ma\xc3\xaetre A", b"")[:40]
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_attachments_are_decoded_named_and_hashed() -> None:
    found = attachments_of(_with_attachments())
    assert [(a.name, a.media_type) for a in found] == [
        ("conclusions.pdf", "application/pdf"),
        ("pièce 2.txt", "text/plain"),
    ]
    assert found[0].size == len(b"%PDF-1.4 conclusions")
    assert found[0].sha256 == hashlib.sha256(b"%PDF-1.4 conclusions").hexdigest()
    assert attachments_of(b"Subject: x\r\n\r\nbody\r\n") == ()


def test_message_facts_hash_the_stored_bytes() -> None:
    data = _with_attachments()
    facts = message_facts(data, "<c@x.test>", "s")
    assert facts.sha256 == hashlib.sha256(data).hexdigest() and facts.size == len(data)


def test_first_read_is_once_per_message_and_mailbox_and_never_before_delivery() -> None:
    later = NOW + timedelta(minutes=5)
    orders = first_reads(CLERK, [_deposit(later), _deposit(later)], [], NOW)
    (order,) = orders
    assert order.events[0].time == later  # a clock behind the delivery does not date it earlier
    assert order.first_read == (7, "greffe@x.test")
    assert order.holders == (LAWYER.address, "greffe@x.test")
    reader = order.events[0].recipients[0]
    assert (reader.address, reader.mailbox) == (CLERK.address, "greffe@x.test")
    assert first_reads(CLERK, [_deposit()], [7], NOW) == ()


def test_a_rejection_states_its_reason() -> None:
    with pytest.raises(InvalidMessage):
        registry_decision(CLERK, _deposit(), accepted=False, reason=" ", now=NOW)
    order = registry_decision(CLERK, _deposit(), accepted=False, reason="incomplet", now=NOW)
    assert order.codes == (EventCode.REJET_GREFFE,) and order.events[0].reason == "incomplet"
    assert order.holders == (LAWYER.address,)
    accepted = registry_decision(CLERK, _deposit(), accepted=True, reason=None, now=NOW)
    assert accepted.codes == (EventCode.ACCEPTATION_GREFFE,)


def test_non_delivery_names_who_was_not_reached_and_why() -> None:
    with pytest.raises(InvalidMessage):
        non_delivery_of(_deposit(), ["s@x.test"], reason="", now=NOW)
    order = non_delivery_of(_deposit(), ["s@x.test"], reason="refusé", now=NOW)
    assert order.codes == (EventCode.NON_REMISE,)
    assert order.events[0].recipients[0].address == "s@x.test"


def test_later_events_repeat_the_deposit_s_facts() -> None:
    deposit = _deposit()
    (order,) = first_reads(CLERK, [deposit], [], NOW)
    assert order.message is not None
    document = evidence_document(
        order,
        order.message,
        evidence_id="e-2",
        issuer="Palais",
        issuer_certificate_sha256="c" * 64,
        position=1,
        previous="d" * 64,
    )
    Evidence.model_validate(document)
    assert document["message"] == deposit.evidence["message"]
    assert document["submission_time"] == timestamp(NOW)
