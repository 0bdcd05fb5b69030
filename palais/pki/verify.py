"""Offline verification of an accusé de réception: what ``palais verify-receipt``
and the gateway's /verifier page run.

Pure: bytes and certificates in, a ``Verdict`` out; no network, no clock
but for the report. Each check is a named step with a stable code, an
outcome and a message in French and in English, so that a clerk, a judge
and a script read the same verdict.

What is checked, in order (``receipt.py`` writes what this reads):

1. the mail is a Palais receipt: multipart/signed (S/MIME) with one signed
   part and one application/pkcs7-signature part. The signed part is taken
   as the exact bytes between its boundary lines, found on the raw bytes
   (never re-serialised by the email package), with CRLF or LF line ends as
   a mail client may have saved it;
2. the CMS SignedData: its message digest is the SHA-256 of the signed
   bytes (as found, or in the CRLF canonical form of S/MIME), the signature
   over the signed attributes verifies with the signer's certificate, and
   the signingCertificateV2 attribute names that certificate;
3. the signer's certificate chains, through the certificates the CMS
   carries, to one of the trust anchors; every certificate of that chain
   was valid at the signing time, and the signer may sign (digitalSignature
   or nonRepudiation);
4. the evidence part, read from the signed bytes only, is an ``Evidence``
   document in canonical JSON issued by the certificate that signed;
5. with the original message: its size and SHA-256 (as the gateway stored
   it, CRLF) and each attachment's name, media type, size and SHA-256;
6. with an exported evidence log: the receipt's inclusion in it.

The exit status (``ExitStatus``) is the first kind of failure in the order
2 unreadable, 3 malformed, 4 signature, 5 chain, 6 message, 7 attachment,
8 log. An attachment that differs makes the whole message differ too: the
message step then fails with the more precise status 7, so that "which
attachment" is what a script learns.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Final

import pydantic
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from palais.mailbox.evidence import (
    EVIDENCE_MEDIA_TYPE,
    Attachment,
    EventCode,
    attachments_of,
    canonical_json,
)
from palais.mailbox.message import normalize_line_endings
from palais.pki.evidence_model import Evidence
from palais.pki.signing import certificate_sha256, issued_by, valid_at, verify_signature

__all__ = [
    "ExitStatus",
    "Outcome",
    "Step",
    "StepCode",
    "Verdict",
    "evidence_summary",
    "status_text",
    "verify_receipt",
]

_SIGNATURE_TYPES: Final = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature"}
)
# Chains longer than this are not ours (the evidence CA issues the key directly);
# the bound keeps a crafted certificate loop from running forever.
_MAX_CHAIN: Final = 8


class ExitStatus(enum.IntEnum):
    """The process exit status of ``palais verify-receipt``; lower wins."""

    OK = 0
    UNREADABLE = 2  # a file cannot be read, or the command is misused
    MALFORMED = 3  # not a Palais receipt
    SIGNATURE = 4  # the CMS signature is invalid, or the evidence is not what was signed
    CHAIN = 5  # not issued through a trust anchor, not valid when it signed, may not sign
    MESSAGE = 6  # the original message is not the one the receipt is about
    ATTACHMENT = 7  # an attachment of the original is not the one the receipt names
    LOG = 8  # the receipt is not (provably) in the exported evidence log


_STATUS_TEXT: Final[Mapping[ExitStatus, tuple[str, str]]] = {
    ExitStatus.OK: ("toutes les vérifications sont passées", "every check passed"),
    ExitStatus.UNREADABLE: ("fichier illisible", "unreadable file"),
    ExitStatus.MALFORMED: (
        "ce n'est pas un accusé de réception Palais bien formé",
        "not a well-formed Palais receipt",
    ),
    ExitStatus.SIGNATURE: (
        "la signature n'est pas valide, ou ne couvre pas cette preuve",
        "the signature is invalid, or does not cover this evidence",
    ),
    ExitStatus.CHAIN: (
        "le signataire n'est pas reconnu par l'autorité de confiance à la date de signature",
        "the signer is not vouched for by the trust anchor at the signing time",
    ),
    ExitStatus.MESSAGE: (
        "le message original ne correspond pas",
        "the original message does not match",
    ),
    ExitStatus.ATTACHMENT: (
        "une pièce jointe ne correspond pas",
        "an attachment does not match",
    ),
    ExitStatus.LOG: (
        "la preuve n'est pas établie dans le journal de preuve",
        "the evidence is not proven to be in the evidence log",
    ),
}


def status_text(status: ExitStatus) -> tuple[str, str]:
    """What an exit status means, in French and in English."""
    return _STATUS_TEXT[status]


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class StepCode(enum.StrEnum):
    """The checks, in the order they run; the values are stable, for scripts."""

    MIME = "mime"  # multipart/signed with a signed part and a signature part
    CMS = "cms"  # the signature part is a detached CMS SignedData we can check
    DIGEST = "digest"  # its message digest is the signed part's SHA-256
    SIGNATURE = "signature"  # the signature over the signed attributes verifies
    SIGNING_CERTIFICATE = "signing-certificate"  # signingCertificateV2 names the signer
    CHAIN = "chain"  # the signer chains to a trust anchor
    VALIDITY = "validity"  # every certificate of the chain valid at the signing time
    KEY_USAGE = "key-usage"  # the signer's key may sign (digitalSignature, nonRepudiation)
    EVIDENCE = "evidence"  # the signed part carries one canonical Evidence document
    EVIDENCE_ISSUER = "evidence-issuer"  # issued by the certificate that signed
    MESSAGE = "message"  # the original's size and SHA-256
    ATTACHMENTS = "attachments"  # each attachment's name, type, size and SHA-256
    LOG = "log"  # inclusion in the exported evidence log


# What a failure of each step means for the exit status.
_FAILURE_STATUS: Final[Mapping[StepCode, ExitStatus]] = {
    StepCode.MIME: ExitStatus.MALFORMED,
    StepCode.CMS: ExitStatus.MALFORMED,
    StepCode.DIGEST: ExitStatus.SIGNATURE,
    StepCode.SIGNATURE: ExitStatus.SIGNATURE,
    StepCode.SIGNING_CERTIFICATE: ExitStatus.SIGNATURE,
    StepCode.CHAIN: ExitStatus.CHAIN,
    StepCode.VALIDITY: ExitStatus.CHAIN,
    StepCode.KEY_USAGE: ExitStatus.CHAIN,
    StepCode.EVIDENCE: ExitStatus.MALFORMED,
    StepCode.EVIDENCE_ISSUER: ExitStatus.SIGNATURE,
    StepCode.MESSAGE: ExitStatus.MESSAGE,
    StepCode.ATTACHMENTS: ExitStatus.ATTACHMENT,
    StepCode.LOG: ExitStatus.LOG,
}


@dataclass(frozen=True, slots=True)
class Step:
    code: StepCode
    outcome: Outcome
    fr: str
    en: str
    status: ExitStatus = ExitStatus.OK  # what this step's failure means (OK unless failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "outcome": self.outcome.value,
            "fr": self.fr,
            "en": self.en,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every step's outcome, and what the receipt says when it could be read."""

    steps: tuple[Step, ...]
    evidence: Evidence | None = None  # parsed from the signed part, when readable
    evidence_bytes: bytes | None = None  # its canonical bytes (the log's leaf)
    signing_time: datetime | None = None
    signer_subject: str | None = None
    signer_sha256: str | None = None
    # True when the signed part matched only once its line ends were made CRLF
    # (the receipt was saved with LF line ends).
    receipt_line_endings_normalised: bool = False
    # True when the original was LF-only and was checked as CRLF, as stored.
    original_line_endings_normalised: bool = False

    @property
    def exit_status(self) -> ExitStatus:
        failed = [s.status for s in self.steps if s.outcome is Outcome.FAILED]
        return min(failed) if failed else ExitStatus.OK

    @property
    def ok(self) -> bool:
        return self.exit_status is ExitStatus.OK

    def step(self, code: StepCode) -> Step:
        return next(s for s in self.steps if s.code is code)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_status": int(self.exit_status),
            "status": dict(zip(("fr", "en"), status_text(self.exit_status), strict=True)),
            "steps": [s.to_json() for s in self.steps],
            "signing_time": self.signing_time.isoformat() if self.signing_time else None,
            "signer": (
                {"subject": self.signer_subject, "certificate_sha256": self.signer_sha256}
                if self.signer_sha256
                else None
            ),
            "receipt_line_endings_normalised": self.receipt_line_endings_normalised,
            "original_line_endings_normalised": self.original_line_endings_normalised,
            "evidence": self.evidence.model_dump(mode="json") if self.evidence else None,
        }


@dataclass(slots=True)
class _Run:
    """The steps so far; a step whose prerequisite failed is reported as skipped."""

    steps: list[Step] = field(default_factory=list)

    def passed(self, code: StepCode, fr: str, en: str) -> None:
        self.steps.append(Step(code, Outcome.PASSED, fr, en))

    def failed(self, code: StepCode, fr: str, en: str, status: ExitStatus | None = None) -> None:
        self.steps.append(Step(code, Outcome.FAILED, fr, en, status or _FAILURE_STATUS[code]))

    def skipped(self, code: StepCode, fr: str, en: str) -> None:
        self.steps.append(Step(code, Outcome.SKIPPED, fr, en))

    def skip_rest(self, codes: Sequence[StepCode], fr: str, en: str) -> None:
        for code in codes:
            self.skipped(code, fr, en)


# -- the mail --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mail:
    signed: bytes  # the signed part, exactly as found
    signature: bytes  # the CMS DER


class _Malformed(Exception):
    def __init__(self, fr: str, en: str) -> None:
        super().__init__(en)
        self.fr = fr
        self.en = en


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Header block and body, at the first blank line (CRLF or LF)."""
    match = re.search(rb"\r?\n\r?\n", data)
    if match is None:
        return data, b""
    return data[: match.start()], data[match.end() :]


def _headers(head: bytes) -> Message:
    return BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\n\n")


def _parts(body: bytes, boundary: str) -> list[bytes]:
    """The parts of a multipart body: the bytes between its delimiter lines.

    RFC 2046: the line break before a delimiter belongs to the delimiter, so a
    part ends before it; each delimiter line may carry trailing blanks. Line
    breaks are CRLF or, in a file a client saved, LF.
    """
    delimiter = re.compile(rb"(?m)^--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*\r?$")
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            end = match.start()
            # The line break before the delimiter is the delimiter's.
            if body[end - 1 : end] == b"\n":
                end -= 1
                if body[end - 1 : end] == b"\r":
                    end -= 1
            parts.append(body[start:end] if end >= start else b"")
        if match.group(1):  # the close delimiter
            return parts
        start = match.end() + 1  # after the delimiter line's \n
    raise _Malformed(
        "La structure multipart est tronquée (pas de délimiteur final).",
        "The multipart structure is truncated (no closing delimiter).",
    )


def _read_mail(data: bytes) -> _Mail:
    head, body = _split_head(data)
    headers = _headers(head)
    if headers.get_content_type() != "multipart/signed":
        raise _Malformed(
            f"Ce n'est pas un courrier signé (multipart/signed) mais {headers.get_content_type()}.",
            f"This is not a signed mail (multipart/signed) but {headers.get_content_type()}.",
        )
    protocol = str(headers.get_param("protocol") or "").lower()
    if protocol not in _SIGNATURE_TYPES:
        raise _Malformed(
            "La signature annoncée n'est pas une signature S/MIME (application/pkcs7-signature).",
            "The announced signature is not an S/MIME one (application/pkcs7-signature).",
        )
    boundary = headers.get_boundary()
    if not boundary:
        raise _Malformed(
            "Le courrier signé n'indique pas sa frontière (boundary).",
            "The signed mail gives no boundary.",
        )
    parts = _parts(body, boundary)
    if len(parts) != 2:
        raise _Malformed(
            f"Le courrier signé a {len(parts)} partie(s) au lieu de 2 (contenu, signature).",
            f"The signed mail has {len(parts)} part(s) instead of 2 (content, signature).",
        )
    signed, signature_part = parts
    sig_head, sig_body = _split_head(signature_part)
    sig_headers = _headers(sig_head)
    if sig_headers.get_content_type() not in _SIGNATURE_TYPES:
        raise _Malformed(
            "La seconde partie n'est pas une signature application/pkcs7-signature.",
            "The second part is not an application/pkcs7-signature signature.",
        )
    if str(sig_headers.get("Content-Transfer-Encoding", "")).strip().lower() != "base64":
        raise _Malformed(
            "La signature n'est pas encodée en base64.",
            "The signature is not base64-encoded.",
        )
    try:
        der = base64.b64decode(b"".join(sig_body.split()), validate=True)
    except binascii.Error:
        raise _Malformed(
            "La signature n'est pas du base64 valide.",
            "The signature is not valid base64.",
        ) from None
    return _Mail(signed, der)


# -- the CMS signature -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cms:
    signer: x509.Certificate
    others: tuple[x509.Certificate, ...]  # the other certificates it carries
    digest: bytes  # the message-digest attribute
    signing_time: datetime
    signed_attributes: bytes  # the DER SET the signature covers
    signature: bytes
    signing_certificate: tsp.SigningCertificateV2 | None


def _read_cms(der: bytes) -> _Cms:
    def bad(fr: str, en: str) -> _Malformed:
        return _Malformed(f"Signature CMS illisible : {fr}", f"Unreadable CMS signature: {en}")

    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise bad("ce n'est pas un SignedData.", "it is not a SignedData.")
        signed_data = info["content"]
        if signed_data["encap_content_info"]["content"].native is not None:
            raise bad("la signature n'est pas détachée.", "the signature is not detached.")
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise bad(
                f"{len(signer_infos)} signataires au lieu d'un.",
                f"{len(signer_infos)} signers instead of one.",
            )
        signer_info = signer_infos[0]
        if signer_info["digest_algorithm"]["algorithm"].native != "sha256":
            raise bad("l'empreinte n'est pas SHA-256.", "the digest is not SHA-256.")
        if signer_info["signature_algorithm"].hash_algo != "sha256":
            raise bad("la signature n'est pas SHA-256.", "the signature is not SHA-256.")
        attributes = signer_info["signed_attrs"]
        if not len(attributes):
            raise bad("aucun attribut signé.", "no signed attributes.")
        values: dict[str, Any] = {}
        for attribute in attributes:
            name = attribute["type"].native
            if name in values or len(attribute["values"]) != 1:
                raise bad(f"l'attribut {name} est répété.", f"the attribute {name} is repeated.")
            values[name] = attribute["values"][0]
        for needed in ("content_type", "message_digest", "signing_time"):
            if needed not in values:
                raise bad(f"l'attribut {needed} manque.", f"the attribute {needed} is missing.")
        if values["content_type"].native != "data":
            raise bad("le type de contenu n'est pas « data ».", "the content type is not 'data'.")
        certificates = [
            c.chosen for c in signed_data["certificates"] or () if c.name == "certificate"
        ]
        sid = signer_info["sid"]
        signer_asn1 = None
        for cert in certificates:
            if sid.name == "issuer_and_serial_number":
                if (
                    cert.issuer == sid.chosen["issuer"]
                    and cert.serial_number == sid.chosen["serial_number"].native
                ):
                    signer_asn1 = cert
            elif cert.key_identifier == sid.chosen.native:
                signer_asn1 = cert
        if signer_asn1 is None:
            raise bad(
                "le certificat du signataire n'y figure pas.",
                "the signer's certificate is not in it.",
            )
        signer = x509.load_der_x509_certificate(signer_asn1.dump())
        others = tuple(
            x509.load_der_x509_certificate(c.dump()) for c in certificates if c is not signer_asn1
        )
        # The signature covers the attributes as a DER SET (RFC 5652 5.4);
        # they travel as [0] IMPLICIT with the same contents: swap the tag.
        encoded = attributes.dump()
        signed_attributes = b"\x31" + encoded[1:]
        signing_certificate = values.get("signing_certificate_v2")
        return _Cms(
            signer=signer,
            others=others,
            digest=bytes(values["message_digest"].native),
            signing_time=values["signing_time"].native,
            signed_attributes=signed_attributes,
            signature=bytes(signer_info["signature"].native),
            signing_certificate=signing_certificate,
        )
    except _Malformed:
        raise
    except Exception as error:  # asn1crypto raises ValueError, TypeError, KeyError...
        raise bad(
            f"structure ASN.1 invalide ({type(error).__name__}).",
            f"invalid ASN.1 structure ({type(error).__name__}).",
        ) from None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _names_signer(attribute: tsp.SigningCertificateV2, signer: x509.Certificate) -> bool:
    """Whether the signingCertificateV2 attribute's first ESSCertIDv2 hashes the signer."""
    certs = attribute["certs"]
    if not len(certs):
        return False
    first = certs[0]
    algorithm = first["hash_algorithm"]["algorithm"].native
    try:
        digest = hashlib.new(algorithm)  # asn1crypto's names are hashlib's
    except ValueError:
        return False
    digest.update(_der(signer))
    return bool(digest.digest() == first["cert_hash"].native)


# -- the chain ----------------------------------------------------------------------


def _chain(
    signer: x509.Certificate,
    carried: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate] | None:
    """The path from the signer to an anchor (both included), or None."""
    path = [signer]
    while len(path) <= _MAX_CHAIN:
        current = path[-1]
        for anchor in anchors:
            if current == anchor:
                return path
            if issued_by(current, anchor):
                return [*path, anchor]
        step = next(
            (c for c in carried if c not in path and issued_by(current, c)),
            None,
        )
        if step is None:
            return None
        path.append(step)
    return None


def _may_sign(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(usage.digital_signature or usage.content_commitment)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


# -- the evidence --------------------------------------------------------------------


def _evidence_bytes(signed: bytes) -> bytes:
    """The evidence part's decoded bytes, read from the signed part only."""
    report = message_from_bytes(signed, policy=policy.compat32)
    if report.get_content_type() != "multipart/report":
        raise _Malformed(
            f"Le contenu signé n'est pas un rapport (multipart/report) mais"
            f" {report.get_content_type()}.",
            f"The signed content is not a report (multipart/report) but"
            f" {report.get_content_type()}.",
        )
    children = report.get_payload()
    found = [
        p
        for p in (children if isinstance(children, list) else [])
        if isinstance(p, Message) and p.get_content_type() == EVIDENCE_MEDIA_TYPE
    ]
    if len(found) != 1:
        raise _Malformed(
            f"Le rapport signé contient {len(found)} partie(s) {EVIDENCE_MEDIA_TYPE}"
            " au lieu d'une.",
            f"The signed report holds {len(found)} {EVIDENCE_MEDIA_TYPE} part(s) instead of one.",
        )
    part = found[0]
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() != "base64":
        raise _Malformed(
            "La partie de preuve n'est pas encodée en base64.",
            "The evidence part is not base64-encoded.",
        )
    payload = part.get_payload()
    if not isinstance(payload, str):
        raise _Malformed("La partie de preuve est vide.", "The evidence part is empty.")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Malformed(
            "La partie de preuve n'est pas du base64 valide.",
            "The evidence part is not valid base64.",
        ) from None


def _parse_evidence(data: bytes) -> Evidence:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _Malformed(
            "La preuve n'est pas du JSON UTF-8.", "The evidence is not UTF-8 JSON."
        ) from None
    try:
        evidence = Evidence.model_validate(document)
    except pydantic.ValidationError as error:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "(racine)" for e in error.errors())
        raise _Malformed(
            f"La preuve ne suit pas le modèle publié (champs : {where}).",
            f"The evidence does not follow the published model (fields: {where}).",
        ) from None
    if canonical_json(document) != data:
        raise _Malformed(
            "La preuve n'est pas en JSON canonique : elle pourrait se lire de deux façons.",
            "The evidence is not canonical JSON: it could be read two ways.",
        )
    return evidence


def evidence_summary(evidence: Evidence) -> list[tuple[str, str, str]]:
    """What a reader wants to see of a receipt: (French label, English label, value).

    Shared by the command and the web page so that both show the same facts.
    """
    rows: list[tuple[str, str, str]] = [
        ("Dossier", "Case", evidence.dossier or "—"),
        ("Preuve n°", "Evidence id", evidence.evidence_id),
        ("Émise par", "Issued by", evidence.issuer.name),
    ]
    for event in evidence.events:
        who = ", ".join(r.address for r in event.recipients) or "—"
        text = f"{event.time} — {who}"
        if event.reason:
            text += f" — {event.reason}"
        label = EventCode(event.code).label
        rows.append((f"Événement : {label}", f"Event: {event.etsi}", text))
    message = evidence.message
    rows += [
        ("Expéditeur", "Sender", evidence.sender.address),
        ("Déposé le", "Submitted", evidence.submission_time),
        ("Objet", "Subject", message.subject),
        ("Message-ID", "Message-ID", message.message_id or "—"),
        ("Taille du message", "Message size", f"{message.size} octets / bytes"),
        ("SHA-256 du message", "Message SHA-256", message.sha256),
    ]
    for n, a in enumerate(message.attachments, start=1):
        rows.append(
            (
                f"Pièce jointe {n}",
                f"Attachment {n}",
                f"{a.name or '(sans nom / unnamed)'} ({a.media_type}, {a.size} octets / bytes)"
                f" SHA-256 {a.sha256}",
            )
        )
    rows.append(
        ("Position dans le journal", "Log position", str(evidence.log.position)),
    )
    return rows


# -- the original ----------------------------------------------------------------------


def _attachment_differences(
    found: Sequence[Attachment], expected: Evidence
) -> list[tuple[str, str]]:
    """(French, English) for each attachment that differs from the evidence."""
    named = expected.message.attachments
    out: list[tuple[str, str]] = []
    for n, (want, got) in enumerate(zip(named, found, strict=False), start=1):
        fields = []
        if want.name != got.name:
            fields.append(("nom", "name"))
        if want.media_type != got.media_type:
            fields.append(("type", "media type"))
        if want.size != got.size:
            fields.append(("taille", "size"))
        if want.sha256 != got.sha256:
            fields.append(("SHA-256", "SHA-256"))
        if fields:
            fr_fields = ", ".join(f for f, _ in fields)
            en_fields = ", ".join(e for _, e in fields)
            out.append(
                (
                    f"pièce jointe {n} « {want.name or '(sans nom)'} » : {fr_fields} différent(s)",
                    f"attachment {n} '{want.name or '(unnamed)'}': {en_fields} differ(s)",
                )
            )
    if len(found) < len(named):
        missing = ", ".join(a.name or "(sans nom)" for a in named[len(found) :])
        out.append(
            (
                f"pièce(s) jointe(s) manquante(s) : {missing}",
                f"missing attachment(s): {missing}",
            )
        )
    elif len(found) > len(named):
        extra = ", ".join(a.name or "(sans nom)" for a in found[len(named) :])
        out.append(
            (
                f"pièce(s) jointe(s) en trop : {extra}",
                f"unexpected attachment(s): {extra}",
            )
        )
    return out


def _check_original(run: _Run, original: bytes, evidence: Evidence) -> bool:
    """Check the original against the evidence; True if its line ends were normalised."""
    stored = normalize_line_endings(original)
    normalised = stored != original
    note_fr = " (fins de ligne LF converties en CRLF, comme le message est conservé)"
    note_en = " (LF line ends converted to CRLF, as the message is stored)"
    note = (note_fr, note_en) if normalised else ("", "")
    differences = _attachment_differences(attachments_of(stored), evidence)
    size, sha = len(stored), hashlib.sha256(stored).hexdigest()
    expected = evidence.message
    if size == expected.size and sha == expected.sha256:
        run.passed(
            StepCode.MESSAGE,
            f"Le message original est celui de l'accusé : {size} octets, SHA-256 {sha}{note[0]}.",
            f"The original message is the one of the receipt: {size} bytes,"
            f" SHA-256 {sha}{note[1]}.",
        )
    elif differences:
        run.failed(
            StepCode.MESSAGE,
            f"Le message original diffère de celui de l'accusé ({size} octets, SHA-256 {sha} ;"
            f" attendu {expected.size} octets, SHA-256 {expected.sha256}){note[0]} :"
            " une pièce jointe diffère.",
            f"The original message differs from the receipt's ({size} bytes, SHA-256 {sha};"
            f" expected {expected.size} bytes, SHA-256 {expected.sha256}){note[1]}:"
            " an attachment differs.",
            ExitStatus.ATTACHMENT,
        )
    else:
        run.failed(
            StepCode.MESSAGE,
            f"Le message original diffère de celui de l'accusé ({size} octets, SHA-256 {sha} ;"
            f" attendu {expected.size} octets, SHA-256 {expected.sha256}){note[0]}.",
            f"The original message differs from the receipt's ({size} bytes, SHA-256 {sha};"
            f" expected {expected.size} bytes, SHA-256 {expected.sha256}){note[1]}.",
        )
    if differences:
        run.failed(
            StepCode.ATTACHMENTS,
            "Pièces jointes différentes : " + " ; ".join(fr for fr, _ in differences) + ".",
            "Attachments differ: " + "; ".join(en for _, en in differences) + ".",
        )
    else:
        count = len(expected.attachments)
        run.passed(
            StepCode.ATTACHMENTS,
            f"Les {count} pièce(s) jointe(s) sont celles de l'accusé (nom, type, taille, SHA-256).",
            f"The {count} attachment(s) are the receipt's (name, type, size, SHA-256).",
        )
    return normalised


# -- the whole ---------------------------------------------------------------------------


def verify_receipt(
    receipt: bytes,
    *,
    original: bytes | None = None,
    anchors: Sequence[x509.Certificate],
    log_dir: Path | None = None,
) -> Verdict:
    """Check a receipt mail offline; see the module's docstring for each step."""
    run = _Run()
    if not receipt.strip():
        run.failed(
            StepCode.MIME,
            "Le fichier de l'accusé est vide.",
            "The receipt file is empty.",
            ExitStatus.UNREADABLE,
        )
        run.skip_rest(list(StepCode)[1:], "Aucun accusé à vérifier.", "No receipt to check.")
        return Verdict(tuple(run.steps))

    # 1. The mail.
    try:
        mail = _read_mail(receipt)
    except _Malformed as error:
        run.failed(StepCode.MIME, error.fr, error.en)
        run.skip_rest(
            list(StepCode)[1:],
            "Non vérifié : ce n'est pas un accusé de réception Palais.",
            "Not checked: this is not a Palais receipt.",
        )
        return Verdict(tuple(run.steps))
    run.passed(
        StepCode.MIME,
        "Courrier S/MIME signé : une partie signée et une signature CMS.",
        "Signed S/MIME mail: one signed part and a CMS signature.",
    )

    # 2. The CMS signature.
    signature: _Cms | None = None
    try:
        read = _read_cms(mail.signature)
    except _Malformed as error:
        run.failed(StepCode.CMS, error.fr, error.en)
    else:
        signature = read
        run.passed(
            StepCode.CMS,
            f"Signature CMS détachée par « {_subject(read.signer)} »,"
            f" le {read.signing_time.isoformat()}.",
            f"Detached CMS signature by '{_subject(read.signer)}'"
            f" at {read.signing_time.isoformat()}.",
        )

    # The signed bytes: as found, or in S/MIME's CRLF canonical form (a file
    # saved with LF line ends). Without a signature, the canonical form is
    # still the best reading of the evidence.
    canonical = normalize_line_endings(mail.signed)
    signed = canonical
    receipt_normalised = False
    if signature is None:
        run.skip_rest(
            [
                StepCode.DIGEST,
                StepCode.SIGNATURE,
                StepCode.SIGNING_CERTIFICATE,
                StepCode.CHAIN,
                StepCode.VALIDITY,
                StepCode.KEY_USAGE,
            ],
            "Non vérifié : la signature CMS est illisible.",
            "Not checked: the CMS signature cannot be read.",
        )
    else:
        if hashlib.sha256(mail.signed).digest() == signature.digest:
            signed = mail.signed
            matched = True
        elif hashlib.sha256(canonical).digest() == signature.digest:
            receipt_normalised = matched = True
        else:
            matched = False
        if matched:
            note_fr = " (fins de ligne remises en CRLF)" if receipt_normalised else ""
            note_en = " (line ends restored to CRLF)" if receipt_normalised else ""
            run.passed(
                StepCode.DIGEST,
                f"L'empreinte signée est celle du contenu signé{note_fr}.",
                f"The signed digest is the signed content's{note_en}.",
            )
        else:
            run.failed(
                StepCode.DIGEST,
                "Le contenu signé a été modifié : son empreinte n'est pas celle que la"
                " signature couvre.",
                "The signed content was altered: its digest is not the one the signature covers.",
            )
        if verify_signature(signature.signer, signature.signature, signature.signed_attributes):
            run.passed(
                StepCode.SIGNATURE,
                "La signature des attributs signés est valide.",
                "The signature over the signed attributes is valid.",
            )
        else:
            run.failed(
                StepCode.SIGNATURE,
                "La signature n'est pas valide pour le certificat du signataire.",
                "The signature is not valid for the signer's certificate.",
            )
        if signature.signing_certificate is None:
            run.failed(
                StepCode.SIGNING_CERTIFICATE,
                "L'attribut signingCertificateV2 manque : le certificat signataire n'est pas"
                " désigné.",
                "The signingCertificateV2 attribute is missing: the signer certificate is not"
                " named.",
            )
        elif _names_signer(signature.signing_certificate, signature.signer):
            run.passed(
                StepCode.SIGNING_CERTIFICATE,
                "L'attribut signingCertificateV2 désigne bien le certificat signataire.",
                "The signingCertificateV2 attribute names the signer certificate.",
            )
        else:
            run.failed(
                StepCode.SIGNING_CERTIFICATE,
                "L'attribut signingCertificateV2 désigne un autre certificat que le signataire.",
                "The signingCertificateV2 attribute names another certificate than the signer.",
            )
        _check_chain(run, signature, anchors)

    # 4. The evidence.
    evidence: Evidence | None = None
    evidence_bytes: bytes | None = None
    try:
        evidence_bytes = _evidence_bytes(signed)
        evidence = _parse_evidence(evidence_bytes)
    except _Malformed as error:
        run.failed(StepCode.EVIDENCE, error.fr, error.en)
        run.skipped(
            StepCode.EVIDENCE_ISSUER,
            "Non vérifié : la preuve est illisible.",
            "Not checked: the evidence cannot be read.",
        )
    else:
        run.passed(
            StepCode.EVIDENCE,
            f"Preuve n° {evidence.evidence_id} lue dans la partie signée : conforme au modèle"
            " publié, en JSON canonique.",
            f"Evidence {evidence.evidence_id} read from the signed part: follows the published"
            " model, canonical JSON.",
        )
        if signature is None:
            run.skipped(
                StepCode.EVIDENCE_ISSUER,
                "Non vérifié : la signature CMS est illisible.",
                "Not checked: the CMS signature cannot be read.",
            )
        elif evidence.issuer.certificate_sha256 == certificate_sha256(signature.signer):
            run.passed(
                StepCode.EVIDENCE_ISSUER,
                "La preuve désigne comme émetteur le certificat qui l'a signée.",
                "The evidence names as its issuer the certificate that signed it.",
            )
        else:
            run.failed(
                StepCode.EVIDENCE_ISSUER,
                "La preuve désigne un autre émetteur que le certificat qui l'a signée.",
                "The evidence names another issuer than the certificate that signed it.",
            )

    # 5. The original.
    original_normalised = False
    if original is None:
        run.skip_rest(
            [StepCode.MESSAGE, StepCode.ATTACHMENTS],
            "Non vérifié : message original non fourni.",
            "Not checked: no original message given.",
        )
    elif evidence is None:
        run.skip_rest(
            [StepCode.MESSAGE, StepCode.ATTACHMENTS],
            "Non vérifié : la preuve est illisible.",
            "Not checked: the evidence cannot be read.",
        )
    else:
        original_normalised = _check_original(run, original, evidence)

    # 6. The log.
    if log_dir is None:
        run.skipped(
            StepCode.LOG,
            "Non vérifié : journal de preuve non fourni.",
            "Not checked: no evidence log given.",
        )
    elif evidence_bytes is None or evidence is None:
        run.skipped(
            StepCode.LOG,
            "Non vérifié : la preuve est illisible.",
            "Not checked: the evidence cannot be read.",
        )
    else:
        _check_log(run, log_dir, evidence_bytes)

    return Verdict(
        tuple(run.steps),
        evidence=evidence,
        evidence_bytes=evidence_bytes,
        signing_time=signature.signing_time if signature else None,
        signer_subject=_subject(signature.signer) if signature else None,
        signer_sha256=certificate_sha256(signature.signer) if signature else None,
        receipt_line_endings_normalised=receipt_normalised,
        original_line_endings_normalised=original_normalised,
    )


def _check_chain(run: _Run, signature: _Cms, anchors: Sequence[x509.Certificate]) -> None:
    when = signature.signing_time
    path = _chain(signature.signer, signature.others, anchors) if anchors else None
    if path is None:
        if anchors:
            run.failed(
                StepCode.CHAIN,
                f"Le certificat signataire « {_subject(signature.signer)} » n'est pas émis par"
                " une autorité de confiance fournie.",
                f"The signer certificate '{_subject(signature.signer)}' is not issued by a"
                " given trust anchor.",
            )
        else:
            run.failed(
                StepCode.CHAIN,
                "Aucune autorité de confiance fournie : la signature ne peut être rattachée.",
                "No trust anchor given: the signature cannot be traced to one.",
            )
        # Without a path, only the signer itself can be judged.
        path = [signature.signer]
    else:
        run.passed(
            StepCode.CHAIN,
            f"Le certificat signataire est émis par l'autorité de confiance"
            f" « {_subject(path[-1])} ».",
            f"The signer certificate is issued by the trust anchor '{_subject(path[-1])}'.",
        )
    # At the signing time, not today's: a receipt outlives the certificate
    # that signed it, and what matters is that the key was certified then.
    outside = [c for c in path if not valid_at(c, when)]
    if outside:
        cert = outside[0]
        begin, end = cert.not_valid_before_utc.isoformat(), cert.not_valid_after_utc.isoformat()
        run.failed(
            StepCode.VALIDITY,
            f"Le certificat « {_subject(cert)} » (valable du {begin} au {end}) ne l'était pas"
            f" à la date de signature, {when.isoformat()}.",
            f"The certificate '{_subject(cert)}' (valid from {begin} to {end}) was not valid"
            f" at the signing time, {when.isoformat()}.",
        )
    else:
        run.passed(
            StepCode.VALIDITY,
            "Chaque certificat de la chaîne était valable à la date de signature"
            f" ({when.isoformat()}).",
            f"Every certificate of the chain was valid at the signing time ({when.isoformat()}).",
        )
    if _may_sign(signature.signer):
        run.passed(
            StepCode.KEY_USAGE,
            "Le certificat signataire autorise la signature (digitalSignature ou nonRepudiation).",
            "The signer certificate allows signing (digitalSignature or nonRepudiation).",
        )
    else:
        run.failed(
            StepCode.KEY_USAGE,
            "Le certificat signataire n'autorise pas la signature (ni digitalSignature ni"
            " nonRepudiation).",
            "The signer certificate does not allow signing (neither digitalSignature nor"
            " nonRepudiation).",
        )


def _check_log(run: _Run, log_dir: Path, evidence_bytes: bytes) -> None:
    from palais.pki.evidencelog import check_inclusion

    verdict = check_inclusion(log_dir, evidence_bytes)
    if verdict.ok:
        head = verdict.tree_head
        size = head.size if head else "?"
        run.passed(
            StepCode.LOG,
            f"La preuve figure dans le journal exporté (position {verdict.position}, tête d'arbre"
            f" signée de taille {size}).",
            f"The evidence is in the exported log (position {verdict.position}, signed tree head"
            f" of size {size}).",
        )
    else:
        run.failed(
            StepCode.LOG,
            " ".join(p.fr for p in verdict.problems),
            " ".join(p.en for p in verdict.problems),
        )
