"""A lean server-side TLS transport over ``ssl.MemoryBIO``.

asyncio's own TLS layer keeps a 256 KiB receive buffer per connection
(``SSLProtocol.max_size``), which alone would blow the budget of 50 KiB per
idle IMAP session. This one decrypts into a small ``StreamReader`` and
keeps nothing else per connection but OpenSSL's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, cast

__all__ = ["TlsServerProtocol", "TlsStream"]

_READ_CHUNK = 16 * 1024  # one TLS record


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
    __slots__ = (
        "__weakref__",  # the server tracks handshakes in a WeakSet
        "_closing",
        "_context",
        "_drain_waiter",
        "_failed",
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
        "_timer",
        "_transport",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        on_ready: Callable[[asyncio.StreamReader, TlsStream], None],
        on_failure: Callable[[str, Any], None],
        handshake_timeout: float,
        reader_limit: int,
    ) -> None:
        self._context = context
        self._on_ready = on_ready
        self._on_failure = on_failure
        self._handshake_timeout = handshake_timeout
        self._reader_limit = reader_limit
        self._transport: asyncio.Transport | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._reader: asyncio.StreamReader | None = None
        self._ready = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._failed = False

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self._on_failure(reason, self._peer())

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not derive from asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._ssl = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self._ready:
            self._handshake()
        if self._ready:
            self._decrypt()

    def eof_received(self) -> bool:
        if self._reader is not None:
            self._reader.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reader is not None:
            self._reader.feed_eof()
        elif not self._ready:
            self._fail("tls-aborted")
        self._wake_drain()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain()

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
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self._fail(f"tls-failed:{reason}")
            self._abort()
            return
        self._flush()
        self._ready = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reader = asyncio.StreamReader(limit=self._reader_limit)
        assert self._transport is not None
        # Lets the reader pause the socket when the client sends faster than we parse.
        self._reader.set_transport(self._transport)
        self._on_ready(self._reader, TlsStream(self))

    def _decrypt(self) -> None:
        assert self._ssl is not None and self._reader is not None
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._reader.feed_eof()
                break
            except (ssl.SSLError, OSError):
                self._reader.feed_eof()
                self._abort()
                break
            if not chunk:
                self._reader.feed_eof()
                break
            self._reader.feed_data(chunk)
            if not self._incoming.pending and not self._ssl.pending():
                break  # all read: spares the exception an empty read raises
        self._flush()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _handshake_expired(self) -> None:
        self._timer = None
        if not self._ready:
            self._fail("tls-timeout")
            self._abort()

    def abort_handshake(self) -> None:
        """Drop a connection that has not finished its handshake (server shutdown)."""
        if not self._ready:
            self._fail("tls-shutdown")
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

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)
