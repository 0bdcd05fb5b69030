"""The IMAPS listener: TLS with a client certificate, one session per connection."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from palais.gateway.admission import IMAP_GOODBYE, Admission, Gate, peer_text
from palais.gateway.audit import command_refused, connection_refused
from palais.gateway.imap.framing import Limits
from palais.gateway.imap.session import Session
from palais.gateway.imap.states import NotAuthenticated
from palais.gateway.metrics import GatewayMetrics
from palais.gateway.sessions import Registration, SessionWatcher
from palais.gateway.tls import TLS_ABORTED, TLS_SHUTDOWN, TlsServerProtocol, TlsStream
from palais.mailbox.audit import RefusalAudit
from palais.mailbox.errors import AuthenticationRequired, PalaisError
from palais.mailbox.identity import Identity
from palais.mailbox.ports import MailAccess

__all__ = ["start_imap_server"]

LISTENER = "imaps"
# The decrypted-input buffer per connection: a long command line is read
# in pieces of this size (up to Limits.max_line), a literal straight through.
_READER_LIMIT = 8 * 1024


class ImapServer(asyncio.AbstractServer):
    """The listening server, whose ``close()`` also ends the open sessions with BYE.

    asyncio (3.11) has no hook to reach open connections when a server
    closes; this wraps the loop's server (whatever loop runs it) to add one.
    """

    def __init__(
        self,
        server: asyncio.AbstractServer,
        sessions: set[Session],
        handshakes: weakref.WeakSet[TlsServerProtocol],
    ) -> None:
        self._server = server
        self._sessions = sessions
        self._handshakes = handshakes

    def close(self) -> None:
        self._server.close()
        for protocol in list(self._handshakes):
            protocol.abort_handshake()
        for session in list(self._sessions):
            session.shutdown()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(getattr(self._server, "sockets", ()) or ())


async def start_imap_server(
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    access: MailAccess,
    resolve_identity: Callable[[bytes], Awaitable[Identity]],
    log: logging.Logger,
    max_append_size: int = 64 * 1024 * 1024,
    max_search_keys: int = 256,
    max_search_cost: int = 20_000_000,
    max_keywords: int = 64,
    max_keyword_length: int = 64,
    idle_timeout: float = 1800,
    metrics: GatewayMetrics | None = None,
    admission: Admission | None = None,
    handshake_timeout: float = 10.0,
    preauth_timeout: float = 30.0,
    watcher: SessionWatcher | None = None,
    audit: RefusalAudit | None = None,
    reuse_port: bool = False,
) -> ImapServer:
    """Listen for IMAPS (implicit TLS) connections; the certificate is the login.

    ``admission`` caps open connections (shared with the other listeners
    when the gateway hands one in; the default caps otherwise). A client has
    ``handshake_timeout`` seconds for its TLS handshake, then
    ``preauth_timeout`` seconds to authenticate. ``watcher`` re-checks the
    certificate and account of each session that proved an identity while it
    stays open, and ends it with ``BYE [ALERT]`` when they no longer hold.
    """
    loop = asyncio.get_running_loop()
    metrics = metrics if metrics is not None else GatewayMetrics()
    gate = Gate(
        LISTENER,
        admission if admission is not None else Admission(),
        goodbye=IMAP_GOODBYE,
        metrics=metrics,
        log=log,
        audit=audit,
    )
    limits = Limits(
        max_append=max_append_size,
        max_search_keys=max_search_keys,
        max_search_cost=max_search_cost,
        max_keywords=max_keywords,
        max_keyword_length=max_keyword_length,
    )
    sessions: set[Session] = set()
    handshakes: weakref.WeakSet[TlsServerProtocol] = weakref.WeakSet()
    tasks: set[asyncio.Task[None]] = set()

    def on_failure(word: str, detail: str, peer: Any) -> None:
        outcome = f"tls-{word}"
        if word not in (TLS_ABORTED, TLS_SHUTDOWN):  # the client left, or we stopped
            connection_refused(audit, listener=LISTENER, peer=peer, reason=detail, outcome=outcome)
        log.info(
            "imap connection peer=%s identity=- fingerprint=- outcome=%s reason=%s",
            peer_text(peer),
            outcome,
            detail,
            extra={
                "peer": peer_text(peer),
                "identity": None,
                "fingerprint": None,
                "outcome": outcome,
                "reason": detail,
            },
        )

    def preauth_expired(session: Session, peer: Any) -> None:
        if isinstance(session.state, NotAuthenticated) and not session.transport.is_closing():
            gate.preauth_timeout(peer)
            session.shutdown(b"Autologout; not authenticated in time")
            session.outcome = "preauth-timeout"

    def on_ready(reader: asyncio.StreamReader, stream: TlsStream) -> None:
        task = loop.create_task(_serve(reader, stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _serve(reader: asyncio.StreamReader, stream: TlsStream) -> None:
        started = time.monotonic()
        peername = stream.get_extra_info("peername")
        peer = peer_text(peername)
        ssl_object = stream.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        fingerprint = hashlib.sha256(der).hexdigest() if der else None
        proven: Identity | None = None
        refusal: PalaisError | None = None
        if der is None:
            refusal = AuthenticationRequired()
        else:
            try:
                proven = await resolve_identity(der)
            except PalaisError as exc:
                refusal = exc
            except Exception:
                log.exception(
                    "imap identity resolution failed peer=%s fingerprint=%s", peer, fingerprint
                )
                stream.write(b"* BYE [UNAVAILABLE] Service temporarily unavailable\r\n")
                stream.close()
                _log_line(log, peer, None, fingerprint, "unavailable", 0, started)
                return
        if refusal is not None and refusal.permanent:
            # Once per connection: LOGIN and AUTHENTICATE then answer NO from
            # the session's state, not as refused commands.
            connection_refused(
                audit, listener=LISTENER, peer=peername, reason=refusal.reason, der=der
            )

        def audit_refusal(command: str, identity: str | None, error: Exception) -> None:
            command_refused(
                audit,
                listener=LISTENER,
                peer=peername,
                identity=identity,
                command=command,
                error=error,
            )

        session = Session(
            reader,
            stream,
            access,
            proven=proven,
            refusal=refusal,
            log=log,
            limits=limits,
            idle_timeout=idle_timeout,
            metrics=metrics,
            audit_refusal=audit_refusal if audit is not None else None,
        )
        sessions.add(session)
        # Watched from the handshake on, not from LOGIN: the identity was
        # proven then, and a session about to log in is cut as well.
        watched: Registration | None = None
        if watcher is not None and proven is not None and der:
            watched = watcher.register(session, listener=LISTENER, der=der, identity=proven)
        deadline = loop.call_later(preauth_timeout, preauth_expired, session, peername)
        outcome = "error"
        try:
            outcome = await session.run()
        except Exception:
            log.exception("imap session failed peer=%s fingerprint=%s", peer, fingerprint)
        finally:
            deadline.cancel()
            sessions.discard(session)
            if watcher is not None and watched is not None:
                watcher.unregister(session, watched)
            stream.close()
        if refusal is not None and outcome in ("eof", "refused"):
            outcome = f"refused:{type(refusal).__name__}"
        identity = session.identity_address or (proven.address if proven else None)
        _log_line(log, peer, identity, fingerprint, outcome, session.commands, started)

    def factory() -> asyncio.Protocol:
        protocol = TlsServerProtocol(
            ssl_context,
            gate=gate,
            on_ready=on_ready,
            on_failure=on_failure,
            handshake_timeout=min(handshake_timeout, idle_timeout),
            reader_limit=_READER_LIMIT,
        )
        handshakes.add(protocol)
        return protocol

    # reuse_port: several worker processes on one port (`palais serve --workers`).
    server = await loop.create_server(factory, host, port, reuse_port=reuse_port or None)
    return ImapServer(server, sessions, handshakes)


def _log_line(
    log: logging.Logger,
    peer: str,
    identity: str | None,
    fingerprint: str | None,
    outcome: str,
    commands: int,
    started: float,
) -> None:
    duration = time.monotonic() - started
    log.info(
        "imap connection peer=%s identity=%s fingerprint=%s outcome=%s commands=%d duration=%.3f",
        peer,
        identity or "-",
        fingerprint or "-",
        outcome,
        commands,
        duration,
        extra={
            "peer": peer,
            "identity": identity,
            "fingerprint": fingerprint,
            "outcome": outcome,
            "commands": commands,
            "duration": round(duration, 3),
        },
    )
