"""Dossier events applied with the message carrying them, the Fiche replaced, the purge:
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, func, select

from palais.juridictions_file import SAMPLE, load_directory
from palais.mailbox.boxes import BoxKind
from palais.mailbox.dossier_life import EventRefused, LifeApplied
from palais.mailbox.dossier_search import DossierCard, dossier_query
from palais.mailbox.errors import UnknownRecipient
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import EventKind, MailboxEvent
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, open_storage, schema
from palais.storage.directory import Directory
from palais.storage.dossier_life import DossierLives, PurgeRunner, StaleLife, read_life
from palais.storage.dossier_search import DossierSearch
from palais.storage.hearing_slots import HearingSlotsStore, stored_slots
from palais.storage.messages import insert_message
from palais.storage.placement import place_all
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import running_storage
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, OTHER

COURT = Identity(9, "court@x.test", Role.COURT_SYSTEM, "Court", "c" * 64, "court@x.test")
PARIS = ZoneInfo("Europe/Paris")
RECUS = f"Dossiers/{NUMBER}/Reçus"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _lives(storage: Storage, clock: Any = lambda: NOW, **hooks: Any) -> DossierLives:
    return DossierLives(
        storage.reader,
        storage.commits,
        storage.mail,
        zone=PARIS,
        sender="ne-pas-repondre@x.test",
        clock=clock,
        **hooks,
    )


def _event_mail(n: int, event: dict[str, Any], number: str = NUMBER) -> bytes:
    doc = {
        "dossier": number,
        "juridiction_code": "CPH-X",
        "occurred_at": "2026-11-30T10:00:00+01:00",
        "event": event,
    }
    msg = EmailMessage()
    msg["From"] = COURT.address
    msg["To"] = GREFFE
    msg["Subject"] = f"[{number}] événement {n}"
    msg["Message-ID"] = f"<event-{n}@x.test>"
    msg.set_content("Événement du dossier.")
    msg.add_attachment(
        json.dumps(doc).encode(),
        maintype="application",
        subtype="vnd.palais.dossier-event+json",
        filename="event.json",
    )
    return msg.as_bytes()


def _hearing(hid: str = "H1", room: str = "salle 3") -> dict[str, Any]:
    return {
        "id": hid,
        "date": "2027-01-14",
        "time": "09:30",
        "formation": "bureau de jugement",
        "type": "audience de jugement",
        "room": room,
    }


PLAN = FilingPlan(NUMBER, (Destination(GREFFE, BoxKind.RECUS),))


def _push(storage: Storage, lives: DossierLives, n: int, event: dict[str, Any]) -> None:
    data = _event_mail(n, event)
    asyncio.run(lives.file(COURT, data, summarize(data), PLAN))


def _count(storage: Storage, model: type[schema.Base]) -> int:
    with storage.reader.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.table(model))).scalar_one())


def _fiches(storage: Storage, who: Identity) -> list[email.message.EmailMessage]:
    """The Fiche dossier messages in ``who``'s dossier Reçus, by UID."""

    async def go() -> list[email.message.EmailMessage]:
        box = await storage.mail.mailbox(who, RECUS)
        entries = await storage.mail.entries(who, box.id)
        records = await storage.mail.records(who, box.id, [e.uid for e in entries])
        out = []
        for r in records:
            parsed = email.message_from_bytes(
                await storage.mail.read(r.blob), policy=email.policy.default
            )
            assert isinstance(parsed, email.message.EmailMessage)
            if str(parsed["Subject"]).endswith("Fiche dossier"):
                assert r.flags == frozenset({"\\Seen"})
                out.append(parsed)
        return out

    return asyncio.run(go())


def test_an_event_is_applied_with_its_message_and_the_fiche_replaced(storage: Storage) -> None:
    lives = _lives(storage)
    _push(storage, lives, 1, {"kind": "hearing_added", "hearing": _hearing()})
    with storage.reader.connect() as conn:
        found = read_life(conn, NUMBER)
    assert found is not None and found.life.version == 1
    assert [h.id for h in found.life.hearings] == ["H1"]
    for who in (ME, OTHER):
        (fiche,) = _fiches(storage, who)
        body = fiche.get_body(("html",))
        assert body is not None and "salle 3" in str(body.get_content())
        assert fiche["To"] == who.address

    async def inbox(who: Identity) -> int:
        return (await storage.mail.mailbox(who, "INBOX")).messages

    # The Fiche sits in the dossier's Reçus, not in the global INBOX view.
    assert asyncio.run(inbox(ME)) == 0
    box = asyncio.run(storage.mail.mailbox(ME, RECUS))
    heard: list[MailboxEvent] = []
    storage.hub.subscribe(box.id, heard.append)  # what a session with the box selected hears
    moved = {"kind": "hearing_moved", "hearing": _hearing(room="salle 7")}
    _push(storage, lives, 2, moved)
    # The old Fiche expunged, the new one arrived (the event mail went to the greffe).
    assert [e.kind for e in heard] == [EventKind.REMOVED, EventKind.ARRIVED]
    (fiche,) = _fiches(storage, ME)
    body = fiche.get_body(("html",))
    assert body is not None and "salle 7" in str(body.get_content())
    assert "salle 3" not in str(body.get_content())
    assert _count(storage, schema.DossierFiche) == 3  # ME, OTHER and the greffe's mailbox
    assert _count(storage, schema.DossierEventApplied) == 2


def test_a_refused_event_stores_nothing(storage: Storage) -> None:
    lives = _lives(storage)
    messages = _count(storage, schema.Message)
    with pytest.raises(EventRefused) as caught:
        _push(storage, lives, 1, {"kind": "hearing_moved", "hearing": _hearing("H9")})
    assert caught.value.details == ("event.hearing.id: aucune audience H9",)
    assert _count(storage, schema.Message) == messages
    assert _count(storage, schema.DossierLife) == 0
    assert _fiches(storage, ME) == []


def test_an_event_for_an_unknown_dossier_is_refused(storage: Storage) -> None:
    data = _event_mail(1, {"kind": "status_changed", "status": "en_cours"}, "2025-0009999")
    with pytest.raises(UnknownRecipient):
        asyncio.run(_lives(storage).file(COURT, data, summarize(data), PLAN))
    assert _count(storage, schema.Message) == 0


def test_the_same_event_sent_again_is_filed_not_applied_twice(storage: Storage) -> None:
    lives = _lives(storage)
    _push(storage, lives, 1, {"kind": "hearing_added", "hearing": _hearing()})
    _push(storage, lives, 1, {"kind": "hearing_added", "hearing": _hearing()})
    with storage.reader.connect() as conn:
        found = read_life(conn, NUMBER)
    assert found is not None and found.life.version == 1


def test_a_change_planned_on_an_older_life_is_refused_whole(storage: Storage) -> None:
    lives = _lives(storage)
    asyncio.run(lives.refresh_fiche(NUMBER))
    with storage.reader.connect() as conn:
        found = read_life(conn, NUMBER)
    assert found is not None
    stale = LifeApplied(
        number=NUMBER,
        version_before=found.life.version + 1,
        changes=(),
        life=found.life,
        fiches=(),
        at=NOW,
    )
    data = _event_mail(5, {"kind": "status_changed", "status": "en_cours"})
    plan = FilingPlan(NUMBER, PLAN.destinations, records=(stale,))
    with pytest.raises(StaleLife):
        asyncio.run(storage.mail.file(COURT, data, summarize(data), plan))
    assert _count(storage, schema.Message) == 3  # the three Fiches, not the message


def test_refresh_fiche_gives_every_mailbox_of_the_dossier_its_fiche(storage: Storage) -> None:
    lives = _lives(storage)
    asyncio.run(lives.refresh_fiche(NUMBER))
    asyncio.run(lives.refresh_fiche(NUMBER))  # replaced, not added
    assert len(_fiches(storage, ME)) == len(_fiches(storage, OTHER)) == 1
    with pytest.raises(UnknownRecipient):
        asyncio.run(lives.refresh_fiche("2025-0009999"))


def _receipt(conn: Connection, ctx: WriteContext) -> None:
    """A receipt mail in ME's dossier Accusés de réception (as the evidence service files one)."""
    data = b"From: g@x.test\r\nSubject: Accuse de reception\r\n\r\nrecu\r\n"
    mid, _ = insert_message(
        conn, ctx, data, summarize(data), internaldate=NOW, sender="", fingerprint="", dossier_id=1
    )
    place_all(conn, ctx, mid, NUMBER, [(ME.address, BoxKind.ACCUSES, frozenset())])


def test_a_terminated_dossier_is_purged_after_its_retention_receipts_excepted(
    storage: Storage,
) -> None:
    lives = _lives(storage)
    _push(storage, lives, 1, {"kind": "hearing_added", "hearing": _hearing()})
    _push(storage, lives, 2, {"kind": "status_changed", "status": "termine"})
    receipt = b"From: g@x.test\r\nSubject: Accuse de reception\r\n\r\nrecu\r\n"
    asyncio.run(storage.commits.submit(_receipt, [receipt]))
    ended = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 10:00+01:00
    now = [ended + timedelta(days=364)]
    runner = PurgeRunner(
        storage.reader, storage.commits, retention=timedelta(days=365), clock=lambda: now[0]
    )
    assert asyncio.run(runner.run_due()) == []
    greffier = Identity(7, "g1@x.test", Role.GREFFIER, "G", "d" * 64, GREFFE)
    assert asyncio.run(storage.mail.mailbox(greffier, RECUS)).messages == 3  # 2 events + Fiche
    now[0] = ended + timedelta(days=365)
    (done,) = asyncio.run(runner.run_due())
    assert done["dossier"] == NUMBER
    assert asyncio.run(runner.run_due()) == []  # once

    async def names(who: Identity) -> list[str]:
        return [b.name for b in await storage.mail.list_mailboxes(who)]

    assert not any(n.startswith("Dossiers/") for n in asyncio.run(names(ME)))
    # The receipt stays, in the global view; nothing else of the dossier does.
    accuses = asyncio.run(storage.mail.mailbox(ME, "Accusés de réception"))
    assert accuses.messages == 1
    assert _count(storage, schema.Message) == 1
    assert _count(storage, schema.Participation) == 0
    with pytest.raises(UnknownRecipient):
        asyncio.run(lives.refresh_fiche(NUMBER))


def test_purge_events_reach_open_sessions(storage: Storage) -> None:
    lives = _lives(storage)
    _push(storage, lives, 1, {"kind": "status_changed", "status": "termine"})
    box = asyncio.run(storage.mail.mailbox(ME, RECUS))
    heard: list[MailboxEvent] = []
    storage.hub.subscribe(box.id, heard.append)
    runner = PurgeRunner(
        storage.reader,
        storage.commits,
        retention=timedelta(days=1),
        clock=lambda: NOW + timedelta(days=2),
    )
    asyncio.run(runner.run_due())
    assert [e.kind for e in heard] == [EventKind.REMOVED]  # ME's Fiche (and then the box)


# -- opened hearing slots ----------------------------------------------------------


def _slots_mail(published: str, *ids: str) -> bytes:
    doc = {
        "juridiction_code": "CPH-X",
        "published_at": published,
        "slots": [
            {
                "id": i,
                "starts_at": "2027-01-14T09:30:00+01:00",
                "formation": "bureau de conciliation et d'orientation",
            }
            for i in ids
        ],
    }
    msg = EmailMessage()
    msg["From"] = COURT.address
    msg["To"] = GREFFE
    msg["Subject"] = f"[{NUMBER}] créneaux {published}"
    msg["Message-ID"] = f"<slots-{published}@x.test>"
    msg.set_content("Créneaux ouverts.")
    msg.add_attachment(
        json.dumps(doc).encode(),
        maintype="application",
        subtype="vnd.palais.hearing-slots+json",
        filename="creneaux.json",
    )
    return msg.as_bytes()


def test_opened_slots_are_kept_with_the_message_publishing_them(storage: Storage) -> None:
    lives = _lives(storage)
    slots = HearingSlotsStore(storage.reader)
    for published, ids in (
        ("2026-11-30T08:00:00+01:00", ("S1", "S2")),
        ("2026-11-29T08:00:00+01:00", ("OLD",)),  # published earlier, arriving late
    ):
        data = _slots_mail(published, *ids)
        asyncio.run(lives.file(COURT, data, summarize(data), PLAN))
    assert [s.id for s in asyncio.run(slots.opened("CPH-X"))] == ["S1", "S2"]
    before = datetime(2027, 1, 1, tzinfo=UTC)
    found = asyncio.run(slots.booking_open("CPH-X", "S2", before))
    assert found is not None and found.id == "S2"
    assert asyncio.run(slots.booking_open("CPH-X", "OLD", before)) is None
    assert asyncio.run(slots.booking_open("CPH-X", "S2", datetime(2027, 2, 1, tzinfo=UTC))) is None
    assert asyncio.run(slots.booking_open("TJ-Y", "S1")) is None
    with storage.reader.connect() as conn:
        (kept,) = stored_slots(conn)
    assert kept.juridiction_code == "CPH-X" and len(kept.slots) == 2


def test_each_event_applied_brings_the_notices_committed_with_it(storage: Storage) -> None:
    told: list[tuple[str, datetime]] = []

    def notices(number: str, at: datetime) -> tuple[()]:
        told.append((number, at))
        return ()

    lives = _lives(storage, notices=notices)
    _push(storage, lives, 1, {"kind": "hearing_added", "hearing": _hearing()})
    _push(storage, lives, 1, {"kind": "hearing_added", "hearing": _hearing()})  # resent
    with pytest.raises(EventRefused):
        _push(storage, lives, 2, {"kind": "hearing_cancelled", "hearing_id": "H9"})
    assert told == [(NUMBER, datetime.fromisoformat("2026-11-30T10:00:00+01:00"))]


def test_two_nodes_applying_events_at_once_lose_none(postgres_url: str, tmp_path: Path) -> None:
    """Two gateway nodes on one PostgreSQL, an event each for the same dossier
    at the same moment: whichever commits second carries its event out on the
    life the first left (planned again if needed), and both hearings are there."""
    with running_storage(postgres_url, tmp_path / "blobs-a") as first:
        second = open_storage(postgres_url, tmp_path / "blobs-b")
        second.start()
        try:
            nodes = [_lives(first), _lives(second)]
            errors: list[BaseException] = []

            def push(index: int) -> None:
                try:
                    _push(
                        first,
                        nodes[index],
                        10 + index,
                        {
                            "kind": "hearing_added",
                            "hearing": _hearing(f"H{index}"),
                        },
                    )
                except BaseException as error:  # reported below
                    errors.append(error)

            threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            with first.reader.connect() as conn:
                found = read_life(conn, NUMBER)
            assert found is not None and found.life.version == 2
            assert sorted(h.id for h in found.life.hearings) == ["H0", "H1"]
            assert _count(first, schema.DossierFiche) == 3
        finally:
            second.close()


def test_the_dossier_search_finds_the_parties_the_court_s_events_leave(storage: Storage) -> None:
    lives = _lives(storage)
    search = DossierSearch(storage.reader)
    directory = load_directory(SAMPLE)

    def card() -> DossierCard:
        (found,) = asyncio.run(search.search(dossier_query({"numero": NUMBER}, directory)))
        return found

    def lawyers() -> list[str | None]:
        dp = schema.table(schema.DossierParty)
        with storage.reader.connect() as conn:
            return list(conn.execute(select(dp.c.lawyer).order_by(dp.c.id)).scalars())

    company = {"id": "P1", "quality": "demandeur", "person_type": "morale"}
    _push(storage, lives, 1, {"kind": "party_changed", "party": {**company, "name": "Vins SAS"}})
    assert card().demandeur == ("Vins SAS",)
    renamed = {**company, "name": "Grands Crus SAS"}
    _push(storage, lives, 2, {"kind": "party_changed", "party": renamed})
    person = {"id": "P2", "quality": "defendeur", "person_type": "physique", "name": "Léger Amélie"}
    _push(storage, lives, 3, {"kind": "party_changed", "party": person})
    assert (card().demandeur, card().defendeur) == (("Grands Crus SAS",), ("Léger Amélie",))
    by_old_name = {"type": "CPH", "juridiction": "CPH-BORDEAUX", "demandeur": "Vins"}
    assert asyncio.run(search.search(dossier_query(by_old_name, directory))) == []
    constituted = {
        "kind": "lawyer_changed",
        "party_id": "P2",
        "change": "constituted",
        "lawyer_address": OTHER.address,
    }
    _push(storage, lives, 4, constituted)
    assert lawyers() == [None, OTHER.address]
    # An event that changes no party leaves the rows as they stand.
    _push(storage, lives, 5, {"kind": "hearing_added", "hearing": _hearing()})
    assert lawyers() == [None, OTHER.address]
    assert card().defendeur == ("Léger Amélie",)


def test_a_lawyer_the_court_constitutes_takes_part_with_the_fiche(storage: Storage) -> None:
    """The court system's word that a lawyer represents a party: an active
    lawyer's account joins the dossier (boxes, participants) and gets the
    Fiche; an unknown address or another role stays a name on the Fiche."""
    third = Identity(7, "c@x.test", Role.AVOCAT, "C", "9" * 64, "c@x.test")

    def accounts(conn: Connection, _ctx: WriteContext) -> None:
        Directory.add_account(conn, address=third.address, role=Role.AVOCAT, display_name="C")
        Directory.add_account(conn, address="clerk2@x.test", role=Role.GREFFIER, display_name="G")

    asyncio.run(storage.commits.submit(accounts))
    forgotten: list[str] = []
    lives = _lives(storage, forget_dossier=forgotten.append)
    party = {"id": "P1", "quality": "defendeur", "person_type": "morale", "name": "Vins SAS"}
    _push(storage, lives, 1, {"kind": "party_changed", "party": party})
    assert forgotten == []  # nobody constituted yet

    def constitute(n: int, address: str) -> None:
        event = {
            "kind": "lawyer_changed",
            "party_id": "P1",
            "change": "constituted",
            "lawyer_address": address,
        }
        _push(storage, lives, n, event)

    constitute(2, third.address)
    assert forgotten == [NUMBER]
    fresh = Directory(storage.reader, storage.commits)
    assert third.address in asyncio.run(fresh.participants(NUMBER))
    (fiche,) = _fiches(storage, third)  # in their Dossiers/<n>/Reçus, which they now have
    assert fiche["To"] == third.address
    constitute(3, "clerk2@x.test")
    constitute(4, "inconnu@barreau.test")
    again = Directory(storage.reader, storage.commits)
    participants = asyncio.run(again.participants(NUMBER))
    assert "clerk2@x.test" not in participants and "inconnu@barreau.test" not in participants
    assert len(_fiches(storage, third)) == 1  # replaced at each event, never two
