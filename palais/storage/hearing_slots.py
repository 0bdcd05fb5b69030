"""The hearing slots juridictions opened, kept (``palais.mailbox.hearing_slots``, the store side).

One row per juridiction holds its last published list (the document as
JSON), written by the ``SlotsPublished`` record in the transaction of the
message that published it, whichever node filed it; ``HearingSlotsStore``
answers whether a booked slot is open.

A saisine's ``SlotBooked`` record reads that list and the slot's bookings
in the saisine's transaction, lets the domain decide (``take_place``), and
keeps the booking; on PostgreSQL the juridiction's list row is locked
first, so that two nodes never both take a slot's last place.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from palais.mailbox.court_events import HearingSlot, HearingSlots
from palais.mailbox.hearing_slots import SlotBooked, SlotsPublished, opened_slot, take_place
from palais.storage import schema
from palais.storage.sql import utc
from palais.storage.writer import WriteContext

__all__ = [
    "HearingSlotsStore",
    "free_booking",
    "stored_slots",
    "write_slot_booked",
    "write_slots_published",
]

HS = schema.table(schema.OpenedHearingSlots)
HB = schema.table(schema.HearingBooking)


def write_slots_published(conn: Connection, _ctx: WriteContext, record: SlotsPublished) -> None:
    """Keep the list, unless a list published later is kept already."""
    doc = record.document
    values = {"published_at": doc.published_at.astimezone(UTC), "document": doc.model_dump_json()}
    kept = conn.execute(
        select(HS.c.published_at).where(HS.c.juridiction_code == doc.juridiction_code)
    ).first()
    if kept is None:
        conn.execute(insert(HS).values(juridiction_code=doc.juridiction_code, **values))
    elif utc(kept.published_at) <= doc.published_at:
        conn.execute(
            update(HS).where(HS.c.juridiction_code == doc.juridiction_code).values(**values)
        )


def write_slot_booked(conn: Connection, ctx: WriteContext, record: SlotBooked) -> None:
    """Take a place of the booked slot for the saisine just filed, or refuse it."""
    assert ctx.filed is not None, "a booking comes with the saisine's filing"
    saisine = int(ctx.filed[0])
    opened = _opened(conn, record.juridiction_code, lock=conn.dialect.name == "postgresql")
    taken = conn.execute(
        select(func.count())
        .select_from(HB)
        .where(HB.c.juridiction_code == record.juridiction_code, HB.c.slot_id == record.slot_id)
    ).scalar_one()
    now = datetime.now(UTC)
    take_place(opened, record, int(taken), now)
    conn.execute(
        insert(HB).values(
            message_id=saisine,
            juridiction_code=record.juridiction_code,
            slot_id=record.slot_id,
            booked_at=now,
        )
    )


def _opened(conn: Connection, juridiction_code: str, *, lock: bool) -> tuple[HearingSlot, ...]:
    """The juridiction's slots as last published; ``lock``: its row locked
    until the transaction ends."""
    listed = select(HS.c.document).where(HS.c.juridiction_code == juridiction_code)
    text = conn.execute(listed.with_for_update() if lock else listed).scalar()
    return () if text is None else tuple(HearingSlots.model_validate_json(text).slots)


def free_booking(conn: Connection, saisine: int) -> None:
    """The place a rejected saisine's booking took, given back (none: nothing)."""
    conn.execute(delete(HB).where(HB.c.message_id == saisine))


def stored_slots(conn: Connection) -> list[HearingSlots]:
    """Every juridiction's last published list."""
    return [
        HearingSlots.model_validate_json(text)
        for text in conn.execute(select(HS.c.document).order_by(HS.c.juridiction_code)).scalars()
    ]


class HearingSlotsStore:
    """The stored slots, read on demand (another node's publication included)."""

    def __init__(self, reader: Engine) -> None:
        self._reader = reader

    def _read(self, juridiction_code: str) -> tuple[HearingSlot, ...]:
        with self._reader.connect() as conn:
            return _opened(conn, juridiction_code, lock=False)

    async def opened(self, juridiction_code: str) -> tuple[HearingSlot, ...]:
        return await asyncio.to_thread(self._read, juridiction_code)

    async def booking_open(
        self, juridiction_code: str, slot_id: str, now: datetime | None = None
    ) -> HearingSlot | None:
        """The slot a saisine books if its juridiction opened it (not begun at ``now``)."""
        slots = await self.opened(juridiction_code)
        return opened_slot({juridiction_code: slots}, juridiction_code, slot_id, now)
