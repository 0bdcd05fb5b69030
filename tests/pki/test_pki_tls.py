"""TLS contexts over real 127.0.0.1 sockets: who gets through the handshake."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from palais.mailbox.identity import CertificateIdentity, Role, TrustCommunity
from palais.pki import (
    CertificateRefused,
    DevPki,
    IssuedIdentity,
    ReloadableServerContext,
    TrustAnchors,
    client_context,
    issue_identity,
    peer_certificate_der,
    revoke,
    server_context,
)

TIMEOUT = 10.0


def server_ctx(pki: DevPki, *, require_client_cert: bool = True) -> ssl.SSLContext:
    return server_context(
        pki.server_cert_path,
        pki.server_key_path,
        list(pki.anchor_paths().values()),
        pki.crl_paths(),
        require_client_cert=require_client_cert,
    )


def client_ctx(
    pki: DevPki,
    identity: IssuedIdentity | None,
    *,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    if identity is None:
        ctx = client_context(pki.ca_path)
    else:
        ctx = client_context(pki.ca_path, identity.cert_path, identity.key_path)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


@dataclass
class Outcome:
    """Both ends of one loopback connection.

    With TLS 1.3 the client completes its handshake before the server has
    judged the client certificate, so a refusal reaches the client only at
    its first read; the server's side is the verdict that matters.
    """

    server_error: BaseException | None = None
    client_error: BaseException | None = None
    peer_der: bytes | None = None
    version: str | None = None
    server_reused: bool = False
    client_reused: bool = False
    session: ssl.SSLSession | None = None

    @property
    def accepted(self) -> bool:
        return self.server_error is None and self.client_error is None

    @property
    def refused(self) -> bool:
        return self.server_error is not None and self.client_error is not None

    def server_said(self, text: str) -> bool:
        return text in str(self.server_error)


def serve_once(server: ssl.SSLContext, outcome: Outcome) -> tuple[int, threading.Thread]:
    """Accept one connection in a thread; record the server's side in outcome."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    port: int = listener.getsockname()[1]

    def run() -> None:
        with listener:
            try:
                raw, _ = listener.accept()
            except OSError as exc:
                outcome.server_error = exc
                return
        with raw:
            raw.settimeout(TIMEOUT)
            try:
                with server.wrap_socket(raw, server_side=True) as tls:
                    outcome.peer_der = tls.getpeercert(binary_form=True)
                    outcome.version = tls.version()
                    outcome.server_reused = bool(tls.session_reused)
                    tls.sendall(b"ok\n")
                    _wait_for_close(tls)
            except OSError as exc:  # ssl.SSLError is an OSError
                outcome.server_error = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def _wait_for_close(tls: ssl.SSLSocket) -> None:
    # Closing first, with the client's close_notify still in flight, makes the
    # kernel answer it with a reset, which openssl s_client reports as a
    # failure. How the client closes is not under test: errors are ignored.
    try:
        while tls.recv(1024):
            pass
    except OSError:
        pass


def handshake(
    server: ssl.SSLContext,
    client: ssl.SSLContext,
    *,
    server_hostname: str = "localhost",
    session: ssl.SSLSession | None = None,
) -> Outcome:
    outcome = Outcome()
    port, thread = serve_once(server, outcome)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname, session=session) as tls,
        ):
            reply = tls.recv(16)
            if reply != b"ok\n":
                raise ConnectionError(f"server closed without replying ({reply!r})")
            outcome.client_reused = bool(tls.session_reused)
            outcome.session = tls.session
    except OSError as exc:
        outcome.client_error = exc
    finally:
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "loopback server did not finish"
    return outcome


def der_of(identity: IssuedIdentity) -> bytes:
    cert = x509.load_pem_x509_certificate(identity.cert_path.read_bytes())
    return cert.public_bytes(Encoding.DER)


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


# --- the five cases ----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize(
    "name", ["avocat", "collaborateur", "greffier", "magistrat", "juridiction", "admin"]
)
def test_good_client_certificate_handshakes(
    shared_pki: DevPki,
    samples: dict[str, IssuedIdentity],
    name: str,
    version: ssl.TLSVersion,
) -> None:
    outcome = handshake(
        server_ctx(shared_pki), client_ctx(shared_pki, samples[name], version=version)
    )
    assert outcome.accepted, (outcome.server_error, outcome.client_error)
    assert outcome.version == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    assert outcome.peer_der == der_of(samples[name])


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_no_client_certificate_fails(shared_pki: DevPki, version: ssl.TLSVersion) -> None:
    outcome = handshake(server_ctx(shared_pki), client_ctx(shared_pki, None, version=version))
    assert outcome.refused
    assert outcome.server_said("did not return a certificate")


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_stranger_ca_fails(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity], version: ssl.TLSVersion
) -> None:
    client = client_ctx(shared_pki, samples["stranger"], version=version)
    outcome = handshake(server_ctx(shared_pki), client)
    assert outcome.refused
    assert outcome.server_said("unable to get local issuer certificate")


def test_expired_certificate_fails(pki: DevPki) -> None:
    now = datetime.now(UTC)
    expired = issue_identity(
        pki,
        "expired",
        role=Role.AVOCAT,
        given_name="A",
        surname="B",
        address="e@b.fr",
        not_before=now - timedelta(days=800),
        not_after=now - timedelta(days=1),
    )
    outcome = handshake(server_ctx(pki), client_ctx(pki, expired))
    assert outcome.refused
    assert outcome.server_said("certificate has expired")


def test_not_yet_valid_certificate_fails(pki: DevPki) -> None:
    now = datetime.now(UTC)
    early = issue_identity(
        pki,
        "early",
        role=Role.AVOCAT,
        given_name="A",
        surname="B",
        address="e@b.fr",
        not_before=now + timedelta(days=1),
        not_after=now + timedelta(days=800),
    )
    outcome = handshake(server_ctx(pki), client_ctx(pki, early))
    assert outcome.refused
    assert outcome.server_said("certificate is not yet valid")


def test_revoked_certificate_fails(pki: DevPki) -> None:
    lawyer = issue_identity(
        pki, "struck-off", role=Role.AVOCAT, given_name="A", surname="B", address="s@b.fr"
    )
    assert handshake(server_ctx(pki), client_ctx(pki, lawyer)).accepted
    revoke(pki, lawyer.cert_path)
    outcome = handshake(server_ctx(pki), client_ctx(pki, lawyer))
    assert outcome.refused
    assert outcome.server_said("certificate revoked")


# --- context settings ---------------------------------------------------------------


def test_server_context_settings(shared_pki: DevPki) -> None:
    ctx = server_ctx(shared_pki)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ssl.VERIFY_CRL_CHECK_LEAF in ctx.verify_flags
    assert ssl.VERIFY_X509_STRICT in ctx.verify_flags
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert not ctx.options & ssl.OP_NO_TICKET
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12)


def test_old_protocols_are_refused(shared_pki: DevPki, samples: dict[str, IssuedIdentity]) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(shared_pki.ca_path)
    client.load_cert_chain(samples["avocat"].cert_path, samples["avocat"].key_path)
    with pytest.warns(DeprecationWarning):
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("ALL:@SECLEVEL=0")
    outcome = handshake(server_ctx(shared_pki), client)
    assert outcome.refused
    assert outcome.server_said("unsupported protocol")


def test_server_context_requires_crls(shared_pki: DevPki) -> None:
    with pytest.raises(ValueError, match="CRL"):
        server_context(
            shared_pki.server_cert_path,
            shared_pki.server_key_path,
            list(shared_pki.anchor_paths().values()),
            [],
        )


def test_optional_client_certificate(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    server = server_ctx(shared_pki, require_client_cert=False)
    anonymous = handshake(server, client_ctx(shared_pki, None))
    assert anonymous.accepted and anonymous.peer_der is None
    assert handshake(server, client_ctx(shared_pki, samples["avocat"])).peer_der is not None
    # A certificate that is sent is still verified.
    assert handshake(server, client_ctx(shared_pki, samples["stranger"])).refused


def test_client_checks_the_server_name(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    client = client_ctx(shared_pki, samples["avocat"])
    assert client.check_hostname
    assert handshake(server_ctx(shared_pki), client, server_hostname="127.0.0.1").accepted
    wrong = handshake(server_ctx(shared_pki), client, server_hostname="palais.example")
    assert wrong.client_error is not None
    assert "Hostname mismatch" in str(wrong.client_error)


def test_client_rejects_a_server_from_another_ca(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    # Trusting a client anchor instead of ca.pem: the server cert must fail.
    client = client_context(
        shared_pki.anchor_path(TrustCommunity.AVOCATS),
        samples["avocat"].cert_path,
        samples["avocat"].key_path,
    )
    outcome = handshake(server_ctx(shared_pki), client)
    assert "certificate verify failed" in str(outcome.client_error)


# --- resumption and reload ---------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_sessions_resume_with_client_certificates(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity], version: ssl.TLSVersion
) -> None:
    server = server_ctx(shared_pki)
    client = client_ctx(shared_pki, samples["greffier"], version=version)
    first = handshake(server, client)
    assert first.accepted and first.session is not None
    second = handshake(server, client, session=first.session)
    assert second.accepted
    assert second.server_reused and second.client_reused
    # The peer certificate survives resumption, so identify() still works.
    assert second.peer_der == der_of(samples["greffier"])


def test_reloadable_context_applies_new_crls(pki: DevPki) -> None:
    lawyer = issue_identity(
        pki, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="l@b.fr"
    )
    clerk = issue_identity(
        pki, "clerk", role=Role.GREFFIER, given_name="C", surname="D", address="c@j.fr"
    )
    anchors = TrustAnchors(pki.anchor_paths(), pki.crl_paths())
    tls = ReloadableServerContext(
        pki.server_cert_path,
        pki.server_key_path,
        list(pki.anchor_paths().values()),
        pki.crl_paths(),
    )
    listener_ctx = tls.context
    lawyer_client = client_ctx(pki, lawyer)  # sessions resume within one context
    before = handshake(listener_ctx, lawyer_client)
    assert before.accepted and before.session is not None

    revoke(pki, lawyer.cert_path)
    tls.reload()
    anchors.reload()
    assert tls.context is listener_ctx  # listeners keep their object

    fresh = handshake(listener_ctx, client_ctx(pki, lawyer))
    assert fresh.refused and fresh.server_said("certificate revoked")
    no_sni = handshake(listener_ctx, client_ctx(pki, lawyer), server_hostname="127.0.0.1")
    assert no_sni.refused and no_sni.server_said("certificate revoked")
    assert handshake(listener_ctx, client_ctx(pki, clerk)).accepted

    # A session resumed from before the revocation skips TLS verification;
    # identify() is what stops it.
    resumed = handshake(listener_ctx, lawyer_client, session=before.session)
    assert resumed.server_reused and resumed.peer_der is not None
    with pytest.raises(CertificateRefused, match="revoked"):
        anchors.identify(resumed.peer_der)


def test_failed_reload_keeps_the_listener_working(pki: DevPki, tmp_path: Path) -> None:
    lawyer = issue_identity(
        pki, "lawyer", role=Role.AVOCAT, given_name="A", surname="B", address="l@b.fr"
    )
    tls = ReloadableServerContext(
        pki.server_cert_path,
        pki.server_key_path,
        list(pki.anchor_paths().values()),
        pki.crl_paths(),
    )
    pki.server_key_path.write_text("garbage")
    with pytest.raises(ssl.SSLError):
        tls.reload()
    assert handshake(tls.context, client_ctx(pki, lawyer)).accepted


# --- what the gateway does with it -------------------------------------------------------


def test_asyncio_server_identifies_the_peer(
    shared_pki: DevPki, samples: dict[str, IssuedIdentity]
) -> None:
    anchors = TrustAnchors(shared_pki.anchor_paths(), shared_pki.crl_paths())
    seen: list[CertificateIdentity] = []

    async def main() -> bytes:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            der = peer_certificate_der(writer.get_extra_info("ssl_object"))
            seen.append(anchors.identify(der))
            writer.write(b"* OK\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_ctx(shared_pki))
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=client_ctx(shared_pki, samples["magistrat"]),
                server_hostname="localhost",
            )
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            writer.close()
            await writer.wait_closed()
            return line

    assert asyncio.run(main()) == b"* OK\r\n"
    assert [i.role for i in seen] == [Role.MAGISTRAT]
    assert seen[0].address == samples["magistrat"].address


def test_peer_certificate_der_without_certificate() -> None:
    class NoPeer:
        def getpeercert(self, binary_form: bool = False) -> None:
            return None

    with pytest.raises(CertificateRefused, match="no client certificate"):
        peer_certificate_der(NoPeer())  # type: ignore[arg-type]


# --- the openssl command as an independent client --------------------------------------


def s_client(
    pki: DevPki, port: int, identity: IssuedIdentity | None
) -> subprocess.CompletedProcess[str]:
    command = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-CAfile",
        str(pki.ca_path),
        "-verify_return_error",
        "-brief",
    ]
    if identity is not None:
        command += ["-cert", str(identity.cert_path), "-key", str(identity.key_path)]
    return subprocess.run(
        command, input="", capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
def test_openssl_s_client(shared_pki: DevPki, samples: dict[str, IssuedIdentity]) -> None:
    server = server_ctx(shared_pki)

    good = Outcome()
    port, thread = serve_once(server, good)
    result = s_client(shared_pki, port, samples["juridiction"])
    thread.join(TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification: OK" in result.stderr + result.stdout
    assert good.server_error is None
    assert good.peer_der == der_of(samples["juridiction"])

    anonymous = Outcome()
    port, thread = serve_once(server, anonymous)
    s_client(shared_pki, port, None)
    thread.join(TIMEOUT)
    assert anonymous.server_said("did not return a certificate")

    stranger = Outcome()
    port, thread = serve_once(server, stranger)
    s_client(shared_pki, port, samples["stranger"])
    thread.join(TIMEOUT)
    assert stranger.server_said("unable to get local issuer certificate")
