"""The implicit-TLS listeners' transport: a lean server side over ``ssl.MemoryBIO``.

Both implicit-TLS listeners (IMAPS and SMTPS) run on it, so they admit,
refuse and log alike:

- the :class:`~palais.gateway.admission.Gate` admits the connection first;
  one over the limits gets the handshake, then the listener's goodbye;
- a refused handshake sends its TLS alert before the socket closes (asyncio's
  own layer closes without flushing it, so the client saw a bare EOF), and
  ``on_failure`` gets a closed word for metrics plus OpenSSL's detail for the
  log;
- the handshake has its own deadline.

After the handshake the plaintext goes either to a small ``StreamReader``
(IMAP, ``on_ready``) or to an ordinary asyncio protocol such as aiosmtpd's
(SMTPS, ``app_factory``) through :class:`TlsTransport`. asyncio's own TLS
layer also keeps a 256 KiB receive buffer per connection
(``SSLProtocol.max_size``), which alone would blow the budget of 50 KiB per
idle IMAP session; this one keeps nothing per connection but OpenSSL's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, cast

from palais.gateway.admission import Gate, Ticket, peer_text
from palais.gateway.audit import connection_refused
from palais.mailbox.audit import RefusalAudit

__all__ = [
    "TLS_ABORTED",
    "TLS_CERTIFICATE",
    "TLS_NO_CERTIFICATE",
    "TLS_PROTOCOL",
    "TLS_SHUTDOWN",
    "TLS_TIMEOUT",
    "FailureCallback",
    "TlsServerProtocol",
    "TlsStream",
    "TlsTransport",
    "handshake_failure",
    "refusal_logger",
]

_READ_CHUNK = 16 * 1024  # one TLS record

# Why a handshake did not complete: a closed vocabulary, used as metric label
# (the same words as the STARTTLS listeners') and in log lines. OpenSSL's own
# reason goes into the log line's detail.
TLS_CERTIFICATE: Final = "certificate"  # untrusted, expired, revoked, wrong community
TLS_NO_CERTIFICATE: Final = "no_certificate"
TLS_PROTOCOL: Final = "handshake"  # not TLS, no common version or cipher...
TLS_TIMEOUT: Final = "timeout"
TLS_ABORTED: Final = "aborted"  # the client left during the handshake
TLS_SHUTDOWN: Final = "shutdown"  # the server stopped during the handshake
# Counted in palais_refusals_total: the ones where the gateway said no.
_REFUSALS: Final = frozenset({TLS_CERTIFICATE, TLS_NO_CERTIFICATE, TLS_PROTOCOL, TLS_TIMEOUT})

#: ``on_failure(word, detail, peer)``: one of the words above, a log detail, the peername.
FailureCallback = Callable[[str, str, Any], None]


def refusal_logger(
    log: logging.Logger, listener: str, audit: RefusalAudit | None = None
) -> FailureCallback:
    """One log line per handshake that did not complete, with peer and reason;
    one audit event per refusal (not when the client just left)."""

    def on_failure(word: str, detail: str, peer: Any) -> None:
        if word in _REFUSALS:
            connection_refused(
                audit, listener=listener, peer=peer, reason=detail, outcome=f"tls-{word}"
            )
        log.info(
            "connection listener=%s peer=%s decision=%s outcome=tls-%s reason=%s",
            listener,
            peer_text(peer),
            "refused" if word in _REFUSALS else "closed",
            word,
            detail,
            extra={
                "listener": listener,
                "peer": peer_text(peer),
                "outcome": f"tls-{word}",
                "reason": detail,
            },
        )

    return on_failure


def handshake_failure(exc: BaseException) -> tuple[str, str]:
    """The closed word and the log detail of a failed handshake."""
    reason = str(getattr(exc, "reason", None) or type(exc).__name__)
    verify = getattr(exc, "verify_message", None)
    detail = f"{reason}: {verify}" if verify else reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLS_CERTIFICATE, detail
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return TLS_NO_CERTIFICATE, detail
    if "CERTIFICATE" in reason:
        return TLS_CERTIFICATE, detail
    return TLS_PROTOCOL, detail


class TlsStream:
    """What the session writes to: the decrypting protocol, seen from above."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: TlsServerProtocol) -> None:
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._protocol.write(data)

    async def drain(self) -> None:
        await self._protocol.drain()

    def close(self) -> None:
        self._protocol.close()

    def is_closing(self) -> bool:
        return self._protocol.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._protocol.get_extra_info(name, default)


class TlsServerProtocol(asyncio.Protocol):
    """One connection: admission, the handshake, then decrypted bytes upwards.

    Exactly one of ``on_ready`` (a ``StreamReader`` and a :class:`TlsStream`)
    and ``app_factory`` (an asyncio protocol, run over a :class:`TlsTransport`)
    says where the plaintext goes.
    """

    __slots__ = (
        "__weakref__",  # the server tracks handshakes in a WeakSet
        "_app",
        "_app_factory",
        "_closing",
        "_context",
        "_drain_waiter",
        "_failed",
        "_gate",
        "_handshake_timeout",
        "_incoming",
        "_on_failure",
        "_on_ready",
        "_outgoing",
        "_paused",
        "_reader",
        "_reader_limit",
        "_ready",
        "_ssl",
        "_started",
        "_ticket",
        "_timer",
        "_transport",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        gate: Gate,
        on_failure: FailureCallback,
        handshake_timeout: float,
        on_ready: Callable[[asyncio.StreamReader, TlsStream], None] | None = None,
        app_factory: Callable[[], asyncio.Protocol] | None = None,
        reader_limit: int = 64 * 1024,
    ) -> None:
        if (on_ready is None) == (app_factory is None):
            raise ValueError("give exactly one of on_ready and app_factory")
        self._context = context
        self._gate = gate
        self._on_ready = on_ready
        self._app_factory = app_factory
        self._app: asyncio.Protocol | None = None
        self._on_failure = on_failure
        self._handshake_timeout = handshake_timeout
        self._reader_limit = reader_limit
        self._transport: asyncio.Transport | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._reader: asyncio.StreamReader | None = None
        self._ticket: Ticket | None = None
        self._ready = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._failed = False

    def _fail(self, word: str, detail: str = "") -> None:
        if not self._failed:
            self._failed = True
            if word in _REFUSALS:
                self._gate.refused(word)
            self._on_failure(word, detail or word, self._peer())

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not derive from asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._ticket = ticket = self._gate.admit(transport.get_extra_info("peername"))
        if ticket is None:
            self._failed = True  # refused and logged by the gate, nothing more to say
            self._abort()
            return
        self._ssl = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self._ssl is None or (self._closing and not self._ready):
            return
        self._incoming.write(data)
        if not self._ready:
            self._handshake()
        if self._ready:
            self._decrypt()

    def eof_received(self) -> bool:
        if self._reader is not None:
            self._reader.feed_eof()
        elif self._app is not None:
            self._app.eof_received()
        return False  # TLS has no half-close: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ticket is not None:
            self._ticket.release()
        if self._reader is not None:
            self._reader.feed_eof()
        elif self._app is not None:
            app, self._app = self._app, None
            app.connection_lost(exc)
        elif not self._ready:
            self._fail(TLS_ABORTED)
        self._wake_drain()

    def pause_writing(self) -> None:
        self._paused = True
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain()
        if self._app is not None:
            self._app.resume_writing()

    # -- TLS -----------------------------------------------------------------

    def _handshake(self) -> None:
        assert self._ssl is not None
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # the alert tells the client why
            self._fail(*handshake_failure(exc))
            self._abort()
            return
        self._flush()
        self._ready = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._transport is not None and self._ticket is not None
        if not self._ticket.admitted:
            # Over a connection limit: the goodbye, in the listener's protocol.
            self.write(self._gate.goodbye)
            self.close()
            return
        self._gate.handshake_completed(asyncio.get_running_loop().time() - self._started)
        if self._app_factory is not None:
            self._app = self._app_factory()
            self._app.connection_made(TlsTransport(self))
            return
        assert self._on_ready is not None
        self._reader = asyncio.StreamReader(limit=self._reader_limit)
        # Lets the reader pause the socket when the client sends faster than we parse.
        self._reader.set_transport(self._transport)
        self._on_ready(self._reader, TlsStream(self))

    def _decrypt(self) -> None:
        assert self._ssl is not None
        reader, app = self._reader, self._app
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._plaintext_eof()
                break
            except (ssl.SSLError, OSError):
                self._plaintext_eof()
                self._abort()
                break
            if not chunk:
                self._plaintext_eof()
                break
            if reader is not None:
                reader.feed_data(chunk)
            elif app is not None:
                app.data_received(chunk)
            else:
                break  # closed above us while we were reading
            if self._closing or (not self._incoming.pending and not self._ssl.pending()):
                break  # all read: spares the exception an empty read raises
        self._flush()

    def _plaintext_eof(self) -> None:
        if self._reader is not None:
            self._reader.feed_eof()
        elif self._app is not None and not self._closing:
            self._app.eof_received()
            self.close()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _handshake_expired(self) -> None:
        self._timer = None
        if not self._ready:
            if self._ticket is not None and self._ticket.admitted:
                self._fail(TLS_TIMEOUT)
            self._abort()

    def abort_handshake(self) -> None:
        """Drop a connection that has not finished its handshake (server shutdown)."""
        if not self._ready:
            self._fail(TLS_SHUTDOWN)
            self._abort()

    def _abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _peer(self) -> Any:
        return self._transport.get_extra_info("peername") if self._transport is not None else None

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._drain_waiter = None

    # -- what TlsStream exposes ----------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closing or self._ssl is None:
            return
        try:
            self._ssl.write(data)
        except (ssl.SSLError, OSError):
            self._abort()
            return
        self._flush()

    async def drain(self) -> None:
        if self._closing:
            return
        if self._paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._ssl is not None and self._ready:
            with contextlib.suppress(ssl.SSLError, OSError):
                self._ssl.unwrap()
            self._flush()
        if self._transport is not None:
            self._transport.close()

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        self._abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "sslcontext":
            return self._context
        if name == "peercert":
            return self._ssl.getpeercert() if self._ssl is not None and self._ready else default
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)


class TlsTransport(asyncio.Transport):
    """The transport an ordinary asyncio protocol (aiosmtpd's) sees above the TLS layer."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: TlsServerProtocol) -> None:
        super().__init__()
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._protocol.write(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._protocol.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self._protocol.close()

    def abort(self) -> None:
        self._protocol.abort()

    def is_closing(self) -> bool:
        return self._protocol.is_closing()

    def pause_reading(self) -> None:
        self._protocol.pause_reading()

    def resume_reading(self) -> None:
        self._protocol.resume_reading()

    def is_reading(self) -> bool:
        return not self._protocol.is_closing()

    def get_write_buffer_size(self) -> int:
        transport = self._protocol._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._protocol.get_extra_info(name, default)
