"""The directory on a real SQLite file: enrolment carried out, reads off the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, Table, func, select, text

from palais.mailbox.dossiers import plan_dossier_opening
from palais.mailbox.enrolment import EnrolmentRefused, ReferredToOperator
from palais.mailbox.errors import PalaisError
from palais.mailbox.identity import CertificateIdentity, Role
from palais.mailbox.routing import Addressee, AddresseeKind
from palais.storage import Storage, schema
from palais.storage.directory import Directory
from palais.storage.engine import make_engine
from palais.storage.migrate import alembic_config, upgrade
from palais.storage.writer import WriteContext
from tests.storage.conftest import running_storage
from tests.storage.test_mailstore import DOSSIER_ADDRESS, GREFFE, ME, NUMBER

AC = schema.table(schema.Account)
CE = schema.table(schema.Certificate)


def card(address: str, fingerprint: str, role: Role = Role.AVOCAT) -> CertificateIdentity:
    return CertificateIdentity(role, address, "Maître X", fingerprint, f"CN={address}")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    with running_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs") as st:
        yield st


def count(storage: Storage, table: Table, **where: object) -> int:
    with storage.reader.connect() as conn:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return int(conn.execute(query).scalar_one())


def test_first_connection_registers_then_the_certificate_is_known(storage: Storage) -> None:
    cert = card("new@barreau.test", "1" * 64)

    async def go() -> None:
        first = await storage.directory.identity_for(cert)
        storage.directory._cache.clear()  # read from the database again
        again = await storage.directory.identity_for(cert)
        assert again == first
        assert first.address == "new@barreau.test" and first.mailbox_owner == first.address

    asyncio.run(go())
    assert count(storage, AC, address="new@barreau.test") == 1
    assert count(storage, CE, fingerprint="1" * 64) == 1


def test_a_renewed_card_is_linked_to_the_existing_account(storage: Storage) -> None:
    old, new = card(ME.address, "2" * 64), card(ME.address, "3" * 64)

    async def go() -> None:
        a = await storage.directory.identity_for(old)
        b = await storage.directory.identity_for(new)
        assert a.account_id == b.account_id
        assert b.fingerprint == "3" * 64

    asyncio.run(go())
    assert count(storage, AC, address=ME.address) == 1
    assert count(storage, CE) == 2


def test_a_refused_enrolment_writes_nothing(storage: Storage) -> None:
    async def go() -> None:
        with pytest.raises(ReferredToOperator):
            await storage.directory.identity_for(card(ME.address, "4" * 64, Role.COLLABORATEUR))
        with pytest.raises(ReferredToOperator):
            await storage.directory.identity_for(card(GREFFE, "5" * 64))

    asyncio.run(go())
    assert count(storage, CE) == 0
    assert count(storage, AC, address=GREFFE) == 0


def test_a_deactivated_account_stops_working_once_the_cache_expires(storage: Storage) -> None:
    cert = card(ME.address, "6" * 64)
    storage.directory.TTL = 0.2

    async def go() -> None:
        await storage.directory.identity_for(cert)
        await storage.commits.submit(lambda conn, _ctx: Directory.deactivate(conn, ME.address))
        await storage.directory.identity_for(cert)  # still cached
        await asyncio.sleep(0.25)
        with pytest.raises(EnrolmentRefused):
            await storage.directory.identity_for(cert)

    asyncio.run(go())


def test_misses_read_in_a_worker_thread_and_hits_answer_on_the_loop(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = storage.directory
    threads: list[int] = []
    real_resolve, real_participants = directory._resolve, directory._participants

    def resolve(addr: str) -> Addressee | None:
        threads.append(threading.get_ident())
        time.sleep(0.1)  # a slow database
        return real_resolve(addr)

    def participants(number: str) -> frozenset[str]:
        threads.append(threading.get_ident())
        return real_participants(number)

    monkeypatch.setattr(directory, "_resolve", resolve)
    monkeypatch.setattr(directory, "_participants", participants)
    loop_ticks = 0

    async def ticker() -> None:
        nonlocal loop_ticks
        while True:
            loop_ticks += 1
            await asyncio.sleep(0.005)

    async def go() -> None:
        loop_thread = threading.get_ident()
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        found = await directory.resolve(DOSSIER_ADDRESS.upper())
        assert found is not None and found.kind is AddresseeKind.DOSSIER
        assert loop_ticks >= 2  # the loop kept running during the slow read
        assert ME.address in await directory.participants(NUMBER)
        assert len(threads) == 2 and loop_thread not in threads
        # Cache hits: no thread, no database.
        monkeypatch.setattr(directory, "_resolve", None)
        monkeypatch.setattr(directory, "_participants", None)
        assert await directory.resolve(DOSSIER_ADDRESS) == found
        assert ME.address in await directory.participants(NUMBER)
        assert len(threads) == 2
        tick.cancel()

    asyncio.run(go())


def test_an_unknown_address_and_a_deactivated_person_resolve_to_nothing(
    storage: Storage,
) -> None:
    storage.commits.stop()
    storage.commits.run_now(lambda conn, _ctx: Directory.deactivate(conn, ME.address))

    async def go() -> None:
        assert await storage.directory.resolve("nobody@x.test") is None
        assert await storage.directory.resolve(ME.address) is None
        record = await storage.directory.dossier(NUMBER)
        assert record is not None and record.service_address == GREFFE

    asyncio.run(go())


def test_migration_0002_renames_the_court_system_role(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}", writer=True)
    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.execute(
                text(
                    "INSERT INTO account (address, role, display_name, active, created_at)"
                    " VALUES ('portalis@cph.test', 'juridiction', 'Portalis', 1, '2026-01-01'),"
                    " ('a@x.test', 'avocat', 'A', 1, '2026-01-01')"
                )
            )
        assert upgrade(engine)[0] == "0001"  # then to the head, through 0002
        with engine.connect() as conn:
            roles = {
                r.address: r.role for r in conn.execute(text("SELECT address, role FROM account"))
            }
        assert roles == {"portalis@cph.test": Role.COURT_SYSTEM.value, "a@x.test": "avocat"}
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            role = conn.execute(
                text("SELECT role FROM account WHERE address = 'portalis@cph.test'")
            ).scalar_one()
        assert role == "juridiction"
    finally:
        engine.dispose()


def test_a_clerk_proves_an_identity_reading_the_service_mailbox(storage: Storage) -> None:
    SV = schema.table(schema.Service)

    def add_clerk(conn: Connection, _ctx: WriteContext) -> int:
        service = conn.execute(select(SV.c.id).where(SV.c.address == GREFFE)).scalar_one()
        return Directory.add_account(
            conn, address="clerk@x.test", role=Role.GREFFIER, display_name="G", service_id=service
        )

    async def go() -> None:
        clerk = await storage.commits.submit(add_clerk)
        who = await storage.directory.identity_for(card("clerk@x.test", "7" * 64, Role.GREFFIER))
        assert (who.account_id, who.mailbox_owner) == (clerk, GREFFE)

    asyncio.run(go())


def test_an_opened_dossier_is_written_whole_with_its_participants_boxes(storage: Storage) -> None:
    def open_one(conn: Connection, _ctx: WriteContext) -> int:
        service = conn.execute(
            select(schema.table(schema.Service).c.id).where(
                schema.table(schema.Service).c.address == GREFFE
            )
        ).scalar_one()
        joining = [Directory.participation(conn, ME.account_id, "avocat")]
        return Directory.open_dossier(
            conn,
            plan_dossier_opening(
                number="2026-0000001",
                address="2026-0000001@dossiers.x.test",
                juridiction="CPH X",
                service_id=int(service),
                service_address=GREFFE,
                participants=joining,
            ),
        )

    asyncio.run(storage.commits.submit(open_one))
    assert asyncio.run(storage.directory.participants("2026-0000001")) >= {ME.address, GREFFE}
    for who in (ME, GREFFE):
        owner = who if isinstance(who, str) else who.mailbox_owner
        names = {
            r[0]
            for r in storage.reader.connect().execute(
                text("SELECT name FROM mailbox WHERE owner = :o AND dossier = :d"),
                {"o": owner, "d": "2026-0000001"},
            )
        }
        assert len(names) == 5, (owner, names)


def test_joining_a_dossier_twice_is_refused_and_writes_nothing(storage: Storage) -> None:
    def join_again(conn: Connection, _ctx: WriteContext) -> None:
        dossier = conn.execute(
            select(schema.table(schema.Dossier).c.id).where(
                schema.table(schema.Dossier).c.number == NUMBER
            )
        ).scalar_one()
        Directory.add_participant(
            conn, dossier_id=int(dossier), account_id=ME.account_id, capacity="avocat"
        )

    before = count(storage, schema.table(schema.Participation))
    with pytest.raises(PalaisError, match="joins twice"):
        asyncio.run(storage.commits.submit(join_again))
    assert count(storage, schema.table(schema.Participation)) == before
