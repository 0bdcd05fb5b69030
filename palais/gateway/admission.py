"""Who gets in: open connections counted globally and per client address.

One :class:`Admission` is shared by every listener of a gateway, so the caps
hold for all of them together. Each listener has a :class:`Gate` on it: the
gate admits or refuses a new connection, knows the listener's own goodbye
(``421`` for SMTP, ``* BYE`` for IMAP), records the listener's connection
metrics and writes the refusal log lines. An admitted connection holds a
:class:`Ticket` until it closes; releasing it frees its place.

A refused connection still gets its goodbye in the listener's protocol. On
an implicit-TLS listener that costs a handshake, so at most
``MAX_GOODBYES`` refused connections are being answered at a time; beyond
that a refused connection is closed without a word.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from palais.gateway.metrics import GatewayMetrics
from palais.mailbox.audit import RefusalAudit

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS",
    "IMAP_GOODBYE",
    "MAX_GOODBYES",
    "REFUSAL_LOG_INTERVAL",
    "SMTP_GOODBYE",
    "SMTP_PREAUTH_TIMEOUT",
    "Admission",
    "Gate",
    "Ticket",
    "peer_address",
    "peer_text",
]

# The defaults of palais.config's [limits]; a front-end started without an
# admission of its own (tests, tools) gets the same caps as a configured one.
DEFAULT_MAX_CONNECTIONS: Final = 4096
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 64
MAX_GOODBYES: Final = 64
# A flood beyond the caps would otherwise write one log line per attempt:
# at most one "connection refused" line per listener per interval, which
# says how many were left unsaid since the previous one (metrics count all).
REFUSAL_LOG_INTERVAL: Final = 1.0

SMTP_GOODBYE: Final = b"421 4.7.0 Too many connections, try again later\r\n"
SMTP_PREAUTH_TIMEOUT: Final = b"421 4.4.2 Timeout waiting for EHLO over TLS, closing connection\r\n"
IMAP_GOODBYE: Final = b"* BYE [LIMIT] Too many connections, try again later\r\n"

# Limit names, as recorded in palais_limit_hits_total{limit=...}.
LIMIT_CONNECTIONS: Final = "connections"
LIMIT_PER_ADDRESS: Final = "connections_per_address"
LIMIT_PREAUTH: Final = "preauth_timeout"


def peer_address(peer: Any) -> str:
    """The client address of an asyncio ``peername`` (host only, no port)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer) if peer else "-"


def peer_text(peer: Any) -> str:
    """``host:port`` for logs."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "-"


class Admission:
    """Counts open connections, all listeners together and per client address."""

    __slots__ = ("_by_address", "_goodbyes", "_open", "max_connections", "max_per_address")

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    ) -> None:
        if max_connections < 1 or max_per_address < 1:
            raise ValueError("connection limits must be at least 1")
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._open = 0
        self._goodbyes = 0
        self._by_address: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._open

    def open_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def take(self, address: str) -> str | None:
        """Take a place for ``address``; the name of the limit hit if none is left."""
        if self._open >= self.max_connections:
            return LIMIT_CONNECTIONS
        held = self._by_address.get(address, 0)
        if held >= self.max_per_address:
            return LIMIT_PER_ADDRESS
        self._open += 1
        self._by_address[address] = held + 1
        return None

    def give_back(self, address: str) -> None:
        self._open -= 1
        held = self._by_address[address] - 1
        if held:
            self._by_address[address] = held
        else:
            del self._by_address[address]

    def take_goodbye(self) -> bool:
        """Room to answer one more refused connection (see ``MAX_GOODBYES``)."""
        if self._goodbyes >= MAX_GOODBYES:
            return False
        self._goodbyes += 1
        return True

    def goodbye_done(self) -> None:
        self._goodbyes -= 1


class Ticket:
    """One connection's place (``admitted``), or its pending goodbye; release once."""

    __slots__ = ("_address", "_gate", "admitted")

    def __init__(self, gate: Gate, address: str, admitted: bool) -> None:
        self._gate: Gate | None = gate
        self._address = address
        self.admitted = admitted

    def release(self) -> None:
        gate = self._gate
        if gate is None:
            return
        self._gate = None
        gate._release(self._address, self.admitted)


class Gate:
    """One listener's door onto the shared :class:`Admission`."""

    __slots__ = (
        "_admission",
        "_audit",
        "_connections",
        "_handshakes",
        "_log",
        "_logged_at",
        "_metrics",
        "_open",
        "_unlogged",
        "goodbye",
        "listener",
    )

    def __init__(
        self,
        listener: str,
        admission: Admission,
        *,
        goodbye: bytes,
        metrics: GatewayMetrics,
        log: logging.Logger,
        audit: RefusalAudit | None = None,
    ) -> None:
        """``audit``: refusals by a cap go to the audit log too, as rate-limited
        as the log line (one per listener per ``REFUSAL_LOG_INTERVAL``)."""
        self.listener = listener
        self._audit = audit
        self.goodbye = goodbye
        self._admission = admission
        self._metrics = metrics
        self._log = log
        # Children resolved once: .labels() is a dict lookup under a lock.
        self._connections = metrics.connections.labels(listener)
        self._open = metrics.open_connections.labels(listener)
        self._handshakes = metrics.handshake_seconds.labels(listener)
        self._logged_at = -REFUSAL_LOG_INTERVAL
        self._unlogged = 0

    def admit(self, peer: Any) -> Ticket | None:
        """A ticket for a new connection; None to close it at once, without a word.

        A ticket that is not ``admitted`` means: say the goodbye, then close.
        """
        self._connections.inc()
        address = peer_address(peer)
        if self.take_place(peer):
            self._open.inc()
            return Ticket(self, address, True)
        if not self._admission.take_goodbye():
            return None
        return Ticket(self, address, False)

    def take_place(self, peer: Any) -> bool:
        """A place for ``peer``, or False (counted and logged) if the caps are reached.

        ``admit`` for a listener that counts its connections itself (HTTPS);
        ``give_back_place`` when the connection closes.
        """
        address = peer_address(peer)
        admission = self._admission
        limit = admission.take(address)
        if limit is None:
            return True
        self._metrics.limit_hits.labels(self.listener, limit).inc()
        now = time.monotonic()
        if now - self._logged_at < REFUSAL_LOG_INTERVAL:
            self._unlogged += 1
            return False
        self._log.warning(
            "connection refused listener=%s peer=%s limit=%s open=%d from_address=%d"
            " unlogged_before=%d",
            self.listener,
            peer_text(peer),
            limit,
            admission.open,
            admission.open_from(address),
            self._unlogged,
            extra={
                "listener": self.listener,
                "peer": peer_text(peer),
                "limit": limit,
                "unlogged_before": self._unlogged,
            },
        )
        if self._audit is not None:
            from palais.gateway.audit import limit_refused  # imports this module

            limit_refused(
                self._audit,
                listener=self.listener,
                peer=peer,
                limit=limit,
                unrecorded_before=self._unlogged,
            )
        self._logged_at = now
        self._unlogged = 0
        return False

    def give_back_place(self, peer: Any) -> None:
        self._admission.give_back(peer_address(peer))

    def _release(self, address: str, admitted: bool) -> None:
        if admitted:
            self._admission.give_back(address)
            self._open.dec()
        else:
            self._admission.goodbye_done()

    def handshake_completed(self, seconds: float) -> None:
        self._handshakes.observe(seconds)

    def refused(self, word: str) -> None:
        """A refused handshake; ``word`` is one of a closed vocabulary."""
        self._metrics.refusals.labels(self.listener, word).inc()

    def preauth_timeout(self, peer: Any) -> None:
        self._metrics.limit_hits.labels(self.listener, LIMIT_PREAUTH).inc()
        self._log.info(
            "connection closed listener=%s peer=%s limit=%s",
            self.listener,
            peer_text(peer),
            LIMIT_PREAUTH,
            extra={"listener": self.listener, "peer": peer_text(peer), "limit": LIMIT_PREAUTH},
        )
