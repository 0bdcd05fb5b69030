"""Structured documents by media type: which model, which rules, which schema.

A message carries a structured document as a MIME part of the document's
media type (``application/vnd.palais.saisine+json``...). ``message_errors``
finds such parts and checks each against its model and rules, the other
parts being the context's attachments; ``refuse_invalid`` turns the errors
into the refusal the SMTP dialogue shows, one line per field. A message
without such a part costs a look at its part headers (``may_carry_documents``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from palais.mailbox.constitution import Constitution, check_constitution
from palais.mailbox.court_events import (
    EVENT_TAGS,
    DossierEvent,
    HearingSlot,
    HearingSlots,
    RegistryDecision,
    check_dossier_event,
    check_hearing_slots,
    check_registry_decision,
)
from palais.mailbox.document_context import Attached, DocumentContext
from palais.mailbox.errors import InvalidMessage, NotAllowed
from palais.mailbox.fields import Doc, FieldError, shape_errors, sorted_errors
from palais.mailbox.identity import Role
from palais.mailbox.message import MAX_HEADER_SIZE, decode_header_value
from palais.mailbox.saisine import ACTOR_TAGS, Saisine, check_saisine

MEDIA_PREFIX = "application/vnd.palais."
SAISINE = "application/vnd.palais.saisine+json"
CONSTITUTION = "application/vnd.palais.constitution+json"
DOSSIER_EVENT = "application/vnd.palais.dossier-event+json"
REGISTRY_DECISION = "application/vnd.palais.registry-decision+json"
HEARING_SLOTS = "application/vnd.palais.hearing-slots+json"
# A structured document is a form's worth of JSON: anything larger is not one.
MAX_DOCUMENT_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class DocumentKind:
    name: str  # "saisine": the schema's file name and the error lines' prefix
    title: str
    media_type: str
    model: type[BaseModel]
    check: Callable[[Doc, DocumentContext], list[FieldError]]  # on the parsed JSON
    tags: Mapping[str, str]  # union tags (see fields.shape_errors)
    senders: frozenset[Role]  # who may send one: a lawyer never a court's decision

    def errors(self, data: bytes, context: DocumentContext) -> list[FieldError]:
        """Every error of one document (its bytes as sent); [] when valid."""
        if len(data) > MAX_DOCUMENT_SIZE:
            return [FieldError("", f"document de plus de {MAX_DOCUMENT_SIZE} octets")]
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested past Python's stack
            return [FieldError("", "document JSON illisible")]
        if not isinstance(parsed, dict):
            return [FieldError("", "le document doit être un objet JSON")]
        try:
            self.model.model_validate_json(data)  # JSON's own types: strict as sent
            shape: list[FieldError] = []
        except ValidationError as error:
            shape = shape_errors(error, self.tags)
        return sorted_errors(shape + self.check(parsed, context))

    def schema(self) -> dict[str, Any]:
        schema = self.model.model_json_schema()
        schema["$id"] = f"urn:palais:schema:{self.name}:1"
        schema["title"] = self.title
        schema["x-media-type"] = self.media_type
        return schema


# A collaborateur sends for a lawyer (palais.mailbox.delegation); a registry's
# decision comes from its court system or from a clerk of the service.
_LAWYERS = frozenset({Role.AVOCAT, Role.COLLABORATEUR})
_COURTS = frozenset({Role.COURT_SYSTEM})
_REGISTRIES = frozenset({Role.COURT_SYSTEM, Role.GREFFIER})


def _context_free(
    check: Callable[[Doc], list[FieldError]],
) -> Callable[[Doc, DocumentContext], list[FieldError]]:
    return lambda document, _context: check(document)


KINDS: Mapping[str, DocumentKind] = MappingProxyType(
    {
        k.media_type: k
        for k in (
            DocumentKind(
                "saisine", "Saisine", SAISINE, Saisine, check_saisine, ACTOR_TAGS, _LAWYERS
            ),
            DocumentKind(
                "constitution",
                "Constitution",
                CONSTITUTION,
                Constitution,
                check_constitution,
                {},
                _LAWYERS,
            ),
            DocumentKind(
                "dossier-event",
                "Événement de dossier",
                DOSSIER_EVENT,
                DossierEvent,
                _context_free(check_dossier_event),
                EVENT_TAGS,
                _COURTS,
            ),
            DocumentKind(
                "registry-decision",
                "Décision du greffe",
                REGISTRY_DECISION,
                RegistryDecision,
                _context_free(check_registry_decision),
                {},
                _REGISTRIES,
            ),
            DocumentKind(
                "hearing-slots",
                "Créneaux d'audience ouverts",
                HEARING_SLOTS,
                HearingSlots,
                _context_free(check_hearing_slots),
                {},
                _COURTS,
            ),
        )
    }
)


def document_schemas() -> dict[str, dict[str, Any]]:
    """Each published schema by file name (``saisine.schema.json``...)."""
    return {f"{k.name}.schema.json": k.schema() for k in KINDS.values()}


def document_errors(
    media_type: str, data: bytes, context: DocumentContext | None = None
) -> list[FieldError]:
    """The errors of one document of a known media type."""
    return KINDS[media_type.lower()].errors(data, context or DocumentContext())


# -- in a message ------------------------------------------------------------------


def may_carry_documents(data: bytes) -> bool:
    """False when no part header of the message names a document's media type.

    Reads only the header block and, for a multipart message, each part's
    header, found by its boundary (a long pattern the search skips along
    by): no parse, no copy of the body. True sends the message to
    ``message_errors``, which decides.
    """
    crlf = _is_crlf(data)
    raw_head = data[: _head_end(data, 0, MAX_HEADER_SIZE, crlf)]
    head = raw_head.lower()
    if _MARK in head:
        return True
    if b"multipart/" not in head:
        return False
    boundaries = [_boundary(raw_head)]
    for boundary in boundaries:  # grows with each nested multipart
        if boundary is None:
            return True  # a multipart without a boundary: the parser decides
        marker = b"--" + boundary
        at = data.find(marker)
        while at >= 0:
            start = at + len(marker)
            end = _head_end(data, start, _PART_HEAD, crlf)
            part = data[start:end]
            lowered = part.lower()
            if _MARK in lowered:
                return True
            if b"multipart/" in lowered:
                nested = _boundary(part)
                if nested not in boundaries:
                    boundaries.append(nested)
            at = data.find(marker, end)
    return False


# What every document's media type holds; a part's header, at most (in bytes).
_MARK = b"vnd.palais."
_PART_HEAD = 8192
_BOUNDARY = re.compile(rb'(?i)boundary[ \t]*=[ \t]*(?:"([^"\r\n]+)"|([^\s;"]+))')


def _is_crlf(data: bytes) -> bool:
    """True if lines end with CRLF (judged by the first): the one ending then looked for."""
    first = data.find(b"\n")
    return first > 0 and data[first - 1] == 13


def _head_end(data: bytes, start: int, window: int, crlf: bool) -> int:
    """End of the header block starting at ``start`` (after its blank line),
    looked for within ``window`` bytes (the window's end if not found)."""
    stop = min(len(data), start + window)
    if crlf:
        found = data.find(b"\r\n\r\n", start, stop)
        return found + 4 if found >= 0 else stop
    found = data.find(b"\n\n", start, stop)
    return found + 2 if found >= 0 else stop


def _boundary(head: bytes) -> bytes | None:
    found = _BOUNDARY.search(head)
    if found is None:
        return None
    return found.group(1) or found.group(2)


@dataclass(frozen=True, slots=True)
class _Found:
    kind: DocumentKind
    payload: bytes


def message_errors(
    data: bytes, slots: Mapping[str, Sequence[HearingSlot]], sender: Role | None = None
) -> list[str]:
    """Every error of every structured document the message carries, one
    line each naming its field; [] when there is none, or all are valid.

    ``slots``: the hearing slots each juridiction opened (by code);
    ``sender``: the role of who sends it, if a document kind is not theirs
    to send (``NotAllowed`` raised).
    """
    if not may_carry_documents(data):
        return []
    parsed = message_from_bytes(data, policy=policy.compat32)
    found: list[_Found] = []
    attachments: list[Attached] = []
    unknown: list[str] = []
    for part in _own_parts(parsed):
        media_type = part.get_content_type()
        payload = _payload(part)
        kind = KINDS.get(media_type)
        if kind is not None:
            found.append(_Found(kind, payload))
        elif media_type.startswith(MEDIA_PREFIX):
            # Ours but no document's: refused rather than let through unchecked.
            unknown.append(f"Content-Type: type de document inconnu : {media_type[:80]}")
        elif _filename(part) is not None:
            attachments.append(Attached.of(_filename(part), media_type, payload))
    for item in found:
        if sender is not None and sender not in item.kind.senders:
            raise NotAllowed(
                f"Un document {item.kind.name} ne peut être envoyé que par "
                + " ou ".join(_SENDER_NAMES[r] for r in sorted(item.kind.senders)),
                reason=f"{sender} sent a {item.kind.name} document",
            )
    context = DocumentContext(slots=slots, attachments=tuple(attachments))
    lines: list[str] = list(unknown)
    for item in found:
        prefix = f"{item.kind.name} " if len(found) > 1 else ""
        lines.extend(prefix + str(e) for e in item.kind.errors(item.payload, context))
    return lines


def carried_documents(data: bytes) -> list[tuple[str, bytes]]:
    """Each structured document the message carries: (media type, its bytes)."""
    if not may_carry_documents(data):
        return []
    parsed = message_from_bytes(data, policy=policy.compat32)
    return [
        (part.get_content_type(), _payload(part))
        for part in _own_parts(parsed)
        if part.get_content_type() in KINDS
    ]


_SENDER_NAMES = {
    Role.AVOCAT: "un avocat",
    Role.COLLABORATEUR: "un collaborateur",
    Role.COURT_SYSTEM: "le système d'une juridiction",
    Role.GREFFIER: "un greffe",
}


def refuse_invalid(
    data: bytes, slots: Mapping[str, Sequence[HearingSlot]], sender: Role | None = None
) -> None:
    """Raise ``InvalidMessage`` listing every field error, if any (``NotAllowed``
    if the sender may not send a document of its kind)."""
    lines = message_errors(data, slots, sender)
    if lines:
        raise InvalidMessage(
            f"Document structuré invalide : {len(lines)} erreur(s)",
            details=lines,
            reason=f"structured document refused: {'; '.join(lines)[:500]}",
        )


def _own_parts(message: Message) -> Iterator[Message]:
    """The message's leaf parts, not those of a message it forwards (message/rfc822):
    a forwarded saisine is the sender's to show, not theirs to file."""
    if message.get_content_maintype() == "message":
        return
    if not message.is_multipart():
        yield message
        return
    for part in message.get_payload():
        if isinstance(part, Message):
            if part.get_content_maintype() == "message":
                yield part  # an attachment itself
            else:
                yield from _own_parts(part)


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _filename(part: Message) -> str | None:
    name = part.get_filename()
    return None if name is None else (decode_header_value(str(name)) or None)
