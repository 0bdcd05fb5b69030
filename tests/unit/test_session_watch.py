"""The session watcher with fakes: who is cut, for what, at what cost, and what it leaves behind."""

from __future__ import annotations

import asyncio
import gc
import logging
import smtplib
import threading
import time
import tracemalloc
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from sqlalchemy import Connection, insert

from palais.gateway.admission import Admission, Gate
from palais.gateway.metrics import GatewayMetrics
from palais.gateway.sessions import (
    ACCOUNT_CHANGED,
    ACCOUNT_DEACTIVATED,
    CERTIFICATE_NO_LONGER_VALID,
    Registration,
    SessionWatcher,
)
from palais.gateway.smtp import make_smtp_factory
from palais.gateway.tls import TlsServerProtocol
from palais.mailbox.audit import AuditAction
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import AppendResult
from palais.pki import certbuilder
from palais.pki.certbuilder import CertificateAuthority, Validity
from palais.storage import schema
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext
from tests.imap.conftest import ADDRESS, STRANGER, Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore
from tests.storage.conftest import running_storage
from tests.storage.test_mailstore import ME, OTHER


def ident(account_id: int, fingerprint: str, address: str | None = None) -> Identity:
    address = address or f"user{account_id}@avocats.test"
    return Identity(account_id, address, Role.AVOCAT, "Maître", fingerprint, address)


class FakeSession:
    """Records its goodbyes; unregisters itself when it ends, as the front-ends do."""

    def __init__(self, watcher: SessionWatcher, defer_first: bool = False) -> None:
        self.watcher = watcher
        self.told: list[str] = []
        self.closed = False
        self.defer_first = defer_first  # a command running: the first request waits
        self.registration: Registration | None = None

    def end_session(self, reason: str) -> None:
        self.told.append(reason)
        if self.defer_first and len(self.told) == 1:
            return
        self.closed = True
        assert self.registration is not None
        self.watcher.unregister(self, self.registration)


class Trust:
    """A certificate check: the DERs revoked so far; counts its calls and their threads."""

    def __init__(self) -> None:
        self.revoked: set[bytes] = set()
        self.broken: set[bytes] = set()
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self, der: bytes, listener: str) -> str | None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if der in self.broken:
            raise RuntimeError("bug in a check")
        return (
            f"certificate serial {der.hex()} revoked by CN=Test CA" if der in self.revoked else None
        )


class Accounts:
    """The directory's standing: fingerprint -> (account id, active); counts its reads."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, bool]] = {}
        self.reads: list[frozenset[str]] = []
        self.down = False

    async def __call__(self, fingerprints: Collection[str]) -> Mapping[str, tuple[int, bool]]:
        self.reads.append(frozenset(fingerprints))
        if self.down:
            raise ConnectionError("database unavailable")
        return {f: self.rows[f] for f in fingerprints if f in self.rows}


class Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def refused(
        self,
        action: AuditAction,
        *,
        listener: str,
        peer: str | None,
        reason: str,
        subject: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        self.events.append(
            {"action": action, "listener": listener, "subject": subject, "reason": reason}
        )


def setup(
    interval: float = 30.0,
) -> tuple[SessionWatcher, Trust, Accounts, Audit]:
    trust, accounts, audit = Trust(), Accounts(), Audit()
    watcher = SessionWatcher(
        check_certificate=trust,
        standing=accounts,
        interval=interval,
        log=logging.getLogger("test.sessions"),
        audit=audit,
    )
    return watcher, trust, accounts, audit


def open_session(
    watcher: SessionWatcher,
    who: Identity,
    der: bytes,
    listener: str = "imaps",
    *,
    defer_first: bool = False,
) -> FakeSession:
    session = FakeSession(watcher, defer_first)
    session.registration = watcher.register(session, listener=listener, der=der, identity=who)
    return session


def test_one_directory_read_and_one_check_per_certificate_for_all_sessions() -> None:
    watcher, trust, accounts, _ = setup()
    sessions = []
    for n in range(50):
        fingerprint = f"{n:064x}"
        accounts.rows[fingerprint] = (n, True)
        for listener in ("imaps", "imaps", "smtps"):  # two IMAP sessions and one SMTP each
            sessions.append(open_session(watcher, ident(n, fingerprint), bytes([n]), listener))
    assert len(watcher) == 150 and watcher.certificates == 100

    async def go() -> None:
        assert await watcher.check() == []
        assert await watcher.check() == []

    asyncio.run(go())
    # One read per check, naming each certificate once; one certificate
    # check per certificate and listener, off the event loop.
    assert len(accounts.reads) == 2
    assert accounts.reads[0] == {f"{n:064x}" for n in range(50)}
    assert trust.calls == 200
    assert threading.get_ident() not in trust.threads
    assert not any(s.told for s in sessions)


def test_a_revoked_certificate_cuts_its_sessions_only_and_is_logged_and_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher, trust, accounts, audit = setup()
    accounts.rows = {"a" * 64: (1, True), "b" * 64: (2, True)}
    mine = [
        open_session(watcher, ident(1, "a" * 64), b"A", listener) for listener in ("imaps", "smtps")
    ]
    other = open_session(watcher, ident(2, "b" * 64), b"B")
    trust.revoked.add(b"A")
    with caplog.at_level(logging.INFO, logger="test.sessions"):
        closures = asyncio.run(watcher.check())
    assert [s.told for s in mine] == [[CERTIFICATE_NO_LONGER_VALID]] * 2
    assert all(s.closed for s in mine) and other.told == []
    assert {c.listener for c in closures} == {"imaps", "smtps"}
    assert {c.code for c in closures} == {"certificate-refused"}
    lines = [r.getMessage() for r in caplog.records if "session closed" in r.getMessage()]
    assert len(lines) == 2
    assert "listener=imaps identity=user1@avocats.test fingerprint=" + "a" * 64 in lines[0]
    assert "reason=certificate-refused" in lines[0] and "revoked by CN=Test CA" in lines[0]
    assert [e["action"] for e in audit.events] == [AuditAction.SESSION_CLOSED] * 2
    assert audit.events[0]["subject"] == "user1@avocats.test"
    # What the client is told says nothing of issuers or serials.
    assert "CN=" not in CERTIFICATE_NO_LONGER_VALID and "serial" not in CERTIFICATE_NO_LONGER_VALID
    assert len(watcher) == 1 and watcher.certificates == 1


def test_a_deactivated_or_relinked_account_is_cut() -> None:
    watcher, _, accounts, _ = setup()
    accounts.rows = {"a" * 64: (1, False), "b" * 64: (9, True), "d" * 64: (4, True)}
    deactivated = open_session(watcher, ident(1, "a" * 64), b"A")
    relinked = open_session(watcher, ident(2, "b" * 64), b"B")  # now linked to account 9
    unlinked = open_session(watcher, ident(3, "c" * 64), b"C")  # linked to none any more
    fine = open_session(watcher, ident(4, "d" * 64), b"D")
    asyncio.run(watcher.check())
    assert deactivated.told == [ACCOUNT_DEACTIVATED]
    assert relinked.told == [ACCOUNT_CHANGED] and unlinked.told == [ACCOUNT_CHANGED]
    assert fine.told == [] and len(watcher) == 1


def test_database_away_keeps_accounts_open_but_still_cuts_revoked_certificates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher, trust, accounts, _ = setup()
    accounts.rows = {"a" * 64: (1, False), "b" * 64: (2, True)}
    deactivated = open_session(watcher, ident(1, "a" * 64), b"A")
    revoked = open_session(watcher, ident(2, "b" * 64), b"B")
    trust.revoked.add(b"B")
    accounts.down = True
    with caplog.at_level(logging.WARNING, logger="test.sessions"):
        asyncio.run(watcher.check())
    assert revoked.told == [CERTIFICATE_NO_LONGER_VALID]
    assert deactivated.told == []  # no verdict on accounts without the database
    assert any("directory unavailable" in r.getMessage() for r in caplog.records)
    # The log names the failure's kind, never its text (it may hold a URL).
    assert not any("database unavailable" in r.getMessage() for r in caplog.records)
    accounts.down = False
    asyncio.run(watcher.check())
    assert deactivated.told == [ACCOUNT_DEACTIVATED] and len(watcher) == 0


def test_a_failing_certificate_check_closes_nobody() -> None:
    watcher, trust, accounts, _ = setup()
    accounts.rows = {"a" * 64: (1, True), "b" * 64: (2, True)}
    broken = open_session(watcher, ident(1, "a" * 64), b"A")
    revoked = open_session(watcher, ident(2, "b" * 64), b"B")
    trust.broken.add(b"A")
    trust.revoked.add(b"B")
    asyncio.run(watcher.check())
    assert broken.told == [] and revoked.told == [CERTIFICATE_NO_LONGER_VALID]


def test_a_session_busy_at_the_first_request_is_asked_again_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher, trust, accounts, audit = setup()
    accounts.rows = {"a" * 64: (1, True)}
    busy = open_session(watcher, ident(1, "a" * 64), b"A", defer_first=True)
    trust.revoked.add(b"A")
    with caplog.at_level(logging.INFO, logger="test.sessions"):
        first = asyncio.run(watcher.check())
        assert not busy.closed and len(watcher) == 1
        second = asyncio.run(watcher.check())
    assert busy.told == [CERTIFICATE_NO_LONGER_VALID] * 2 and busy.closed
    assert len(first) == 1 and second == []
    assert len([r for r in caplog.records if "session closed" in r.getMessage()]) == 1
    assert len(audit.events) == 1
    assert len(watcher) == 0 and watcher.certificates == 0


def test_sessions_that_end_on_their_own_leave_nothing_behind() -> None:
    watcher, _, _, _ = setup()
    sessions = [open_session(watcher, ident(n % 3, f"{n % 3:064x}"), b"X") for n in range(30)]
    for session in sessions:
        assert session.registration is not None
        watcher.unregister(session, session.registration)
        watcher.unregister(session, session.registration)  # twice: harmless
    assert len(watcher) == 0 and watcher.certificates == 0

    async def go() -> None:
        assert await watcher.check() == []

    asyncio.run(go())


def test_the_periodic_check_runs_at_its_interval_and_stops_cleanly() -> None:
    watcher, trust, accounts, _ = setup(interval=0.05)
    accounts.rows = {"a" * 64: (1, True)}
    session = open_session(watcher, ident(1, "a" * 64), b"A")

    async def go() -> None:
        watcher.start()
        await asyncio.sleep(0.12)
        assert len(accounts.reads) >= 1 and session.told == []
        trust.revoked.add(b"A")
        await asyncio.sleep(0.12)
        assert session.told == [CERTIFICATE_NO_LONGER_VALID]
        await watcher.stop()
        reads = len(accounts.reads)
        await asyncio.sleep(0.12)
        assert len(accounts.reads) == reads  # stopped: no more checks
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    asyncio.run(go())


def test_per_session_cost_is_a_set_entry() -> None:
    watcher, _, _, _ = setup()
    der = b"\x30" * 1500  # a card certificate's size: kept once, not per session
    who = ident(1, "a" * 64)
    sessions = [FakeSession(watcher) for _ in range(5000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for session in sessions:
            session.registration = watcher.register(
                session, listener="imaps", der=der, identity=who
            )
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A few hundred bytes per session at most (the bench's budget); here a
    # set slot, the DER and the group counted once.
    assert grown / len(sessions) < 200, grown / len(sessions)


def test_directory_standing_reads_fresh_in_one_go(tmp_path: Path) -> None:
    with running_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs") as storage:
        directory = storage.directory
        linked = {f"{n:064x}" for n in range(1000)}  # more than one statement's worth

        def link(conn: Connection, _ctx: WriteContext) -> None:
            conn.execute(
                insert(schema.table(schema.Certificate)),
                [
                    {
                        "fingerprint": f,
                        "account_id": ME.account_id,
                        "subject": "CN=x",
                        "first_seen": datetime.now(UTC),
                    }
                    for f in sorted(linked)
                ]
                + [
                    {
                        "fingerprint": OTHER.fingerprint,
                        "account_id": OTHER.account_id,
                        "subject": "CN=y",
                        "first_seen": datetime.now(UTC),
                    }
                ],
            )

        async def go() -> None:
            await storage.commits.submit(link)
            asked = [*linked, OTHER.fingerprint, "0" * 63 + "z"]
            found = await directory.standing(asked)
            assert found == {
                **{f: (ME.account_id, True) for f in linked},
                OTHER.fingerprint: (OTHER.account_id, True),
            }
            await storage.commits.submit(lambda conn, _ctx: Directory.deactivate(conn, ME.address))
            # No cache: the deactivation shows at once.
            found = await directory.standing(asked)
            assert found[f"{0:064x}"] == (ME.account_id, False)
            assert found[OTHER.fingerprint] == (OTHER.account_id, True)
            assert await directory.standing([]) == {}

        asyncio.run(go())


# -- the IMAP server with a watcher (the IMAP tests' PKI, server thread and fake store) --


@pytest.fixture(scope="module")
def imap_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The certificates the IMAP tests' server and client use (tests.imap.conftest)."""
    root = tmp_path_factory.mktemp("watch-pki")
    validity = Validity.lasting(timedelta(days=1))
    ca = CertificateAuthority.create(certbuilder.name("Test CA"), validity=validity)
    certbuilder.write_certificate(root / "ca.crt", ca.cert)
    ca.issue(
        certbuilder.name("localhost"),
        profile=certbuilder.SERVER,
        dns_names=["localhost"],
        ips=["127.0.0.1"],
        validity=validity,
    ).write(root / "server.crt", root / "server.key")
    for stem, address in (("client", ADDRESS), ("stranger", STRANGER)):
        ca.issue(
            certbuilder.name(stem), profile=certbuilder.CLIENT, emails=[address], validity=validity
        ).write(root / f"{stem}.crt", root / f"{stem}.key")
    return Pki(
        ca=root / "ca.crt",
        server_cert=root / "server.crt",
        server_key=root / "server.key",
        client_cert=root / "client.crt",
        client_key=root / "client.key",
        stranger_cert=root / "stranger.crt",
        stranger_key=root / "stranger.key",
    )


class SlowAppend(FakeStore):
    """An APPEND whose commit takes a while: the watcher comes in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.committing = threading.Event()

    async def append(
        self,
        who: Identity,
        mailbox_name: str,
        data: bytes,
        flags: frozenset[str],
        internaldate: datetime | None,
    ) -> AppendResult:
        self.committing.set()
        await asyncio.sleep(0.3)
        return await super().append(who, mailbox_name, data, flags, internaldate)


def everyone_revoked() -> tuple[SessionWatcher, Trust]:
    trust = Trust()

    async def standing(fingerprints: Collection[str]) -> Mapping[str, tuple[int, bool]]:
        return {f: (1, True) for f in fingerprints}  # account 1, as resolve_identity says

    def check(der: bytes, listener: str) -> str | None:
        trust(der, listener)
        return "revoked for the test"

    watcher = SessionWatcher(
        check_certificate=check,
        standing=standing,
        interval=30,
        log=logging.getLogger("test.sessions"),
    )
    return watcher, trust


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_imap_between_commands_gets_bye_alert_at_once_and_is_forgotten(imap_pki: Pki) -> None:
    watcher, _ = everyone_revoked()
    server = ServerThread(FakeStore(), imap_pki, idle_timeout=30, watcher=watcher).start()
    try:
        with RawClient(server.port, imap_pki.client_context()) as client:
            client.login()
            assert len(watcher) == 1
            (closure,) = server.call(watcher.check())
            assert closure.listener == "imaps" and closure.code == "certificate-refused"
            assert client.file.readline() == (
                b"* BYE [ALERT] " + CERTIFICATE_NO_LONGER_VALID.encode() + b"\r\n"
            )
            assert client.file.readline() == b""  # closed
            wait_until(lambda: len(watcher) == 0 and watcher.certificates == 0)
        records = [r.getMessage() for r in server.handler.records]
        assert any("outcome=revoked" in line for line in records), records
    finally:
        server.stop()


def test_imap_running_command_answers_before_the_bye(imap_pki: Pki) -> None:
    watcher, _ = everyone_revoked()
    store = SlowAppend()
    server = ServerThread(store, imap_pki, idle_timeout=30, watcher=watcher).start()
    try:
        with RawClient(server.port, imap_pki.client_context()) as client:
            client.login()
            client.send(b"A1 APPEND Brouillons {7}\r\n")
            assert client.read_response().startswith(b"+ ")
            client.send(b"Hello\r\n\r\n")
            assert store.committing.wait(5)
            assert len(server.call(watcher.check())) == 1  # during the commit
            # The APPEND's OK first (its message is kept), then the goodbye.
            assert client.read_response().startswith(b"A1 OK")
            assert client.file.readline().startswith(b"* BYE [ALERT] ")
            assert client.file.readline() == b""
        assert any(call[0] == "append" for call in store.calls)
        wait_until(lambda: len(watcher) == 0)
    finally:
        server.stop()


# -- the SMTPS front-end with a watcher: a message being committed keeps its 250 --------


class SlowDesk:
    """What the SMTP handler asks of the submission desk; the commit takes a while."""

    def __init__(self) -> None:
        self.committing = threading.Event()
        self.stored: list[bytes] = []

    def submission(self, who: Identity, mail_from: str) -> SlowDesk:
        return self

    async def open(self, who: Identity, mail_from: str) -> SlowDesk:
        return self

    @property
    def who(self) -> Identity:
        return WATCHED

    async def add_recipient(self, address: str) -> None:
        return None

    async def accept(self, data: bytes, *, arrival: str | None = None) -> SimpleNamespace:
        self.committing.set()
        await asyncio.sleep(0.3)
        self.stored.append(data)
        return SimpleNamespace(
            resent=False,
            reference="REF1",
            sha256="0" * 64,
            size=len(data),
            plan=SimpleNamespace(dossier="D1"),
        )


WATCHED = Identity(1, ADDRESS, Role.AVOCAT, "Maître Test", "f" * 64, ADDRESS)


def test_smtp_message_being_committed_gets_its_250_then_421(imap_pki: Pki) -> None:
    watcher, _ = everyone_revoked()
    desk = SlowDesk()
    loop = asyncio.new_event_loop()

    async def resolve(der: bytes) -> Identity:
        return WATCHED

    async def serve() -> asyncio.AbstractServer:
        app = make_smtp_factory(
            desk=desk,  # type: ignore[arg-type]
            listener="smtps",
            resolve_identity=resolve,
            allowed_roles=frozenset({Role.AVOCAT}),
            hostname="localhost",
            max_size=1024 * 1024,
            max_recipients=5,
            timeout=30,
            starttls_context=None,
            watcher=watcher,
        )
        gate = Gate(
            "smtps",
            Admission(),
            goodbye=b"421\r\n",
            metrics=GatewayMetrics(),
            log=logging.getLogger("test"),
        )

        def protocol() -> asyncio.Protocol:
            return TlsServerProtocol(
                imap_pki.server_context(),
                gate=gate,
                on_failure=lambda *_: None,
                handshake_timeout=5,
                app_factory=app,
            )

        return await loop.create_server(protocol, "127.0.0.1", 0)

    server = cast(asyncio.Server, loop.run_until_complete(serve()))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = server.sockets[0].getsockname()[1]
        checked: list[object] = []

        def check_during_commit() -> None:
            assert desk.committing.wait(5)
            checked.append(asyncio.run_coroutine_threadsafe(watcher.check(), loop).result(5))

        checker = threading.Thread(target=check_during_commit)
        with smtplib.SMTP_SSL(
            "localhost", port, context=imap_pki.client_context(), timeout=5
        ) as client:
            assert client.ehlo()[0] == 250
            wait_until(lambda: len(watcher) == 1)  # watched from EHLO on
            assert client.mail(ADDRESS)[0] == 250
            assert client.rcpt("dossier@x.test")[0] == 250
            checker.start()
            # The watcher's verdict came during the commit: the 250 still goes out.
            assert client.data(b"Subject: x\r\n\r\nbody\r\n") == (250, b"2.0.0 Accepted as REF1")
            checker.join(5)
            assert checked and len(checked[0]) == 1  # type: ignore[arg-type]
            assert client.getreply() == (421, b"4.7.0 " + CERTIFICATE_NO_LONGER_VALID.encode())
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
        assert len(desk.stored) == 1
        wait_until(lambda: len(watcher) == 0)
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
