"""The wire form of an accusé de réception: a signed report mail.

    multipart/signed (S/MIME, RFC 8551; CMS signature by the evidence key)
      multipart/report (RFC 6522)
        text/plain            who, what, when, dossier, digests, in French
        message/disposition-notification   (read events only, RFC 8098)
        application/vnd.palais.evidence+json   the evidence, canonical bytes
      application/pkcs7-signature

The report-type names the second part: ``disposition-notification`` for a
read receipt, ``vnd.palais.evidence+json`` otherwise. Every part is 7-bit
(quoted-printable, base64) so that no relay re-encodes the signed bytes.
The bytes are written once from a fixed layout, never parsed and
re-serialised: what is stored is what was signed.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import json
import quopri
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from palais.mailbox.evidence import EVIDENCE_MEDIA_TYPE, EventCode, canonical_json, parse_timestamp
from palais.mailbox.message import MessageSummary
from palais.pki.cms import CmsSigner, CmsTemplate, signing_time
from palais.pki.signing import EvidenceKey, certificate_sha256

EVIDENCE_HEADER: Final = "X-Palais-Evidence"
REPORT_TYPE_EVIDENCE: Final = "vnd.palais.evidence+json"
REPORT_TYPE_READ: Final = "disposition-notification"

try:
    _PARIS: tzinfo = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # pragma: no cover - Debian ships tzdata
    _PARIS = UTC


@dataclass(frozen=True, slots=True)
class SealedReceipt:
    data: bytes  # the whole mail, CRLF
    evidence: bytes  # the canonical evidence bytes it carries (the log's leaf)
    # Its header as summarize() would read it, known without parsing it again.
    summary: MessageSummary


@dataclass(frozen=True, slots=True)
class PreparedReceipt:
    """A receipt mail but for its signature: everything that needs no key.

    ``attributes`` are the CMS signed attributes (signing time, digest of the
    signed part); the key signs them and the signature's base64 goes between
    ``head`` and ``tail``.
    """

    head: bytes
    tail: bytes
    attributes: bytes
    evidence: bytes
    summary: MessageSummary


class ReceiptLayout:
    """Writes receipt mails for one evidence certificate, without its key.

    What it does is most of a receipt's cost (the text, the MIME parts, the
    digests) and needs no secret, so it may run in a process of its own.
    """

    def __init__(
        self, template: CmsTemplate, *, domain: str, issuer: str, issuer_certificate_sha256: str
    ) -> None:
        self.template = template
        self.domain = domain
        self.issuer = issuer
        self.issuer_certificate_sha256 = issuer_certificate_sha256
        self._from = f'"Palais - Service de preuve" <accuses@{domain}>'
        self._from_text = f"Palais - Service de preuve <accuses@{domain}>"

    def prepare(self, evidence: bytes, to: str, *, when: datetime | None = None) -> PreparedReceipt:
        """The receipt of ``evidence`` (canonical bytes of a complete
        evidence document) to ``to``, to be signed."""
        document = json.loads(evidence)
        evidence_id = str(document["evidence_id"])
        codes = [EventCode(e["code"]) for e in document["events"]]
        read = EventCode.PREMIERE_LECTURE in codes
        outer = f"=_palais_s_{evidence_id}"
        inner = f"=_palais_r_{evidence_id}"
        report_type = REPORT_TYPE_READ if read else REPORT_TYPE_EVIDENCE
        parts = [
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(human_text(document))
        ]
        if read:
            parts.append(
                b"Content-Type: message/disposition-notification\r\n\r\n"
                + disposition_notification(document, self.domain)
            )
        parts.append(
            f"Content-Type: {EVIDENCE_MEDIA_TYPE}\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="preuve-{evidence_id}.json"\r\n'
            "\r\n".encode()
            + _base64(evidence)
        )
        signed = (
            f'Content-Type: multipart/report; report-type="{report_type}";\r\n'
            f' boundary="{inner}"\r\n\r\n'.encode()
            + _multipart(inner, parts)
        )
        moment = signing_time(when)
        attributes = self.template.attributes(signed, moment)
        labels = ", ".join(c.label for c in codes)
        dossier = document.get("dossier")
        about = str(document["message"]["subject"])
        if dossier:
            about = about.removeprefix(f"[{dossier}] ")
        subject = f"Accusé de réception : {labels} — {about}"
        if dossier:
            subject = f"[{dossier}] {subject}"
        original = document["message"].get("message_id")
        head = [
            f"From: {self._from}",
            f"To: <{to}>",
            f"Subject: {encoded_words(subject)}",
            f"Date: {email.utils.format_datetime(moment)}",
            f"Message-ID: <{evidence_id}@{self.domain}>",
        ]
        if original:
            head += [f"In-Reply-To: {original}", f"References: {original}"]
        head += [
            "Auto-Submitted: auto-generated",
            f"{EVIDENCE_HEADER}: {evidence_id}",
            "MIME-Version: 1.0",
            'Content-Type: multipart/signed; protocol="application/pkcs7-signature";',
            f' micalg=sha-256; boundary="{outer}"',
        ]
        # The body as _multipart writes it, split where the signature goes.
        delimiter = b"\r\n--" + outer.encode()
        header = "\r\n".join(head).encode() + b"\r\n\r\n"
        before = (
            header
            + b"This is a signed evidence report (S/MIME)."
            + delimiter
            + b"\r\n"
            + signed
            + delimiter
            + b"\r\n"
            + b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        )
        summary = MessageSummary(
            header_size=len(header),
            subject=subject,
            from_addr=self._from_text,
            to_addr=to,
            cc_addr="",
            bcc_addr="",
            message_id=f"<{evidence_id}@{self.domain}>",
            sent_date=moment,
            has_body=True,
        )
        return PreparedReceipt(before, delimiter + b"--\r\n", attributes, evidence, summary)


class ReceiptSealer:
    """Writes and signs receipts with one evidence key."""

    def __init__(self, key: EvidenceKey, *, domain: str, issuer: str | None = None) -> None:
        self._signer = CmsSigner(key)
        self.layout = ReceiptLayout(
            self._signer.template,
            domain=domain,
            issuer=issuer or _common_name(key) or "Palais - Service de preuve",
            issuer_certificate_sha256=certificate_sha256(key.certificate),
        )

    @property
    def domain(self) -> str:
        return self.layout.domain

    @property
    def issuer(self) -> str:
        return self.layout.issuer

    @property
    def issuer_certificate_sha256(self) -> str:
        return self.layout.issuer_certificate_sha256

    def seal(self, document: Mapping[str, Any], *, to: str) -> SealedReceipt:
        """The receipt mail for ``document`` (complete evidence), sent to ``to``.

        Raises ``EvidenceUnavailable`` if the key cannot sign.
        """
        return self.finish(self.layout.prepare(canonical_json(document), to))

    def finish(self, prepared: PreparedReceipt) -> SealedReceipt:
        """Sign a prepared receipt. Raises ``EvidenceUnavailable`` if the key cannot."""
        der = self._signer.signed_data(prepared.attributes)
        return SealedReceipt(
            prepared.head + _base64(der) + prepared.tail, prepared.evidence, prepared.summary
        )


def _common_name(key: EvidenceKey) -> str | None:
    from cryptography.x509.oid import NameOID

    names = key.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _multipart(boundary: str, parts: Sequence[bytes], preamble: bytes = b"") -> bytes:
    # Each part is exactly the bytes between its "--boundary" line and the
    # CRLF before the next one: the first part of multipart/signed is the
    # signed content, byte for byte (RFC 1847).
    delimiter = b"\r\n--" + boundary.encode()
    out = [preamble]
    for part in parts:
        out += [delimiter, b"\r\n", part]
    out += [delimiter, b"--\r\n"]
    return b"".join(out)


def encoded_words(text: str) -> str:
    """``text`` as RFC 2047 encoded words (UTF-8, base64), folded: plain
    ASCII as is. email.header does the same at five times the cost."""
    if text.isascii() and len(text) < 900:
        return text
    data = text.encode()
    words: list[str] = []
    start = 0
    while start < len(data):
        # 45 bytes of UTF-8 make 60 of base64: a word of 72 characters. A
        # word ends before a continuation byte, never inside a character.
        end = min(start + 45, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode() + "?=")
        start = end
    return "\r\n ".join(words)


def _base64(data: bytes) -> bytes:
    # Lines of 76 characters, each ended by CRLF (encodebytes ends them by LF).
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _qp(text: str) -> bytes:
    encoded = quopri.encodestring(text.encode("utf-8"), quotetabs=False)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@functools.lru_cache(maxsize=256)
def _when(text: str) -> str:
    # The events of one receipt, and receipts of one batch, share their times.
    moment = parse_timestamp(text)
    local = moment.astimezone(_PARIS)
    return f"{local:%d/%m/%Y à %H:%M:%S} (heure de Paris) — {text}"


def _party(doc: Mapping[str, Any]) -> str:
    name, address = doc["name"], doc["address"]
    line = address if name == address else f"{name} <{address}>"
    if doc.get("role"):
        line += f" ({doc['role']})"
    if doc.get("mailbox"):
        line += f", pour la boîte {doc['mailbox']}"
    if doc.get("certificate_sha256"):
        line += f"\n      authentifié par certificat, SHA-256 {doc['certificate_sha256']}"
    return line


def human_text(document: Mapping[str, Any]) -> str:
    """The human-readable part: who, what, when, dossier, digests (in French)."""
    events = document["events"]
    message = document["message"]
    lines = [
        "Accusé de réception — " + ", ".join(EventCode(e["code"]).label for e in events),
        f"Émis par {document['issuer']['name']} (politique {document['policy']})",
        "",
        f"Dossier : {document.get('dossier') or '—'}",
        f"Preuve n° {document['evidence_id']}, position {document['log']['position']}"
        " dans le journal de preuve",
        "",
        "Événements :",
    ]
    for event in events:
        lines.append(f"  {EventCode(event['code']).label} : le {_when(event['time'])}")
        for who in event["recipients"]:
            lines.append(f"    {_party(who)}")
        if event.get("reason"):
            lines.append(f"    Motif : {event['reason']}")
    lines += [
        "",
        f"Expéditeur : {_party(document['sender'])}",
        f"Déposé le {_when(document['submission_time'])}",
    ]
    if document.get("delegate"):
        lines.append(f"Pour le compte de l'expéditeur : {_party(document['delegate'])}")
    lines += [
        "",
        f"Objet : {message['subject']}",
        f"Message-ID : {message.get('message_id') or '—'}",
        f"Message de {message['size']} octets, SHA-256 {message['sha256']}",
    ]
    attachments = message["attachments"]
    if attachments:
        lines.append("Pièces jointes :")
        for a in attachments:
            lines.append(
                f"  - {a['name'] or '(sans nom)'} ({a['media_type']}, {a['size']} octets)"
                f"\n    SHA-256 {a['sha256']}"
            )
    else:
        lines.append("Pièces jointes : aucune")
    lines += [
        "",
        "La partie application/vnd.palais.evidence+json fait foi ; elle est signée",
        "par la clé de preuve de la passerelle (signature CMS jointe).",
        "Vérifier : palais verify-receipt ACCUSE.eml --message ORIGINAL.eml",
        "ou la page /verifier de la passerelle.",
        "",
    ]
    return "\n".join(lines)


def disposition_notification(document: Mapping[str, Any], domain: str) -> bytes:
    """The RFC 8098 part of a read receipt."""
    event = next(e for e in document["events"] if e["code"] == EventCode.PREMIERE_LECTURE)
    reader = event["recipients"][0]
    mailbox = reader.get("mailbox") or reader["address"]
    lines = [
        f"Reporting-UA: {domain}; Palais",
        f"Original-Recipient: rfc822;{mailbox}",
        f"Final-Recipient: rfc822;{reader['address']}",
    ]
    if document["message"].get("message_id"):
        lines.append(f"Original-Message-ID: {document['message']['message_id']}")
    lines.append("Disposition: automatic-action/MDN-sent-automatically; displayed")
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
