"""What IMAP tells the audit log: refused connections and domain refusals, once each."""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest

from palais.mailbox.audit import AuditAction
from tests.imap.conftest import ADDRESS, STRANGER, Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore


@dataclass(frozen=True)
class Refusal:
    action: AuditAction
    listener: str
    peer: str | None
    reason: str
    subject: str | None
    detail: Mapping[str, object]


class RecordingAudit:
    """A ``RefusalAudit`` that keeps what it is told (called on the server's loop)."""

    def __init__(self) -> None:
        self.events: list[Refusal] = []
        self._lock = threading.Lock()

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
        with self._lock:
            self.events.append(Refusal(action, listener, peer, reason, subject, dict(detail or {})))

    def settled(self, count: int) -> list[Refusal]:
        """The events once ``count`` have come, and a moment more for any extra one."""
        deadline = time.monotonic() + 5
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        with self._lock:
            return list(self.events)


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def audited(store: FakeStore, pki: Pki, audit: RecordingAudit) -> Iterator[ServerThread]:
    thread = ServerThread(
        store, pki, idle_timeout=30, max_append_size=1024 * 1024, audit=audit
    ).start()
    try:
        yield thread
    finally:
        thread.stop()


def test_a_certificate_no_account_may_use_is_one_refused_connection(
    audited: ServerThread, pki: Pki, audit: RecordingAudit
) -> None:
    conn = imaplib.IMAP4_SSL(
        "127.0.0.1", audited.port, ssl_context=pki.client_context(stranger=True)
    )
    with pytest.raises(imaplib.IMAP4.error):
        conn.authenticate("EXTERNAL", lambda _: b"")
    # The refusal closes the connection (after its NO): LOGIN finds it closed
    # or refused, and adds no audit event either way.
    with pytest.raises(imaplib.IMAP4.error):
        conn.login(STRANGER, "")
    conn.shutdown()
    [event] = audit.settled(1)
    assert event.action is AuditAction.CONNECTION_REFUSED
    assert event.listener == "imaps"
    assert event.subject == STRANGER  # the address the certificate names
    assert event.reason == "This certificate is not registered here"
    assert event.peer is not None and event.peer.startswith("127.0.0.1:")
    assert len(str(event.detail["fingerprint"])) == 64


def test_a_handshake_without_a_certificate_is_one_refused_connection(
    audited: ServerThread, pki: Pki, audit: RecordingAudit
) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    sock = socket.create_connection(("127.0.0.1", audited.port), timeout=5)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            tls = ctx.wrap_socket(sock, server_hostname="localhost")
            sock = tls
            if not tls.recv(100):
                raise EOFError
    finally:
        sock.close()
    [event] = audit.settled(1)
    assert event.action is AuditAction.CONNECTION_REFUSED
    assert event.subject is None
    assert event.detail == {"outcome": "tls-no_certificate"}
    assert event.reason


def test_a_domain_refusal_is_audited_and_an_everyday_no_is_not(
    audited: ServerThread, pki: Pki, audit: RecordingAudit
) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", audited.port, ssl_context=pki.client_context())
    conn.authenticate("EXTERNAL", lambda _: b"")
    # A box that does not exist: a protocol answer, not a refusal to audit.
    assert conn.select("Nowhere")[0] == "NO"
    # APPEND to a folder that cannot hold messages: the domain says no.
    typ, _ = conn.append(
        "Dossiers", "", imaplib.Time2Internaldate(time.time()), b"Subject: x\r\n\r\nx\r\n"
    )
    assert typ == "NO"
    conn.logout()
    [event] = audit.settled(1)
    assert event.action is AuditAction.COMMAND_REFUSED
    assert event.subject == ADDRESS
    assert event.detail == {"command": "APPEND", "kind": "not-possible"}
    assert event.listener == "imaps" and event.peer is not None


def test_without_an_audit_nothing_changes(server: ServerThread, pki: Pki) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=pki.client_context())
    conn.authenticate("EXTERNAL", lambda _: b"")
    typ, _ = conn.append("Dossiers", "", imaplib.Time2Internaldate(time.time()), b"x\r\n")
    assert typ == "NO"
    conn.logout()


def test_a_command_stopped_by_a_limit_is_audited_once(
    audited: ServerThread, pki: Pki, audit: RecordingAudit
) -> None:
    conn = imaplib.IMAP4_SSL("127.0.0.1", audited.port, ssl_context=pki.client_context())
    conn.authenticate("EXTERNAL", lambda _: b"")
    assert conn.select("INBOX")[0] == "OK"
    typ, data = conn.search(None, *(["SEEN"] * 300))
    assert typ == "NO" and b"[LIMIT]" in data[0]
    conn.logout()
    [event] = audit.settled(1)
    assert event.action is AuditAction.COMMAND_REFUSED
    assert event.subject == ADDRESS and event.listener == "imaps"
    assert event.detail == {"command": "SEARCH", "limit": "max_search_keys"}
    assert event.reason == "limit reached: max_search_keys"


def test_an_append_over_the_size_limit_is_audited_once(
    audited: ServerThread, pki: Pki, audit: RecordingAudit
) -> None:
    with RawClient(audited.port, pki.client_context()) as raw:
        raw.login()
        raw.send(b"a APPEND INBOX {2000000}\r\n")
        assert raw.read_response() == b"a NO [TOOBIG] Message too big\r\n"
    [event] = audit.settled(1)
    assert event.action is AuditAction.COMMAND_REFUSED
    assert event.subject == ADDRESS
    assert event.detail == {"command": "APPEND", "limit": "max_append_size"}
