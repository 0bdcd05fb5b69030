"""Date booking carried out (palais.storage.hearing_slots), on SQLite and
PostgreSQL: a saisine's booking takes a place of its slot in the saisine's
transaction, a full slot refuses the next saisine whole, the registry's
rejection gives the place back, and two nodes never both take a last place."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from palais.mailbox.court_events import HearingSlots
from palais.mailbox.documents import SAISINE
from palais.mailbox.errors import InvalidMessage
from palais.mailbox.hearing_slots import SlotBooked, SlotsPublished
from palais.mailbox.identity import Identity
from palais.mailbox.relay import RelayOrder
from palais.storage import Storage, open_storage, schema
from palais.storage.hearing_slots import write_slot_booked, write_slots_published
from palais.storage.registry import RQ
from palais.storage.relay_queue import write_relay_order
from palais.storage.writer import WriteContext
from tests.mailbox import court_samples as samples
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import running_storage
from tests.storage.test_mailstore import ME, OTHER
from tests.storage.test_saisine_decisions import (
    COURT,
    CPH,
    _count,
    _court_account,
    _decide,
    _message,
    _send,
)


def _open_slots(storage: Storage, places: int | None) -> None:
    doc: dict[str, Any] = samples.hearing_slots()
    if places is not None:
        doc["slots"][0]["places"] = places
    published = SlotsPublished(HearingSlots.model_validate(doc))

    def work(conn: Connection, ctx: WriteContext) -> None:
        write_slots_published(conn, ctx, published)

    asyncio.run(storage.commits.submit(work))


def _ready(storage: Storage, places: int | None = None) -> None:
    storage.mail.add_record_writer(SlotBooked, write_slot_booked)
    asyncio.run(storage.commits.submit(_court_account))
    _open_slots(storage, places)


def _booking(who: Identity, mid: str) -> bytes:
    return _message(who.address, SAISINE, samples.saisine(booking=True), mid)


def _bookings(storage: Storage) -> int:
    hb = schema.table(schema.HearingBooking)
    with storage.reader.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(hb)).scalar_one())


def test_a_full_slot_refuses_the_saisine_until_a_rejection_frees_it(storage: Storage) -> None:
    _ready(storage)  # the sample's slot has one place (the default)

    async def go() -> None:
        await _send(storage, ME, CPH.saisine_address, _booking(ME, "<b1@x>"))
        assert _bookings(storage) == 1
        with pytest.raises(InvalidMessage) as refused:
            await _send(storage, OTHER, CPH.saisine_address, _booking(OTHER, "<b2@x>"))
        assert refused.value.text.startswith("date_booking.slot_id: ce créneau est complet")
        # Refused whole: filed nowhere, no place taken.
        assert await _count(storage, OTHER, "Saisines/Envoyées") == 0
        assert await _count(storage, COURT, "INBOX") == 1
        assert _bookings(storage) == 1

        # The registry rejects the first saisine: its place is free again.
        await _decide(storage, "saisine", "<b1@x>", decision="rejected", reason="incomplet")
        assert _bookings(storage) == 0
        await _send(storage, OTHER, CPH.saisine_address, _booking(OTHER, "<b2@x>"))
        assert await _count(storage, OTHER, "Saisines/Envoyées") == 1
        # Accepted, a saisine keeps its place.
        await _decide(storage, "saisine", "<b2@x>", decision="accepted", dossier="2026-0000301")
        assert _bookings(storage) == 1
        with pytest.raises(InvalidMessage):
            await _send(storage, ME, CPH.saisine_address, _booking(ME, "<b3@x>"))

    asyncio.run(go())


def test_a_slot_with_places_takes_that_many_saisines(storage: Storage) -> None:
    _ready(storage, places=2)

    async def go() -> None:
        await _send(storage, ME, CPH.saisine_address, _booking(ME, "<p1@x>"))
        await _send(storage, OTHER, CPH.saisine_address, _booking(OTHER, "<p2@x>"))
        with pytest.raises(InvalidMessage) as refused:
            await _send(storage, ME, CPH.saisine_address, _booking(ME, "<p3@x>"))
        assert "complet" in refused.value.text
        # Without a booking, a saisine goes through whatever the slots.
        plain = _message(ME.address, SAISINE, samples.saisine(), "<p4@x>")
        await _send(storage, ME, CPH.saisine_address, plain)
        assert await _count(storage, ME, "Saisines/Envoyées") == 2

    asyncio.run(go())
    assert _bookings(storage) == 2


def test_a_slot_no_list_opens_is_refused_in_the_transaction(storage: Storage) -> None:
    """The stored list is the truth: a slot the gateway's copy still had but
    the court's last list dropped (published on another node) is refused."""
    _ready(storage)
    later: dict[str, Any] = samples.hearing_slots()
    later["published_at"] = "2026-11-30T09:00:00+01:00"
    later["slots"][0]["id"] = "ANOTHER"
    published = SlotsPublished(HearingSlots.model_validate(later))

    def work(conn: Connection, ctx: WriteContext) -> None:
        write_slots_published(conn, ctx, published)

    asyncio.run(storage.commits.submit(work))
    with pytest.raises(InvalidMessage) as refused:
        asyncio.run(_send(storage, ME, CPH.saisine_address, _booking(ME, "<n1@x>")))
    assert "n'est pas ouvert" in refused.value.text
    assert _bookings(storage) == 0


def test_two_nodes_booking_the_last_place_at_once_take_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two gateway nodes on one PostgreSQL, a saisine each for the slot's one
    place at the same moment: one is filed, the other refused whole. The
    court system takes its saisines at its own SMTP endpoint (relayed): the
    two filings then share no mailbox, whose lock would order them anyway."""
    with running_storage(postgres_url, tmp_path / "blobs-a") as first:
        _ready(first)
        first.mail.add_record_writer(RelayOrder, write_relay_order)
        second = open_storage(postgres_url, tmp_path / "blobs-b")
        second.mail.add_record_writer(SlotBooked, write_slot_booked)
        second.mail.add_record_writer(RelayOrder, write_relay_order)
        second.start()
        try:
            nodes = [first, second]
            outcomes: list[BaseException | None] = [None, None]
            start = threading.Barrier(2)

            def book(index: int) -> None:
                who = (ME, OTHER)[index]
                start.wait()
                try:
                    asyncio.run(
                        _send(
                            nodes[index],
                            who,
                            CPH.saisine_address,
                            _booking(who, f"<race{index}@x>"),
                            frozenset({COURT.address}),
                        )
                    )
                except BaseException as error:  # reported below
                    outcomes[index] = error

            threads = [threading.Thread(target=book, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            refused = [o for o in outcomes if o is not None]
            assert len(refused) == 1 and isinstance(refused[0], InvalidMessage), outcomes
            assert "complet" in refused[0].text
            assert _bookings(first) == 1
            with first.reader.connect() as conn:
                queued = conn.execute(select(func.count()).select_from(RQ)).scalar_one()
            assert queued == 1  # one saisine on its way to the court
        finally:
            second.close()
