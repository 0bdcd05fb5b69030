"""The hearing slots juridictions opened, kept (``palais.mailbox.hearing_slots``, the store side).

One row per juridiction holds its last published list (the document as
JSON), written by the ``SlotsPublished`` record in the transaction of the
message that published it; the gateway loads them at start into its
``OpenedSlots`` (what the saisine check reads), and ``HearingSlotsStore``
answers whether a booked slot is open, for code that needs the stored truth.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select, update

from palais.mailbox.court_events import HearingSlot, HearingSlots
from palais.mailbox.hearing_slots import SlotsPublished, opened_slot
from palais.storage import schema
from palais.storage.sql import utc
from palais.storage.writer import WriteContext

__all__ = ["HearingSlotsStore", "load_stored_slots", "stored_slots", "write_slots_published"]

HS = schema.table(schema.OpenedHearingSlots)


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


def stored_slots(conn: Connection) -> list[HearingSlots]:
    """Every juridiction's last published list."""
    return [
        HearingSlots.model_validate_json(text)
        for text in conn.execute(select(HS.c.document).order_by(HS.c.juridiction_code)).scalars()
    ]


def load_stored_slots(reader: Engine) -> list[HearingSlots]:
    """``stored_slots`` on a connection of its own (the gateway's start)."""
    with reader.connect() as conn:
        return stored_slots(conn)


class HearingSlotsStore:
    """The stored slots, read on demand (another node's publication included)."""

    def __init__(self, reader: Engine) -> None:
        self._reader = reader

    def _opened(self, juridiction_code: str) -> tuple[HearingSlot, ...]:
        with self._reader.connect() as conn:
            text = conn.execute(
                select(HS.c.document).where(HS.c.juridiction_code == juridiction_code)
            ).scalar()
        return () if text is None else tuple(HearingSlots.model_validate_json(text).slots)

    async def opened(self, juridiction_code: str) -> tuple[HearingSlot, ...]:
        return await asyncio.to_thread(self._opened, juridiction_code)

    async def booking_open(
        self, juridiction_code: str, slot_id: str, now: datetime | None = None
    ) -> HearingSlot | None:
        """The slot a saisine books if its juridiction opened it (not begun at ``now``)."""
        slots = await self.opened(juridiction_code)
        return opened_slot({juridiction_code: slots}, juridiction_code, slot_id, now)
