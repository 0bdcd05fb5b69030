"""Departures carried out by the store, on SQLite and PostgreSQL, with a clock the test moves.

What moves at the effective date (a magistrate's dossiers and mail, a
clerk's service), the lawyers' notices without a successor, nothing after a
cancel, exactly once however often the runner looks, and the audit events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from email.parser import BytesParser
from email.policy import default
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from palais.mailbox.audit import AuditAction
from palais.mailbox.departure import check_departure
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind
from palais.storage import Storage, schema
from palais.storage.audit import query
from palais.storage.departure import DepartureRunner, carry_out, declare, listing, pending_of
from palais.storage.directory import Directory
from palais.storage.messages import insert_message
from palais.storage.placement import place_all
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, OTHER

AC = schema.table(schema.Account)
PA = schema.table(schema.Participation)
DO = schema.table(schema.Dossier)
SV = schema.table(schema.Service)

PARIS = ZoneInfo("Europe/Paris")
LAST_DAY = date(2026, 12, 4)
# 00:00 on 5 December in Paris is 23:00 UTC on the 4th.
EFFECTIVE = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)
DECLARED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
M1, M2 = "juge.un@x.test", "juge.deux@x.test"
CLERK, NEWCLERK = "greffier.un@x.test", "greffier.deux@x.test"
NOTE = (
    b"From: greffe@x.test\r\nSubject: [2025-0000138] audience\r\nMessage-ID: <n1@x>\r\n\r\n"
    b"le 12\r\n"
)


def staff(conn: Connection, _ctx: WriteContext) -> None:
    service = conn.execute(select(SV.c.id).where(SV.c.address == GREFFE)).scalar_one()
    dossier = conn.execute(select(DO.c.id).where(DO.c.number == NUMBER)).scalar_one()
    m1 = Directory.add_account(conn, address=M1, role=Role.MAGISTRAT, display_name="Juge Un")
    Directory.add_account(conn, address=M2, role=Role.MAGISTRAT, display_name="Juge Deux")
    Directory.add_account(
        conn, address=CLERK, role=Role.GREFFIER, display_name="Greffier Un", service_id=service
    )
    # A clerk who just arrived: registered on first use, in no service yet.
    Directory.add_account(conn, address=NEWCLERK, role=Role.GREFFIER, display_name="Greffier Deux")
    Directory.add_participant(conn, dossier_id=dossier, account_id=m1, capacity="magistrat")


def file_note_for_m1(conn: Connection, ctx: WriteContext) -> None:
    mid, _ = insert_message(
        conn,
        ctx,
        NOTE,
        summarize(NOTE),
        internaldate=DECLARED,
        sender=GREFFE,
        fingerprint="",
        dossier_id=None,
    )
    place_all(conn, ctx, mid, NUMBER, [(M1, BoxKind.RECUS, frozenset({"\\Seen"}))])


def submit(
    storage: Storage, work: Callable[[Connection, WriteContext], Any], blobs: Any = ()
) -> Any:
    async def go() -> Any:
        return await storage.commits.submit(work, blobs)

    return asyncio.run(go())


def prepare(storage: Storage) -> None:
    submit(storage, staff)
    submit(storage, file_note_for_m1, [NOTE])


def set_departure(storage: Storage, address: str, successor: str | None) -> int:
    def work(conn: Connection, _ctx: WriteContext) -> int:
        departing = Directory.account_by_address(conn, address)
        taker = None if successor is None else Directory.account_by_address(conn, successor)
        assert departing is not None
        when = check_departure(departing, taker, last_day=LAST_DAY, now=DECLARED, zone=PARIS)
        assert when == EFFECTIVE
        departure_id, _ = declare(
            conn,
            departing,
            taker,
            last_day=LAST_DAY,
            effective_at=when,
            actor="operator:t",
            now=DECLARED,
        )
        return departure_id

    result: int = submit(storage, work)
    return result


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def runner(storage: Storage, clock: Clock) -> DepartureRunner:
    return DepartureRunner(storage.reader, storage.commits, zone=PARIS, clock=clock)


def run_due(r: DepartureRunner) -> list[dict[str, object]]:
    return asyncio.run(r.run_due())


def account(storage: Storage, address: str) -> Any:
    with storage.reader.connect() as conn:
        return conn.execute(select(AC).where(AC.c.address == address)).one()


def boxes(storage: Storage, who: Identity) -> set[str]:
    async def go() -> set[str]:
        return {b.name for b in await storage.mail.list_mailboxes(who)}

    return asyncio.run(go())


def identity(address: str, owner: str | None = None) -> Identity:
    return Identity(0, address, Role.MAGISTRAT, "x", "0" * 64, owner or address)


def messages_in(storage: Storage, who: Identity, box: str) -> list[bytes]:
    async def go() -> list[bytes]:
        found = await storage.mail.mailbox(who, box)
        entries = await storage.mail.entries(who, found.id)
        records = await storage.mail.records(who, found.id, [e.uid for e in entries])
        return [await storage.mail.read(r.blob) for r in records]

    return asyncio.run(go())


def test_a_magistrate_s_dossiers_and_mail_go_to_the_successor_at_the_date(
    storage: Storage,
) -> None:
    prepare(storage)
    departure = set_departure(storage, M1, M2)
    clock = Clock(EFFECTIVE - timedelta(seconds=1))
    r = runner(storage, clock)
    assert run_due(r) == []  # 23:59:59 in Paris on the last day: not yet
    assert account(storage, M1).active
    clock.now = EFFECTIVE
    [outcome] = run_due(r)
    assert outcome["successor"] == M2 and outcome["dossiers_joined"] == [NUMBER]
    assert outcome["messages_copied"] == 1
    assert not account(storage, M1).active and account(storage, M2).active
    with storage.reader.connect() as conn:
        capacity = conn.execute(
            select(PA.c.capacity).where(PA.c.account_id == account(storage, M2).id)
        ).scalar_one()
    assert capacity == "magistrat"
    assert f"Dossiers/{NUMBER}/Reçus" in boxes(storage, identity(M2))
    assert messages_in(storage, identity(M2), f"Dossiers/{NUMBER}/Reçus") == [NOTE]
    # The departed keeps their history; the runner never does it twice.
    assert messages_in(storage, identity(M1), f"Dossiers/{NUMBER}/Reçus") == [NOTE]
    clock.now = EFFECTIVE + timedelta(days=1)
    assert run_due(r) == []
    assert submit(storage, lambda c, x: carry_out(c, x, departure, clock.now, PARIS)) is None
    assert r.executed == 1
    [row] = listing(storage.reader, every=True)
    assert row.state.value == "done" and row.done_at == EFFECTIVE and row.outcome == outcome
    actions = [e.action for e in query(storage.reader, account=M1)]
    assert actions == [
        AuditAction.DEPARTURE_SET,
        AuditAction.DEPARTURE_CARRIED_OUT,
        AuditAction.ACCOUNT_DEACTIVATED,
    ]


def test_a_clerk_s_successor_joins_the_service(storage: Storage) -> None:
    prepare(storage)
    set_departure(storage, CLERK, NEWCLERK)
    [outcome] = run_due(runner(storage, Clock(EFFECTIVE + timedelta(hours=3))))
    assert outcome["joined_service"] == GREFFE
    with storage.reader.connect() as conn:
        service = conn.execute(select(SV.c.id).where(SV.c.address == GREFFE)).scalar_one()
    assert account(storage, NEWCLERK).service_id == service
    assert not account(storage, CLERK).active
    # Nobody was told: the service keeps its dossiers and its clerk.
    assert messages_in(storage, ME, f"Dossiers/{NUMBER}/Reçus") == []


def test_without_a_successor_each_lawyer_of_each_dossier_is_told(storage: Storage) -> None:
    prepare(storage)
    set_departure(storage, CLERK, None)
    [outcome] = run_due(runner(storage, Clock(EFFECTIVE)))
    assert sorted(outcome["lawyers_notified"]) == [  # type: ignore[call-overload]
        f"{ME.address} {NUMBER}",
        f"{OTHER.address} {NUMBER}",
    ]
    for lawyer in (ME, OTHER):
        [notice] = messages_in(storage, lawyer, f"Dossiers/{NUMBER}/Reçus")
        summary = summarize(notice)
        assert summary.subject.startswith(f"[{NUMBER}] Départ du greffier")
        assert lawyer.address in summary.to_addr and GREFFE in summary.from_addr
        body = BytesParser(policy=default).parsebytes(notice).get_body()
        assert body is not None
        text = body.get_content()
        assert "Aucun successeur" in text and "CPH" in text and "Greffier Un" in text
        assert messages_in(storage, lawyer, "INBOX") == [notice]
    # The dossier stays with the service.
    with storage.reader.connect() as conn:
        service = conn.execute(
            select(SV.c.address).join(DO, DO.c.service_id == SV.c.id).where(DO.c.number == NUMBER)
        ).scalar_one()
    assert service == GREFFE
    [event] = [e for e in query(storage.reader, action=AuditAction.DEPARTURE_CARRIED_OUT)]
    assert event.subject == CLERK and event.actor == "gateway"
    assert json.loads(json.dumps(event.detail))["lawyers_notified"]


def test_a_successor_who_cannot_take_them_any_more_is_set_aside(storage: Storage) -> None:
    prepare(storage)
    set_departure(storage, M1, M2)
    submit(storage, lambda c, _x: Directory.deactivate(c, M2))
    [outcome] = run_due(runner(storage, Clock(EFFECTIVE)))
    assert "successor" not in outcome
    assert "deactivated" in str(outcome["successor_set_aside"])
    assert outcome["lawyers_notified"]  # told as if there were none


def test_a_cancelled_departure_never_happens(storage: Storage) -> None:
    prepare(storage)
    set_departure(storage, M1, M2)

    def cancel_it(conn: Connection, _ctx: WriteContext) -> None:
        from palais.storage.departure import cancel

        row = pending_of(conn, account(storage, M1).id)
        assert row is not None
        cancel(conn, row, actor="operator:t", reason="reste en poste")

    submit(storage, cancel_it)
    assert run_due(runner(storage, Clock(EFFECTIVE + timedelta(days=30)))) == []
    assert account(storage, M1).active
    assert f"Dossiers/{NUMBER}/Reçus" not in boxes(storage, identity(M2))
    [row] = listing(storage.reader, every=True)
    assert row.state.value == "cancelled"
    assert listing(storage.reader) == []
    assert [e.action for e in query(storage.reader, account=M1)] == [
        AuditAction.DEPARTURE_SET,
        AuditAction.DEPARTURE_CANCELLED,
    ]


def test_two_runners_carry_a_departure_out_once(storage: Storage) -> None:
    prepare(storage)
    set_departure(storage, CLERK, None)
    clock = Clock(EFFECTIVE)
    first, second = runner(storage, clock), runner(storage, clock)

    async def both() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        a, b = await asyncio.gather(first.run_due(), second.run_due())
        return a, b

    a, b = asyncio.run(both())
    assert len(a) + len(b) == 1
    assert len(messages_in(storage, ME, f"Dossiers/{NUMBER}/Reçus")) == 1
