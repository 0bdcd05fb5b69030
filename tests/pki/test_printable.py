"""The printable receipt: one signed A4 page that pyHanko and poppler accept.

Every key and certificate is made per test; poppler's tools (pdfinfo,
pdftotext, pdftoppm) read the PDF as a reader's software would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from palais.mailbox.evidence import (
    Attachment,
    Deposit,
    MessageFacts,
    Party,
    deposit_and_delivery,
    evidence_document,
    first_reads,
    parse_timestamp,
    registry_decision,
)
from palais.mailbox.identity import Identity, Role
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Issued
from palais.pki.evidence_model import Evidence
from palais.pki.printable import PDF_MEDIA_TYPE, SIGNATURE_FIELD, _render, receipt_pdf
from palais.pki.signing import EvidenceUnavailable, FileKey, certificate_sha256

SENDER = Identity(
    1,
    "maitre.dupont@avocats.test",
    Role.AVOCAT,
    "Maître Jeanne Dupont-Lefèvre",
    "a1" * 32,
    "maitre.dupont@avocats.test",
)
READER = Identity(
    7, "m.martin@justice.test", Role.GREFFIER, "Marc Martin", "c3" * 32, "greffe@justice.test"
)
# (address written to, mailbox it reached): a dossier's address reaches its service's.
DELIVERIES = (
    ("greffe@justice.test", "greffe@justice.test"),
    ("confrere@avocats.test", "confrere@avocats.test"),
)
RECIPIENTS = tuple(address for address, _mailbox in DELIVERIES)
DOSSIER = "RG 24/01234"
WHEN = datetime(2026, 3, 29, 0, 30, 5, 123456, tzinfo=UTC)  # 01:30:05 in Paris, before DST


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


MESSAGE_SHA = _sha("the message")


def _facts(
    attachments: int = 2, subject: str = "Conclusions d'appel — pièces 1 et 2"
) -> MessageFacts:
    return MessageFacts(
        "<20260329.0001@avocats.test>",
        subject,
        48_213,
        MESSAGE_SHA,
        tuple(
            Attachment(f"piece-{n:02d}.pdf", "application/pdf", 1000 + n, _sha(f"piece {n}"))
            for n in range(1, attachments + 1)
        ),
    )


def _deposit(facts: MessageFacts, issuer: Issued) -> dict[str, Any]:
    order = deposit_and_delivery(SENDER, DELIVERIES, DOSSIER, WHEN)
    return evidence_document(
        order,
        facts,
        evidence_id="ev-2026-000042",
        issuer="Palais — Tribunal judiciaire de Paris",
        issuer_certificate_sha256=certificate_sha256(issuer.cert),
        position=41,
        previous=_sha("leaf 40"),
    )


@dataclass
class Chain:
    ca: CertificateAuthority
    evidence: Issued

    @property
    def key(self) -> FileKey:
        return FileKey(self.evidence.key, self.evidence.cert)


def _chain() -> Chain:
    """A CA and the evidence certificate it issues, as devpki lays them out."""
    ca = CertificateAuthority.create(certbuilder.name("AC Palais tests", organization="Palais"))
    evidence = ca.issue(
        certbuilder.name("Service de preuve Palais", organization="Palais", country="FR"),
        profile=certbuilder.EVIDENCE,
    )
    return Chain(ca, evidence)


@pytest.fixture
def chain() -> Chain:
    return _chain()


def _vc(*roots: x509.Certificate) -> ValidationContext:
    return ValidationContext(
        trust_roots=[
            asn1_x509.Certificate.load(r.public_bytes(serialization.Encoding.DER)) for r in roots
        ],
        allow_fetching=False,
    )


def _validate(pdf: bytes, *roots: x509.Certificate) -> Any:
    reader = PdfFileReader(io.BytesIO(pdf))
    (signature,) = reader.embedded_signatures
    return validate_pdf_signature(signature, _vc(*roots))


def _poppler(tool: str, pdf: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "receipt.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(
        [tool, *args, str(path), *([] if tool == "pdfinfo" else ["-"])],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout.decode("utf-8", "replace")


def _pages(pdf: bytes, tmp_path: Path) -> int:
    info = _poppler("pdfinfo", pdf, tmp_path)
    match = re.search(r"^Pages:\s+(\d+)$", info, re.MULTILINE)
    assert match, info
    return int(match.group(1))


def _text(pdf: bytes, tmp_path: Path) -> str:
    """The page's text with each run of white space made one space (lines wrap)."""
    return " ".join(_poppler("pdftotext", pdf, tmp_path).split())


# -- the signature ----------------------------------------------------------------


def test_signature_is_intact_valid_and_trusted_under_its_ca(chain: Chain) -> None:
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), chain.key)
    assert pdf.startswith(b"%PDF-")
    status = _validate(pdf, chain.ca.cert)
    assert status.intact and status.valid and status.trusted
    assert status.signing_cert.dump() == chain.evidence.cert.public_bytes(
        serialization.Encoding.DER
    )


def test_signature_is_not_trusted_under_another_ca(chain: Chain) -> None:
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), chain.key)
    status = _validate(pdf, _chain().ca.cert)
    assert status.intact and status.valid  # the bytes and the key agree...
    assert not status.trusted  # ...but nothing links the key to this anchor
    assert not status.bottom_line


def test_a_byte_changed_in_the_signed_range_breaks_integrity(chain: Chain) -> None:
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), chain.key)
    reader = PdfFileReader(io.BytesIO(pdf))
    (signature,) = reader.embedded_signatures
    start, first_length, *_ = signature.sig_object["/ByteRange"]
    # A byte inside the page's (compressed) content stream: the file still
    # parses, only the digest changes.
    where = pdf.index(b"stream", 0) + 40
    assert start <= where < start + first_length
    tampered = bytearray(pdf)
    tampered[where] ^= 0x01
    status = _validate(bytes(tampered), chain.ca.cert)
    assert not status.intact
    assert not status.bottom_line


def test_it_is_pades_baseline_b(chain: Chain) -> None:
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), chain.key)
    reader = PdfFileReader(io.BytesIO(pdf))
    (signature,) = reader.embedded_signatures
    assert signature.field_name == SIGNATURE_FIELD
    assert signature.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    signed = {a["type"].native for a in signature.signer_info["signed_attrs"]}
    # B-B: the signing certificate is bound by its hash; the time is the
    # dictionary's /M, never a CMS signing-time attribute.
    assert "signing_certificate_v2" in signed
    assert "signing_time" not in signed
    assert signature.md_algorithm == "sha256"


def test_signing_time_is_in_the_signature_and_on_the_page(chain: Chain, tmp_path: Path) -> None:
    at = datetime(2026, 7, 14, 10, 0, 0, tzinfo=UTC)
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), chain.key, signing_time=at)
    reader = PdfFileReader(io.BytesIO(pdf))
    (signature,) = reader.embedded_signatures
    assert signature.self_reported_timestamp == at
    assert "14/07/2026 12:00:00 (heure de Paris, UTC+02:00)" in _text(pdf, tmp_path)


@dataclass
class RecordingKey:
    """An evidence key that is not a file: what an HSM session looks like to us."""

    inner: FileKey
    signed: list[bytes] = field(default_factory=list)

    @property
    def certificate(self) -> x509.Certificate:
        return self.inner.certificate

    @property
    def chain(self) -> Sequence[x509.Certificate]:
        return ()

    def sign(self, data: bytes) -> bytes:
        self.signed.append(data)
        return self.inner.sign(data)


def test_only_the_keys_sign_method_is_used_once(chain: Chain) -> None:
    key = RecordingKey(chain.key)
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), key)
    # One signature: pyHanko's size estimate must not cost an HSM operation.
    assert len(key.signed) == 1
    assert _validate(pdf, chain.ca.cert).bottom_line


class BrokenKey(RecordingKey):
    def sign(self, data: bytes) -> bytes:
        raise EvidenceUnavailable("The evidence service cannot sign now", reason="hsm down")


def test_a_key_that_cannot_sign_raises_evidence_unavailable(chain: Chain) -> None:
    with pytest.raises(EvidenceUnavailable):
        receipt_pdf(_deposit(_facts(), chain.evidence), BrokenKey(chain.key))


def test_an_rsa_evidence_key_signs_pkcs1_v15(chain: Chain) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = certbuilder.now()
    ski = chain.ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(certbuilder.name("Service de preuve RSA", organization="Palais"))
        .issuer_name(chain.ca.cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(chain.ca.key, hashes.SHA256())
    )
    pdf = receipt_pdf(_deposit(_facts(), chain.evidence), FileKey(private, cert))
    status = _validate(pdf, chain.ca.cert)
    assert status.bottom_line
    assert status.pkcs7_signature_mechanism == "sha256_rsa"


# -- the page ---------------------------------------------------------------------


def test_one_page_that_renders_and_says_what_the_evidence_says(
    chain: Chain, tmp_path: Path
) -> None:
    document = _deposit(_facts(), chain.evidence)
    pdf = receipt_pdf(document, chain.key)
    assert PDF_MEDIA_TYPE == "application/pdf"
    assert _pages(pdf, tmp_path) == 1

    png = tmp_path / "page"
    (tmp_path / "receipt.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", str(tmp_path / "receipt.pdf"), str(png)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (image,) = tmp_path.glob("page*.png")
    head = image.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (414, 585)  # A4 (595 x 842 pt) at 50 dpi

    text = _text(pdf, tmp_path)
    for expected in (
        "Accusé de réception",
        "Dépôt · Remise",
        DOSSIER,
        SENDER.address,
        *RECIPIENTS,
        MESSAGE_SHA,
        "ev-2026-000042",
        "urn:palais:politique-de-preuve:1",
        "<20260329.0001@avocats.test>",
        "Conclusions d'appel — pièces 1 et 2",
        "48 213 octets",
        "piece-01.pdf",
        _sha("piece 2"),
        SENDER.fingerprint,
        "Avocat",
        document["log"]["previous"],
        "palais verify-receipt",
        "/verifier",
        # 00:30 UTC is 01:30 in Paris (UTC+1 until 01:00 UTC that day).
        "29/03/2026 01:30:05 (heure de Paris, UTC+01:00)",
        "2026-03-29T00:30:05.123456Z",
    ):
        assert expected in text, expected
    assert "Valeurs abrégées" not in text


def test_a_read_receipt_names_the_reader_and_how_they_authenticated(
    chain: Chain, tmp_path: Path
) -> None:
    deposit = _deposit(_facts(), chain.evidence)
    read_at = WHEN + timedelta(hours=2)
    (order,) = first_reads(READER, [Deposit(5, SENDER.address, WHEN, deposit)], (), read_at)
    document = evidence_document(
        order,
        _facts(),
        evidence_id="ev-2026-000043",
        issuer="Palais",
        issuer_certificate_sha256=certificate_sha256(chain.evidence.cert),
        position=42,
        previous=_sha("leaf 41"),
    )
    pdf = receipt_pdf(Evidence.model_validate(document), chain.key)
    text = _text(pdf, tmp_path)
    assert "Première lecture" in text
    assert READER.address in text and "Lecteur" in text and "Greffier" in text
    assert READER.fingerprint in text
    assert "TLS mutuel" in text
    assert "pour la boîte greffe@justice.test" in text
    assert parse_timestamp(document["events"][0]["time"]) == read_at
    assert _validate(pdf, chain.ca.cert).bottom_line


def test_twenty_attachments_and_a_long_subject_fit_one_page_unshrunk(
    chain: Chain, tmp_path: Path
) -> None:
    subject = "Conclusions récapitulatives n° 3 " * 40
    document = _deposit(_facts(20, subject), chain.evidence)
    pdf = receipt_pdf(document, chain.key)
    assert _pages(pdf, tmp_path) == 1
    # Drawn at its designed size: twenty attachments are an ordinary filing.
    _unsigned, scale = _render(Evidence.model_validate(document), WHEN, chain.evidence.cert)
    assert scale == 1.0
    text = _text(pdf, tmp_path)
    for n in range(1, 21):
        assert f"piece-{n:02d}.pdf" in text
        assert _sha(f"piece {n}") in text
    assert subject not in text  # shortened...
    assert "…" in text and "Valeurs abrégées" in text  # ...and it says so
    assert _validate(pdf, chain.ca.cert).bottom_line


def test_far_too_much_still_fits_one_page(chain: Chain, tmp_path: Path) -> None:
    many = tuple((f"destinataire{n}@avocats.test",) * 2 for n in range(40))
    order = deposit_and_delivery(SENDER, many, "D" * 300, WHEN)
    document = evidence_document(
        order,
        _facts(80, "x" * 5000),
        evidence_id="e" * 400,
        issuer="Palais",
        issuer_certificate_sha256=certificate_sha256(chain.evidence.cert),
        position=0,
        previous="0" * 64,
    )
    pdf = receipt_pdf(document, chain.key)
    assert _pages(pdf, tmp_path) == 1
    text = _text(pdf, tmp_path)
    assert "autres pièces jointes" in text
    assert "autres parties" in text
    assert _validate(pdf, chain.ca.cert).bottom_line


def test_markup_and_characters_outside_the_fonts_are_shown_safely(
    chain: Chain, tmp_path: Path
) -> None:
    subject = "<b>Référé</b> & Łódź \x07 “citation” 😀"
    pdf = receipt_pdf(_deposit(_facts(subject=subject), chain.evidence), chain.key)
    text = _text(pdf, tmp_path)
    # Markup shows as text; letters outside the standard fonts lose their
    # accent (ź), or are spelt as their base letter (Ł), or become "?".
    assert "<b>Référé</b> & Lódz “citation” ?" in text


def test_a_document_that_is_not_evidence_is_refused(chain: Chain) -> None:
    document = _deposit(_facts(), chain.evidence)
    del document["log"]
    with pytest.raises(pydantic.ValidationError):
        receipt_pdf(document, chain.key)


def test_a_rejection_shows_its_reason_and_a_delegate_is_named(chain: Chain, tmp_path: Path) -> None:
    deposit = Deposit(5, SENDER.address, WHEN, _deposit(_facts(), chain.evidence))
    order = registry_decision(
        READER, deposit, accepted=False, reason="Pièce n° 2 illisible", now=WHEN
    )
    assistant = Identity(
        9, "assistante@avocats.test", Role.COLLABORATEUR, "Léa Petit", "d4" * 32, SENDER.address
    )
    order = dataclasses.replace(order, delegate=Party.acting(assistant))
    document = evidence_document(
        order,
        _facts(),
        evidence_id="ev-2026-000044",
        issuer="Palais",
        issuer_certificate_sha256=certificate_sha256(chain.evidence.cert),
        position=43,
        previous=_sha("leaf 42"),
    )
    text = _text(receipt_pdf(document, chain.key), tmp_path)
    assert "Rejet par le greffe" in text and "Pièce n° 2 illisible" in text
    assert "Greffe" in text and READER.address in text
    assert "Délégué" in text and assistant.address in text and assistant.fingerprint in text
    assert "Collaborateur" in text


def test_a_naive_signing_time_is_refused(chain: Chain) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        receipt_pdf(
            _deposit(_facts(), chain.evidence), chain.key, signing_time=datetime(2026, 1, 1)
        )


def test_the_keys_chain_travels_in_the_signature() -> None:
    """An HSM's certificate usually sits under an intermediate: a verifier that
    trusts only the root still validates the receipt, from the CMS alone."""
    root = CertificateAuthority.create(certbuilder.name("Racine Palais tests"), path_length=1)
    intermediate = CertificateAuthority.create(
        certbuilder.name("AC intermédiaire Palais tests"), issuer=root
    )
    leaf = intermediate.issue(
        certbuilder.name("Service de preuve Palais"), profile=certbuilder.EVIDENCE
    )
    document = _deposit(_facts(), leaf)
    with_chain = receipt_pdf(document, FileKey(leaf.key, leaf.cert, (intermediate.cert,)))
    assert _validate(with_chain, root.cert).bottom_line
    without = receipt_pdf(document, FileKey(leaf.key, leaf.cert))
    status = _validate(without, root.cert)
    assert status.intact and status.valid and not status.trusted
