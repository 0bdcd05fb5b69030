"""Alerts kept and sent: settings, notices derived from what is filed, the
outbox sent through a real SMTP relay (aiosmtpd) at once or as a digest (the
clock moved by the test), retries, restarts and two nodes; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from palais.gateway.alert_sender import AlertSender, SmtpRelay
from palais.mailbox.alerts import AlertMode, AlertSetting, DossierEventAlert, digest_at
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, open_storage, schema
from palais.storage.alerts import AlertStore, write_dossier_event_alert
from palais.storage.dossier_life import DossierLives
from tests.alerts_relay import OutsideRelay
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import running_storage
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, OTHER, run

OUTSIDE = "maitre.a@exemple.fr"
UTC_ZONE = UTC


def letter(n: int) -> bytes:
    return (
        f"From: {OTHER.address}\r\nSubject: [{NUMBER}] SECRET-SUBJECT {n}\r\n"
        f"Message-ID: <alert-{n}@x>\r\n\r\nSECRET-BODY {n}\r\n"
    ).encode()


async def file_to_me(storage: Storage, n: int, kind: BoxKind = BoxKind.RECUS) -> None:
    """OTHER writes in the dossier; ME holds a copy in ``kind``."""
    plan = FilingPlan(
        NUMBER,
        (
            Destination(OTHER.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(GREFFE, BoxKind.RECUS),
            Destination(ME.address, kind),
        ),
    )
    await storage.mail.file(OTHER, letter(n), summarize(letter(n)), plan)


def setting(mode: AlertMode = AlertMode.IMMEDIATE, since: datetime | None = None) -> AlertSetting:
    return AlertSetting(ME.address, ME.mailbox_owner, OUTSIDE, mode, since or datetime.now(UTC))


class Clock:
    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


def sender_for(
    store: AlertStore, relay: OutsideRelay, clock: Clock, hour: time = time(8, 0)
) -> AlertSender:
    return AlertSender(
        store,
        SmtpRelay("127.0.0.1", relay.port, timeout=5),
        sender="alertes@x.test",
        domain="x.test",
        digest_hour=hour,
        zone=UTC_ZONE,
        retry_interval=30,
        clock=clock,
    )


@pytest.fixture
def relay() -> Iterator[OutsideRelay]:
    r = OutsideRelay()
    yield r
    r.stop()


def notices(storage: Storage) -> list[tuple[str, str, str]]:
    an = schema.table(schema.AlertNotice)
    with storage.reader.connect() as conn:
        return [
            (r.person, r.kind, r.state)
            for r in conn.execute(select(an.c.person, an.c.kind, an.c.state).order_by(an.c.id))
        ]


def test_settings_are_kept_replaced_and_removed(storage: Storage) -> None:
    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        assert await store.setting(ME.address) is None
        first = await store.put(setting())
        again = await store.put(
            AlertSetting(
                ME.address,
                ME.address,
                "autre@exemple.fr",
                AlertMode.DIGEST,
                first.since + timedelta(days=3),
            )
        )
        # Changing the address or the mode does not forget what was pending.
        assert again.since == first.since and again.mode is AlertMode.DIGEST
        assert (await store.setting(ME.address)) == again
        assert await store.remove(ME.address) is True
        assert await store.remove(ME.address) is False
        assert await store.setting(ME.address) is None

    run(go())


def test_new_messages_and_receipts_in_the_dossier_make_notices_once(storage: Storage) -> None:
    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await file_to_me(storage, 0)  # before the setting: not told
        await store.put(setting())
        await file_to_me(storage, 1)
        await file_to_me(storage, 2, BoxKind.ENVOYES)  # not a Reçus: not told
        assert await store.gather(datetime.now(UTC)) == 1
        assert await store.gather(datetime.now(UTC)) == 0  # read again: nothing added
        # A second node (another store on the same database) adds nothing either.
        assert await AlertStore(storage.reader, storage.commits).gather(datetime.now(UTC)) == 0
        assert notices(storage) == [(ME.address, "message", "pending")]
        # OTHER has no alert: their Envoyés and the greffe's Reçus are not told.

    run(go())


def test_a_message_moved_back_from_supprimes_is_not_new(storage: Storage) -> None:
    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        await file_to_me(storage, 1)
        assert await store.gather(datetime.now(UTC)) == 1
        recus = await storage.mail.mailbox(ME, f"Dossiers/{NUMBER}/Reçus")
        trash = await storage.mail.mailbox(ME, f"Dossiers/{NUMBER}/Supprimés")
        await storage.mail.move(ME, recus.id, [1], trash.name)
        await storage.mail.move(ME, trash.id, [1], recus.name)
        fresh = AlertStore(storage.reader, storage.commits)  # after a restart: the whole window
        assert await fresh.gather(datetime.now(UTC)) == 0
        assert len(notices(storage)) == 1

    run(go())


def test_a_dossier_event_carried_by_a_plan_is_told_to_its_followers(storage: Storage) -> None:
    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        at = datetime.now(UTC)
        await storage.commits.submit(
            lambda conn, ctx: write_dossier_event_alert(conn, ctx, DossierEventAlert(NUMBER, at))
        )
        assert notices(storage) == [(ME.address, "dossier-event", "pending")]

    run(go())


def test_an_immediate_notice_reaches_the_relay_without_the_content(
    storage: Storage, relay: OutsideRelay
) -> None:
    relay.start()

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        await file_to_me(storage, 1)
        sender = sender_for(store, relay, Clock())
        assert await sender.run_once() == 1
        assert await sender.run_once() == 0

    run(go())
    (mail,) = relay.mails()
    assert mail["To"] == OUTSIDE and mail["From"] == "alertes@x.test"
    assert mail["Subject"] == f"[Palais] Dossier {NUMBER} : nouveau message reçu"
    raw = relay.received[0][2]
    assert b"SECRET" not in raw and OTHER.address.encode() not in raw
    assert notices(storage) == [(ME.address, "message", "sent")]


def test_relay_down_then_back_sends_once_across_a_restart(
    storage: Storage, relay: OutsideRelay
) -> None:
    clock = Clock()

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        await file_to_me(storage, 1)
        sender = sender_for(store, relay, clock)
        assert await sender.run_once() == 0  # relay down: kept, tried again later
        assert sender.failures == 1
        relay.start()
        assert await sender.run_once() == 0  # not before its retry time
        clock.now = datetime.now(UTC) + timedelta(seconds=31)
        # The gateway restarted meanwhile: a new store and sender.
        restarted = sender_for(AlertStore(storage.reader, storage.commits), relay, clock)
        assert await restarted.run_once() == 1
        assert await restarted.run_once() == 0
        clock.now += timedelta(hours=2)
        assert await sender.run_once() == 0  # the old one finds nothing either

    run(go())
    assert len(relay.wait_for(1)) == 1


def test_two_nodes_send_each_notice_once(storage: Storage, relay: OutsideRelay) -> None:
    relay.start()

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        for n in range(3):
            await file_to_me(storage, n)
        one = sender_for(store, relay, Clock())
        two = sender_for(AlertStore(storage.reader, storage.commits), relay, Clock())
        sent = await asyncio.gather(one.run_once(), two.run_once())
        assert sum(sent) >= 1
        assert await one.run_once() + await two.run_once() == 0

    run(go())
    told = " ".join(str(m["Subject"]) for m in relay.mails())
    # Three arrivals, each in exactly one mail (one mail of three, or several).
    assert len(notices(storage)) == 3 and all(s == "sent" for _, _, s in notices(storage))
    assert "nouveau" in told or "Nouveautés" in told


def test_a_digest_gathers_the_day_at_the_configured_hour(
    storage: Storage, relay: OutsideRelay
) -> None:
    relay.start()
    clock = Clock()
    real = datetime.now(UTC)
    hour = (real + timedelta(hours=2)).time().replace(microsecond=0)

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting(AlertMode.DIGEST))
        await file_to_me(storage, 1)
        await file_to_me(storage, 2)
        await storage.commits.submit(
            lambda conn, ctx: write_dossier_event_alert(
                conn, ctx, DossierEventAlert(NUMBER, datetime.now(UTC))
            )
        )
        sender = sender_for(store, relay, clock, hour)
        due = digest_at(datetime.now(UTC), hour, UTC_ZONE)
        clock.now = due - timedelta(seconds=1)
        assert await sender.run_once() == 0  # not yet the hour
        clock.now = due
        assert await sender.run_once() == 1
        clock.now = due + timedelta(hours=1)
        assert await sender.run_once() == 0

    run(go())
    (mail,) = relay.mails()
    assert str(mail["Subject"]).startswith("[Palais] Récapitulatif du ")
    assert "3 nouveautés dans 1 dossier" in str(mail["Subject"])
    assert isinstance(mail, EmailMessage)
    body = mail.get_content()
    assert f"- dossier {NUMBER} : 2 nouveaux messages reçus, 1 événement du dossier" in body
    assert "SECRET" not in body


def _told(mail: EmailMessage) -> int:
    """How many events a notice mail tells of (one, or "N nouveautés")."""
    subject = str(mail["Subject"])
    if "nouveauté" not in subject:
        return 1
    return int(subject.split(" : ")[1].split(" ")[0])


def test_two_nodes_on_postgresql_send_each_notice_once(
    postgres_url: str, tmp_path: Path, relay: OutsideRelay
) -> None:
    """Two gateways' stores (two writers, two connection pools) on one
    database: SKIP LOCKED and the lease keep each notice to one of them."""
    relay.start()
    with running_storage(postgres_url, tmp_path / "one") as one:
        two = open_storage(postgres_url, tmp_path / "two")
        two.start()
        try:

            async def go() -> None:
                await AlertStore(one.reader, one.commits).put(setting())
                for n in range(6):
                    await file_to_me(one, n)
                nodes = [
                    sender_for(AlertStore(st.reader, st.commits), relay, Clock())
                    for st in (one, two, one, two)
                ]
                for _ in range(3):
                    await asyncio.gather(*(node.run_once() for node in nodes))

            run(go())
            assert sum(_told(m) for m in relay.mails()) == 6
            assert [s for _, _, s in notices(one)] == ["sent"] * 6
        finally:
            two.close()


def test_notices_told_long_ago_leave_the_outbox(storage: Storage) -> None:
    clock = [0.0]

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits, grace=10, monotonic=lambda: clock[0])
        await store.put(setting())
        await file_to_me(storage, 1)
        assert await store.gather(datetime.now(UTC)) == 1
        an = schema.table(schema.AlertNotice)
        await storage.commits.submit(
            lambda conn, ctx: conn.execute(an.update().values(state="sent"))
        )
        clock[0] = 11.0  # the cursor passes the message
        await store.gather(datetime.now(UTC))
        assert len(notices(storage)) == 1  # told today: kept
        clock[0] = 22.0
        await file_to_me(storage, 2)  # something new, for the cursor to move again
        assert await store.gather(datetime.now(UTC)) == 1
        clock[0] = 40.0
        await store.gather(datetime.now(UTC) + timedelta(days=31))
        assert [k for _, k, _ in notices(storage)] == ["message"]  # the new one only
        assert [s for _, _, s in notices(storage)] == ["pending"]

    run(go())


def test_a_deactivated_account_is_told_nothing_more(storage: Storage, relay: OutsideRelay) -> None:
    relay.start()

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        await file_to_me(storage, 1)
        assert await store.gather(datetime.now(UTC)) == 1
        ac = schema.table(schema.Account)
        await storage.commits.submit(
            lambda conn, ctx: conn.execute(
                ac.update().where(ac.c.address == ME.address).values(active=False)
            )
        )
        await file_to_me(storage, 2)
        sender = sender_for(AlertStore(storage.reader, storage.commits), relay, Clock())
        assert await sender.run_once() == 0
        assert notices(storage) == [(ME.address, "message", "pending")]

    run(go())


def test_a_dossier_event_is_told_once_not_its_fiche(storage: Storage) -> None:
    """A court system's event, applied by the dossier's life with its
    DossierEventAlert: told as the dossier's event; the Fiche dossier it
    puts in ME's Reçus is no new message."""
    court = Identity(9, "court@x.test", Role.COURT_SYSTEM, "Court", "c" * 64, "court@x.test")
    lives = DossierLives(
        storage.reader,
        storage.commits,
        storage.mail,
        zone=UTC_ZONE,
        sender="ne-pas-repondre@x.test",
        notices=lambda number, at: (DossierEventAlert(number, at),),
    )
    storage.mail.add_record_writer(DossierEventAlert, write_dossier_event_alert)
    doc = {
        "dossier": NUMBER,
        "juridiction_code": "CPH-X",
        "occurred_at": datetime.now(UTC).isoformat(),
        "event": {
            "kind": "hearing_added",
            "hearing": {
                "id": "H1",
                "date": "2027-01-14",
                "time": "09:30",
                "formation": "bureau de jugement",
                "type": "audience de jugement",
                "room": "salle 3",
            },
        },
    }
    event = EmailMessage()
    event["From"] = court.address
    event["To"] = GREFFE
    event["Subject"] = f"[{NUMBER}] événement"
    event["Message-ID"] = "<event-1@x.test>"
    event.set_content("Événement du dossier.")
    event.add_attachment(
        json.dumps(doc).encode(),
        maintype="application",
        subtype="vnd.palais.dossier-event+json",
        filename="event.json",
    )
    data = event.as_bytes()

    async def go() -> None:
        store = AlertStore(storage.reader, storage.commits)
        await store.put(setting())
        plan = FilingPlan(NUMBER, (Destination(GREFFE, BoxKind.RECUS),))
        await lives.file(court, data, summarize(data), plan)
        fiche = await storage.mail.mailbox(ME, f"Dossiers/{NUMBER}/Reçus")
        assert fiche.messages == 1  # the Fiche dossier
        assert await store.gather(datetime.now(UTC)) == 0
        assert notices(storage) == [(ME.address, "dossier-event", "pending")]

    run(go())
