"""The HTTPS front-end: health, metrics and mail-client autoconfiguration.

twisted.web serves it on the gateway's own asyncio loop. The reactor is an
``AsyncioSelectorReactor`` *instance* bound to the running loop and handed
explicitly to every Twisted object that would otherwise reach for the global
``twisted.internet.reactor``: importing that module would install a default
reactor process-wide, which nothing runs, so its timers (TLS write
aggregation, HTTP timeouts) would never fire. For the same reason this
module never calls ``reactor.run()``/``stop()``: asyncio owns the loop, and
the asyncio reactor's ``stop`` would stop the loop under everyone else.

Mutual TLS uses pyOpenSSL (Twisted's TLS layer requires it): a client
certificate is requested and, when sent, verified against the anchors and
their CRLs; its absence is allowed so that a load balancer can probe
``/health``. Each route that needs an identity asks for one itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL, crypto
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer  # type: ignore[import-untyped]

from palais.gateway.admission import Admission, Gate
from palais.gateway.audit import connection_refused, protocol_refused
from palais.gateway.metrics import GatewayMetrics
from palais.gateway.replies import printable as replies_printable
from palais.mailbox.audit import RefusalAudit
from palais.mailbox.errors import PalaisError
from palais.mailbox.identity import Identity, Role

# Shared with the stdlib contexts so the cipher floor cannot drift between
# the HTTPS listener and the SMTP/IMAP ones.
from palais.pki.tls import _TLS12_CIPHERS, NO_CHECK_TIME

__all__ = [
    "AUTOCONFIG_INCOMING_AUTHENTICATION",
    "AUTOCONFIG_OUTGOING_AUTHENTICATION",
    "AUTOCONFIG_PATHS",
    "AUTOCONFIG_SOCKET_TYPE",
    "LISTENER",
    "AddressDomains",
    "HttpsHandle",
    "autoconfig_document",
    "server_tls_context",
    "start_https",
]

AUTOCONFIG_PATHS: Final = (
    b"/.well-known/autoconfig/mail/config-v1.1.xml",
    b"/mail/config-v1.1.xml",
)
_AUTOCONFIG_KEYS: Final = frozenset(
    {"hostname", "imaps_port", "smtps_port", "domain", "display_name"}
)

# A probe or a scraper finishes in well under a minute; Twisted's default
# (twelve hours) would let idle connections pile up.
_IDLE_TIMEOUT: Final = 60.0
# How long stop() lets in-flight responses finish before cutting connections.
_STOP_GRACE: Final = 5.0
_SESSION_ID_CONTEXT: Final = b"palais-https"
# The listener's label in palais_connections_total and the other per-listener figures.
LISTENER: Final = "https"
# The refusal word for a client certificate that fails verification (the
# same word as the SMTP and IMAP listeners'); a missing one is no refusal
# here, since /health needs none.
_REFUSED_CERTIFICATE: Final = "certificate"

_PROMETHEUS_TYPE: Final = CONTENT_TYPE_LATEST.encode("ascii")
_JSON_TYPE: Final = b"application/json"
_XML_TYPE: Final = b"application/xml; charset=utf-8"

# OpenSSL X509_V_ERR_* codes worth naming in the log; others are logged by number.
_VERIFY_ERRORS: Final[dict[int, str]] = {
    2: "issuer certificate not found",
    3: "CRL not found for the issuer",
    7: "certificate signature failure",
    8: "CRL signature failure",
    9: "certificate not yet valid",
    10: "certificate expired",
    11: "CRL not yet valid",
    12: "CRL expired",
    18: "self-signed certificate",
    19: "self-signed certificate in chain",
    20: "issuer not trusted",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
}


ResolveIdentity = Callable[[bytes], Awaitable[Identity]]
# What /health adds on a node of several (database, notifications), by part.
Health = Callable[[], Awaitable[dict[str, Any]]]
# The domains of the people's addresses, for the autoconfig document.
AddressDomains = Callable[[], Awaitable[Collection[str]]]


# Twisted declares much of its API through zope interfaces, which mypy cannot
# see without a plugin; these protocols state the part this module relies on.
class _DelayedCall(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...


class _Address(Protocol):
    port: int


class _Listener(Protocol):
    def stopListening(self) -> Deferred[None] | None: ...
    def getHost(self) -> _Address: ...


class _Reactor(Protocol):
    waker: Any

    def listenTCP(
        self, port: int, factory: object, backlog: int = ..., interface: str = ...
    ) -> _Listener: ...
    def removeReader(self, reader: object) -> None: ...
    def getDelayedCalls(self) -> Sequence[_DelayedCall]: ...


class _Connection(Protocol):
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...


class HttpRequest(Protocol):
    """What a route reads of a request (twisted.web's ``Request``)."""

    method: bytes
    path: bytes
    transport: object
    content: Any  # the body, a file object (twisted keeps large bodies on disk)
    args: dict[bytes, list[bytes]]

    def getHeader(self, key: bytes) -> bytes | None: ...
    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...
    def setHeader(self, name: bytes, value: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...


_HttpRequest = HttpRequest


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    identity: Identity | None = None


_Response = Response
# Who the client is, from its certificate; or the response refusing it
# (401 without a certificate, 403 refused, 503 when the directory is away).
Caller = Callable[[], Awaitable[Identity | Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """A page served besides the built-in ones: its handler, methods, and
    whether it serves every path under its own (``prefix``)."""

    handler: Callable[[HttpRequest, Caller], Awaitable[Response]]
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")
    prefix: bool = False


class HttpsHandle:
    """A running HTTPS listener; ``port`` is the bound port (useful with 0)."""

    def __init__(
        self,
        *,
        port: int,
        listener: _Listener,
        tls_factory: TLSMemoryBIOFactory,
        reactor: _Reactor,
        root: _Root,
        reload_trust: Callable[[Sequence[bytes], Sequence[bytes], bool], None] | None = None,
    ) -> None:
        self.port = port
        self._reload_trust = reload_trust
        self._listener = listener
        self._tls_factory = tls_factory
        self._reactor = reactor
        self._root = root
        self._stopped = False

    def reload_trust(
        self, cas: Sequence[bytes], crls: Sequence[bytes], *, lenient_time: bool = False
    ) -> None:
        """New connections are verified against these CAs and CRLs (PEM); open
        ones keep what they were verified with. On error nothing changes."""
        if self._reload_trust is None:
            raise RuntimeError("this listener was not started by start_https")
        self._reload_trust(cas, crls, lenient_time)

    async def stop(self, *, grace: float = _STOP_GRACE) -> None:
        """Stop listening, let responses in flight finish, then close everything.

        Idempotent. Whatever is still running after ``grace`` seconds is
        cancelled and its connection aborted.
        """
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        try:
            stopped = self._listener.stopListening()
            if isinstance(stopped, Deferred):
                await stopped.asFuture(loop)
            await self._root.finish_pending(grace)
            await self._close_connections()
        finally:
            _release(self._reactor)

    async def _close_connections(self) -> None:
        # WrappingFactory keeps every live TLS protocol in ``protocols``.
        connections = cast(dict[_Connection, int], self._tls_factory.protocols)
        for proto in list(connections):
            # Sends close_notify after anything still buffered.
            proto.loseConnection()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for proto in list(connections):
            proto.abortConnection()
        # Aborts complete on the next reactor turn (a callLater(0)).
        deadline = loop.time() + 1.0
        while connections and loop.time() < deadline:
            await asyncio.sleep(0.01)


def _listen_reusing_port(reactor: Any, port: int, factory: object, host: str) -> _Listener:
    """Listen with SO_REUSEPORT (Twisted's listenTCP cannot set it before bind):
    several worker processes then share the port, the kernel spreading connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        listener: _Listener = reactor.adoptStreamPort(sock.fileno(), family, factory)
        return listener
    finally:
        sock.close()  # the reactor holds a duplicate of the descriptor


def _release(reactor: _Reactor) -> None:
    for call in reactor.getDelayedCalls():
        if call.active():
            call.cancel()
    # The waker's pipe is the only descriptor the reactor owns itself;
    # without this every start/stop cycle would leak two fds and leave a
    # reader registered on a loop that outlives the listener.
    waker = reactor.waker
    if waker is not None:
        reactor.removeReader(waker)
        waker.connectionLost(None)
        reactor.waker = None


async def start_https(
    *,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    anchors: Sequence[Path | bytes],
    crls: Sequence[Path | bytes],
    resolve_identity: ResolveIdentity,
    metrics: GatewayMetrics,
    log: logging.Logger,
    autoconfig: Mapping[str, object],
    address_domains: AddressDomains | None = None,
    admission: Admission | None = None,
    routes: Mapping[bytes, Route] | None = None,
    audit: RefusalAudit | None = None,
    reuse_port: bool = False,
    health: Health | None = None,
) -> HttpsHandle:
    """Serve HTTPS with mutual TLS on the running asyncio loop.

    ``autoconfig`` has the keys ``hostname``, ``imaps_port``, ``smtps_port``,
    ``domain`` and ``display_name``; any other key is an error.
    ``address_domains`` gives the domains of the people's addresses (read
    at each autoconfig request: accounts come and go), announced beside
    ``domain``. ``metrics``
    is what /metrics exposes, and where this listener counts its own
    connections, handshake times and refused certificates. ``admission``
    (shared with the other listeners) caps open connections: one over the
    caps is closed at once.
    """
    loop = asyncio.get_running_loop()
    # Bad files or settings fail here, before a reactor exists to clean up.
    context = server_tls_context(
        cert,
        key,
        anchors,
        crls,
        log=log,
        refused=metrics.refusals.labels(LISTENER, _REFUSED_CERTIFICATE),
        audit=audit,
    )
    autoconfig_document(autoconfig)  # bad settings fail here, not at the first request

    twisted_reactor = AsyncioSelectorReactor(eventloop=loop)
    reactor = cast(_Reactor, twisted_reactor)
    root = _Root(
        resolve_identity=resolve_identity,
        metrics=metrics,
        log=log,
        autoconfig=autoconfig,
        address_domains=address_domains,
        routes=routes or {},
        audit=audit,
        health=health,
    )
    site = _Site(root, timeout=_IDLE_TIMEOUT, reactor=twisted_reactor)  # type: ignore[no-untyped-call]
    site.noisy = False
    # listenSSL would build this factory with the global reactor as its
    # clock; building it here keeps every timer on our loop.
    creator = _ServerTls(context, metrics.handshake_seconds.labels(LISTENER))

    def reload_trust(cas: Sequence[bytes], crls: Sequence[bytes], lenient_time: bool) -> None:
        creator.use(
            server_tls_context(
                cert,
                key,
                cas,
                crls,
                log=log,
                refused=metrics.refusals.labels(LISTENER, _REFUSED_CERTIFICATE),
                audit=audit,
                lenient_time=lenient_time,
            )
        )

    tls_factory = _CountingTlsFactory(
        creator,
        site,
        clock=twisted_reactor,
        accepted=metrics.connections.labels(LISTENER),
        open_now=metrics.open_connections.labels(LISTENER),
        gate=Gate(
            LISTENER,
            admission if admission is not None else Admission(),
            goodbye=b"",
            metrics=metrics,
            log=log,
            audit=audit,
        ),
    )
    try:
        if reuse_port:
            listener = _listen_reusing_port(reactor, port, tls_factory, host)
        else:
            listener = reactor.listenTCP(port, tls_factory, interface=host)
    except BaseException:
        _release(reactor)
        raise
    bound = listener.getHost().port
    log.info("HTTPS listening on %s:%d", host, bound)
    return HttpsHandle(
        port=bound,
        listener=listener,
        tls_factory=tls_factory,
        reactor=reactor,
        root=root,
        reload_trust=reload_trust,
    )


# --- TLS --------------------------------------------------------------------


def server_tls_context(
    cert: Path,
    key: Path,
    anchors: Sequence[Path | bytes],
    crls: Sequence[Path | bytes],
    *,
    log: logging.Logger,
    refused: Counter | None = None,
    audit: RefusalAudit | None = None,
    lenient_time: bool = False,
) -> SSL.Context:
    """A pyOpenSSL server context: optional but verified client certificates.

    Mirrors ``palais.pki.tls.server_context`` (TLS 1.2 floor, AEAD suites,
    leaf CRL check, strict X.509) for Twisted, which cannot use ``ssl``.
    ``refused`` counts client certificates that fail verification.
    ``anchors`` and ``crls`` are files or PEM data (the stored trust);
    ``lenient_time`` as in ``palais.pki.tls.server_context_from_pem``.
    """
    if not anchors:
        raise ValueError("the HTTPS context needs at least one trust anchor")
    if not crls:
        # CRL_CHECK fails closed: with no CRL every client certificate would
        # be refused, which would look like a client problem.
        raise ValueError("the HTTPS context needs the anchors' CRLs")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(_TLS12_CIPHERS.encode("ascii"))
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE
    )
    # Read through cryptography rather than OpenSSL's file loaders, whose
    # errors name neither the file nor the problem.
    chain = x509.load_pem_x509_certificates(Path(cert).read_bytes())
    ctx.use_certificate(chain[0])
    for intermediate in chain[1:]:
        ctx.add_extra_chain_cert(intermediate)
    private_key = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{key}: the server key must be EC or RSA")
    ctx.use_privatekey(private_key)
    ctx.check_privatekey()

    store = ctx.get_cert_store()
    if store is None:  # pragma: no cover - OpenSSL always gives a context a store
        raise RuntimeError("OpenSSL context without a certificate store")
    for path in anchors:
        certificates = x509.load_pem_x509_certificates(_pem(path))
        for ca in certificates:
            store.add_cert(crypto.X509.from_cryptography(ca))
            # Sent in the CertificateRequest so that a client holding several
            # cards (a lawyer who is also an admin) picks the right one.
            ctx.add_client_ca(ca)
    for path in crls:
        for crl in _load_crls(_pem(path)):
            store.add_crl(crl)
    store.set_flags(
        crypto.X509StoreFlags.CRL_CHECK
        | crypto.X509StoreFlags.X509_STRICT
        | (NO_CHECK_TIME if lenient_time else 0)
    )

    # Without FAIL_IF_NO_PEER_CERT a client may send no certificate; one it
    # does send must verify, or the handshake fails.
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, _verify_logger(log, refused, audit))
    # OpenSSL refuses to resume sessions of a verifying context that has no
    # session id context, which breaks clients that reconnect. A resumed
    # session skips chain and CRL checks; resolve_identity re-checks.
    ctx.set_session_id(_SESSION_ID_CONTEXT)
    return ctx


def _pem(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    marker = b"-----BEGIN X509 CRL-----"
    if marker not in data:
        return [x509.load_der_x509_crl(data)]
    blocks = data.split(marker)[1:]
    return [x509.load_pem_x509_crl(marker + block) for block in blocks]


def _verify_logger(
    log: logging.Logger, refused: Counter | None, audit: RefusalAudit | None = None
) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
    def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        # Only observes: OpenSSL's own verdict stands. Without this, a refused
        # client certificate leaves no trace, since the handshake never
        # reaches HTTP.
        if not ok:
            reason = _VERIFY_ERRORS.get(errno, f"X509 verify error {errno}")
            try:
                subject = cert.to_cryptography().subject.rfc4514_string()
            except Exception:
                subject = "?"
            log.warning(
                "HTTPS client certificate refused: %s (depth %d): %s", reason, depth, subject
            )
            # Returning 0 ends the handshake: one refusal per connection.
            if refused is not None:
                refused.inc()
            tls = conn.get_app_data()  # the TLSMemoryBIOProtocol (_ServerTls)
            connection_refused(
                audit,
                listener=LISTENER,
                peer=_peer(getattr(tls, "transport", None)),
                reason=f"{reason} (depth {depth}): {subject}",
                # The client's own certificate names the account; a CA's does not.
                der=crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) if depth == 0 else None,
                outcome="tls-certificate",
            )
        return bool(ok)

    return verify


@implementer(IOpenSSLServerConnectionCreator)
class _ServerTls:
    """Makes each connection's OpenSSL object and times its handshake."""

    def __init__(self, context: SSL.Context, handshakes: Histogram) -> None:
        self._context = context
        self._handshakes = handshakes
        # From the accepted connection to the completed handshake; a connection
        # whose handshake never completes leaves with its entry.
        self._started: weakref.WeakKeyDictionary[SSL.Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        context.set_info_callback(self._info)

    def use(self, context: SSL.Context) -> None:
        """New connections get ``context``; open ones keep the one they started with."""
        context.set_info_callback(self._info)
        self._context = context

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        # As Twisted's own creators do: callbacks (the verify logger) find the
        # connection's protocol, hence its peer, there.
        connection.set_app_data(tlsProtocol)
        self._started[connection] = time.perf_counter()
        return connection

    def _info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if where & SSL.SSL_CB_HANDSHAKE_DONE:
            # pop: TLS 1.3 session tickets may signal "done" again.
            started = self._started.pop(connection, None)
            if started is not None:
                self._handshakes.observe(time.perf_counter() - started)


class _CountingTlsFactory(TLSMemoryBIOFactory):
    """Counts accepted connections and keeps the open-connection gauge."""

    def __init__(
        self,
        creator: _ServerTls,
        site: Site,
        *,
        clock: AsyncioSelectorReactor,
        accepted: Counter,
        open_now: Gauge,
        gate: Gate,
    ) -> None:
        super().__init__(cast(Any, creator), False, cast(Any, site), clock=cast(Any, clock))
        self._accepted = accepted
        self._open = open_now
        self._gate = gate
        self._places: dict[TLSMemoryBIOProtocol, tuple[str, int]] = {}

    # IProtocolFactory lets buildProtocol return None; WrappingFactory's stub does not.
    def buildProtocol(self, addr: Any) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        # Admission (palais.gateway.admission): over the caps, Twisted closes
        # the connection when no protocol is returned.
        peer = (str(getattr(addr, "host", "-")), int(getattr(addr, "port", 0)))
        if not self._gate.take_place(peer):
            self._accepted.inc()
            return None
        protocol = super().buildProtocol(addr)
        self._places[protocol] = peer
        return protocol

    def registerProtocol(self, p: TLSMemoryBIOProtocol) -> None:
        # Called twice per connection (by the TLS layer, then by the wrapper).
        new = p not in self.protocols
        super().registerProtocol(p)  # type: ignore[no-untyped-call]
        if new:
            self._accepted.inc()
            self._open.inc()

    def unregisterProtocol(self, p: TLSMemoryBIOProtocol) -> None:
        known = p in self.protocols
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
        if known:
            self._open.dec()
        peer = self._places.pop(p, None)
        if peer is not None:
            self._gate.give_back_place(peer)


# --- HTTP -------------------------------------------------------------------


class _Site(Site):
    def log(self, request: http.Request) -> None:
        # _Root logs one line per request through the gateway's logger; the
        # default would go to Twisted's global log in combined format.
        return None


@dataclass(slots=True)
class _InFlight:
    request: _HttpRequest
    gone: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class _Root(Resource):
    """Every path: the routing is a table, not a resource tree."""

    isLeaf = True

    def __init__(
        self,
        *,
        resolve_identity: ResolveIdentity,
        metrics: GatewayMetrics,
        log: logging.Logger,
        autoconfig: Mapping[str, object],
        address_domains: AddressDomains | None,
        routes: Mapping[bytes, Route],
        audit: RefusalAudit | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._audit = audit
        self._health_check = health
        self._extra = dict(routes)
        self._prefixes = sorted(
            ((path, route) for path, route in routes.items() if route.prefix),
            key=lambda item: -len(item[0]),
        )
        self._resolve_identity = resolve_identity
        self._metrics = metrics
        self._log = log
        self._autoconfig_settings = dict(autoconfig)
        self._address_domains = address_domains
        self._routes: dict[bytes, Callable[[_HttpRequest], Awaitable[_Response]]] = {
            b"/health": self._health,
            b"/metrics": self._metrics_route,
        }
        for path in AUTOCONFIG_PATHS:
            self._routes[path] = self._autoconfig
        self._tasks: set[asyncio.Task[None]] = set()

    def render(self, request: Request) -> int:
        # Handlers are coroutines: run each as a task on the loop this
        # reactor shares, and answer when it finishes. A plain task rather
        # than Deferred.fromFuture: failures stay in our logger instead of
        # surfacing as Twisted "unhandled error in Deferred".
        flight = _InFlight(cast(_HttpRequest, request))
        task = asyncio.get_running_loop().create_task(self._respond(flight))
        flight.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        flight.request.notifyFinish().addErrback(self._client_gone, flight)
        return NOT_DONE_YET

    async def finish_pending(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for responses in flight, then cancel them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _client_gone(failure: Failure, flight: _InFlight) -> None:
        flight.gone = True
        if flight.task is not None:
            flight.task.cancel()

    async def _respond(self, flight: _InFlight) -> None:
        request = flight.request
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        try:
            response = await self._dispatch(request)
        except asyncio.CancelledError:
            # The connection is gone, or stop() is about to close it.
            self._log.info("HTTPS %s %s abandoned (client gone or server stopping)", method, path)
            raise
        except Exception:
            self._log.exception("HTTPS %s %s failed", method, path)
            response = _json(500, {"error": "internal error"})
        if flight.gone:
            return
        self._write(request, response)
        identity = response.identity
        self._log.info(
            "HTTPS %s %s %d%s",
            method,
            path,
            response.status,
            f" {identity.address} ({identity.role})" if identity else "",
            extra={
                "listener": LISTENER,
                "method": method,
                "path": path,
                "status": response.status,
                "identity": identity.address if identity else None,
                "role": str(identity.role) if identity else None,
            },
        )

    @staticmethod
    def _write(request: _HttpRequest, response: _Response) -> None:
        request.setResponseCode(response.status)
        # Twisted advertises its version by default; nothing to gain from it.
        request.setHeader(b"server", b"palais")
        request.setHeader(b"content-type", response.content_type)
        request.setHeader(b"content-length", str(len(response.body)).encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-store")
        for name, value in response.headers:
            request.setHeader(name, value)
        request.write(response.body)  # Twisted drops the body itself for HEAD
        request.finish()

    async def _dispatch(self, request: _HttpRequest) -> _Response:
        extra = self._extra.get(request.path) or next(
            (r for p, r in self._prefixes if request.path.startswith(p)), None
        )
        if extra is not None:
            if request.method not in extra.methods:
                allow = b", ".join(extra.methods)
                return _json(405, {"error": "method not allowed"}, headers=((b"allow", allow),))
            return await extra.handler(request, lambda: self._caller(request))
        route = self._routes.get(request.path)
        if route is None:
            return _json(404, {"error": "not found"})
        if request.method not in (b"GET", b"HEAD"):
            return _json(405, {"error": "method not allowed"}, headers=((b"allow", b"GET, HEAD"),))
        return await route(request)

    async def _health(self, request: _HttpRequest) -> _Response:
        if self._health_check is None:
            return _json(200, {"status": "ok"})
        # A node of several: its database and notification connection; 503
        # when one is down, so that a load balancer's check takes it out.
        report = await self._health_check()
        ok = all(part.get("ok", True) for part in report.values() if isinstance(part, dict))
        return _json(200 if ok else 503, {"status": "ok" if ok else "degraded", **report})

    async def _autoconfig(self, request: _HttpRequest) -> _Response:
        settings = self._autoconfig_settings
        own = str(settings["domain"]).lower()
        people = await self._address_domains() if self._address_domains is not None else ()
        domains = [own, *sorted({d.lower() for d in people} - {own})]
        # Thunderbird asks with the address being set up: the provider is
        # that address's domain, when it is one of ours; an address of
        # another domain gets a 404, so that the client looks elsewhere
        # rather than set up an account this gateway will not serve.
        wanted = request.args.get(b"emailaddress")
        provider = own
        if wanted:
            domain = wanted[0].decode("utf-8", "replace").rpartition("@")[2].strip().lower()
            if domain not in domains:
                return _json(404, {"error": "no mail service here for this address"})
            provider = domain
        body = autoconfig_document(settings, domains=domains, provider=provider)
        return _Response(200, _XML_TYPE, body)

    async def _caller(self, request: _HttpRequest) -> Identity | _Response:
        der = _peer_certificate_der(request)
        if der is None:
            protocol_refused(
                self._audit,
                listener=LISTENER,
                peer=_peer(request.transport),
                identity=None,
                command=_request_line(request),
                reply="401 client certificate required",
            )
            return _json(401, {"error": "client certificate required"})
        try:
            return await self._resolve_identity(der)
        except PalaisError as exc:
            if not exc.permanent:
                self._log.warning("HTTPS identity lookup failed temporarily: %s", exc.reason)
                return _json(
                    503, {"error": "temporarily unavailable"}, headers=((b"retry-after", b"30"),)
                )
            self._log.info("HTTPS certificate refused: %s", exc.reason)
            connection_refused(
                self._audit,
                listener=LISTENER,
                peer=_peer(request.transport),
                reason=exc.reason,
                der=der,
            )
            return _json(403, {"error": "forbidden"})

    async def _metrics_route(self, request: _HttpRequest) -> _Response:
        identity = await self._caller(request)
        if isinstance(identity, Response):
            return identity
        if identity.role is not Role.ADMIN:
            protocol_refused(
                self._audit,
                listener=LISTENER,
                peer=_peer(request.transport),
                identity=identity.address,
                command=_request_line(request),
                reply=f"403 forbidden: /metrics is for operators, not {identity.role}",
            )
            return _json(403, {"error": "forbidden"}, identity=identity)
        # Collectors run here, at scrape time; one that fails is a 500 whose
        # traceback goes to the log (_respond), never to the scraper.
        body = self._metrics.exposition()
        return _Response(200, _PROMETHEUS_TYPE, body, identity=identity)


def _request_line(request: _HttpRequest) -> str:
    """``METHOD /path`` for the audit log, the path cut and without its query."""
    method = request.method.decode("ascii", "replace")
    path = request.path.decode("utf-8", "replace")
    return f"{method} {replies_printable(path)[:200]}"


def _peer(transport: object) -> tuple[str, int] | None:
    """(host, port) of a Twisted transport's peer, for the audit log."""
    get_peer = getattr(transport, "getPeer", None)
    address = get_peer() if get_peer is not None else None
    host = getattr(address, "host", None)
    return (str(host), int(getattr(address, "port", 0))) if host is not None else None


def _peer_certificate_der(request: _HttpRequest) -> bytes | None:
    transport = request.transport
    get_peer = getattr(transport, "getPeerCertificate", None)
    if get_peer is None:
        return None
    peer: crypto.X509 | None = get_peer()
    if peer is None:
        return None
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, peer)


def _json(
    status: int,
    payload: Mapping[str, object],
    *,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    identity: Identity | None = None,
) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n"
    return _Response(status, _JSON_TYPE, body, headers, identity)


# --- bodies -----------------------------------------------------------------


# What Thunderbird's autoconfig reader accepts (comm-central,
# mail/components/accountcreation/modules/readFromXML.sys.mjs): a value
# outside these lists makes it drop the server, and with no usable incoming
# or outgoing server the whole document. It knows no value for a TLS client
# certificate; the certificate is presented in the handshake all the same,
# and it is what decides on every listener.
#
# Incoming: "password-cleartext", so Thunderbird sends IMAP LOGIN with the
# address, which only selects the identity the certificate already proves
# (the password is ignored; palais/gateway/imap/commands/auth.py).
AUTOCONFIG_INCOMING_AUTHENTICATION: Final = "password-cleartext"
# Outgoing: "none": no SMTP AUTH; the certificate is the identity from MAIL on.
AUTOCONFIG_OUTGOING_AUTHENTICATION: Final = "none"
# Implicit TLS only: STARTTLS would let a client send its first command in clear.
AUTOCONFIG_SOCKET_TYPE: Final = "SSL"


def autoconfig_document(
    settings: Mapping[str, object],
    *,
    domains: Sequence[str] = (),
    provider: str | None = None,
) -> bytes:
    """Thunderbird's autoconfig (config-v1.1) for the certificate-only IMAP and SMTP listeners.

    ``domains``: the address domains announced beside ``settings["domain"]``
    (one ``<domain>`` each); ``provider``: the ``emailProvider`` id, the
    domain of the address being set up (``settings["domain"]`` by default).
    """
    unknown = set(settings) - _AUTOCONFIG_KEYS
    missing = _AUTOCONFIG_KEYS - set(settings)
    if unknown or missing:
        raise ValueError(
            f"autoconfig: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    hostname = _text_setting(settings, "hostname")
    domain = _text_setting(settings, "domain")
    display_name = _text_setting(settings, "display_name")
    imaps_port = _port_setting(settings, "imaps_port")
    smtps_port = _port_setting(settings, "smtps_port")
    announced = list(dict.fromkeys([domain, *domains]))

    root = ET.Element("clientConfig", version="1.1")
    element = ET.SubElement(root, "emailProvider", id=provider or domain)
    for name in announced:
        ET.SubElement(element, "domain").text = name
    ET.SubElement(element, "displayName").text = display_name
    ET.SubElement(element, "displayShortName").text = display_name
    for tag, kind, server_port, authentication in (
        ("incomingServer", "imap", imaps_port, AUTOCONFIG_INCOMING_AUTHENTICATION),
        ("outgoingServer", "smtp", smtps_port, AUTOCONFIG_OUTGOING_AUTHENTICATION),
    ):
        server = ET.SubElement(element, tag, type=kind)
        ET.SubElement(server, "hostname").text = hostname
        ET.SubElement(server, "port").text = str(server_port)
        ET.SubElement(server, "socketType").text = AUTOCONFIG_SOCKET_TYPE
        ET.SubElement(server, "authentication").text = authentication
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def _text_setting(settings: Mapping[str, object], name: str) -> str:
    value = settings[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"autoconfig: {name} must be a non-empty string")
    return value


def _port_setting(settings: Mapping[str, object], name: str) -> int:
    value = settings[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"autoconfig: {name} must be a port number")
    return value
