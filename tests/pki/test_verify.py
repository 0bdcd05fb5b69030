"""Offline verification of receipts (palais.pki.verify): one receipt sealed per
test with ReceiptSealer and keys made per test; each negative test changes one
thing and expects its step to fail with its exit status."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from palais.mailbox.evidence import (
    EVIDENCE_MEDIA_TYPE,
    canonical_json,
    deposit_and_delivery,
    evidence_document,
    first_reads,
    message_facts,
)
from palais.mailbox.evidence import Deposit as EvidenceDeposit
from palais.mailbox.identity import Identity, Role
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Issued, Validity
from palais.pki.cms import CmsSigner
from palais.pki.evidencelog import (
    CERTIFICATES_FILE,
    LEAVES_FILE,
    TREE_HEADS_FILE,
    sign_tree_head,
    tree_head_line,
)
from palais.pki.merkle import Frontier, leaf_hash
from palais.pki.receipt import ReceiptSealer
from palais.pki.signing import FileKey, certificate_sha256
from palais.pki.verify import ExitStatus, Outcome, StepCode, Verdict, verify_receipt

SENDER = Identity(
    1, "avocat@avocats.test", Role.AVOCAT, "Maître Dupont", "a1" * 32, "avocat@avocats.test"
)
READER = Identity(
    7, "greffier@justice.test", Role.GREFFIER, "Marc Martin", "c3" * 32, "greffe@justice.test"
)
DOSSIER = "2025-0000138"
PDF = b"%PDF-1.4 conclusions " + bytes(range(256)) * 8


def _original() -> bytes:
    msg = EmailMessage(policy=SMTP)  # CRLF, as the gateway stores it
    msg["From"] = SENDER.address
    msg["To"] = "greffe@justice.test"
    msg["Subject"] = f"[{DOSSIER}] Conclusions"
    msg["Message-ID"] = "<m1@avocats.test>"
    msg.set_content("Bonjour,\nveuillez trouver nos conclusions.\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="conclusions.pdf")
    msg.add_attachment(b"piece 2\n", maintype="text", subtype="plain", filename="piece-2.txt")
    return msg.as_bytes()


ORIGINAL = _original()


def _document(issuer: x509.Certificate, *, read: bool = False) -> dict[str, Any]:
    facts = message_facts(ORIGINAL, "<m1@avocats.test>", f"[{DOSSIER}] Conclusions")
    when = datetime.now(UTC)
    delivery = [("greffe@justice.test", "greffe@justice.test")]
    order = deposit_and_delivery(SENDER, delivery, DOSSIER, when)
    if read:
        deposit = EvidenceDeposit(
            1, SENDER.address, when, evidence_document(order, facts, **_log(issuer))
        )
        (order,) = first_reads(READER, [deposit], [], when)
    return evidence_document(order, facts, **_log(issuer))


def _log(issuer: x509.Certificate) -> dict[str, Any]:
    return {
        "evidence_id": "ev-0001",
        "issuer": "Palais - Service de preuve (tests)",
        "issuer_certificate_sha256": certificate_sha256(issuer),
        "position": 0,
        "previous": "0" * 64,
    }


@dataclass
class Pki:
    ca: CertificateAuthority
    evidence: Issued

    @property
    def key(self) -> FileKey:
        return FileKey(self.evidence.key, self.evidence.cert)


def _pki(validity: Validity | None = None, ca_validity: Validity | None = None) -> Pki:
    ca = CertificateAuthority.create(
        certbuilder.name("AC preuve (tests)", organization="Palais"), validity=ca_validity
    )
    evidence = ca.issue(
        certbuilder.name("Service de preuve (tests)", organization="Palais", country="FR"),
        profile=certbuilder.EVIDENCE,
        validity=validity,
    )
    return Pki(ca, evidence)


@pytest.fixture
def pki() -> Pki:
    return _pki()


def _seal(pki: Pki, *, read: bool = False, document: dict[str, Any] | None = None) -> bytes:
    sealer = ReceiptSealer(pki.key, domain="palais.test")
    doc = document if document is not None else _document(pki.evidence.cert, read=read)
    return sealer.seal(doc, to=SENDER.address).data


def _verify(receipt: bytes, pki: Pki, *, original: bytes | None = ORIGINAL) -> Verdict:
    return verify_receipt(receipt, original=original, anchors=[pki.ca.cert], log_dir=None)


def _failed(verdict: Verdict) -> set[StepCode]:
    return {s.code for s in verdict.steps if s.outcome is Outcome.FAILED}


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("read", [False, True], ids=["deposit", "read"])
def test_a_good_receipt_passes_every_step(pki: Pki, read: bool) -> None:
    verdict = _verify(_seal(pki, read=read), pki)
    assert verdict.ok, [s for s in verdict.steps if s.outcome is not Outcome.PASSED]
    assert verdict.exit_status is ExitStatus.OK
    # Every step ran except the log, which needs an exported log.
    assert [s.code for s in verdict.steps] == list(StepCode)
    assert {s.code for s in verdict.steps if s.outcome is Outcome.SKIPPED} == {StepCode.LOG}
    assert verdict.evidence is not None
    assert verdict.evidence.dossier == DOSSIER
    assert verdict.evidence.message.attachments[0].name == "conclusions.pdf"
    assert verdict.signer_sha256 == certificate_sha256(pki.evidence.cert)
    assert not verdict.receipt_line_endings_normalised
    assert not verdict.original_line_endings_normalised
    assert verdict.to_json()["exit_status"] == 0
    for step in verdict.steps:
        assert step.fr and step.en


def test_without_original_the_message_steps_are_skipped(pki: Pki) -> None:
    verdict = _verify(_seal(pki), pki, original=None)
    assert verdict.ok
    assert verdict.step(StepCode.MESSAGE).outcome is Outcome.SKIPPED
    assert verdict.step(StepCode.ATTACHMENTS).outcome is Outcome.SKIPPED


def test_a_byte_of_the_original_changed(pki: Pki) -> None:
    body = ORIGINAL.index(b"veuillez")
    verdict = _verify(_seal(pki), pki, original=_flip(ORIGINAL, body))
    assert _failed(verdict) == {StepCode.MESSAGE}
    assert verdict.exit_status is ExitStatus.MESSAGE


def test_a_byte_of_an_attachment_changed(pki: Pki) -> None:
    # The second attachment's base64 body, decoded differently: the message
    # differs too, and the status names the attachment.
    encoded = base64.b64encode(b"piece 2\n")
    at = ORIGINAL.index(encoded)
    tampered = ORIGINAL[:at] + base64.b64encode(b"piece 3\n") + ORIGINAL[at + len(encoded) :]
    verdict = _verify(_seal(pki), pki, original=tampered)
    assert _failed(verdict) == {StepCode.MESSAGE, StepCode.ATTACHMENTS}
    assert verdict.exit_status is ExitStatus.ATTACHMENT
    attachments = verdict.step(StepCode.ATTACHMENTS)
    assert "piece-2.txt" in attachments.en and "SHA-256" in attachments.en
    assert "conclusions.pdf" not in attachments.en


def test_an_attachment_missing(pki: Pki) -> None:
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = "x"
    msg.set_content("x")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="conclusions.pdf")
    verdict = _verify(_seal(pki), pki, original=msg.as_bytes())
    assert verdict.exit_status is ExitStatus.ATTACHMENT
    assert "piece-2.txt" in verdict.step(StepCode.ATTACHMENTS).en


def _evidence_span(receipt: bytes) -> tuple[int, int]:
    start = receipt.index(f"Content-Type: {EVIDENCE_MEDIA_TYPE}".encode())
    start = receipt.index(b"\r\n\r\n", start) + 4
    end = receipt.index(b"\r\n--", start)
    return start, end


def _replace_evidence(receipt: bytes, change: Any) -> bytes:
    start, end = _evidence_span(receipt)
    evidence = base64.b64decode(b"".join(receipt[start:end].split()))
    text = base64.b64encode(change(evidence))
    lines = b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    return receipt[:start] + lines + receipt[end:]


def test_a_byte_of_the_evidence_changed(pki: Pki) -> None:
    receipt = _seal(pki)

    def tamper(evidence: bytes) -> bytes:
        # A digit of the message size: still canonical, still the model.
        at = re.search(rb'"size":(\d)', evidence)
        assert at is not None
        digit = at.group(1)[0]
        new = b"1" if digit != ord("1") else b"2"
        return evidence[: at.start(1)] + new + evidence[at.end(1) :]

    verdict = _verify(_replace_evidence(receipt, tamper), pki)
    assert _failed(verdict) == {StepCode.DIGEST, StepCode.ATTACHMENTS}
    assert verdict.exit_status is ExitStatus.SIGNATURE


def test_evidence_that_is_not_canonical_is_malformed(pki: Pki) -> None:
    # Signed as it is (the sealer signs whatever it is given): the signature
    # holds, but the document could be read two ways.
    receipt = _replace_evidence(_seal(pki), lambda e: e.replace(b'{"', b'{ "', 1))
    verdict = _verify(receipt, pki)
    assert StepCode.EVIDENCE in _failed(verdict)
    assert verdict.exit_status is ExitStatus.MALFORMED


def test_evidence_issued_by_another_certificate(pki: Pki) -> None:
    other = _pki()
    receipt = _seal(pki, document=_document(other.evidence.cert))
    verdict = _verify(receipt, pki)
    assert _failed(verdict) == {StepCode.EVIDENCE_ISSUER}
    assert verdict.exit_status is ExitStatus.SIGNATURE


def test_a_byte_of_the_signed_text_changed(pki: Pki) -> None:
    receipt = _seal(pki)
    at = receipt.index(b"Accus=C3=A9 de r=C3=A9ception")
    verdict = _verify(_flip(receipt, at), pki)
    assert _failed(verdict) == {StepCode.DIGEST}
    assert verdict.exit_status is ExitStatus.SIGNATURE


def test_a_receipt_signed_by_another_key(pki: Pki) -> None:
    # The other key's receipt, its signature replaced by ours on other content:
    # the CMS names our certificate but the signature is not over these bytes.
    other = _pki()
    mine = _seal(pki)
    theirs = _seal(other, document=_document(pki.evidence.cert))
    signature = re.compile(rb"filename=smime\.p7s\r\n\r\n(.*?)\r\n--", re.S)
    m_mine, m_theirs = signature.search(mine), signature.search(theirs)
    assert m_mine is not None and m_theirs is not None
    forged = theirs[: m_theirs.start(1)] + m_mine.group(1) + theirs[m_theirs.end(1) :]
    verdict = _verify(forged, pki)
    assert StepCode.DIGEST in _failed(verdict)
    assert verdict.exit_status is ExitStatus.SIGNATURE
    # And the other key's own receipt fails at its anchor.
    verdict = _verify(theirs, pki)
    assert _failed(verdict) == {StepCode.CHAIN, StepCode.EVIDENCE_ISSUER}
    assert verdict.exit_status is ExitStatus.SIGNATURE


def test_a_signature_that_does_not_verify(pki: Pki) -> None:
    class Forger(CmsSigner):
        def signed_data(self, attributes: bytes) -> bytes:
            der = super().signed_data(attributes)
            # The last bytes of the DER are the signature's: spoil one.
            return _flip(der, len(der) - 3)

    sealer = ReceiptSealer(pki.key, domain="palais.test")
    sealer._signer = Forger(pki.key)
    receipt = sealer.seal(_document(pki.evidence.cert), to=SENDER.address).data
    verdict = _verify(receipt, pki)
    assert _failed(verdict) == {StepCode.SIGNATURE}
    assert verdict.exit_status is ExitStatus.SIGNATURE


def test_a_wrong_anchor(pki: Pki) -> None:
    verdict = verify_receipt(_seal(pki), original=ORIGINAL, anchors=[_pki().ca.cert], log_dir=None)
    assert _failed(verdict) == {StepCode.CHAIN}
    assert verdict.exit_status is ExitStatus.CHAIN


def test_no_anchor(pki: Pki) -> None:
    verdict = verify_receipt(_seal(pki), original=None, anchors=[], log_dir=None)
    assert verdict.exit_status is ExitStatus.CHAIN


def test_an_expired_certificate_at_signing_time() -> None:
    expired = _pki(Validity.expired())
    verdict = _verify(_seal(expired), expired)
    assert _failed(verdict) == {StepCode.VALIDITY}
    assert verdict.exit_status is ExitStatus.CHAIN


def test_a_certificate_expired_since_but_valid_when_it_signed() -> None:
    now = certbuilder.now()
    lapsed = _pki(
        Validity(now - timedelta(days=400), now - timedelta(days=1)),
        Validity(now - timedelta(days=800), now + timedelta(days=800)),
    )

    sealer = ReceiptSealer(lapsed.key, domain="palais.test")
    evidence = canonical_json(_document(lapsed.evidence.cert))
    then = sealer.layout.prepare(evidence, SENDER.address, when=now - timedelta(days=30))
    receipt = sealer.finish(then).data
    verdict = _verify(receipt, lapsed)
    assert verdict.ok, _failed(verdict)
    # The same certificate signing today is refused.
    assert _verify(_seal(lapsed), lapsed).exit_status is ExitStatus.CHAIN


def test_a_signer_without_signing_key_usage(pki: Pki) -> None:
    server = pki.ca.issue(certbuilder.name("serveur"), profile=certbuilder.SERVER)
    # The SERVER profile has digitalSignature (EC keys sign to authenticate):
    # drop every usage with a certificate built by hand.
    builder = (
        x509.CertificateBuilder()
        .subject_name(server.cert.subject)
        .issuer_name(pki.ca.cert.subject)
        .public_key(server.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(server.cert.not_valid_before_utc)
        .not_valid_after(server.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, True, False, False, False, False, False, False),
            critical=True,
        )
    )
    from cryptography.hazmat.primitives import hashes

    cert = builder.sign(pki.ca.key, hashes.SHA256())
    no_usage = Pki(pki.ca, Issued(cert, server.key))
    verdict = _verify(_seal(no_usage), no_usage)
    assert _failed(verdict) == {StepCode.KEY_USAGE}
    assert verdict.exit_status is ExitStatus.CHAIN


def test_a_receipt_saved_with_lf_line_ends_passes(pki: Pki) -> None:
    receipt = _seal(pki, read=True).replace(b"\r\n", b"\n")
    verdict = _verify(receipt, pki, original=ORIGINAL.replace(b"\r\n", b"\n"))
    assert verdict.ok, _failed(verdict)
    assert verdict.receipt_line_endings_normalised
    assert verdict.original_line_endings_normalised
    assert "CRLF" in verdict.step(StepCode.MESSAGE).en


@pytest.mark.parametrize(
    "receipt",
    [
        b"From: a@b\r\nSubject: hello\r\n\r\nnot signed\r\n",
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
        b' boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\n',
        b"\x00\x01garbage",
    ],
    ids=["plain-mail", "truncated", "garbage"],
)
def test_not_a_receipt_is_malformed(pki: Pki, receipt: bytes) -> None:
    verdict = _verify(receipt, pki)
    assert _failed(verdict) == {StepCode.MIME}
    assert verdict.exit_status is ExitStatus.MALFORMED
    assert verdict.evidence is None
    assert all(s.outcome is Outcome.SKIPPED for s in verdict.steps[1:])


def test_an_empty_file_is_unreadable(pki: Pki) -> None:
    assert _verify(b"", pki).exit_status is ExitStatus.UNREADABLE


def test_a_signature_part_that_is_not_cms(pki: Pki) -> None:
    receipt = _seal(pki)
    start = receipt.index(b"filename=smime.p7s\r\n\r\n") + len(b"filename=smime.p7s\r\n\r\n")
    end = receipt.index(b"\r\n--", start)
    verdict = _verify(receipt[:start] + base64.b64encode(b"not a CMS") + receipt[end:], pki)
    assert StepCode.CMS in _failed(verdict)
    assert verdict.exit_status is ExitStatus.MALFORMED
    # The evidence is still shown, but nothing vouches for it.
    assert verdict.evidence is not None


def test_the_evidence_is_read_from_the_signed_part_only(pki: Pki) -> None:
    # A second evidence part appended after the signature, outside the signed
    # part, is not a third part the verifier would read: the mail is malformed.
    receipt = _seal(pki)
    boundary = re.search(rb'boundary="(=_palais_s_[^"]+)"', receipt)
    assert boundary is not None
    closing = b"--" + boundary.group(1) + b"--"
    extra = (
        b"--"
        + boundary.group(1)
        + b"\r\nContent-Type: "
        + EVIDENCE_MEDIA_TYPE.encode()
        + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(canonical_json({"forged": True}))
        + b"\r\n"
        + closing
    )
    verdict = _verify(receipt.replace(closing, extra), pki)
    assert verdict.exit_status is ExitStatus.MALFORMED
    assert _failed(verdict) == {StepCode.MIME}


def _export(pki: Pki, dest: Path, leaves: list[bytes], *, signed: bool = True) -> Path:
    """An exported log directory, as palais evidence export writes it."""
    dest.mkdir()
    tree = Frontier.empty()
    for leaf in leaves:
        tree.append(leaf_hash(leaf))
    heads = [sign_tree_head(pki.key, tree.size, tree.root(), datetime.now(UTC))] if signed else []
    (dest / CERTIFICATES_FILE).write_bytes(pki.evidence.cert.public_bytes(Encoding.PEM))
    (dest / LEAVES_FILE).write_bytes(b"".join(leaf + b"\n" for leaf in leaves))
    (dest / TREE_HEADS_FILE).write_bytes(b"".join(tree_head_line(h) + b"\n" for h in heads))
    return dest


def _evidence_of(receipt: bytes) -> bytes:
    start, end = _evidence_span(receipt)
    return base64.b64decode(b"".join(receipt[start:end].split()))


def test_a_receipt_in_the_exported_log(pki: Pki, tmp_path: Path) -> None:
    receipt = _seal(pki)
    log = _export(pki, tmp_path / "log", [_evidence_of(receipt)])
    verdict = verify_receipt(receipt, original=ORIGINAL, anchors=[pki.ca.cert], log_dir=log)
    assert verdict.ok, _failed(verdict)
    assert verdict.step(StepCode.LOG).outcome is Outcome.PASSED


def test_a_receipt_not_in_the_exported_log(pki: Pki, tmp_path: Path) -> None:
    receipt = _seal(pki)
    # Another evidence at its position: the log does not hold this receipt.
    other = _evidence_of(_seal(pki, read=True))
    log = _export(pki, tmp_path / "other", [other])
    verdict = verify_receipt(receipt, original=ORIGINAL, anchors=[pki.ca.cert], log_dir=log)
    assert _failed(verdict) == {StepCode.LOG}
    assert verdict.exit_status is ExitStatus.LOG
    assert "position 0" in verdict.step(StepCode.LOG).en


def test_a_receipt_in_a_log_no_tree_head_signs(pki: Pki, tmp_path: Path) -> None:
    receipt = _seal(pki)
    log = _export(pki, tmp_path / "unsigned", [_evidence_of(receipt)], signed=False)
    verdict = verify_receipt(receipt, original=None, anchors=[pki.ca.cert], log_dir=log)
    assert verdict.exit_status is ExitStatus.LOG
