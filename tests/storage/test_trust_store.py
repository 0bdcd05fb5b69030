"""The trust tables on SQLite and PostgreSQL: seed once, add/remove anchors,
the CRL in force per CA, the generation, serialised changes, audit events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Engine

from palais import admin_cli
from palais.config import load_settings
from palais.instance import init_instance
from palais.mailbox.audit import AuditAction
from palais.mailbox.identity import Role, TrustCommunity
from palais.mailbox.routing import Listener
from palais.pki.certbuilder import CertificateAuthority
from palais.pki.devpki import DevPki, create_dev_pki, load_dev_pki
from palais.pki.identify import CertificateRefused
from palais.pki.trust_update import CrlRejected, CrlUnchanged, TrustRejected, describe_ca
from palais.storage import migrate_database
from palais.storage import trust as store
from palais.storage.audit import query
from palais.storage.engine import make_engine
from palais.trust_live import LiveTrust, add_trust, import_crl, remove_trust
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url

AVOCATS = TrustCommunity.AVOCATS


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = database_url(request, tmp_path)
    migrate_database(url)
    writer = make_engine(url, writer=True)
    try:
        yield writer
    finally:
        writer.dispose()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return create_dev_pki(tmp_path_factory.mktemp("trust-pki"))


def new_anchor(pki: DevPki, group: TrustCommunity) -> store.NewAnchor:
    info = describe_ca(pki.anchor_path(group).read_bytes())
    return store.NewAnchor(
        community=group.value,
        kind=store.ANCHOR,
        fingerprint=info.fingerprint,
        subject=info.subject,
        pem=info.pem.decode("ascii"),
    )


def new_crl(issuer: str, number: int, source: str = "test") -> store.NewCrl:
    now = datetime.now(UTC).replace(microsecond=0)
    return store.NewCrl(
        issuer=issuer,
        pem=f"-----BEGIN X509 CRL-----\n{number}\n-----END X509 CRL-----\n",
        number=number,
        this_update=now,
        next_update=now + timedelta(days=1),
        source=source,
    )


def actions(engine: Engine) -> list[str]:
    return [e.action.value for e in query(engine)]


def test_seed_once_then_the_database_rules(engine: Engine, pki: DevPki) -> None:
    assert store.generation(engine) == 0
    anchors = [new_anchor(pki, g) for g in TrustCommunity]
    crls = [new_crl(anchors[0].fingerprint, 1)]
    assert store.seed(engine, anchors, crls, actor="gateway", reason="seeded")
    assert store.generation(engine) == 1
    assert not store.seed(engine, anchors, crls, actor="gateway", reason="seeded")
    trust = store.current(engine)
    assert trust.generation == 1
    assert {a.community for a in trust.anchors} == {g.value for g in TrustCommunity}
    (crl,) = trust.crls
    assert crl.number == 1 and crl.next_update is not None
    assert crl.this_update.tzinfo is not None
    assert actions(engine) == ["trust-added"] * 4 + ["crl-imported"]


def test_add_remove_and_add_back(engine: Engine, pki: DevPki) -> None:
    lawyers = new_anchor(pki, AVOCATS)
    store.add_anchor(engine, lawyers, actor="operator:a", reason="new CA")
    with pytest.raises(store.AlreadyTrusted):
        store.add_anchor(engine, lawyers, actor="operator:a", reason=None)
    assert store.generation(engine) == 1
    gone = store.remove_anchor(
        engine, lawyers.fingerprint, actor="operator:b", reason="compromised"
    )
    assert gone.removed is not None
    assert store.current(engine).anchors == ()
    with pytest.raises(store.NotTrusted):
        store.remove_anchor(engine, lawyers.fingerprint, actor="operator:b", reason=None)
    (kept,) = store.anchors(engine, removed=True)  # dated, not deleted
    assert kept.removed is not None
    store.add_anchor(engine, lawyers, actor="operator:a", reason="cleared")
    (back,) = store.current(engine).anchors
    assert back.removed is None and back.fingerprint == lawyers.fingerprint
    assert store.generation(engine) == 3
    events = list(query(engine))
    assert [e.action for e in events] == [
        AuditAction.TRUST_ADDED,
        AuditAction.TRUST_REMOVED,
        AuditAction.TRUST_ADDED,
    ]
    assert events[1].actor == "operator:b" and events[1].reason == "compromised"
    assert events[1].subject == lawyers.fingerprint


def test_put_crl_decides_under_the_lock_and_changes_nothing_when_refused(
    engine: Engine,
) -> None:
    seen: list[int | None] = []

    def newer(number: int) -> Callable[[store.StoredCrl | None], store.NewCrl]:
        def decide(current: store.StoredCrl | None) -> store.NewCrl:
            seen.append(current.number if current is not None else None)
            if current is not None and current.number is not None and current.number >= number:
                raise CrlRejected("not newer")
            return new_crl("ca", number)

        return decide

    store.put_crl(engine, "ca", newer(3), actor="x", action=AuditAction.CRL_IMPORTED, reason=None)
    with pytest.raises(CrlRejected):
        store.put_crl(
            engine, "ca", newer(2), actor="x", action=AuditAction.CRL_FETCHED, reason=None
        )
    assert store.generation(engine) == 1  # the refusal bumped nothing
    assert actions(engine) == ["crl-imported"]
    store.put_crl(engine, "ca", newer(4), actor="x", action=AuditAction.CRL_FETCHED, reason=None)
    (crl,) = store.current(engine).crls
    assert crl.number == 4
    assert seen == [None, 3, 3]


def test_concurrent_changes_are_serialised(engine: Engine) -> None:
    # Two nodes fetching at once: the second decides on the first's CRL,
    # never on what was there before both started.
    seen: dict[str, int | None] = {}
    started = threading.Event()

    def writer(name: str, number: int, pause: float) -> None:
        def decide(current: store.StoredCrl | None) -> store.NewCrl:
            started.set()
            time.sleep(pause)
            seen[name] = current.number if current is not None else None
            return new_crl("ca", number)

        store.put_crl(engine, "ca", decide, actor=name, action=AuditAction.CRL_FETCHED, reason=None)

    first = threading.Thread(target=writer, args=("first", 1, 0.5))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=writer, args=("second", 2, 0.0))
    second.start()
    first.join(30)
    second.join(30)
    assert seen == {"first": None, "second": 1}
    assert store.generation(engine) == 2


def test_trust_changes_checked_then_stored(engine: Engine, pki: DevPki, tmp_path: Path) -> None:
    # The operator's path: palais.trust_live checks, the store applies.
    ca = CertificateAuthority.load(pki.ca_cert_path(AVOCATS), pki.ca_key_path(AVOCATS))
    anchor = add_trust(
        engine, "avocats", pki.anchor_path(AVOCATS).read_bytes(), actor="op", reason=None
    )
    with pytest.raises(TrustRejected, match="trusted for avocats already"):
        add_trust(engine, "admin", pki.anchor_path(AVOCATS).read_bytes(), actor="op", reason=None)
    with pytest.raises(TrustRejected, match="unknown community"):
        add_trust(
            engine, "notaires", pki.anchor_path(AVOCATS).read_bytes(), actor="op", reason=None
        )
    import_crl(
        engine,
        ca.crl(number=7).public_bytes(Encoding.PEM),
        source="import:a",
        actor="op",
        reason=None,
    )
    generation = store.generation(engine)
    with pytest.raises(CrlRejected, match="not newer"):
        import_crl(
            engine, ca.crl(number=6).public_bytes(Encoding.PEM), source="x", actor="op", reason=None
        )
    # Another CA's CRL (same names, another key) finds no CA in use.
    other = create_dev_pki(tmp_path / "other")
    with pytest.raises(CrlRejected, match="not signed by a CA in use"):
        import_crl(
            engine, other.crl_path(AVOCATS).read_bytes(), source="x", actor="op", reason=None
        )
    assert store.generation(engine) == generation
    with pytest.raises(CrlUnchanged):
        import_crl(
            engine,
            store.current(engine).crls[0].pem.encode("ascii"),
            source="again",
            actor="op",
            reason=None,
        )
    remove_trust(engine, anchor.fingerprint.upper(), actor="op", reason="test")
    assert store.current(engine).anchors == ()


def test_a_node_follows_the_stored_trust(tmp_path: Path) -> None:
    # One node's LiveTrust: seeded from the instance's [trust] files, then
    # an operator's removal (by another process, through the database)
    # reaches identify() and the listeners' contexts without a restart.
    init_instance(tmp_path / "inst", base_port=20000)
    settings = load_settings(tmp_path / "inst" / "palais.toml")
    settings = dataclasses.replace(
        settings,
        trust=dataclasses.replace(settings.trust, watch_interval=0.05, crl_fetch=False),
    )
    pki = load_dev_pki(tmp_path / "inst" / "pki")
    lawyer = x509.load_pem_x509_certificate(pki.identity_cert_path("avocat1").read_bytes())
    der = lawyer.public_bytes(Encoding.DER)
    live = LiveTrust(settings)
    changes: list[int] = []

    async def scenario() -> None:
        live.load()
        assert live.generation == 1  # the seed
        front = live.listener_context(Listener.SMTPS)
        assert live.identify(der).role is Role.AVOCAT
        live.subscribe(lambda anchors: changes.append(live.generation))
        live.start()
        fingerprint = describe_ca(pki.anchor_path(AVOCATS).read_bytes()).fingerprint
        remove_trust(live.writer, fingerprint, actor="op", reason="test")
        for _ in range(200):
            if changes:
                break
            await asyncio.sleep(0.02)
        assert changes == [2]
        with pytest.raises(CertificateRefused, match="not issued by a trust anchor"):
            live.identify(der)
        assert live.listener_context(Listener.SMTPS) is front  # listeners keep their object
        await live.stop()

    asyncio.run(scenario())


def test_admin_commands_say_why_they_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_instance(tmp_path / "inst", base_port=21000)
    root = str(tmp_path / "inst")
    pki = load_dev_pki(tmp_path / "inst" / "pki")

    assert admin_cli.main(["trust", "list", "--json", "-d", root]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(d["community"] for d in listed) == sorted(g.value for g in TrustCommunity)
    lawyers = next(d for d in listed if d["community"] == "avocats")
    assert lawyers["profile"]["roles"] == ["avocat", "collaborateur"]
    assert lawyers["crl"]["number"] >= 1

    # A CRL no CA in use signed, the same key for another community, an
    # unknown fingerprint: exit 1 and the reason, nothing changed.
    refusals = [
        (["crl", "import", str(pki.crl_path("stranger"))], "not signed by a CA in use"),
        (["trust", "add", "admin", str(pki.anchor_path(AVOCATS))], "trusted for avocats already"),
        (["trust", "remove", "ab" * 32], "no CA in force"),
    ]
    for args, reason in refusals:
        assert admin_cli.main([*args, "-d", root]) == 1
        assert reason in capsys.readouterr().err
    assert admin_cli.main(["crl", "import", str(pki.crl_path(AVOCATS)), "-d", root]) == 0
    assert "unchanged" in capsys.readouterr().out
