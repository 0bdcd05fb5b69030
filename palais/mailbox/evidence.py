"""Evidence: what each accusé de réception proves, and who receives it.

Modelled on ETSI EN 319 522-2 (registered electronic delivery): each
receipt names one or more events of one message (dépôt, remise, première
lecture, décision du greffe, non-remise) with their times, the sender and
recipients with how they authenticated and the SHA-256 of their
certificates, the dossier, the message's Message-ID, subject, the SHA-256
of its exact stored bytes and of each attachment, and its place in the
evidence log (position and the previous leaf's hash).

The domain decides which receipts an act causes and what they say
(``ReceiptOrder``); storage gives each its evidence id and log position in
the act's own transaction, and the evidence service (``palais.pki.receipt``)
seals it. The JSON written is ``canonical_json`` of ``evidence_document``:
those exact bytes are signed, logged and checked by the verifier; the
pydantic model ``palais.pki.evidence_model.Evidence`` publishes its schema.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from typing import Any, Final

from palais.mailbox.digest import sha256_hex
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.identity import Identity
from palais.mailbox.message import decode_header_value
from palais.mailbox.model import CommittedRecord

EVIDENCE_MEDIA_TYPE: Final = "application/vnd.palais.evidence+json"
EVIDENCE_VERSION: Final = 1
# The policy under which the gateway issues evidence (named in every receipt).
EVIDENCE_POLICY: Final = "urn:palais:politique-de-preuve:1"
# The hash before the first leaf of the log.
GENESIS: Final = "0" * 64
MUTUAL_TLS: Final = "tls-client-certificate"


class EventCode(enum.StrEnum):
    """The events a receipt proves; the value is what the evidence says."""

    DEPOT = "depot"
    REMISE = "remise"
    PREMIERE_LECTURE = "premiere-lecture"
    ACCEPTATION_GREFFE = "acceptation-greffe"
    REJET_GREFFE = "rejet-greffe"
    NON_REMISE = "non-remise"

    @property
    def etsi(self) -> str:
        """The ETSI EN 319 522-2 event this one is."""
        return _ETSI[self]

    @property
    def label(self) -> str:
        """How a clerk says it."""
        return _LABELS[self]


_ETSI: Final = {
    EventCode.DEPOT: "SubmissionAcceptance",
    EventCode.REMISE: "ContentConsignment",
    EventCode.PREMIERE_LECTURE: "ContentHandover",
    EventCode.ACCEPTATION_GREFFE: "AcceptanceByRecipient",
    EventCode.REJET_GREFFE: "RejectionByRecipient",
    EventCode.NON_REMISE: "ContentConsignmentFailure",
}
_LABELS: Final = {
    EventCode.DEPOT: "Dépôt",
    EventCode.REMISE: "Remise",
    EventCode.PREMIERE_LECTURE: "Première lecture",
    EventCode.ACCEPTATION_GREFFE: "Acceptation par le greffe",
    EventCode.REJET_GREFFE: "Rejet par le greffe",
    EventCode.NON_REMISE: "Non-remise",
}


# -- values the planners compute ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Party:
    address: str
    name: str
    role: str | None
    authentication: str | None = None
    certificate_sha256: str | None = None
    mailbox: str | None = None

    @classmethod
    def acting(cls, who: Identity) -> Party:
        """Someone who proved who they are with their card, acting on their mailbox."""
        return cls(
            who.address,
            who.display_name,
            who.role.value,
            MUTUAL_TLS,
            who.fingerprint,
            who.mailbox_owner if who.mailbox_owner != who.address else None,
        )

    @classmethod
    def mailbox_of(cls, address: str, mailbox: str | None = None) -> Party:
        """A recipient known by the address written to (it has not acted), and
        the mailbox that address reaches when another (a dossier's: its service's)."""
        return cls(address, address, None, mailbox=mailbox if mailbox != address else None)

    def document(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "role": self.role,
            "mailbox": self.mailbox,
            "authentication": self.authentication,
            "certificate_sha256": self.certificate_sha256,
        }


@dataclass(frozen=True, slots=True)
class Event:
    code: EventCode
    time: datetime  # timezone-aware
    recipients: tuple[Party, ...]
    reason: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "etsi": self.code.etsi,
            "time": timestamp(self.time),
            "reason": self.reason,
            "recipients": [r.document() for r in self.recipients],
        }


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str | None
    media_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What evidence says of the message itself."""

    message_id: str | None
    subject: str
    size: int
    sha256: str
    attachments: tuple[Attachment, ...]

    def document(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "subject": self.subject,
            "size": self.size,
            "sha256": self.sha256,
            "attachments": [
                {"name": a.name, "media_type": a.media_type, "size": a.size, "sha256": a.sha256}
                for a in self.attachments
            ],
        }


@dataclass(frozen=True, slots=True)
class ReceiptOrder(CommittedRecord):
    """A receipt to issue in the transaction of the act it proves.

    ``about`` is the message's row id, or None for the message the carrying
    filing plan files (storage reads its facts from the bytes it stores).
    ``holders`` are the mailbox owners whose Accusés de réception boxes (in
    the dossier, and so in the global view) receive the receipt.
    """

    events: tuple[Event, ...]
    sender: Party
    holders: tuple[str, ...]
    dossier: str | None
    submitted: datetime
    about: int | None = None
    message: MessageFacts | None = None  # None: read from the filed message
    delegate: Party | None = None
    # Set for a first read: the (message, mailbox) whose first reading this
    # is; storage keeps it so that a second reader finds it already read.
    first_read: tuple[int, str] | None = None

    @property
    def codes(self) -> tuple[EventCode, ...]:
        return tuple(e.code for e in self.events)


def timestamp(when: datetime) -> str:
    """UTC with microseconds and a Z: one spelling for every time in evidence."""
    utc = when.astimezone(UTC)
    # isoformat is several times cheaper than strftime, and spells the same
    # with its microseconds forced.
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """The instant ``timestamp`` wrote (fromisoformat: strptime costs ten times more)."""
    if not text.endswith("Z"):
        raise ValueError(f"not an evidence timestamp: {text!r}")
    return datetime.fromisoformat(text[:-1] + "+00:00")


def canonical_json(value: Any) -> bytes:
    """The one serialisation of evidence: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def evidence_document(
    order: ReceiptOrder,
    message: MessageFacts,
    *,
    evidence_id: str,
    issuer: str,
    issuer_certificate_sha256: str,
    position: int,
    previous: str,
) -> dict[str, Any]:
    """The evidence of ``order``, complete: what ``canonical_json`` turns into the signed part."""
    return {
        "version": EVIDENCE_VERSION,
        "evidence_id": evidence_id,
        "issuer": {"name": issuer, "certificate_sha256": issuer_certificate_sha256},
        "policy": EVIDENCE_POLICY,
        "events": [e.document() for e in order.events],
        "submission_time": timestamp(order.submitted),
        "sender": order.sender.document(),
        "delegate": order.delegate.document() if order.delegate else None,
        "dossier": order.dossier,
        "message": message.document(),
        "log": {"position": position, "previous": previous},
    }


# -- what each act causes ------------------------------------------------------


def deposit_and_delivery(
    who: Identity,
    recipients: Sequence[tuple[str, str]],
    dossier: str | None,
    now: datetime,
    *,
    relayed: Collection[str] = (),
) -> ReceiptOrder:
    """The receipt of a message accepted and filed at once: one receipt, two events.

    Filing is all or nothing (every recipient's mailbox is written in the
    transaction that accepts the message), so deposit and delivery share
    their time and their receipt; the sender holds it. ``recipients``: each
    (address written to, mailbox it reached). ``relayed``: mailboxes the
    message is relayed to instead (a court system's own endpoint): deposited
    now, delivered when the endpoint takes it (``relayed_delivery``).
    """
    parties = tuple(Party.mailbox_of(address, mailbox) for address, mailbox in recipients)
    delivered = tuple(
        party
        for party, (_, mailbox) in zip(parties, recipients, strict=True)
        if mailbox not in relayed
    )
    events: tuple[Event, ...] = (Event(EventCode.DEPOT, now, parties),)
    if delivered:
        events += (Event(EventCode.REMISE, now, delivered),)
    return ReceiptOrder(
        events=events,
        sender=Party.acting(who),
        holders=(who.mailbox_owner,),
        dossier=dossier,
        submitted=now,
    )


@dataclass(frozen=True, slots=True)
class Deposit:
    """A filed message as its deposit receipt described it: what later events repeat."""

    message_id: int  # row id
    holder: str  # whose Accusés de réception hold the sender's receipts
    delivered: datetime  # when it reached the mailboxes
    evidence: Mapping[str, Any]  # the deposit receipt's evidence document


def first_reads(
    reader: Identity,
    deposits: Iterable[Deposit],
    already_read: Iterable[int],
    now: datetime,
) -> tuple[ReceiptOrder, ...]:
    """The read receipts caused by ``reader`` marking these received messages read.

    Exactly one per message and recipient mailbox: a message whose mailbox
    has been read before (by this reader, or by another clerk of the same
    service) causes none. Never dated before the delivery it follows. The
    sender holds it, and the reading mailbox keeps a copy.
    """
    done = set(already_read)
    orders: list[ReceiptOrder] = []
    mailbox = reader.mailbox_owner
    for deposit in deposits:
        if deposit.message_id in done:
            continue
        done.add(deposit.message_id)
        event = Event(
            EventCode.PREMIERE_LECTURE, max(now, deposit.delivered), (Party.acting(reader),)
        )
        orders.append(
            _following(
                deposit,
                event,
                holders=tuple(dict.fromkeys((deposit.holder, mailbox))),
                first_read=(deposit.message_id, mailbox),
            )
        )
    return tuple(orders)


def registry_decision(
    registry: Identity, deposit: Deposit, *, accepted: bool, reason: str | None, now: datetime
) -> ReceiptOrder:
    """The receipt of a registry's decision on a message (a saisine, a constitution,
    a lawyer's message): accepted, or rejected with its reason. The sender holds it."""
    if not accepted and not (reason and reason.strip()):
        raise InvalidMessage("A rejection states its reason", reason="rejection without reason")
    code = EventCode.ACCEPTATION_GREFFE if accepted else EventCode.REJET_GREFFE
    parties = (Party.acting(registry),)
    return _following(deposit, Event(code, max(now, deposit.delivered), parties, reason))


def non_delivery_of(
    deposit: Deposit, recipients: Sequence[str], *, reason: str, now: datetime
) -> ReceiptOrder:
    """The receipt of a filed message that could not reach these recipients
    (a court system that refused it, say): a non-remise, to the sender."""
    if not reason.strip():
        raise InvalidMessage(
            "A non-delivery states its reason", reason="non-delivery without reason"
        )
    parties = tuple(Party.mailbox_of(r) for r in recipients)
    event = Event(EventCode.NON_REMISE, max(now, deposit.delivered), parties, reason)
    return _following(deposit, event)


def relayed_delivery(deposit: Deposit, recipients: Sequence[str], *, now: datetime) -> ReceiptOrder:
    """The receipt of a filed message taken by a court system's own endpoint
    (its 250), relayed there: a remise, to the sender."""
    parties = tuple(Party.mailbox_of(r) for r in recipients)
    return _following(deposit, Event(EventCode.REMISE, max(now, deposit.delivered), parties))


def _following(
    deposit: Deposit,
    event: Event,
    *,
    holders: tuple[str, ...] | None = None,
    first_read: tuple[int, str] | None = None,
) -> ReceiptOrder:
    """A receipt of a later event of a filed message: the deposit's facts again
    (sender, dossier, message, submission time), held by the sender's mailbox."""
    evidence = deposit.evidence
    return ReceiptOrder(
        events=(event,),
        sender=_party(evidence["sender"]),
        holders=holders or (deposit.holder,),
        dossier=evidence["dossier"],
        submitted=parse_timestamp(evidence["submission_time"]),
        about=deposit.message_id,
        message=_message(evidence["message"]),
        first_read=first_read,
    )


def _party(doc: Mapping[str, Any]) -> Party:
    return Party(
        doc["address"],
        doc["name"],
        doc["role"],
        doc["authentication"],
        doc["certificate_sha256"],
        doc.get("mailbox"),
    )


def _message(doc: Mapping[str, Any]) -> MessageFacts:
    return MessageFacts(
        doc["message_id"],
        doc["subject"],
        doc["size"],
        doc["sha256"],
        tuple(
            Attachment(a["name"], a["media_type"], a["size"], a["sha256"])
            for a in doc["attachments"]
        ),
    )


# -- the message's own facts --------------------------------------------------


def message_facts(
    data: bytes, message_id: str | None, subject: str, sha256: str | None = None
) -> MessageFacts:
    """SHA-256 and size of the stored bytes, and each attachment's facts
    (``sha256``: the bytes' hash when the caller has it already)."""
    return MessageFacts(
        message_id,
        subject,
        len(data),
        sha256 or sha256_hex(data),
        attachments_of(data),
    )


def attachments_of(data: bytes) -> tuple[Attachment, ...]:
    """Every attachment of a message: parts with a file name or an attachment
    disposition, decoded. A single-part message has none (read no further)."""
    head_end = data.find(b"\r\n\r\n")
    head = data if head_end < 0 else data[:head_end]
    if b"multipart/" not in head.lower():
        return ()
    parsed = message_from_bytes(data, policy=policy.compat32)
    found: list[Attachment] = []
    for part in parsed.walk():
        if part.is_multipart() or not _is_attachment(part):
            continue
        payload = part.get_payload(decode=True)
        body = payload if isinstance(payload, bytes) else b""
        found.append(
            Attachment(
                _filename(part),
                part.get_content_type(),
                len(body),
                sha256_hex(body),
            )
        )
    return tuple(found)


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or _filename(part) is not None


def _filename(part: Message) -> str | None:
    name = part.get_filename()
    if name is None:
        return None
    return decode_header_value(str(name)) or None
