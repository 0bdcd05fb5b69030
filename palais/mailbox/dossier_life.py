"""A dossier's life as its court system pushes it: the rules that apply each event.

The court system sends dossier events (``palais.mailbox.court_events``):
created, status changed, hearings added, moved or cancelled, a party or a
lawyer changed. ``apply_event`` turns the dossier's life as it stands and
one event into the life after it, or refuses the event with the reason a
clerk would give (an event for an unknown dossier, a hearing moved that
does not exist...): the SMTP dialogue shows the refusal and nothing is
stored. Storage keeps the life, carries out the change in one transaction
and replaces the dossier's Fiche (``palais.mailbox.fiche``).

A terminated dossier stays visible for a while (one year by default), then
is purged, its receipts excepted: ``purge_due`` says when.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from palais.mailbox.court_events import (
    Created,
    DossierEvent,
    DossierStatus,
    DossierType,
    Hearing,
    HearingAdded,
    HearingCancelled,
    HearingMoved,
    LawyerChanged,
    Party,
    PartyChanged,
    PersonType,
    Quality,
    StatusChanged,
)
from palais.mailbox.documents import DOSSIER_EVENT, may_carry_documents
from palais.mailbox.errors import InvalidMessage, UnknownRecipient
from palais.mailbox.identity import Role
from palais.mailbox.juridictions import folded
from palais.mailbox.model import CommittedRecord

__all__ = [
    "Constituted",
    "DossierLife",
    "DossierParty",
    "EventRefused",
    "FicheCopy",
    "LifeApplied",
    "LifeChange",
    "apply_event",
    "apply_events",
    "blank_life",
    "carried_events",
    "event_digest",
    "joins_dossier",
    "newly_constituted",
    "own_parts",
    "purge_due",
    "searched_parties",
    "unknown_dossier",
]

# How long a terminated dossier stays visible ([dossiers] retention_days).
DEFAULT_RETENTION = timedelta(days=365)


class Constituted(BaseModel):
    """A lawyer constituted for one party of the dossier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    party_id: str
    address: str


class DossierLife(BaseModel):
    """What the court system told of a dossier, event after event.

    Kept as JSON by storage (``model_dump_json``), read back with
    ``model_validate_json``; ``version`` counts the events applied, so that
    storage carries a change out only on the life it was computed from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: str
    juridiction_code: str | None = None
    created: bool = False  # a "created" event was applied (its fields below)
    status: DossierStatus = DossierStatus.PROVISOIRE
    service: str | None = None
    dossier_type: DossierType | None = None
    nac: str | None = None
    act_nature: str | None = None
    act_date: date | None = None
    confidential: bool = False
    parties: tuple[Party, ...] = ()
    lawyers: tuple[Constituted, ...] = ()
    hearings: tuple[Hearing, ...] = ()
    terminated_at: AwareDatetime | None = None  # when its status became "terminé"
    version: int = 0

    def party(self, party_id: str) -> Party | None:
        return next((p for p in self.parties if p.id == party_id), None)

    def hearing(self, hearing_id: str) -> Hearing | None:
        return next((h for h in self.hearings if h.id == hearing_id), None)

    def lawyers_of(self, party_id: str) -> tuple[str, ...]:
        return tuple(c.address for c in self.lawyers if c.party_id == party_id)

    def represented_by(self, address: str) -> frozenset[str]:
        """The ids of the parties ``address`` is constituted for."""
        wanted = address.lower()
        return frozenset(c.party_id for c in self.lawyers if c.address.lower() == wanted)


@dataclass(frozen=True, slots=True)
class DossierParty:
    """A party as the dossier search finds it (by quality and name), with the
    lawyer constituted for it."""

    quality: Quality
    person_type: PersonType
    name: str
    lawyer: str | None = None  # the address of the lawyer constituted for it

    @property
    def folded(self) -> str:
        """The name as a search compares it (case, accents and punctuation aside)."""
        return folded(self.name)


def searched_parties(before: DossierLife, after: DossierLife) -> tuple[DossierParty, ...] | None:
    """The parties the dossier search should find once ``after`` replaces
    ``before``: the court's word on them (each with its first lawyer); None
    when neither the parties nor their lawyers changed (the rows stand,
    whatever set them: a saisine accepted, a constitution)."""
    if after.parties == before.parties and after.lawyers == before.lawyers:
        return None
    return tuple(
        DossierParty(p.quality, p.person_type, p.name, next(iter(after.lawyers_of(p.id)), None))
        for p in after.parties
    )


def newly_constituted(before: DossierLife, after: DossierLife) -> tuple[str, ...]:
    """The lawyers ``after`` constitutes for a party who were constituted for
    none in ``before``: the court's word that they represent someone in the
    dossier, as a registry's acceptance of their own constitution is."""
    had = {c.address.lower() for c in before.lawyers}
    return tuple(
        dict.fromkeys(c.address.lower() for c in after.lawyers if c.address.lower() not in had)
    )


def joins_dossier(role: Role | None, active: bool) -> bool:
    """Whether a lawyer the court constituted takes part in the dossier (its
    boxes, its messages, its Fiche): an active lawyer's account does; an
    address the gateway does not know, or another role, stays a name on the
    Fiche. A lawyer withdrawn keeps what they took part in, as after a
    constitution accepted; the court's word removes nobody."""
    return active and role is Role.AVOCAT


def blank_life(number: str) -> DossierLife:
    """The life of a dossier opened before its court system said anything of
    it (a saisine accepted, a dossier set up by ``palais init``)."""
    return DossierLife(number=number)


class EventRefused(InvalidMessage):
    """The event does not fit the dossier as it stands (550 5.6.0)."""


def unknown_dossier(number: str) -> UnknownRecipient:
    """The event names a dossier the gateway does not hold (550 5.1.1)."""
    return UnknownRecipient(
        f"Événement refusé : dossier {number} inconnu",
        reason=f"dossier event for unknown dossier {number}",
    )


def _refuse(number: str, field: str, text: str) -> EventRefused:
    return EventRefused(
        f"Événement refusé pour le dossier {number}",
        details=(f"{field}: {text}",),
        reason=f"dossier event refused for {number}: {field}: {text}",
    )


class LifeChange(BaseModel):
    """One event applied: the life before and after it."""

    model_config = ConfigDict(frozen=True)

    before: DossierLife
    after: DossierLife
    event: DossierEvent

    @property
    def terminated(self) -> bool:
        return self.after.status is DossierStatus.TERMINE


def apply_event(life: DossierLife, document: DossierEvent) -> LifeChange:
    """The dossier's life once ``document`` is applied; ``EventRefused`` if it
    does not fit (nothing is half-applied: the life is a value).

    Rules:
    - the event's juridiction is the dossier's, once its creation told it;
    - "created" once per dossier;
    - nothing but a status change for a terminated dossier (it may be reopened);
    - a hearing added has a new id; moved or cancelled, one that exists;
    - a party changed is added, or replaces the party of the same id;
    - a lawyer constituted for a party that exists, not twice; withdrawn or
      replaced, one constituted for that party.
    """
    n = life.number
    event = document.event
    if document.dossier != n:
        raise _refuse(n, "dossier", f"l'événement concerne le dossier {document.dossier}")
    if life.juridiction_code is not None and document.juridiction_code != life.juridiction_code:
        raise _refuse(
            n,
            "juridiction_code",
            f"le dossier relève de {life.juridiction_code}, pas de {document.juridiction_code}",
        )
    if life.status is DossierStatus.TERMINE and not isinstance(event, StatusChanged):
        raise _refuse(n, "event.kind", "le dossier est terminé")
    changes: dict[str, object] = {"version": life.version + 1}
    if isinstance(event, Created):
        if life.created:
            raise _refuse(n, "event.kind", "le dossier a déjà été créé")
        changes.update(
            created=True,
            juridiction_code=document.juridiction_code,
            status=event.status,
            service=event.service,
            dossier_type=event.dossier_type,
            nac=event.nac,
            act_nature=event.act_nature,
            act_date=event.act_date,
            confidential=event.confidential,
            parties=tuple(event.parties),
        )
        if event.status is DossierStatus.TERMINE:
            changes["terminated_at"] = document.occurred_at
    elif isinstance(event, StatusChanged):
        if event.status is life.status:
            raise _refuse(n, "event.status", f"le dossier est déjà au statut {event.status}")
        if life.status is DossierStatus.TERMINE and event.status is DossierStatus.PROVISOIRE:
            raise _refuse(n, "event.status", "un dossier terminé ne redevient pas provisoire")
        changes["status"] = event.status
        changes["terminated_at"] = (
            document.occurred_at if event.status is DossierStatus.TERMINE else None
        )
    elif isinstance(event, HearingAdded):
        if life.hearing(event.hearing.id) is not None:
            raise _refuse(n, "event.hearing.id", f"l'audience {event.hearing.id} existe déjà")
        changes["hearings"] = _by_date((*life.hearings, event.hearing))
    elif isinstance(event, HearingMoved):
        if life.hearing(event.hearing.id) is None:
            raise _refuse(n, "event.hearing.id", f"aucune audience {event.hearing.id}")
        changes["hearings"] = _by_date(
            event.hearing if h.id == event.hearing.id else h for h in life.hearings
        )
    elif isinstance(event, HearingCancelled):
        if life.hearing(event.hearing_id) is None:
            raise _refuse(n, "event.hearing_id", f"aucune audience {event.hearing_id}")
        changes["hearings"] = tuple(h for h in life.hearings if h.id != event.hearing_id)
    elif isinstance(event, PartyChanged):
        if life.party(event.party.id) is None:
            changes["parties"] = (*life.parties, event.party)
        else:  # in its place, not at the end: the Fiche keeps the order
            changes["parties"] = tuple(
                event.party if p.id == event.party.id else p for p in life.parties
            )
    elif isinstance(event, LawyerChanged):
        changes["lawyers"] = _lawyers_after(life, event)
    return LifeChange(before=life, after=life.model_copy(update=changes), event=document)


def _lawyers_after(life: DossierLife, event: LawyerChanged) -> tuple[Constituted, ...]:
    n = life.number
    if life.party(event.party_id) is None:
        raise _refuse(n, "event.party_id", f"aucune partie {event.party_id}")
    current = life.lawyers_of(event.party_id)
    lawyer = event.lawyer_address.lower()
    if event.change == "constituted":
        if lawyer in (a.lower() for a in current):
            raise _refuse(
                n, "event.lawyer_address", f"{lawyer} est déjà constitué pour {event.party_id}"
            )
        return (*life.lawyers, Constituted(party_id=event.party_id, address=lawyer))
    gone = lawyer if event.change == "withdrawn" else (event.replaces_address or "").lower()
    field = "event.lawyer_address" if event.change == "withdrawn" else "event.replaces_address"
    if gone not in (a.lower() for a in current):
        raise _refuse(n, field, f"{gone} n'est pas constitué pour {event.party_id}")
    kept = tuple(
        c for c in life.lawyers if not (c.party_id == event.party_id and c.address.lower() == gone)
    )
    if event.change == "withdrawn":
        return kept
    if lawyer in (a.lower() for a in current):
        raise _refuse(
            n, "event.lawyer_address", f"{lawyer} est déjà constitué pour {event.party_id}"
        )
    return (*kept, Constituted(party_id=event.party_id, address=lawyer))


def _by_date(hearings: Iterator[Hearing] | Sequence[Hearing]) -> tuple[Hearing, ...]:
    return tuple(sorted(hearings, key=lambda h: (h.date, h.time, h.id)))


def purge_due(life: DossierLife, now: datetime, retention: timedelta) -> bool:
    """True once a terminated dossier has been visible ``retention`` long."""
    return (
        life.status is DossierStatus.TERMINE
        and life.terminated_at is not None
        and now >= life.terminated_at + retention
    )


def apply_events(
    life: DossierLife, events: Sequence[tuple[DossierEvent, str]], message_dossier: str | None
) -> tuple[tuple[LifeChange, str], ...]:
    """The events a message carries applied in order, each with its digest.

    They all concern the dossier the message belongs to (``message_dossier``,
    from its address or subject; None: the message names none).
    """
    out = []
    for document, digest in events:
        if message_dossier is not None and document.dossier != message_dossier:
            raise _refuse(
                message_dossier,
                "dossier",
                f"l'événement concerne le dossier {document.dossier},"
                f" le message le dossier {message_dossier}",
            )
        change = apply_event(life, document)
        out.append((change, digest))
        life = change.after
    return tuple(out)


@dataclass(frozen=True, slots=True)
class FicheCopy:
    """The Fiche dossier one mailbox gets (``palais.mailbox.fiche``)."""

    mailbox_owner: str
    data: bytes


@dataclass(frozen=True, slots=True)
class LifeApplied(CommittedRecord):
    """Events applied to a dossier, committed with the message that carried
    them (or alone, ``changes`` empty: the Fiche made again): storage writes
    the life after them, only if it is still the life they were applied to
    (``version_before``) and the Fiche went to the same mailboxes, and puts
    ``fiches`` in place of the earlier ones."""

    number: str
    version_before: int
    changes: tuple[tuple[LifeChange, str], ...]  # each with its event's digest
    life: DossierLife  # after them
    fiches: tuple[FicheCopy, ...]
    at: datetime
    # Lawyers the events constituted who were constituted for no party
    # before (``newly_constituted``): each takes part in the dossier if
    # ``joins_dossier`` says their account may.
    joining: tuple[str, ...] = ()

    @property
    def blobs(self) -> tuple[bytes, ...]:
        """The bytes to store before the transaction (the Fiches)."""
        return tuple(f.data for f in self.fiches)


# -- in a message ------------------------------------------------------------------


def event_digest(payload: bytes) -> str:
    """What makes an event the same event sent again: its exact bytes."""
    return hashlib.sha256(payload).hexdigest()


def carried_events(data: bytes) -> list[tuple[DossierEvent, str]]:
    """The dossier events a message carries, each with its digest; [] for a
    message without any (a look at its part headers only). The documents were
    validated already (``palais.mailbox.documents.refuse_invalid``)."""
    if not may_carry_documents(data):
        return []
    parsed = message_from_bytes(data, policy=policy.compat32)
    out = []
    for part in own_parts(parsed):
        if part.get_content_type() != DOSSIER_EVENT:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            event = DossierEvent.model_validate_json(payload)
        except ValidationError:  # refused by the documents' check before this
            raise InvalidMessage(reason="dossier event not valid at its application") from None
        out.append((event, event_digest(payload)))
    return out


def own_parts(message: Message) -> Iterator[Message]:
    """Leaf parts, not those of a forwarded message (as the documents' check reads them)."""
    if message.get_content_maintype() == "message":
        return
    if not message.is_multipart():
        yield message
        return
    for part in message.get_payload():
        if isinstance(part, Message) and part.get_content_maintype() != "message":
            yield from own_parts(part)
