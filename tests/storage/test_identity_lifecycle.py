"""Accounts keyed by identifier, on SQLite and PostgreSQL: renewals (A), an
operator's link (B), and a merge (C) moving everything in one transaction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, func, select, text

from palais.mailbox.audit import AuditAction
from palais.mailbox.boxes import BoxKind
from palais.mailbox.enrolment import (
    EnrolmentPolicy,
    ReferredToOperator,
    RegistrationClosed,
    decide_link,
    decide_merge,
)
from palais.mailbox.errors import NoSuchMailbox
from palais.mailbox.identity import CertificateIdentity, Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, schema
from palais.storage.directory import Directory
from palais.storage.engine import make_engine
from palais.storage.migrate import alembic_config, upgrade
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import GREFFE, ME, msg

AC = schema.table(schema.Account)
CE = schema.table(schema.Certificate)
PA = schema.table(schema.Participation)
PL = schema.table(schema.Placement)
AE = schema.table(schema.AuditEvent)
DO = schema.table(schema.Dossier)

BAR = "CNB-75-012345"
DUP = "a2@x.test"
SECOND = "2025-0000200"


def card(
    address: str, fingerprint: str, number: str | None, role: Role = Role.AVOCAT
) -> CertificateIdentity:
    subject = f"serialNumber={number},CN=X" if number else "CN=X"
    return CertificateIdentity(role, address, "Maître X", fingerprint, subject, number)


def write(storage: Storage, work: Any) -> Any:
    async def go() -> Any:
        return await storage.commits.submit(work)

    return asyncio.run(go())


def one(storage: Storage, query: Any) -> Any:
    with storage.reader.connect() as conn:
        return conn.execute(query).scalar_one()


def identity(storage: Storage, cert: CertificateIdentity) -> Identity:
    storage.directory._cache.clear()  # what a node sees once its cache expired
    return asyncio.run(storage.directory.identity_for(cert))


def test_a_renewed_card_with_the_same_number_reaches_the_same_account(storage: Storage) -> None:
    first = identity(storage, card("new@x.test", "1" * 64, BAR))
    row = one(
        storage, select(AC.c.identifier + "|" + AC.c.community).where(AC.c.id == first.account_id)
    )
    assert row == f"{BAR}|avocats"
    renewed = identity(storage, card("new@x.test", "2" * 64, BAR))
    assert renewed.account_id == first.account_id and renewed.fingerprint == "2" * 64
    assert (
        one(
            storage, select(func.count()).select_from(CE).where(CE.c.account_id == first.account_id)
        )
        == 2
    )
    linked = one(
        storage, select(AE.c.detail).where(AE.c.action == AuditAction.CERTIFICATE_LINKED.value)
    )
    assert json.loads(linked) == {"fingerprint": "2" * 64, "identifier": BAR, "by": "holder"}


def test_a_card_with_another_number_for_a_keyed_address_is_referred(storage: Storage) -> None:
    identity(storage, card("new@x.test", "1" * 64, BAR))
    with pytest.raises(ReferredToOperator):
        identity(storage, card("new@x.test", "3" * 64, "CNB-13-999999"))
    assert (
        one(storage, select(func.count()).select_from(CE).where(CE.c.fingerprint == "3" * 64)) == 0
    )


def test_an_account_from_before_identifiers_is_keyed_by_its_next_card(storage: Storage) -> None:
    # ME was created without an identifier (as migration 0006 may leave one).
    who = identity(storage, card(ME.address, "4" * 64, BAR))
    assert who.account_id == ME.account_id
    assert one(storage, select(AC.c.identifier).where(AC.c.id == ME.account_id)) == BAR


def test_registration_refused_by_policy_writes_nothing(storage: Storage) -> None:
    closed = Directory(storage.reader, storage.commits, enrolment=EnrolmentPolicy.REFUSE)
    with pytest.raises(RegistrationClosed):
        asyncio.run(closed.identity_for(card("new@x.test", "5" * 64, BAR)))
    assert (
        one(storage, select(func.count()).select_from(AC).where(AC.c.address == "new@x.test")) == 0
    )
    # Renewals of known holders still work under that policy.
    assert asyncio.run(closed.identity_for(card(ME.address, "6" * 64, BAR))).account_id == (
        ME.account_id
    )


def test_an_operator_links_a_card_the_gateway_referred(storage: Storage) -> None:
    identity(storage, card("new@x.test", "1" * 64, BAR))
    stranger = card("new@x.test", "7" * 64, "CNB-75-777777")

    def link(conn: Connection, _ctx: WriteContext) -> None:
        account = Directory.account_by_address(conn, "new@x.test")
        assert account is not None
        plan = decide_link(account, stranger, holder=None, identifier_holder=None)
        Directory.link_certificate(conn, plan, stranger, actor="operator:t", reason="new card")

    write(storage, link)
    who = identity(storage, stranger)
    assert who.address == "new@x.test"
    # The account is keyed by the new number from now on.
    assert identity(storage, card("new@x.test", "8" * 64, "CNB-75-777777")).account_id == (
        who.account_id
    )
    event = one(storage, select(AE.c.reason).where(AE.c.actor == "operator:t"))
    assert event == "new card"


def _duplicate(storage: Storage) -> Identity:
    """DUP: a duplicate of ME registered with a new card, in a second dossier,
    with mail of its own and one message ME holds too."""
    dup = identity(storage, card(DUP, "9" * 64, BAR))

    def second(conn: Connection, _ctx: WriteContext) -> None:
        service = conn.execute(
            select(schema.table(schema.Service).c.id).where(
                schema.table(schema.Service).c.address == GREFFE
            )
        ).scalar_one()
        dossier = Directory.add_dossier(
            conn, number=SECOND, address="d2@x.test", juridiction="CPH X", service_id=service
        )
        Directory.add_participant(
            conn, dossier_id=dossier, account_id=dup.account_id, capacity="avocat"
        )

    write(storage, second)
    sent = FilingPlan(
        SECOND,
        (
            Destination(DUP, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(GREFFE, BoxKind.RECUS),
        ),
    )
    asyncio.run(storage.mail.file(dup, msg(1), summarize(msg(1)), sent))
    both = FilingPlan(
        None, (Destination(ME.address, BoxKind.RECUS), Destination(DUP, BoxKind.RECUS))
    )
    asyncio.run(storage.mail.file(dup, msg(2), summarize(msg(2)), both))
    return dup


def _boxes(storage: Storage, who: Identity) -> dict[str, int]:
    async def go() -> dict[str, int]:
        counts: dict[str, int] = {}
        for box in await storage.mail.list_mailboxes(who):
            try:
                counts[box.name] = (await storage.mail.mailbox(who, box.name)).messages
            except NoSuchMailbox:  # "Dossiers" and a dossier's name: parents, no box
                continue
        return counts

    return asyncio.run(go())


def test_a_merge_moves_certificates_dossiers_and_mail_into_the_target(storage: Storage) -> None:
    dup = _duplicate(storage)
    before = _boxes(storage, ME)
    assert before["INBOX"] == 1 and before["Envoyés"] == 0

    def merge(conn: Connection, _ctx: WriteContext) -> dict[str, object]:
        source = Directory.account_by_address(conn, DUP)
        target = Directory.account_by_address(conn, ME.address)
        assert source is not None and target is not None
        return Directory.merge_accounts(
            conn, decide_merge(source, target), actor="operator:t", reason="duplicate"
        )

    done = write(storage, merge)
    assert done["certificates"] == 1
    assert (done["placements_moved"], done["placements_already_held"]) == (1, 1)
    assert done["dossiers_joined"] == [SECOND]
    after = _boxes(storage, ME)
    # Both histories in the target's boxes, the shared message once.
    assert after["INBOX"] == 1
    assert after["Envoyés"] == 1
    assert after[f"Dossiers/{SECOND}/Envoyés"] == 1

    async def flags() -> frozenset[str]:
        box = await storage.mail.mailbox(ME, "Envoyés")
        (record,) = await storage.mail.records(ME, box.id, [1])
        return record.flags

    assert "\\Seen" in asyncio.run(flags())
    assert one(storage, select(func.count()).select_from(PL).where(PL.c.owner == DUP)) == 0
    assert not one(storage, select(AC.c.active).where(AC.c.address == DUP))
    assert (
        one(storage, select(CE.c.account_id).where(CE.c.fingerprint == "9" * 64)) == ME.account_id
    )
    participants = asyncio.run(storage.directory.participants(SECOND))
    assert ME.address in participants and DUP not in participants
    # The identifier went with the history; DUP's old card reaches the target.
    assert one(storage, select(AC.c.identifier).where(AC.c.id == ME.account_id)) == BAR
    assert identity(storage, card(DUP, "9" * 64, BAR)).account_id == ME.account_id
    assert identity(storage, card(ME.address, "a" * 64, BAR)).account_id == ME.account_id
    merged = one(
        storage, select(AE.c.detail).where(AE.c.action == AuditAction.ACCOUNT_MERGED.value)
    )
    assert json.loads(merged)["into"] == ME.address
    assert dup.account_id != ME.account_id


def test_a_merge_that_fails_leaves_everything_as_it_was(storage: Storage) -> None:
    _duplicate(storage)
    before = _boxes(storage, ME)

    def merge_then_fail(conn: Connection, _ctx: WriteContext) -> None:
        source = Directory.account_by_address(conn, DUP)
        target = Directory.account_by_address(conn, ME.address)
        assert source is not None and target is not None
        Directory.merge_accounts(conn, decide_merge(source, target), actor="operator:t", reason="x")
        raise RuntimeError("the operator's terminal went away")

    with pytest.raises(RuntimeError):
        write(storage, merge_then_fail)
    assert _boxes(storage, ME) == before
    assert one(storage, select(func.count()).select_from(PL).where(PL.c.owner == DUP)) == 2
    assert (
        one(storage, select(CE.c.account_id).where(CE.c.fingerprint == "9" * 64)) != ME.account_id
    )
    assert (
        one(storage, select(func.count()).select_from(AE).where(AE.c.action == "account-merged"))
        == 0
    )
    assert (
        one(
            storage,
            select(func.count())
            .select_from(PA)
            .join(DO, DO.c.id == PA.c.dossier_id)
            .where(DO.c.number == SECOND, PA.c.account_id == ME.account_id),
        )
        == 0
    )


def test_migration_0006_keys_accounts_by_the_number_their_cards_carry(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}", writer=True)
    cfg = alembic_config()
    accounts = [
        # (id, address, role, subjects of its certificates)
        (1, "one@x.test", "avocat", ["serialNumber=CNB-1,CN=A", "CN=A,serialNumber=CNB-1"]),
        (2, "two@x.test", "avocat", ["serialNumber=CNB-2,CN=B", "serialNumber=CNB-3,CN=B"]),
        (3, "three@x.test", "avocat", ["CN=C"]),
        (4, "dup1@x.test", "avocat", ["serialNumber=CNB-4,CN=D"]),
        (5, "dup2@x.test", "avocat", ["serialNumber=CNB-4,CN=D"]),
        (6, "mag@x.test", "magistrat", ["serialNumber=CNB-4,CN=M"]),  # another community
        (7, "none@x.test", "avocat", []),
    ]
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0005")
            for account_id, address, role, subjects in accounts:
                conn.execute(
                    text(
                        "INSERT INTO account (id, address, role, display_name, active, created_at)"
                        " VALUES (:i, :a, :r, 'X', 1, '2026-01-01')"
                    ),
                    {"i": account_id, "a": address, "r": role},
                )
                for n, subject in enumerate(subjects):
                    conn.execute(
                        text(
                            "INSERT INTO certificate (fingerprint, account_id, subject, first_seen)"
                            " VALUES (:f, :i, :s, '2026-01-01')"
                        ),
                        {"f": f"{account_id}-{n}", "i": account_id, "s": subject},
                    )
        upgrade(engine)
        with engine.connect() as conn:
            keyed = {
                r.id: (r.community, r.identifier)
                for r in conn.execute(text("SELECT id, community, identifier FROM account"))
            }
        assert keyed == {
            1: ("avocats", "CNB-1"),
            2: (None, None),  # two numbers: which one?
            3: (None, None),
            4: (None, None),  # a duplicate, for an operator to merge
            5: (None, None),
            6: ("justice", "CNB-4"),
            7: (None, None),
        }
        with engine.begin() as conn, pytest.raises(Exception, match=r"(?i)unique"):
            conn.execute(
                text("UPDATE account SET community = 'avocats', identifier = 'CNB-1' WHERE id = 3")
            )
    finally:
        engine.dispose()
