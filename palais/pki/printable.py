"""The printable accusé de réception: one A4 page, signed in PAdES.

A clerk files receipts in paper dossiers and a lawyer attaches them to
submissions, so each receipt also exists as a PDF that any reader can check
without Palais: the page shows what the evidence document says, and a PAdES
signature (ETSI EN 319 142, baseline B-B) by the evidence key covers it. The
JSON evidence stays what counts; the page says so, and says where a value
was shortened to keep it on one page.

The signature goes through ``EvidenceKey.sign`` only, so the same code signs
with a key file or an HSM. ``receipt_pdf`` is synchronous (pyHanko runs its
own event loop, and signing costs tens of milliseconds): callers in the
gateway's event loop run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from asn1crypto import algos
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Frame, KeepInFrame, Paragraph, Spacer, Table, TableStyle

from palais.mailbox.evidence import MUTUAL_TLS, EventCode, parse_timestamp
from palais.mailbox.identity import Role
from palais.pki.evidence_model import Evidence, PartyModel
from palais.pki.signing import EvidenceKey

__all__ = ["PDF_MEDIA_TYPE", "SIGNATURE_FIELD", "receipt_pdf"]

PDF_MEDIA_TYPE: Final = "application/pdf"
#: The name of the (invisible) signature field, for verifiers that look it up.
SIGNATURE_FIELD: Final = "AccuseDeReception"

PARIS: Final = ZoneInfo("Europe/Paris")

# Room for every value a sane receipt carries; beyond that a value is
# shortened (the JSON evidence keeps it whole) rather than pushing the page
# onto a second sheet.
_MAX_ATTACHMENT_ROWS: Final = 24
_MAX_PARTY_ROWS: Final = 10
_SUBJECT_CHARS: Final = 160
_NAME_CHARS: Final = 64
_ADDRESS_CHARS: Final = 80
_ID_CHARS: Final = 100
_REASON_CHARS: Final = 200
_FILE_NAME_CHARS: Final = 44
_MEDIA_TYPE_CHARS: Final = 36

_MARGIN: Final = 14 * mm
_GREY: Final = colors.HexColor("#555555")
_RULE: Final = colors.HexColor("#999999")
_SHADE: Final = colors.HexColor("#EEEEEE")

_ROLES: Final = {
    Role.AVOCAT.value: "Avocat",
    Role.COLLABORATEUR.value: "Collaborateur",
    Role.GREFFIER.value: "Greffier",
    Role.MAGISTRAT.value: "Magistrat",
    Role.COURT_SYSTEM.value: "Système de juridiction",
    Role.ADMIN.value: "Administrateur",
}
_AUTHENTICATIONS: Final = {MUTUAL_TLS: "Certificat sur carte (TLS mutuel)"}

# What a party is to the message, by the events it appears in.
_CAPACITIES: Final = {
    EventCode.DEPOT: ("Destinataire", "recipient"),
    EventCode.REMISE: ("Destinataire", "recipient"),
    EventCode.NON_REMISE: ("Destinataire", "recipient"),
    EventCode.PREMIERE_LECTURE: ("Lecteur", "reader"),
    EventCode.ACCEPTATION_GREFFE: ("Greffe", "registry"),
    EventCode.REJET_GREFFE: ("Greffe", "registry"),
}


# -- the page -----------------------------------------------------------------


def receipt_pdf(
    evidence: Evidence | Mapping[str, Any],
    key: EvidenceKey,
    *,
    signing_time: datetime | None = None,
) -> bytes:
    """The signed one-page PDF of ``evidence`` (a model, or its JSON document).

    ``signing_time`` (default: now) is printed on the page and written in the
    signature dictionary. Raises ``EvidenceUnavailable`` if the key cannot
    sign, ``pydantic.ValidationError`` for a document that is not evidence.
    """
    if signing_time is not None and signing_time.utcoffset() is None:
        raise ValueError("signing_time must be timezone-aware")
    model = evidence if isinstance(evidence, Evidence) else Evidence.model_validate(evidence)
    when = (signing_time or datetime.now(UTC)).astimezone(UTC)
    pdf, _scale = _render(model, when, key.certificate)
    return _sign(pdf, key, model, when)


def _render(
    evidence: Evidence, signed_at: datetime, certificate: x509.Certificate
) -> tuple[bytes, float]:
    """The unsigned page, and the scale its content was drawn at (1: as designed)."""
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, pageCompression=1)
    canvas.setTitle(f"Accusé de réception {evidence.evidence_id}")
    canvas.setAuthor(evidence.issuer.name)
    canvas.setSubject(f"Dossier {evidence.dossier}" if evidence.dossier else "Accusé de réception")
    canvas.setCreator("Palais")
    width, height = A4
    inner_width, inner_height = width - 2 * _MARGIN, height - 2 * _MARGIN
    frame = Frame(
        _MARGIN,
        _MARGIN,
        inner_width,
        inner_height,
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    story = _Page(evidence, signed_at, certificate, inner_width).story()
    # Shrinking is the last resort that keeps the promise of one page when
    # the limits above still leave too much; a receipt never reaches a second.
    content = KeepInFrame(inner_width, inner_height, content=story, mode="shrink", vAlign="TOP")
    frame.addFromList([content], canvas)
    canvas.showPage()
    canvas.save()
    return out.getvalue(), float(getattr(content, "_scale", 1.0))


class _Styles:
    def __init__(self) -> None:
        self.title = ParagraphStyle("title", fontName="Helvetica-Bold", fontSize=17, leading=20)
        self.events = ParagraphStyle("events", fontName="Helvetica-Bold", fontSize=12, leading=15)
        self.heading = ParagraphStyle(
            "heading", fontName="Helvetica-Bold", fontSize=9, leading=11, spaceBefore=5
        )
        self.body = ParagraphStyle("body", fontName="Helvetica", fontSize=7.5, leading=9)
        self.label = ParagraphStyle("label", parent=self.body, fontName="Helvetica-Bold")
        self.small = ParagraphStyle(
            "small", fontName="Helvetica", fontSize=6, leading=7.5, textColor=_GREY
        )
        # Hashes in a fixed-width face so that a reader can compare them in
        # groups; splitLongWords lets one break across lines where it must.
        self.mono = ParagraphStyle(
            "mono", fontName="Courier", fontSize=7.5, leading=9, splitLongWords=1
        )
        self.mono_small = ParagraphStyle(
            "mono_small", fontName="Courier", fontSize=6, leading=7, splitLongWords=1
        )
        self.cell = ParagraphStyle("cell", fontName="Helvetica", fontSize=6.5, leading=7.5)


class _Page:
    """The flowables of one receipt; remembers whether it shortened anything."""

    def __init__(
        self,
        evidence: Evidence,
        signed_at: datetime,
        certificate: x509.Certificate,
        width: float,
    ) -> None:
        self.evidence = evidence
        self.signed_at = signed_at
        self.certificate = certificate
        self.width = width
        self.s = _Styles()
        self.shortened = False

    # Every value from the evidence goes through here: it becomes Paragraph
    # markup (escaped) in the standard fonts' character set, shortened to
    # ``limit`` characters with an ellipsis.
    def text(self, value: str | None, limit: int = 1000, *, missing: str = "—") -> str:
        if value is None or value == "":
            return missing
        value = _printable(value)
        if len(value) > limit:
            value = value[: limit - 1].rstrip() + "…"
            self.shortened = True
        return escape(value)

    def story(self) -> list[Flowable]:
        ev = self.evidence
        s = self.s
        labels = " · ".join(EventCode(e.code).label for e in ev.events)
        story: list[Flowable] = [
            Paragraph("Accusé de réception", s.title),
            Paragraph(
                "Proof of receipt — electronic registered delivery evidence (ETSI EN 319 522)",
                s.small,
            ),
            Spacer(1, 3),
            Paragraph(escape(labels), s.events),
            Spacer(1, 2),
            self._key_values(
                [
                    ("Identifiant de la preuve", "Evidence ID", self.mono(ev.evidence_id)),
                    ("Dossier", "Case number", self.plain(ev.dossier, _ID_CHARS, "aucun")),
                    (
                        "Émetteur",
                        "Issuer",
                        [
                            self.plain(ev.issuer.name, _NAME_CHARS),
                            self.hash_line("Certificat SHA-256", ev.issuer.certificate_sha256),
                        ],
                    ),
                    ("Politique de preuve", "Evidence policy", self.mono(ev.policy)),
                    ("Dépôt du message", "Submission time", self.times(ev.submission_time)),
                ]
            ),
            self.heading("Événements", "Events"),
            self._events(),
            self.heading("Parties", "Sender, recipients, readers"),
            self._parties(),
            self.heading("Message", "Message"),
            self._key_values(
                [
                    ("Message-ID", "", self.mono(ev.message.message_id, _ID_CHARS)),
                    ("Objet", "Subject", self.plain(ev.message.subject, _SUBJECT_CHARS, "(vide)")),
                    ("Taille", "Size", self.plain(_size(ev.message.size))),
                    ("SHA-256", "of the message as stored", self.mono(ev.message.sha256)),
                ]
            ),
            self.heading("Pièces jointes", "Attachments"),
            self._attachments(),
            self.heading("Journal de preuve", "Evidence log"),
            self._key_values(
                [
                    ("Position", "Log position", self.plain(str(ev.log.position))),
                    ("Empreinte précédente", "Previous leaf hash", self.mono(ev.log.previous)),
                ]
            ),
            self.heading("Vérification", "How to verify"),
            *self._verification(),
        ]
        return story

    # -- pieces --

    def plain(self, value: str | None, limit: int = 1000, missing: str = "—") -> Paragraph:
        return Paragraph(self.text(value, limit, missing=missing), self.s.body)

    def mono(self, value: str | None, limit: int = 1000) -> Paragraph:
        return Paragraph(self.text(value, limit), self.s.mono)

    def hash_line(self, label: str, value: str | None) -> Paragraph:
        return Paragraph(
            f'<font name="Helvetica" size="6.5">{escape(label)} : </font>{self.text(value)}',
            self.s.mono_small,
        )

    def heading(self, french: str, english: str) -> Paragraph:
        return Paragraph(
            f'{escape(french)} <font name="Helvetica" size="6" color="#555555">'
            f"{escape(english)}</font>",
            self.s.heading,
        )

    def times(self, text: str) -> list[Paragraph]:
        paris, utc = _times(text)
        return [Paragraph(escape(paris), self.s.body), Paragraph(escape(utc), self.s.mono_small)]

    def _key_values(self, rows: Sequence[tuple[str, str, Flowable | list[Paragraph]]]) -> Table:
        label_width = 150.0
        data = [[self._label(french, english), value] for french, english, value in rows]
        table = Table(data, colWidths=[label_width, self.width - label_width], hAlign="LEFT")
        table.setStyle(_grid(header=False))
        return table

    def _label(self, french: str, english: str) -> Paragraph:
        small = f' <font size="5.5" color="#555555">{escape(english)}</font>' if english else ""
        return Paragraph(f"{escape(french)}{small}", self.s.label)

    def _header(self, french: str, english: str) -> Paragraph:
        return Paragraph(
            f"<b>{escape(french)}</b><br/>"
            f'<font size="5.5" color="#555555">{escape(english)}</font>',
            self.s.cell,
        )

    def _events(self) -> Table:
        data: list[list[Any]] = [
            [
                self._header("Événement", "Event"),
                self._header("Date et heure (Paris)", "Local time, Europe/Paris"),
                self._header("UTC", "as in the evidence"),
                self._header("Motif", "Reason"),
            ]
        ]
        for event in self.evidence.events:
            code = EventCode(event.code)
            paris, utc = _times(event.time)
            data.append(
                [
                    Paragraph(
                        f"<b>{escape(code.label)}</b><br/>"
                        f'<font size="5.5" color="#555555">{escape(event.etsi)}</font>',
                        self.s.cell,
                    ),
                    Paragraph(escape(paris), self.s.cell),
                    Paragraph(escape(utc), self.s.mono_small),
                    Paragraph(self.text(event.reason, _REASON_CHARS), self.s.cell),
                ]
            )
        table = Table(data, colWidths=_columns(self.width, [80, 158, 104]), hAlign="LEFT")
        table.setStyle(_grid(header=True))
        return table

    def _parties(self) -> Table:
        ev = self.evidence
        rows: list[tuple[str, PartyModel]] = [("Expéditeur|sender", ev.sender)]
        if ev.delegate is not None:
            rows.append(("Délégué|delegate, acting for the sender", ev.delegate))
        # One row per party however many events name it (a deposit and its
        # delivery name the same recipients).
        seen: dict[tuple[str, str | None, str | None], list[EventCode]] = {}
        parties: dict[tuple[str, str | None, str | None], PartyModel] = {}
        for event in ev.events:
            for party in event.recipients:
                k = (party.address, party.certificate_sha256, party.mailbox)
                seen.setdefault(k, []).append(EventCode(event.code))
                parties.setdefault(k, party)
        for k, codes in seen.items():
            french, english = _CAPACITIES[codes[0]]
            rows.append((f"{french}|{english}", parties[k]))

        data: list[list[Any]] = [
            [
                self._header("Qualité", "Capacity"),
                self._header("Identité", "Name, address, role"),
                self._header("Authentification", "How they authenticated, certificate SHA-256"),
            ]
        ]
        total = len(rows)
        if total > _MAX_PARTY_ROWS:
            rows = rows[: _MAX_PARTY_ROWS - 1]
            self.shortened = True
        for capacity, party in rows:
            french, english = capacity.split("|", 1)
            data.append(
                [
                    Paragraph(
                        f"<b>{escape(french)}</b><br/>"
                        f'<font size="5.5" color="#555555">{escape(english)}</font>',
                        self.s.cell,
                    ),
                    self._identity(party),
                    self._authentication(party),
                ]
            )
        if len(rows) < total:
            data.append(
                [
                    "",
                    Paragraph(
                        f"… et {total - len(rows)} autres parties (liste complète dans la "
                        f"preuve électronique ; {total} parties in all)",
                        self.s.cell,
                    ),
                    "",
                ]
            )
        table = Table(data, colWidths=_columns(self.width, [62, 200]), hAlign="LEFT")
        style = _grid(header=True)
        if len(rows) < total:
            style.add("SPAN", (1, -1), (-1, -1))
        table.setStyle(style)
        return table

    def _identity(self, party: PartyModel) -> Paragraph:
        role = _ROLES.get(party.role, party.role) if party.role else None
        lines = [f"<b>{self.text(party.name, _NAME_CHARS)}</b>"]
        lines.append(self.text(party.address, _ADDRESS_CHARS))
        if role:
            lines.append(self.text(role, _NAME_CHARS))
        if party.mailbox:
            lines.append(f"pour la boîte {self.text(party.mailbox, _ADDRESS_CHARS)}")
        return Paragraph("<br/>".join(lines), self.s.cell)

    def _authentication(self, party: PartyModel) -> list[Paragraph]:
        if party.authentication is None:
            how = "N'a pas agi (boîte destinataire) — did not act"
        else:
            how = _AUTHENTICATIONS.get(party.authentication, party.authentication)
        found = [Paragraph(self.text(how, _ID_CHARS), self.s.cell)]
        if party.certificate_sha256:
            found.append(Paragraph(self.text(party.certificate_sha256), self.s.mono_small))
        return found

    def _attachments(self) -> Flowable:
        attachments = self.evidence.message.attachments
        if not attachments:
            return Paragraph("Aucune pièce jointe (no attachments).", self.s.body)
        data: list[list[Any]] = [
            [
                self._header("N°", "#"),
                self._header("Nom", "File name"),
                self._header("Type", "Media type"),
                self._header("Taille", "Size"),
                self._header("SHA-256", "of the decoded attachment"),
            ]
        ]
        shown = attachments
        if len(attachments) > _MAX_ATTACHMENT_ROWS:
            shown = attachments[: _MAX_ATTACHMENT_ROWS - 1]
            self.shortened = True
        for number, attachment in enumerate(shown, 1):
            data.append(
                [
                    Paragraph(str(number), self.s.cell),
                    Paragraph(
                        self.text(attachment.name, _FILE_NAME_CHARS, missing="(sans nom)"),
                        self.s.cell,
                    ),
                    Paragraph(self.text(attachment.media_type, _MEDIA_TYPE_CHARS), self.s.cell),
                    Paragraph(escape(_size(attachment.size, short=True)), self.s.cell),
                    Paragraph(self.text(attachment.sha256), self.s.mono_small),
                ]
            )
        if len(shown) < len(attachments):
            data.append(
                [
                    "",
                    Paragraph(
                        f"… et {len(attachments) - len(shown)} autres pièces jointes "
                        f"(liste complète dans la preuve électronique ; "
                        f"{len(attachments)} attachments in all)",
                        self.s.cell,
                    ),
                    "",
                    "",
                    "",
                ]
            )
        table = Table(data, colWidths=_columns(self.width, [14, 151, 68, 44]), hAlign="LEFT")
        style = _grid(header=True)
        if len(shown) < len(attachments):
            style.add("SPAN", (1, -1), (-1, -1))
        table.setStyle(style)
        return table

    def _verification(self) -> list[Flowable]:
        subject = _common_name(self.certificate)
        paris, _utc = _times_of(self.signed_at)
        lines: list[Flowable] = [
            Paragraph(
                "Ce document est signé électroniquement (PAdES) par la clé de preuve de la "
                f"passerelle (certificat « {self.text(subject, _NAME_CHARS)} »), le "
                f"{escape(paris)}. La preuve électronique (partie "
                "application/vnd.palais.evidence+json de l'accusé reçu par courriel, signée) "
                'fait foi. Pour la vérifier : <font name="Courier">palais verify-receipt</font> '
                'ou la page <font name="Courier">/verifier</font> de la passerelle ; tout '
                "lecteur PDF conforme PAdES vérifie la signature de ce document.",
                self.s.body,
            ),
            Paragraph(
                "This page is signed (PAdES) by the gateway's evidence key; the signed JSON "
                "evidence is authoritative. Verify with <i>palais verify-receipt</i> or the "
                "/verifier page.",
                self.s.small,
            ),
        ]
        if self.shortened:
            lines.append(
                Paragraph(
                    "<b>Valeurs abrégées (…)</b> : certaines valeurs longues sont abrégées pour "
                    "tenir sur une page ; la preuve électronique les contient en entier. "
                    '<font size="6" color="#555555">Some long values are shortened here; the '
                    "evidence holds them in full.</font>",
                    self.s.body,
                )
            )
        return lines


def _grid(*, header: bool) -> TableStyle:
    commands: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, _RULE),
        ("LEFTPADDING", (0, 0), (-1, -1), 2),
        ("RIGHTPADDING", (0, 0), (-1, -1), 2),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]
    if header:
        commands.append(("BACKGROUND", (0, 0), (-1, 0), _SHADE))
    return TableStyle(commands)


def _columns(width: float, fixed: Sequence[float]) -> list[float]:
    """``fixed`` widths, then the last column takes what is left."""
    return [*fixed, width - sum(fixed)]


def _times(text: str) -> tuple[str, str]:
    return _times_of(parse_timestamp(text))


def _times_of(when: datetime) -> tuple[str, str]:
    """Paris wall-clock time with its offset (what a clerk reads), and the
    evidence's own UTC spelling (what a verifier compares)."""
    local = when.astimezone(PARIS)
    offset = local.strftime("%z")
    paris = f"{local:%d/%m/%Y %H:%M:%S} (heure de Paris, UTC{offset[:3]}:{offset[3:]})"
    return paris, when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _size(size: int, *, short: bool = False) -> str:
    grouped = f"{size:,}".replace(",", "\u00a0")
    if short:
        return f"{grouped}\u00a0o"
    if size < 1024:
        return f"{grouped} octets"
    scaled, unit = size / 1024, "Kio"
    for larger in ("Mio", "Gio"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{grouped} octets ({scaled:.1f}\u00a0{unit})".replace(".", ",")


# Letters of Latin scripts that have no decomposition to a base letter.
_BASE_LETTERS: Final = str.maketrans("ŁłĐđĦħıŦŧ", "LlDdHhiTt")


def _printable(value: str) -> str:
    """``value`` in the standard PDF fonts' character set (WinAnsi).

    The page uses the fonts every PDF reader has rather than embedding one;
    a character outside them loses its accent, or becomes "?", on the page
    only (the evidence keeps the exact text). Control characters, which a
    subject can smuggle in, become spaces.
    """
    out: list[str] = []
    for char in unicodedata.normalize("NFC", value).translate(_BASE_LETTERS):
        if unicodedata.category(char).startswith("C"):
            out.append(" ")
            continue
        try:
            char.encode("cp1252")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("cp1252", "ignore").decode("cp1252")
            out.append(base or "?")
    return "".join(out)


def _common_name(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


# -- the signature --------------------------------------------------------------


class _EvidenceKeySigner(signers.Signer):
    """A pyHanko signer whose raw signature comes from the evidence key.

    pyHanko builds the CMS (signed attributes with signing-certificate-v2, as
    PAdES requires) and asks ``async_sign_raw`` for the signature of their
    DER; ``EvidenceKey.sign`` hashes with SHA-256 itself, which is why the
    mechanism is pinned to SHA-256.
    """

    def __init__(self, key: EvidenceKey) -> None:
        certificate = _asn1(key.certificate)
        public = key.certificate.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            mechanism = "sha256_ecdsa"
            # DER ECDSA-Sig-Value: two INTEGERs of at most the order's size
            # plus a sign byte, with their headers and the SEQUENCE's.
            order = (public.curve.key_size + 7) // 8
            self._placeholder_size = 2 * (order + 3) + 4
        elif isinstance(public, rsa.RSAPublicKey):
            mechanism = "sha256_rsa"
            self._placeholder_size = (public.key_size + 7) // 8
        else:
            raise ValueError(f"evidence keys are EC or RSA, not {type(public).__name__}")
        super().__init__(
            signing_cert=certificate,
            signature_mechanism=algos.SignedDigestAlgorithm({"algorithm": mechanism}),
            # The trust anchor is the verifier's to choose, not ours to ship.
            embed_roots=False,
        )
        # The chain travels in the CMS so that a verifier holding only the
        # trust anchor can build the path.
        for cert in (certificate, *(_asn1(c) for c in key.chain)):
            self.cert_registry.register(cert)
        self._key = key

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        if digest_algorithm != "sha256":
            raise SigningError(f"the evidence key signs SHA-256, not {digest_algorithm}")
        if dry_run:
            # pyHanko sizes the signature's room with a dry run; an HSM is
            # not asked for a signature that would be thrown away.
            return bytes(self._placeholder_size)
        return self._key.sign(data)


class _PdfSignerAt(signers.PdfSigner):
    """A PdfSigner that dates its signature ``at`` (the time printed on the page)."""

    def __init__(self, meta: Any, signer: _EvidenceKeySigner, at: datetime) -> None:
        super().__init__(meta, signer=signer)
        self._at = at

    def init_signing_session(self, pdf_out: Any, existing_fields_only: bool = False) -> Any:
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._at
        return session


def _sign(pdf: bytes, key: EvidenceKey, evidence: Evidence, at: datetime) -> bytes:
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason=f"Accusé de réception {evidence.evidence_id}",
        name=evidence.issuer.name,
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    signed = _PdfSignerAt(meta, _EvidenceKeySigner(key), at).sign_pdf(
        writer, bytes_reserved=_room(key)
    )
    return bytes(signed.getvalue())


def _room(key: EvidenceKey) -> int:
    """Bytes to reserve for the CMS: a bound, not pyHanko's estimate.

    pyHanko would otherwise build the whole CMS a second time to measure it
    (as long as the signature itself, in asn1crypto). The certificates are
    the bulk; names recur in the signer info and the signing-certificate
    attribute, hence twice; the rest (attributes, algorithms, the signature)
    stays under 2 KiB even for RSA-4096.
    """
    certificates = sum(
        len(c.public_bytes(serialization.Encoding.DER)) for c in (key.certificate, *key.chain)
    )
    return 2 * certificates + 4096


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
