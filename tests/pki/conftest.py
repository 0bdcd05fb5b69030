"""Fixtures for the PKI tests: a fresh development PKI and a loopback TLS pair.

Certificates are generated per run under pytest's tmp directories; nothing
here is ever written to the repository.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from palais.pki import (
    DevPki,
    IssuedIdentity,
    TrustAnchors,
    client_context,
    create_dev_pki,
    issue_sample_identities,
    server_context,
)

_TIMEOUT = 10.0


@dataclass(frozen=True)
class Sample:
    pki: DevPki
    identities: dict[str, IssuedIdentity]


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """A PKI with one identity per role, shared by tests that do not mutate it."""
    pki = create_dev_pki(tmp_path_factory.mktemp("shared") / "pki")
    return Sample(pki, issue_sample_identities(pki))


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    """A PKI of one's own, for tests that issue or revoke."""
    return create_dev_pki(tmp_path / "pki")


def der_of(identity: IssuedIdentity | Path) -> bytes:
    path = identity if isinstance(identity, Path) else identity.cert_path
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def anchors_of(pki: DevPki) -> TrustAnchors:
    return TrustAnchors(pki.anchor_paths(), pki.crl_paths())


def server_ctx_of(pki: DevPki, *, require_client_cert: bool = True) -> ssl.SSLContext:
    return server_context(
        pki.server_cert_path,
        pki.server_key_path,
        list(pki.anchor_paths().values()),
        pki.crl_paths(),
        require_client_cert=require_client_cert,
    )


def client_ctx_of(pki: DevPki, identity: IssuedIdentity | None) -> ssl.SSLContext:
    if identity is None:
        return client_context(pki.ca_path)
    return client_context(pki.ca_path, identity.cert_path, identity.key_path)


@dataclass
class Outcome:
    """Both ends of one loopback connection.

    With TLS 1.3 the client finishes its handshake before the server has
    judged the client certificate, so a refusal shows up on the client only
    at its first read; the server side is the authoritative verdict.
    """

    server_error: BaseException | None = None
    client_error: BaseException | None = None
    peer_der: bytes | None = None
    version: str | None = None
    server_reused: bool = False
    client_reused: bool = False
    session: ssl.SSLSession | None = None
    received: bytes = b""

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None

    @property
    def refused(self) -> bool:
        return self.server_error is not None and self.client_error is not None


def serve_once(
    server_ctx: ssl.SSLContext,
    outcome: Outcome,
    on_connected: Callable[[ssl.SSLSocket], None] | None = None,
) -> tuple[int, threading.Thread, socket.socket]:
    """Accept one connection on 127.0.0.1 in a thread, record the server side."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(_TIMEOUT)
    port = listener.getsockname()[1]

    def run() -> None:
        try:
            raw, _ = listener.accept()
        except OSError as exc:
            outcome.server_error = exc
            return
        raw.settimeout(_TIMEOUT)
        try:
            with server_ctx.wrap_socket(raw, server_side=True) as tls:
                outcome.peer_der = tls.getpeercert(binary_form=True)
                outcome.version = tls.version()
                outcome.server_reused = tls.session_reused
                if on_connected is not None:
                    on_connected(tls)
                tls.sendall(b"ok\n")
        except (OSError, ssl.SSLError) as exc:
            outcome.server_error = exc
        finally:
            raw.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread, listener


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    *,
    server_hostname: str = "localhost",
    session: ssl.SSLSession | None = None,
) -> Outcome:
    outcome = Outcome()
    port, thread, listener = serve_once(server_ctx, outcome)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT) as raw:
            try:
                with client_ctx.wrap_socket(
                    raw, server_hostname=server_hostname, session=session
                ) as tls:
                    outcome.received = tls.recv(16)
                    outcome.client_reused = tls.session_reused
                    outcome.session = tls.session
                    if outcome.received != b"ok\n":
                        raise ConnectionError(f"unexpected reply {outcome.received!r}")
            except (OSError, ssl.SSLError) as exc:
                outcome.client_error = exc
    finally:
        thread.join(_TIMEOUT)
        listener.close()
    assert not thread.is_alive(), "loopback server did not finish"
    return outcome
