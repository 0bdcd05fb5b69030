"""The wire form of a receipt: what openssl, a mail parser and the index read of it."""

from __future__ import annotations

import email
import json
import subprocess
from datetime import UTC, datetime
from email import policy
from email.message import Message
from pathlib import Path

import pytest

from palais.mailbox.evidence import (
    GENESIS,
    Deposit,
    canonical_json,
    deposit_and_delivery,
    evidence_document,
    first_reads,
    message_facts,
)
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.pki.devpki import DevPki, create_dev_pki
from palais.pki.evidence_model import Evidence
from palais.pki.receipt import ReceiptSealer, SealedReceipt, encoded_words
from palais.pki.signing import load_file_key

LAWYER = Identity(1, "avocat@x.test", Role.AVOCAT, "Maître Éloïse", "a" * 64, "avocat@x.test")
CLERK = Identity(2, "clerk@x.test", Role.GREFFIER, "Greffier", "b" * 64, "greffe@x.test")
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
ORIGINAL = (
    b"From: avocat@x.test\r\nSubject: [2025-0000138] Conclusions r\xc3\xa9capitulatives\r\n"
    b"Message-ID: <c@x.test>\r\n\r\nBonjour\r\n"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return create_dev_pki(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture(scope="module")
def sealer(pki: DevPki) -> ReceiptSealer:
    return ReceiptSealer(
        load_file_key(pki.evidence_cert_path, pki.evidence_key_path), domain="palais.test"
    )


def _deposit_receipt(sealer: ReceiptSealer) -> SealedReceipt:
    order = deposit_and_delivery(LAWYER, [("d@x.test", "greffe@x.test")], "2025-0000138", NOW)
    facts = message_facts(ORIGINAL, "<c@x.test>", "[2025-0000138] Conclusions récapitulatives")
    document = evidence_document(
        order,
        facts,
        evidence_id="0b7c3a52-8d0e-4a43-9bd5-0d1b0e8f7a11",
        issuer=sealer.issuer,
        issuer_certificate_sha256=sealer.issuer_certificate_sha256,
        position=0,
        previous=GENESIS,
    )
    return sealer.seal(document, to=LAWYER.address)


def _read_receipt(sealer: ReceiptSealer) -> SealedReceipt:
    deposit = json.loads(_deposit_receipt(sealer).evidence)
    (order,) = first_reads(CLERK, [Deposit(1, LAWYER.address, NOW, deposit)], [], NOW)
    assert order.message is not None
    document = evidence_document(
        order,
        order.message,
        evidence_id="9a1f0e52-8d0e-4a43-9bd5-0d1b0e8f7a12",
        issuer=sealer.issuer,
        issuer_certificate_sha256=sealer.issuer_certificate_sha256,
        position=1,
        previous="ab" * 32,
    )
    return sealer.seal(document, to=LAWYER.address)


@pytest.mark.parametrize("make", [_deposit_receipt, _read_receipt])
def test_openssl_accepts_the_signature(
    make: object, sealer: ReceiptSealer, pki: DevPki, tmp_path: Path
) -> None:
    assert callable(make)
    receipt: SealedReceipt = make(sealer)
    path = tmp_path / "receipt.eml"
    path.write_bytes(receipt.data)
    for command in ("smime", "cms"):
        checked = subprocess.run(
            [
                "openssl",
                command,
                "-verify",
                "-in",
                str(path),
                "-CAfile",
                str(pki.ca_path),
                "-out",
                "/dev/null",
            ],
            capture_output=True,
        )
        assert checked.returncode == 0, checked.stderr
    tampered = tmp_path / "tampered.eml"
    tampered.write_bytes(receipt.data.replace(b"Dossier : 2025", b"Dossier : 2026", 1))
    refused = subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-in",
            str(tampered),
            "-CAfile",
            str(pki.ca_path),
            "-out",
            "/dev/null",
        ],
        capture_output=True,
    )
    assert refused.returncode != 0


def _parts(receipt: SealedReceipt) -> tuple[Message[str, str], list[Message[str, str]]]:
    parsed = email.message_from_bytes(receipt.data, policy=policy.default)
    outer = parsed.get_payload()
    assert isinstance(outer, list) and len(outer) == 2
    report = outer[0]
    assert isinstance(report, Message)
    inner = report.get_payload()
    assert isinstance(inner, list)
    parts = [p for p in inner if isinstance(p, Message)]
    assert len(parts) == len(inner)
    return report, parts


def test_a_deposit_receipt_is_a_report_with_text_and_evidence(sealer: ReceiptSealer) -> None:
    receipt = _deposit_receipt(sealer)
    report, parts = _parts(receipt)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "vnd.palais.evidence+json"
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "application/vnd.palais.evidence+json",
    ]
    text = parts[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert "Dossier : 2025-0000138" in text.decode() and "Dépôt" in text.decode()
    evidence = parts[1].get_payload(decode=True)
    assert evidence == receipt.evidence
    Evidence.model_validate_json(evidence)
    assert canonical_json(json.loads(evidence)) == evidence


def test_a_read_receipt_carries_a_disposition_notification(sealer: ReceiptSealer) -> None:
    report, parts = _parts(_read_receipt(sealer))
    assert report.get_param("report-type") == "disposition-notification"
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/disposition-notification",
        "application/vnd.palais.evidence+json",
    ]
    mdn = parts[1].as_string()
    assert "Disposition: automatic-action/MDN-sent-automatically; displayed" in mdn
    assert "Final-Recipient: rfc822;clerk@x.test" in mdn
    assert "Original-Message-ID: <c@x.test>" in mdn


@pytest.mark.parametrize("make", [_deposit_receipt, _read_receipt])
def test_the_summary_given_with_the_bytes_is_what_parsing_them_reads(
    make: object, sealer: ReceiptSealer
) -> None:
    assert callable(make)
    receipt: SealedReceipt = make(sealer)
    assert receipt.summary == summarize(receipt.data)
    assert receipt.data.isascii()  # 7-bit: no relay re-encodes the signed bytes


def test_encoded_words_round_trip() -> None:
    for text in ("plain ascii", "é" * 100, "[2025-0000138] Accusé — n°3 " * 5):
        encoded = encoded_words(text)
        assert all(len(line) <= 76 for line in encoded.split("\r\n"))
        decoded = email.header.make_header(email.header.decode_header(encoded.replace("\r\n", "")))
        assert str(decoded) == text
