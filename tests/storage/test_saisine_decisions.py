"""Registry decisions carried out (palais.storage.registry) and the dossier
search, on SQLite and PostgreSQL: a saisine filed, rejected, another accepted
(its dossier created with its parties and boxes), a constitution joining."""

from __future__ import annotations

import asyncio
import hashlib
import json
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import Connection, select

from palais.juridictions_file import SAMPLE, load_directory
from palais.mailbox.court_events import RegistryDecision
from palais.mailbox.documents import CONSTITUTION, REGISTRY_DECISION, SAISINE
from palais.mailbox.dossier_search import dossier_query
from palais.mailbox.enrolment import decide_merge
from palais.mailbox.errors import CannotDoThat
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.registry import plan_decision
from palais.mailbox.relay import RelayOrder
from palais.mailbox.saisine_flow import CourtActs, CourtAddresses
from palais.storage import Storage
from palais.storage.directory import Directory
from palais.storage.dossier_life import read_life
from palais.storage.dossier_search import DossierSearch
from palais.storage.registry import RQ, RegistryStore
from palais.storage.relay_queue import write_relay_order
from palais.storage.writer import WriteContext
from tests.mailbox import court_samples as samples
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_identity_lifecycle import _duplicate, write
from tests.storage.test_mailstore import ME, OTHER

DIRECTORY = load_directory(SAMPLE)
_CPH = DIRECTORY.get("CPH-BORDEAUX")
assert _CPH is not None
CPH = _CPH
COURT = Identity(
    9,
    CPH.court_system.address,
    Role.COURT_SYSTEM,
    "Portalis",
    "c" * 64,
    CPH.court_system.address,
)
NEW = "2026-0000201"


def _court_account(conn: Connection, _ctx: WriteContext) -> int:
    return Directory.add_account(
        conn, address=COURT.address, role=Role.COURT_SYSTEM, display_name="P"
    )


def _message(sender: str, media_type: str, doc: dict[str, Any], mid: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["Subject"] = "acte"
    msg["Message-ID"] = mid
    msg.set_content("texte")
    payload = json.dumps(doc, ensure_ascii=False).encode()
    msg.add_attachment(payload, maintype="application", subtype=media_type.split("/")[1])
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def _send(
    storage: Storage, who: Identity, to: str, data: bytes, relayed: frozenset[str] = frozenset()
) -> None:
    acts = CourtActs(
        DIRECTORY,
        storage.mail,
        RegistryStore(storage.reader, storage.commits, storage.mail),
        mail_domain="palais.test",
        receipts=False,  # the test store has no evidence service
    )
    addressee = await CourtAddresses(storage.directory, DIRECTORY).resolve(to)
    assert addressee is not None
    await acts.accept(who, addressee, data, summarize(data), None, relayed)


async def _decide(storage: Storage, about: str, mid: str, **fields: Any) -> None:
    registry = RegistryStore(storage.reader, storage.commits, storage.mail)
    doc = {"about": about, "message_id": mid, "decided_at": "2026-11-30T11:00:00+01:00", **fields}
    data = _message(COURT.address, REGISTRY_DECISION, doc, f"<d-{mid.strip('<>')}>")
    act = await registry.sent_act(COURT.address, mid)
    assert act is not None
    plan = plan_decision(RegistryDecision.model_validate(doc), act, COURT, CPH, "palais.test")
    await registry.decide(COURT, data, summarize(data), plan)
    sha = hashlib.sha256(data).hexdigest()
    assert await registry.decision_filed(COURT.address, f"<d-{mid.strip('<>')}>", sha) is not None


async def _names(storage: Storage, who: Identity) -> set[str]:
    return {b.name for b in await storage.mail.list_mailboxes(who)}


async def _count(storage: Storage, who: Identity, box: str) -> int:
    return (await storage.mail.mailbox(who, box)).messages


def test_decisions_move_saisines_and_create_the_dossier(storage: Storage) -> None:
    async def go() -> None:
        await storage.commits.submit(_court_account)
        assert "Saisines/Envoyées" in await _names(storage, ME)
        first = _message(ME.address, SAISINE, samples.saisine(), "<s1@x>")
        await _send(storage, ME, CPH.saisine_address, first)
        assert await _count(storage, ME, "Saisines/Envoyées") == 1
        assert await _count(storage, COURT, "INBOX") == 1
        await _decide(storage, "saisine", "s1@x", decision="rejected", reason="incomplet")
        assert await _count(storage, ME, "Saisines/Envoyées") == 0
        assert await _count(storage, ME, "Saisines/Rejetées") == 2  # the saisine, the decision
        with pytest.raises(CannotDoThat):  # decided already
            await _decide(storage, "saisine", "<s1@x>", decision="accepted", dossier=NEW)

        second = _message(ME.address, SAISINE, samples.saisine(), "<s2@x>")
        await _send(storage, ME, CPH.saisine_address, second)
        await _decide(storage, "saisine", "<s2@x>", decision="accepted", dossier=NEW)
        names = await _names(storage, ME)
        assert {f"Dossiers/{NEW}/Reçus", f"Dossiers/{NEW}/Envoyés"} <= names
        assert await _count(storage, ME, f"Dossiers/{NEW}/Envoyés") == 1
        assert await _count(storage, ME, f"Dossiers/{NEW}/Reçus") == 1
        assert f"Dossiers/{NEW}/Reçus" in await _names(storage, COURT)
        assert ME.address in await storage.directory.participants(NEW)
        with storage.reader.connect() as conn:
            found = read_life(conn, NEW)
        assert found is not None
        assert [p.name for p in found.life.parties] == ["Léger Amélie", "Vins du Médoc SAS"]

        search = DossierSearch(storage.reader)
        (card,) = await search.search(dossier_query({"numero": NEW}, DIRECTORY))
        assert card.as_json() == {
            "number": NEW,
            "juridiction": "CPH-BORDEAUX",
            "service": "CPH BORDEAUX - Commerce",
            "status": "provisoire",
            "demandeur": ["Léger Amélie"],
            "defendeur": ["Vins du Médoc SAS"],
        }
        by_name = dossier_query(
            {"type": "CPH", "juridiction": "CPH-BORDEAUX", "demandeur": "LEGER"}, DIRECTORY
        )
        assert [c.number for c in await search.search(by_name)] == [NEW]
        nobody = dossier_query(
            {"type": "CPH", "juridiction": "CPH-BORDEAUX", "defendeur": "Léger"}, DIRECTORY
        )
        assert await search.search(nobody) == []

        # OTHER constitutes for the défendeur: the dossier appears for them.
        doc = samples.constitution()
        doc["dossier"]["number"] = NEW
        constitution = _message(OTHER.address, CONSTITUTION, doc, "<c1@x>")
        await _send(storage, OTHER, CPH.constitution_address, constitution)
        assert not any(NEW in n for n in await _names(storage, OTHER))
        await _decide(storage, "constitution", "<c1@x>", decision="accepted", dossier=NEW)
        assert f"Dossiers/{NEW}/Reçus" in await _names(storage, OTHER)
        assert await _count(storage, OTHER, f"Dossiers/{NEW}/Envoyés") == 1
        with storage.reader.connect() as conn:
            joined = read_life(conn, NEW)
        assert joined is not None and joined.life.lawyers_of("P2") == (OTHER.address,)
        # A fresh directory: the gateway's caches its answers for Directory.TTL.
        fresh = Directory(storage.reader, storage.commits)
        assert OTHER.address in await fresh.participants(NEW)

    asyncio.run(go())


def test_a_saisine_relayed_to_the_court_systems_endpoint_is_decided(storage: Storage) -> None:
    """A court system with its own SMTP endpoint: the saisine is queued for it
    (palais.mailbox.relay), not in its INBOX, and its decision finds it all the same."""
    storage.mail.add_record_writer(RelayOrder, write_relay_order)

    async def go() -> None:
        await storage.commits.submit(_court_account)
        data = _message(ME.address, SAISINE, samples.saisine(), "<r1@x>")
        await _send(storage, ME, CPH.saisine_address, data, frozenset({COURT.address}))
        assert await _count(storage, COURT, "INBOX") == 0
        assert await _count(storage, ME, "Saisines/Envoyées") == 1
        with storage.reader.connect() as conn:
            queued = conn.execute(select(RQ.c.recipient)).scalars().all()
        assert queued == [COURT.address]
        await _decide(storage, "saisine", "<r1@x>", decision="rejected", reason="non")
        assert await _count(storage, ME, "Saisines/Rejetées") == 2

    asyncio.run(go())


def test_a_merge_brings_the_source_s_saisines(storage: Storage) -> None:
    """Accounts merged (identity lifecycle, case C): the duplicate's saved
    saisine lands in the target's Saisines/Enregistrées."""
    dup = _duplicate(storage)
    saved = _message(dup.address, SAISINE, samples.saisine(), "<saved@x>")
    asyncio.run(storage.mail.append(dup, "Saisines/Enregistrées", saved, frozenset(), None))

    def merge(conn: Connection, _ctx: WriteContext) -> dict[str, object]:
        source = Directory.account_by_address(conn, dup.address)
        target = Directory.account_by_address(conn, ME.address)
        assert source is not None and target is not None
        return Directory.merge_accounts(
            conn, decide_merge(source, target), actor="operator:t", reason="duplicate"
        )

    write(storage, merge)
    assert asyncio.run(_count(storage, ME, "Saisines/Enregistrées")) == 1
