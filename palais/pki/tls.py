"""The one place TLS contexts are made (stdlib ``ssl``, as asyncio and aiosmtpd use).

Every front-end (SMTP submission and relay, IMAP, HTTPS) gets its server
context from :func:`server_context`, so the protocol floor, the cipher list
and the revocation policy cannot drift between listeners.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from palais.pki.identify import CertificateRefused

__all__ = [
    "ReloadableServerContext",
    "client_context",
    "peer_certificate_der",
    "server_context",
    "server_context_from_pem",
]

# X509_V_FLAG_NO_CHECK_TIME (OpenSSL 1.1.0+), which Python's ssl does not name.
NO_CHECK_TIME: Final = 0x200000

# TLS 1.2 suites: forward secrecy and AEAD only. ECDSA and RSA variants both
# stay because an operator may deploy an RSA server certificate. TLS 1.3
# suites are not configurable here and OpenSSL's defaults are all AEAD.
_TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1"


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    """``ctx.load_cert_chain``, whose failure to open a file names it: the
    ssl module's error does not say which of the two it could not read."""
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except ssl.SSLError:  # a file read but not usable: OpenSSL's reason says which part
        raise
    except OSError as error:
        if error.filename is not None:
            raise
        files = [cert] if key is None else [cert, key]
        unread = next((f for f in files if not os.access(f, os.R_OK)), cert)
        raise type(error)(error.errno, error.strerror, str(unread)) from error


def server_context(
    cert: Path,
    key: Path,
    anchors: Sequence[Path],
    crls: Sequence[Path],
    *,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """A server context that authenticates clients by certificate.

    ``anchors`` are the client-trusted CAs (their union is accepted; which
    one vouched for the client is decided afterwards by
    ``TrustAnchors.identify``). One CRL per anchor is mandatory: the leaf
    check fails closed for a CA without one. With ``require_client_cert``
    false a certificate is requested and verified if sent, but its absence is
    not an error (for endpoints such as health checks).
    """
    if not anchors:
        raise ValueError("a server context needs at least one trust anchor")
    if not crls:
        # Without CRLs every client handshake would fail with "unable to get
        # certificate CRL", which looks like a client problem; say it here.
        raise ValueError("a server context needs the anchors' CRLs")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_chain(ctx, cert, key)
    for anchor in anchors:
        ctx.load_verify_locations(cafile=anchor)
    # load_verify_locations with a file reads CRLs as well as certificates
    # (cadata= would drop them), so CRLs go through the same call.
    for crl in crls:
        ctx.load_verify_locations(cafile=crl)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    # Resumption (tickets for TLS 1.3, tickets and the session cache for 1.2)
    # stays on: the benchmark reconnects constantly. A resumed session skips
    # chain and CRL checks, which is why identify() re-checks revocation.
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def server_context_from_pem(
    cert: Path,
    key: Path,
    cas: Sequence[bytes],
    crls: Sequence[bytes],
    *,
    scratch: Path,
    lenient_time: bool = False,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """:func:`server_context` from PEM data (what the database holds).

    ``load_verify_locations(cadata=...)`` takes certificates only, so CAs and
    CRLs go through one owner-only temporary file under ``scratch`` (the
    instance directory), removed as soon as OpenSSL has read it.

    ``lenient_time`` is for a CRL past its nextUpdate but within the
    operator's grace: OpenSSL has no grace and would refuse every client of
    that CA, so time checks are left to ``TrustAnchors.identify`` (which every
    listener calls, and which checks certificates' and CRLs' dates with the
    grace) until the grace ends and the contexts are rebuilt without it.

    Unlike :func:`server_context`, no CA (an operator removed the last one
    a listener trusts) or no CRL is not an error: the context then refuses
    every client certificate, which is what the stored trust says.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    _load_chain(ctx, cert, key)
    if cas or crls:
        # mkstemp creates the file 0600 whatever the umask.
        fd, name = tempfile.mkstemp(prefix=".trust-", suffix=".pem", dir=scratch)
        try:
            with os.fdopen(fd, "wb") as out:
                for pem in (*cas, *crls):
                    out.write(pem if pem.endswith(b"\n") else pem + b"\n")
            ctx.load_verify_locations(cafile=name)
        finally:
            os.unlink(name)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    if lenient_time:
        ctx.verify_flags |= NO_CHECK_TIME
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def client_context(
    ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``ca`` for the server, with an optional client cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    _harden(ctx)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cafile=ca)
    if cert is not None:
        _load_chain(ctx, cert, key)
    elif key is not None:
        raise ValueError("a client key without its certificate")
    return ctx


class ReloadableServerContext:
    """A server context whose anchors, CRLs and certificate can be reloaded.

    Listeners (asyncio, aiosmtpd) keep the SSLContext they were started with,
    and OpenSSL cannot drop a CRL from a context. So listeners get
    ``.context``, a front context whose SNI callback (OpenSSL calls it for
    every ClientHello, with or without a server name) moves each new
    connection onto the most recently built context before the client
    certificate is verified. Session tickets and the session cache belong to
    the front context, so resumption survives reloads; a resumed session is
    not re-verified, which identify() covers.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        anchors: Sequence[Path],
        crls: Sequence[Path],
        *,
        require_client_cert: bool = True,
    ) -> None:
        self._cert = Path(cert)
        self._key = Path(key)
        self._anchors = tuple(Path(p) for p in anchors)
        self._crls = tuple(Path(p) for p in crls)
        self._require_client_cert = require_client_cert
        self._builder: Callable[[], ssl.SSLContext] = self._build
        self._front = self._builder()
        self._current = self._front
        self._front.sni_callback = self._select

    @classmethod
    def from_builder(cls, build: Callable[[], ssl.SSLContext]) -> ReloadableServerContext:
        """Contexts made by ``build`` (say, from the stored trust) on each reload."""
        self = cls.__new__(cls)
        self._builder = build
        self._front = build()
        self._current = self._front
        self._front.sni_callback = self._select
        return self

    @property
    def context(self) -> ssl.SSLContext:
        """The context to hand to listeners; stays the same object across reloads."""
        return self._front

    def reload(self) -> None:
        """Build a new context; on error the previous one stays in force."""
        current = self._builder()
        # A connection keeps the verification flags of the context it was
        # created from (the front one): switching contexts in the SNI
        # callback switches the certificate store, not the flags.
        self._front.verify_flags = current.verify_flags
        self._current = current

    def _build(self) -> ssl.SSLContext:
        return server_context(
            self._cert,
            self._key,
            self._anchors,
            self._crls,
            require_client_cert=self._require_client_cert,
        )

    def _select(
        self,
        connection: ssl.SSLObject | ssl.SSLSocket,
        server_name: str | None,
        front: ssl.SSLContext,
    ) -> int | None:
        current = self._current
        if current is not front:
            connection.context = current
        return None


def peer_certificate_der(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    """The verified client certificate (DER) of a completed handshake.

    From asyncio: ``transport.get_extra_info("ssl_object")``.
    """
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise CertificateRefused("no client certificate presented")
    return der


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    # CRIME; Python already sets it, stated so a future default cannot drop it.
    ctx.options |= ssl.OP_NO_COMPRESSION
    # Renegotiation adds attack surface and nothing the gateway needs.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
