"""The hearing slots juridictions open for date booking, kept with the message publishing them.

A court system publishes its juridiction's opened slots as a
``HearingSlots`` document (``palais.mailbox.court_events``), each list
replacing the previous one. ``SlotsPublished`` is the record a filing plan
carries so that storage keeps the list in the filing's transaction (an
older list arriving late replaces nothing); ``opened_slot`` is the question
a saisine's date booking asks of them.

A saisine sent with a date booking takes one of its slot's places
(``SlotBooked``, kept with the saisine): ``take_place`` decides, on the list
and the bookings read in the saisine's transaction, whether a place is
left. The registry's rejection of that saisine gives its place back
(``DecisionPlan.frees_booking``); an accepted saisine keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy

from pydantic import ValidationError

from palais.mailbox.court_events import HearingSlot, HearingSlots
from palais.mailbox.documents import (
    HEARING_SLOTS,
    SAISINE,
    carried_documents,
    may_carry_documents,
)
from palais.mailbox.dossier_life import own_parts
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.model import CommittedRecord

__all__ = [
    "SlotBooked",
    "SlotsPublished",
    "booked_juridictions",
    "booked_slot",
    "carried_slots",
    "opened_slot",
    "take_place",
]


@dataclass(frozen=True, slots=True)
class SlotsPublished(CommittedRecord):
    """A juridiction's opened slots, to keep with the message publishing them."""

    document: HearingSlots


@dataclass(frozen=True, slots=True)
class SlotBooked(CommittedRecord):
    """A saisine's date booking, kept with the saisine: a place of the slot taken."""

    juridiction_code: str
    slot_id: str


def booked_slot(saisine: Mapping[str, object]) -> SlotBooked | None:
    """The booking a (valid) saisine document asks for, if any."""
    booking, juridiction = saisine.get("date_booking"), saisine.get("juridiction")
    if not isinstance(booking, Mapping) or not isinstance(juridiction, Mapping):
        return None
    slot_id, code = booking.get("slot_id"), juridiction.get("code")
    if not isinstance(slot_id, str) or not isinstance(code, str):
        return None
    return SlotBooked(code, slot_id)


def booked_juridictions(data: bytes) -> frozenset[str]:
    """The juridictions whose slots the saisines a message carries book
    (none for most messages, at the cost of a look at their part headers)."""
    out: set[str] = set()
    for kind, payload in carried_documents(data):
        if kind != SAISINE:
            continue
        try:
            document = json.loads(payload)
        except ValueError:  # the documents' check says what is wrong with it
            continue
        booking = booked_slot(document) if isinstance(document, Mapping) else None
        if booking is not None:
            out.add(booking.juridiction_code)
    return frozenset(out)


def take_place(
    opened: Sequence[HearingSlot], booking: SlotBooked, taken: int, now: datetime
) -> HearingSlot:
    """The slot a saisine books, given its juridiction's list as stored and
    the places ``taken`` by other saisines, both read in the saisine's
    transaction; refused when the slot is not (or no longer) open, or full."""
    slot = opened_slot(
        {booking.juridiction_code: opened}, booking.juridiction_code, booking.slot_id
    )
    if slot is None or slot.starts_at <= now:
        raise InvalidMessage(
            "date_booking.slot_id: ce créneau n'est pas ouvert par la juridiction",
            reason=f"slot {booking.slot_id[:100]} of {booking.juridiction_code} not open",
        )
    if taken >= slot.places:
        raise InvalidMessage(
            "date_booking.slot_id: ce créneau est complet, choisissez-en un autre",
            reason=(
                f"slot {booking.slot_id[:100]} of {booking.juridiction_code}:"
                f" {taken} of {slot.places} places taken"
            ),
        )
    return slot


def opened_slot(
    opened: Mapping[str, Sequence[HearingSlot]],
    juridiction_code: str,
    slot_id: str,
    now: datetime | None = None,
) -> HearingSlot | None:
    """The slot ``slot_id`` if ``juridiction_code`` opened it (and, given
    ``now``, it has not begun yet); None: a date booking may not take it."""
    for slot in opened.get(juridiction_code, ()):
        if slot.id == slot_id:
            return slot if now is None or slot.starts_at > now else None
    return None


def carried_slots(data: bytes) -> list[HearingSlots]:
    """The hearing-slots documents a message carries (validated already by
    ``palais.mailbox.documents.refuse_invalid``); [] for most messages, at
    the cost of a look at their part headers."""
    if not may_carry_documents(data):
        return []
    out = []
    for part in own_parts(message_from_bytes(data, policy=policy.compat32)):
        if part.get_content_type() != HEARING_SLOTS:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            out.append(HearingSlots.model_validate_json(payload))
        except ValidationError:  # refused by the documents' check before this
            raise InvalidMessage(reason="hearing slots not valid when kept") from None
    return out
