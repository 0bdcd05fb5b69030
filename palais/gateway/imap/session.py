"""One client connection: read a command, check state, run its handler, answer.

Everything protocol-wide lives here: the tagged/untagged writing, the
translation of domain errors into NO with their response code, the
catch-all that keeps a bug from reaching the client or killing the
connection, the autologout timer and the mailbox-change notifications.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Histogram

from palais.gateway.audit import LimitReached
from palais.gateway.imap import codes, refusals
from palais.gateway.imap.commands import REGISTRY
from palais.gateway.imap.commands.registry import Handler, Reply
from palais.gateway.imap.framing import (
    CommandTooBig,
    FramingError,
    Limits,
    RawCommand,
    read_command,
)
from palais.gateway.imap.pacing import Pacer
from palais.gateway.imap.parser import Args, ParseError
from palais.gateway.imap.states import Logout, NotAuthenticated, Selected, State, permits
from palais.gateway.metrics import GatewayMetrics
from palais.mailbox.errors import PalaisError
from palais.mailbox.identity import Identity
from palais.mailbox.ports import MailAccess

__all__ = ["Session", "Transport"]

# Before authentication there is nothing to wait for: drop silent clients sooner.
_PRE_AUTH_TIMEOUT = 60.0
# Flush to the socket at least this often while answering a big command.
_WRITE_HIGH_WATER = 256 * 1024
# A reply's lines are gathered into one TLS record and one send (a SELECT
# writes eight lines); past this size they go out without waiting for the end.
_SEND_AT = 64 * 1024


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...


class Session:
    __slots__ = (
        "_buffered",
        "_close_after",
        "_closing",
        "_command",
        "_condstore",
        "_ending",
        "_out",
        "_pending_bytes",
        "_timers",
        "_waiting_since",
        "_watchdog",
        "access",
        "audit_refusal",
        "commands",
        "identity_address",
        "idle_timeout",
        "limits",
        "log",
        "metrics",
        "outcome",
        "qresync",
        "reader",
        "rev2",
        "state",
        "transport",
        "utf8",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        transport: Transport,
        access: MailAccess,
        *,
        proven: Identity | None,
        refusal: PalaisError | None,
        log: logging.Logger,
        limits: Limits,
        idle_timeout: float,
        metrics: GatewayMetrics | None = None,
        audit_refusal: Callable[[str, str | None, Exception], None] | None = None,
    ) -> None:
        self.reader = reader
        # Told each refused command (name, identity, error): the audit log.
        self.audit_refusal = audit_refusal
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._timers = _command_timers(self.metrics)
        self.transport = transport
        self.access = access
        self.log = log
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.state: State = NotAuthenticated(proven, refusal)
        self._condstore = False
        # QRESYNC enabled (RFC 7162 3.2.3): VANISHED instead of EXPUNGE.
        self.qresync = False
        # IMAP4rev2 enabled (RFC 9051): no \\Recent, no RECENT responses.
        self.rev2 = False
        self.utf8 = False
        self.commands = 0
        self.outcome = "eof"
        self._pending_bytes = 0
        self._out: list[bytes] = []
        self._buffered = 0
        self._waiting_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing = False
        self._close_after = False
        self.identity_address: str | None = None
        # The command running (its registry name), and the BYE text the
        # session watcher asked for once that command has answered.
        self._command: str | None = None
        self._ending: bytes | None = None

    @property
    def condstore(self) -> bool:
        """CONDSTORE enabled (RFC 7162 3.1), by ENABLE or an enabling command."""
        return self._condstore

    @condstore.setter
    def condstore(self, on: bool) -> None:
        if on and not self._condstore:
            state = self.state
            if isinstance(state, Selected):
                # The first enabling command with a box selected tells its
                # HIGHESTMODSEQ before anything else (RFC 7162 3.1).
                highest = state.mailbox.highestmodseq
                self.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % highest)
        self._condstore = on

    @property
    def utf8_names(self) -> bool:
        """Mailbox names in UTF-8 rather than modified UTF-7: after ENABLE
        UTF8=ACCEPT (RFC 6855 3) or ENABLE IMAP4rev2 (RFC 9051 5.1)."""
        return self.utf8 or self.rev2

    # -- output ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue output; it leaves at the next ``flush`` (or once it is big)."""
        if self._closing:
            return
        self._out.append(data)
        self._buffered += len(data)
        if self._buffered >= _SEND_AT:
            self._send()

    def _send(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._pending_bytes += self._buffered
        self._buffered = 0
        self.transport.write(data)

    async def flush(self, *, force: bool = False) -> None:
        self._send()
        if force or self._pending_bytes >= _WRITE_HIGH_WATER:
            self._pending_bytes = 0
            await self.transport.drain()

    def untagged(self, text: bytes) -> None:
        self.write(b"* " + text + b"\r\n")

    def _tagged(self, tag: bytes, reply: Reply) -> None:
        code = b"[" + reply.code + b"] " if reply.code else b""
        text = reply.text.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
        self.write(tag + b" " + reply.status + b" " + code + text + b"\r\n")

    async def continuation(self, text: bytes = b"Ready") -> None:
        self.write(b"+ " + text + b"\r\n")
        await self.flush(force=True)

    def capabilities(self) -> bytes:
        if isinstance(self.state, NotAuthenticated):
            return _BEFORE_AUTH
        return _AFTER_AUTH

    # -- lifecycle -----------------------------------------------------------

    def close_after_reply(self) -> None:
        self._close_after = True

    def shutdown(self, text: bytes = b"Server shutting down") -> None:
        """Say goodbye and close; the command loop ends when the stream does."""
        if self._closing:
            return
        self.write(b"* BYE " + text + b"\r\n")
        self._send()
        self._closing = True
        self.outcome = "shutdown"
        self.transport.close()

    def end_session(self, reason: str) -> None:
        """Cut by the session watcher: certificate revoked, account deactivated...

        Between commands or in IDLE the BYE goes at once. A running command
        answers first (an APPEND whose OK is due is not lost, and a BYE in
        the middle of a FETCH literal would corrupt the reply); asked again
        at the next check, the session goes at once whatever it is doing.
        """
        if self._closing:
            return
        text = b"[ALERT] " + reason.encode("ascii", "replace")
        if self._command is None or self._command == "IDLE" or self._ending is not None:
            self._ending = text
            self.shutdown(text)
        else:
            self._ending = text

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        self.write(b"* OK [CAPABILITY " + self.capabilities() + b"] Palais IMAP ready\r\n")
        await self.flush(force=True)
        try:
            while not self._closing and not isinstance(self.state, Logout):
                now = self._waiting_since = loop.time()
                if self._watchdog is None:
                    self._watchdog = loop.call_at(now + self._timeout(), self._watch)
                try:
                    raw = await read_command(self.reader, self.continuation, self.limits)
                except FramingError as exc:
                    self._framing_error(exc)
                    await self.flush(force=True)
                    continue
                finally:
                    self._waiting_since = None
                if raw is None:
                    break
                await self.execute(raw)
                await self.flush(force=True)
                if self._ending is not None:
                    self.shutdown(self._ending)
                if self._close_after:
                    outcome = self.outcome
                    self.shutdown(b"Goodbye")
                    self.outcome = outcome if outcome != "eof" else "refused"
        except (ConnectionError, OSError):
            if not self._closing:  # else the server said goodbye: "shutdown" stays
                self.outcome = "connection-lost"
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self.release()
        if self._ending is not None and self._closing:
            # Whatever the interrupted command made of the closed stream.
            self.outcome = "revoked"
        return self.outcome

    def _timeout(self) -> float:
        if isinstance(self.state, NotAuthenticated):
            return min(self.idle_timeout, _PRE_AUTH_TIMEOUT)
        return self.idle_timeout

    def _watch(self) -> None:
        """Log out a client silent for too long between commands.

        One timer per session, moved on only when it fires: cheaper than a
        timeout around every command read, which a busy client pays for each
        command. Closing makes the pending read end as at end of stream.
        """
        self._watchdog = None
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        since = self._waiting_since
        timeout = self._timeout()
        if since is not None and loop.time() - since >= timeout:
            self.shutdown(b"Autologout; idle for too long")
            self.outcome = "timeout"
            return
        start = since if since is not None else loop.time()
        self._watchdog = loop.call_at(start + timeout, self._watch)

    def release(self) -> None:
        if isinstance(self.state, Selected):
            self.state.mailbox.close()

    def _framing_error(self, exc: FramingError) -> None:
        tag = exc.tag or b"*"
        if isinstance(exc, CommandTooBig) and exc.is_append and exc.tag:
            if self.audit_refusal is not None:
                self.audit_refusal("APPEND", self.identity_address, LimitReached("max_append_size"))
            self._tagged(tag, Reply(b"NO", exc.text, codes.TOOBIG))
        else:
            self._tagged(
                tag,
                Reply(b"BAD", exc.text, codes.TOOBIG if isinstance(exc, CommandTooBig) else None),
            )

    def pacer(self) -> Pacer:
        """A pacer for a long scan of this session's: it stops if the client goes."""
        return Pacer(gone=self.transport.is_closing)

    def limit_hit(self, limit: str) -> None:
        """Count a command stopped by a configured limit (``limit``: the setting's name)."""
        self.metrics.limit_hits.labels("imap", limit).inc()
        if self.audit_refusal is not None:
            self.audit_refusal(self._command or "?", self.identity_address, LimitReached(limit))

    # -- dispatch ------------------------------------------------------------

    async def execute(self, raw: RawCommand) -> None:
        self.commands += 1
        args = Args(raw, utf8=self.utf8_names)
        try:
            tag = _read_tag(args)
        except ParseError:
            self.untagged(b"BAD Missing or invalid tag")
            return
        try:
            args.sp()
            name = args.keyword()
            if name == "UID":
                args.sp()
                name = "UID " + args.keyword()
        except ParseError:
            self._tagged(tag, Reply(b"BAD", "Missing or invalid command name"))
            return
        handler = REGISTRY.get(name)
        if handler is None:
            self._tagged(tag, Reply(b"BAD", "Unknown command"))
            return
        started = time.perf_counter()
        self._command = handler.name
        try:
            await self._execute(handler, tag, args)
        finally:
            self._command = None
            # Labelled by the registry's name, never by what the client sent.
            timer = self._timers.get(handler.name)
            if timer is None:
                timer = self._timers[handler.name] = self.metrics.imap_command_seconds.labels(
                    handler.name
                )
            timer.observe(time.perf_counter() - started)

    async def _execute(self, handler: Handler, tag: bytes, args: Args) -> None:
        name = handler.name
        if not permits(self.state, handler.states):
            self._tagged(tag, Reply(b"BAD", f"{name} is not allowed now", codes.CLIENTBUG))
            return
        try:
            values = handler.parse_memo(args)
        except ParseError as exc:
            self._tagged(tag, Reply(b"BAD", f"{name}: {exc.text}"))
            return
        reply = await self._run(tag, handler.run, values)
        if isinstance(self.state, Selected) and reply.status != b"BAD":
            await self.send_updates(allow_expunge=not handler.defers_expunge)
        self._tagged(tag, reply)

    async def send_updates(self, *, allow_expunge: bool) -> None:
        """Queue the selected mailbox's pending changes (flags changed on every
        message of a big box by another session are that many lines: the loop
        is given back now and then while they are written)."""
        state = self.state
        if not isinstance(state, Selected) or not state.mailbox.has_pending:
            return
        pacer = self.pacer()
        for line in state.mailbox.updates(
            allow_expunge=allow_expunge, condstore=self.condstore, vanished=self.qresync
        ):
            self.write(line)
            if pacer.due():
                await pacer.pause()

    async def _run(
        self, tag: bytes, run: Callable[..., Awaitable[Reply]], values: list[object]
    ) -> Reply:
        try:
            return await run(self, tag, *values)
        except ParseError as exc:
            return Reply(b"BAD", exc.text)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            for line in refusals.detail_lines(exc):
                self.write(line)
            if self.audit_refusal is not None:
                self.audit_refusal(self._command or "?", self.identity_address, exc)
            return refusals.reply_for(exc, self.log, f"identity={self.identity_address or '-'}")


# What the CAPABILITY response lists: the base lists, then each extension
# once it works in full (one name per entry; add yours to the tuple).
EXTENSIONS: tuple[bytes, ...] = (
    b"QRESYNC",
    b"LIST-STATUS",
    b"STATUS=SIZE",
    b"BINARY",
    b"MULTIAPPEND",
    b"SEARCHRES",
)
_BEFORE_AUTH = b" ".join(codes.CAPABILITIES_BEFORE_AUTH)
_AFTER_AUTH = b" ".join(codes.CAPABILITIES_AFTER_AUTH + EXTENSIONS)


# Each command name's histogram child, per metrics registry and shared by its
# sessions: finding it by label on every command costs more than the observation.
_TIMERS: weakref.WeakKeyDictionary[GatewayMetrics, dict[str, Histogram]] = (
    weakref.WeakKeyDictionary()
)


def _command_timers(metrics: GatewayMetrics) -> dict[str, Histogram]:
    timers = _TIMERS.get(metrics)
    if timers is None:
        timers = _TIMERS[metrics] = {}
    return timers


def _read_tag(args: Args) -> bytes:
    tag = args.atom()
    if b"+" in tag:
        raise ParseError("invalid tag")
    return tag
