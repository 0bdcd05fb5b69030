"""SMTP front-end (aiosmtpd): mutual TLS, the certificate is the identity.

The handler only translates: each transaction holds one domain
``Submission`` (made at MAIL, given each RCPT, handed the content at DATA),
and every refusal is a ``PalaisError`` whose kind ``replies.reply_for``
turns into a reply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException
from prometheus_client import Counter, Histogram

from palais.gateway import replies
from palais.gateway.admission import SMTP_PREAUTH_TIMEOUT, Gate, Ticket
from palais.gateway.audit import command_refused, connection_refused, protocol_refused
from palais.gateway.metrics import GatewayMetrics
from palais.gateway.sessions import Registration, SessionWatcher
from palais.gateway.tls import refusal_logger
from palais.mailbox.audit import RefusalAudit
from palais.mailbox.completion import (
    Arrival,
    arrival_digest,
    completion,
    header_presence,
)
from palais.mailbox.errors import PalaisError
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import header_size
from palais.mailbox.submission import Submission, SubmissionDesk

ResolveIdentity = Callable[[bytes], Awaitable[Identity]]
log = logging.getLogger("palais.smtp")

# The common form of a MAIL/RCPT argument: an ASCII dot-atom address in angle
# brackets, then parameters. Anything else goes through aiosmtpd's parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")

# Refusals of aiosmtpd's own (a command unknown, out of sequence, badly
# formed) and the words the audit log gives them.
_GENERIC_REFUSALS = {
    "500": "500 5.5.2 Command not recognized or line too long",
    "501": "501 5.5.4 Syntax error in parameters or arguments",
    "502": "502 5.5.1 Command not implemented",
    "503": "503 5.5.1 Bad sequence of commands",
    "504": "504 5.5.4 Command parameter not implemented",
}

# The session watcher's goodbye (certificate revoked, account deactivated):
# the reason in plain words follows.
SESSION_ENDED = "421 4.7.0 "


class _SessionState:
    """What we know of one connection beyond aiosmtpd's own session."""

    __slots__ = ("identity", "refused", "submission")

    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.refused = False
        # The message of the transaction under way: from MAIL to the end of
        # DATA (or RSET, EHLO, STARTTLS).
        self.submission: Submission | None = None


class PalaisSMTP(SMTP):
    """aiosmtpd's protocol with certificate identity, EXTERNAL only, enhanced codes."""

    def __init__(
        self,
        handler: SubmissionHandler,
        *,
        listener: str,
        resolve_identity: ResolveIdentity,
        allowed_roles: frozenset[Role],
        door: Gate | None = None,
        preauth_timeout: float | None = None,
        handshake_timeout: float | None = None,
        watcher: SessionWatcher | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._watcher = watcher
        self._watched: Registration | None = None
        # Set while a message is being committed (its 250 is due): the
        # watcher's goodbye waits for that reply (``_ending``) rather than
        # cancel the commit.
        self._committing = False
        self._ending: str | None = None
        self.listener = listener
        self._door = door
        self._ticket: Ticket | None = None
        self._preauth_timeout = preauth_timeout
        self._handshake_timeout = handshake_timeout
        self._handler = handler
        self._metrics = handler.metrics
        self._audit = handler.audit
        self._resolve_identity = resolve_identity
        self._allowed_roles = allowed_roles
        self.state = _SessionState()
        self._in_ehlo = False
        self._audited = False  # the reply being pushed is audited already

    # -- admission and pre-authentication timeout (palais.gateway.admission) --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        door = self._door
        # Admitted here on the plain-TCP listeners; on SMTPS the TLS layer
        # below admitted the connection already; STARTTLS comes back here.
        if (
            door is not None
            and self.transport is None
            and not transport.get_extra_info("sslcontext")
        ):
            ticket = door.admit(transport.get_extra_info("peername"))
            if ticket is None or not ticket.admitted:
                if ticket is not None:
                    cast(asyncio.Transport, transport).write(door.goodbye)
                    ticket.release()
                transport.close()
                return
            self._ticket = ticket
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._ticket is not None:
            self._ticket.release()
            self._ticket = None
        if self._watcher is not None and self._watched is not None:
            self._watcher.unregister(self, self._watched)
            self._watched = None
        if self.session is not None:  # None: refused at the door
            super().connection_lost(error)

    def eof_received(self) -> bool | None:
        # aiosmtpd stops serving at EOF but keeps a half-closed plain
        # connection (and its place) until the timeout: close it now.
        if self.session is not None:
            super().eof_received()
        return False

    def _proven(self) -> bool:
        """TLS is up and the client said EHLO over it (a new session starts at STARTTLS)."""
        return self._ssl_object() is not None and bool(self.session and self.session.host_name)

    def _reset_timeout(self, duration: float | None = None) -> None:
        if duration is None and self._preauth_timeout is not None and not self._proven():
            duration = self._preauth_timeout
        super()._reset_timeout(duration)

    def _timeout_cb(self) -> None:
        if self._preauth_timeout is not None and not self._proven() and self.transport:
            peer = self.session.peer if self.session else None
            if self._original_transport is not None and self._ssl_object() is None:
                # A stalled STARTTLS handshake: counted and logged as the
                # implicit-TLS listeners do, and nothing written into it.
                if self._door is not None:
                    self._door.refused("timeout")
                refusal_logger(log, self.listener, self._audit)("timeout", "timeout", peer)
            else:
                if self._door is not None:
                    self._door.preauth_timeout(peer)
                cast(asyncio.Transport, self.transport).write(SMTP_PREAUTH_TIMEOUT)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # -- identity ------------------------------------------------------------

    def _ssl_object(self) -> ssl.SSLObject | ssl.SSLSocket | None:
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject | ssl.SSLSocket) else None

    async def identity(self) -> Identity | None:
        """The verified identity, or None (and a log line) if not acceptable."""
        if self.state.identity is not None or self.state.refused:
            return self.state.identity
        obj = self._ssl_object()
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        if not der:
            return None
        try:
            who = await self._resolve_identity(der)
            if who.role not in self._allowed_roles:
                raise PalaisError(reason=f"role {who.role} not allowed on {self.listener}")
        except Exception as error:
            self.state.refused = True
            self._metrics.refusals.labels(self.listener, "identity").inc()
            reason = error.reason if isinstance(error, PalaisError) else repr(error)
            log.warning(
                "connection listener=%s peer=%s decision=refused reason=%r",
                self.listener,
                self.session.peer if self.session else None,
                reason,
            )
            connection_refused(
                self._audit,
                listener=self.listener,
                peer=self.session.peer if self.session else None,
                reason=reason,
                der=der,
            )
            return None
        self.state.identity = who
        if self._watcher is not None and self._watched is None and self.transport is not None:
            self._watched = self._watcher.register(
                self, listener=self.listener, der=der, identity=who
            )
        log.info(
            "connection listener=%s peer=%s identity=%s role=%s fingerprint=%s decision=accepted",
            self.listener,
            self.session.peer if self.session else None,
            who.address,
            who.role,
            who.fingerprint,
        )
        return who

    def end_session(self, reason: str) -> None:
        """Cut by the session watcher: 421 with the reason, then close.

        Idle, or in the middle of a command or of a DATA transfer, the
        session goes at once: a message still arriving is not accepted (no
        250 was sent; the client keeps it). A message being committed is
        let through: its 250 goes out, then the 421.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._committing:
            self._ending = reason
            return
        text = replies.printable(SESSION_ENDED + reason)
        cast(asyncio.Transport, transport).write(text.encode("ascii", "replace") + b"\r\n")
        transport.close()

    async def _refuse(self, command: str, reply: str) -> None:
        """A refusal of the protocol front-end itself: audited once, then sent.

        (The domain's refusals are audited by the handler, the certificate's
        once per connection by ``identity``.)
        """
        who = self.state.identity
        protocol_refused(
            self._audit,
            listener=self.listener,
            peer=self.session.peer if self.session else None,
            identity=who.address if who is not None else None,
            command=command,
            reply=reply,
        )
        self._audited = True
        try:
            await self.push(reply)
        finally:
            self._audited = False

    async def _gate(self, command: str = "") -> bool:
        """True if the command may proceed; otherwise the refusal is sent."""
        if self._ssl_object() is None:
            await self._refuse(command, replies.STARTTLS_FIRST)
            return False
        if await self.identity() is None:
            await self.push(replies.CERT_REFUSED)
            return False
        return True

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd builds a class and runs the email package's full parser on
        # each MAIL and RCPT; the usual address needs neither.
        found = _PLAIN_ADDRESS.match(arg) if arg else None
        # What aiosmtpd strips after the address (the email package's CFWS):
        # all whitespace, but only if a space or a tab comes first ("\r" alone stays).
        tail = arg[found.end() :] if found else ""
        rest = tail.lstrip() if tail[:1] in (" ", "\t") else tail
        if found is None or rest.startswith("(") or (rest and rest == tail):
            try:
                result: tuple[str | None, str | None] = super()._getaddr(arg)
            except (IndexError, AttributeError, UnboundLocalError):
                # The email package's parser crashes on some inputs ("a@",
                # "a@[", "==@[\t") and aiosmtpd does not catch it: a malformed
                # address (553), not an internal error (451 and a traceback).
                return None, None
            return result
        local, domain = found.group(1), found.group(2)
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return f"{local}@{domain}", rest

    # -- replies -------------------------------------------------------------

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and not isinstance(status, replies.MultilineReply):
            # Replies echo client input (an address, a command name): never
            # a control character or an undecodable byte on the wire.
            status = replies.printable(status)
            if not self._in_ehlo:
                status = replies.with_enhanced_code(status)
            if not self._audited and status[:3] in _GENERIC_REFUSALS:
                self._audit_generic(status[:3])
        await super().push(status)

    def _audit_generic(self, code: str) -> None:
        """aiosmtpd's own refusals (a command unknown, out of sequence, badly
        formed): audited with the gateway's words for the code, never the
        reply's, which may echo the client's line."""
        who = self.state.identity
        protocol_refused(
            self._audit,
            listener=self.listener,
            peer=self.session.peer if self.session else None,
            identity=who.address if who is not None else None,
            command="",  # aiosmtpd does not say which; the reason does what it can
            reply=_GENERIC_REFUSALS[code],
        )

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # Already logged and counted (smtp_STARTTLS); aiosmtpd closes the
            # connection without a reply.
            return replies.INTERNAL_ERROR
        return replies.reply_for(error, log, f"listener={self.listener}")

    # -- commands ------------------------------------------------------------

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False
        self._reset_timeout()  # EHLO over TLS ends the pre-authentication timeout
        if self._watcher is not None and self._ssl_object() is not None:
            # Known from EHLO on rather than from the first MAIL: a session
            # that only said EHLO is watched (and cut) like the others.
            await self.identity()

    async def smtp_STARTTLS(self, arg: str) -> None:
        started = self.loop.time()
        if self._handshake_timeout is not None and self.tls_context and not arg:
            self._reset_timeout(self._handshake_timeout)  # the handshake's own deadline
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            # A refused certificate is the client's doing: one line, no traceback.
            word, detail = replies.tls_refusal(error.__cause__)
            if word in replies.TLS_REFUSAL_REASONS:  # not when the client just left
                self._metrics.refusals.labels(self.listener, word).inc()
            # The same line as the implicit-TLS listeners'.
            refusal_logger(log, self.listener, self._audit)(
                word, detail, self.session.peer if self.session else None
            )
            raise  # aiosmtpd closes the connection
        if self._original_transport is not None and self._ssl_object() is None:
            # Cut by its deadline (_timeout_cb, already logged): asyncio ends the
            # wait without an error and never reports the connection lost;
            # aiosmtpd closes it and cleans up on TLSSetupException.
            raise TLSSetupException()
        if self._door is not None and self._ssl_object() is not None:
            self._door.handshake_completed(self.loop.time() - started)
        self.state = _SessionState()  # RFC 3207: forget everything learnt in clear

    async def smtp_AUTH(self, arg: str) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        if self._ssl_object() is None:
            await self._refuse("AUTH", replies.ENCRYPTION_REQUIRED)
            return
        assert self.session is not None
        if self.session.authenticated:
            await self.push(replies.ALREADY_AUTHENTICATED)
            return
        parts = (arg or "").split()
        if not parts or len(parts) > 2:
            await self.push("501 5.5.4 Syntax: AUTH EXTERNAL [initial-response]")
            return
        if parts[0].upper() != "EXTERNAL":
            await self._refuse("AUTH", replies.ONLY_EXTERNAL)
            return
        who = await self.identity()
        if who is None:
            await self.push(replies.CERT_REFUSED)
            return
        if len(parts) == 2:
            response: bytes | None = b"" if parts[1] == "=" else self._b64(parts[1])
        else:
            response = await self._challenge()
        if response is None:
            return
        authzid = response.decode("utf-8", errors="replace").strip()
        if authzid and authzid.lower() != who.address:
            log.warning("auth refused identity=%s authzid=%r", who.address, authzid)
            await self._refuse("AUTH", replies.AUTHZ_MISMATCH)
            return
        self.session.authenticated = True
        self.session.auth_data = who  # type: ignore[assignment]
        await self.push(replies.AUTH_OK)

    async def _auth_line(self) -> bytes | None:
        """The client's next SASL line, or None if it exceeds the line limit (then skipped)."""
        reader = self._reader
        try:
            return await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            over = error
        while True:  # drop the rest of the line, however long, then say so
            await reader.readexactly(over.consumed)
            try:
                await reader.readuntil(b"\n")
                return None
            except asyncio.LimitOverrunError as error:
                over = error

    def _b64(self, text: str) -> bytes | None:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None

    async def _challenge(self) -> bytes | None:
        await self.push("334 ")
        line = await self._auth_line()
        if line is None:
            await self._refuse("AUTH", replies.AUTH_LINE_TOO_LONG)
            return None
        line = line.strip()
        if line == b"*":
            await self.push(replies.AUTH_ABORTED)
            return None
        if not line or line == b"=":
            return b""
        decoded = self._b64(line.decode("ascii", errors="replace"))
        if decoded is None:
            await self.push(replies.BAD_BASE64)
        return decoded

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._gate("MAIL"):
            return
        if arg and not _is_utf8(arg):
            await self._refuse("MAIL", replies.BAD_SENDER_SYNTAX)
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._gate("RCPT"):
            return
        if arg and not _is_utf8(arg):
            await self._refuse("RCPT", replies.BAD_RECIPIENT_SYNTAX)
            return
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if not await self._gate("DATA"):
            return
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        ended = time.perf_counter()
        if content is None:
            self._set_post_data_state()
            self._handler.count("refused")
            status = replies.MESSAGE_TOO_BIG
            who = self.state.identity
            protocol_refused(
                self._audit,
                listener=self.listener,
                peer=self.session.peer if self.session else None,
                identity=who.address if who is not None else None,
                command="DATA",
                reply=status,
            )
        else:
            self.envelope.content = self.envelope.original_content = content
            self._committing = True
            try:
                status = await self._call_handler_hook("DATA")
            finally:
                self._committing = False
            self._set_post_data_state()
        await self.push(status)
        self._handler.data_to_reply(time.perf_counter() - ended)
        if self._ending is not None:
            self.end_session(self._ending)

    async def _read_data(self) -> bytes | None:
        """The message up to <CRLF>.<CRLF>, dot-unstuffed; None if over the size limit.

        aiosmtpd reads DATA one line at a time (an await per line); reading up
        to the terminator in one go is what lets ingest keep up.
        """
        reader = self._reader
        limit = self.data_size_limit or 0
        saved = reader._limit  # type: ignore[attr-defined]
        # The stream's limit is the command-line limit; a body chunk may be larger.
        reader._limit = (limit or 1 << 30) + 5  # type: ignore[attr-defined]
        parts: list[bytes] = []
        size = 0
        too_big = False
        tail = b""
        try:
            while True:
                try:
                    chunk = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as e:
                    chunk = await reader.readexactly(e.consumed)
                size += len(chunk)
                if limit and size > limit + 5:
                    too_big = True
                    parts.clear()
                else:
                    parts.append(chunk)
                # ".\r\n" ends the data only at the start of a line.
                tail = (tail + chunk)[-5:]
                if tail == b"\r\n.\r\n" or (size == 3 and chunk == b".\r\n"):
                    break
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        if too_big:
            return None
        raw = b"".join(parts)
        # Keep the final CRLF, drop ".\r\n"; a lone ".\r\n" is an empty message.
        body = b"" if raw.startswith(b".\r\n") else raw[:-3]
        if body.startswith(b"."):
            body = body[1:]
        body = body.replace(b"\r\n.", b"\r\n")
        if limit and len(body) > limit:
            return None
        return body

    async def smtp_VRFY(self, arg: str) -> None:
        await self.push("252 2.5.0 Cannot VRFY; send the message and the reply will tell")

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        if hasattr(self, "state"):
            self.state.submission = None

    def _set_rset_state(self) -> None:
        super()._set_rset_state()  # type: ignore[no-untyped-call]
        if hasattr(self, "state"):
            self.state.submission = None


def _is_utf8(arg: str) -> bool:
    """False if the command argument had bytes that are not UTF-8.

    aiosmtpd decodes arguments with surrogateescape: such bytes come back
    as lone surrogates, which no address may contain.
    """
    if arg.isascii():
        return True
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SubmissionHandler:
    """aiosmtpd hooks; each turns one protocol step into one domain call: MAIL
    starts the transaction's ``Submission``, each RCPT adds a recipient to
    it, DATA hands it the content."""

    def __init__(
        self,
        desk: SubmissionDesk,
        *,
        listener: str,
        max_recipients: int,
        metrics: GatewayMetrics | None = None,
        audit: RefusalAudit | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.audit = audit
        self.listener = listener
        self.desk = desk
        # Structured documents (saisine...) checked before anything else at DATA
        # (palais.mailbox.documents.refuse_invalid), by who sends: raises the refusal.
        self.documents: Callable[[Identity, bytes], Awaitable[None]] | None = None
        # The court listener's DKIM check (palais.pki.court_dkim): the bytes
        # to store (with their Authentication-Results), or the refusal.
        self.arrival_check: Callable[[Identity, bytes], bytes] | None = None
        self.max_recipients = max_recipients
        # One handler per listener: its labelled children resolved once
        # (labels() takes a lock and costs more than inc()).
        self._decisions: dict[str, Counter] = {
            decision: self.metrics.smtp_messages.labels(listener, decision)
            for decision in ("accepted", "refused", "resent")
        }
        self._data_seconds: Histogram = self.metrics.smtp_data_seconds.labels(listener)

    def count(self, decision: str) -> None:
        """One message at the end of DATA: "accepted", "refused" or "resent"."""
        self._decisions[decision].inc()

    def data_to_reply(self, seconds: float) -> None:
        """Time from the end of DATA to the reply (the 250 after the durable commit)."""
        self._data_seconds.observe(seconds)

    def _refused(self, session: Session, identity: str, command: str, error: Exception) -> None:
        command_refused(
            self.audit,
            listener=self.listener,
            peer=session.peer,
            identity=identity,
            command=command,
            error=error,
        )

    async def handle_EHLO(
        self,
        server: PalaisSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        out = [r for r in responses if not r[4:].startswith("AUTH") and r[4:] != "HELP"]
        if server._ssl_object() is not None:
            out.append("250-AUTH EXTERNAL")
        out.append("250-ENHANCEDSTATUSCODES")
        out.append("250 PIPELINING")
        return [r if i == len(out) - 1 else "250-" + r[4:] for i, r in enumerate(out)]

    async def handle_MAIL(
        self,
        server: PalaisSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        who = server.state.identity
        assert who is not None
        try:
            server.state.submission = await self.desk.open(who, address)
        except Exception as error:
            self._refused(session, who.address, "MAIL", error)
            return replies.reply_for(error, log, f"MAIL identity={who.address}")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: PalaisSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        submission = server.state.submission
        if submission is None:  # aiosmtpd asks for MAIL first; never reached
            return replies.NEED_MAIL
        if len(envelope.rcpt_tos) >= self.max_recipients:
            protocol_refused(
                self.audit,
                listener=self.listener,
                peer=session.peer,
                identity=submission.who.address,
                command="RCPT",
                reply=replies.TOO_MANY_RECIPIENTS,
            )
            return replies.TOO_MANY_RECIPIENTS
        try:
            await submission.add_recipient(address)
        except Exception as error:
            self._refused(session, submission.who.address, "RCPT", error)
            return replies.reply_for(
                error, log, f"RCPT identity={submission.who.address} rcpt={address!r}"
            )
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: PalaisSMTP, session: Session, envelope: Envelope) -> str:
        submission = server.state.submission
        if submission is None:  # aiosmtpd asks for RCPT first; never reached
            return replies.NEED_RCPT
        who = submission.who
        data = envelope.original_content or b""
        context = f"DATA identity={who.address} fingerprint={who.fingerprint} size={len(data)}"
        if self.documents is not None:
            try:
                await self.documents(who, data)
            except PalaisError as error:
                self.count("refused")
                log.info("message %s decision=refused", context)
                self._refused(session, who.address, "DATA", error)
                return replies.reply_for(error, log, context)
        if self.arrival_check is not None:
            try:
                data = self.arrival_check(who, data)
            except PalaisError as error:
                self.count("refused")
                log.info("message %s decision=refused", context)
                self._refused(session, who.address, "DATA", error)
                return replies.reply_for(error, log, context)
        # Completed before anything is checked or filed: the bytes stored,
        # hashed into the receipt and served back are the completed ones.
        presence = header_presence(data[: header_size(data)])
        now = datetime.now().astimezone()
        # Without a Message-ID every submission is a new message.
        arrival = None if presence.message_id is None else arrival_digest(who.address, data)
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        trace = Arrival(
            who=who,
            helo=session.host_name or "",
            peer=str(peer) if peer is not None else None,
            by=server.hostname,
            protocol="ESMTPSA" if session.authenticated else "ESMTPS",
            at=now,
        )
        try:
            accepted = await submission.accept(
                completion(presence, trace, _new_message_id) + data, arrival=arrival
            )
        except Exception as error:
            self.count("refused")
            log.info("message %s decision=refused", context)
            self._refused(session, who.address, "DATA", error)
            return replies.reply_for(error, log, context)
        decision = "resent" if accepted.resent else "accepted"
        self.count(decision)
        log.info(
            "message %s decision=%s ref=%s sha256=%s stored=%d rcpts=%s dossier=%s",
            context,
            decision,
            accepted.reference,
            accepted.sha256,
            accepted.size,
            ",".join(envelope.rcpt_tos),
            accepted.plan.dossier,
        )
        return f"250 2.0.0 Accepted as {accepted.reference}"


def _new_message_id() -> str:
    return uuid.uuid4().hex


def make_smtp_factory(
    *,
    desk: SubmissionDesk,
    listener: str,
    resolve_identity: ResolveIdentity,
    allowed_roles: frozenset[Role],
    hostname: str,
    max_size: int,
    max_recipients: int,
    timeout: float,
    documents: Callable[[Identity, bytes], Awaitable[None]] | None = None,
    arrival_check: Callable[[Identity, bytes], bytes] | None = None,
    starttls_context: ssl.SSLContext | None,
    metrics: GatewayMetrics | None = None,
    door: Gate | None = None,
    preauth_timeout: float | None = None,
    handshake_timeout: float | None = None,
    audit: RefusalAudit | None = None,
    watcher: SessionWatcher | None = None,
) -> Callable[[], PalaisSMTP]:
    handler = SubmissionHandler(
        desk,
        listener=listener,
        max_recipients=max_recipients,
        metrics=metrics,
        audit=audit,
    )
    handler.documents = documents
    handler.arrival_check = arrival_check

    def factory() -> PalaisSMTP:
        return PalaisSMTP(
            handler,
            listener=listener,
            resolve_identity=resolve_identity,
            allowed_roles=allowed_roles,
            door=door,
            preauth_timeout=preauth_timeout,
            handshake_timeout=handshake_timeout,
            watcher=watcher,
            hostname=hostname,
            ident="Palais ESMTP",
            data_size_limit=max_size,
            tls_context=starttls_context,
            require_starttls=False,  # we refuse with an enhanced code ourselves
            timeout=timeout,
            enable_SMTPUTF8=True,
        )

    return factory
