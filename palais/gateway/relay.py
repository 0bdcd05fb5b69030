"""The relay to court systems' SMTP endpoints: the client and the worker loop.

The worker claims due rows of the durable queue (``palais.mailbox.relay.
RelayQueue``), DKIM-signs each message with the gateway's keys, hands it to
the court system's endpoint over SMTP with STARTTLS and mutual TLS (the
gateway presents its client certificate and checks the endpoint's against
the court systems' anchors, named for the court system's domain), and
records the outcome as the domain's ``RetryRule`` decides.

Exactly-once, as far as SMTP allows: a row is marked sent only after the
endpoint's 250, so a crash of either side before it is a retry; a crash of
the gateway between the 250 and the mark sends the same bytes again, with
the same Message-ID, which the court system recognises as a redelivery.
The standard library's smtplib runs in a thread (one message at a time per
worker: court endpoints are few and the queue is drained in order).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from palais.mailbox.relay import Attempt, Outcome, RelayItem, RelayQueue, RetryRule
from palais.periodic import Periodic

__all__ = ["Endpoint", "RelayWorker", "client_context", "send_once"]

log = logging.getLogger("palais.relay")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A court system's SMTP endpoint; its certificate must name ``server_name``."""

    host: str
    port: int
    server_name: str

    @classmethod
    def parse(cls, address: str, where: str) -> Endpoint:
        """From ``host:port`` configured for the court system ``address``
        (the certificate must name the address's domain)."""
        host, sep, port = where.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint of {address}: expected host:port, not {where!r}")
        return cls(host.strip("[]"), int(port), address.rsplit("@", 1)[-1])


def client_context(certificate: str, key: str, anchors: str) -> ssl.SSLContext:
    """The relay's TLS: its client certificate, endpoints checked against ``anchors``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=anchors)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context


def send_once(
    endpoint: Endpoint,
    context: ssl.SSLContext,
    *,
    hostname: str,
    sender: str,
    recipient: str,
    data: bytes,
    timeout: float,
) -> Attempt:
    """One attempt (blocking): DELIVERED on 250, PERMANENT on a 5xx, else TEMPORARY."""
    try:
        with smtplib.SMTP(endpoint.host, endpoint.port, hostname, timeout=timeout) as smtp:
            smtp.ehlo()
            # STARTTLS or nothing: a court endpoint that does not offer it
            # never gets the message in clear.
            if not smtp.has_extn("starttls"):
                return Attempt(Outcome.TEMPORARY, "endpoint offers no STARTTLS")
            code, reply = smtp.docmd("STARTTLS")
            if code != 220:  # the endpoint's setup, not the message: try again
                return Attempt(Outcome.TEMPORARY, _reply(code, reply).detail)
            # As smtplib.starttls, but the name checked is the court system's
            # domain, not the host connected to (an address, often).
            assert smtp.sock is not None  # connected by the constructor
            smtp.sock = context.wrap_socket(smtp.sock, server_hostname=endpoint.server_name)
            smtp.file = None
            smtp.helo_resp = smtp.ehlo_resp = None
            smtp.esmtp_features = {}
            smtp.does_esmtp = False
            smtp.ehlo()
            smtp.sendmail(sender, [recipient], data)
    except smtplib.SMTPRecipientsRefused as refused:
        code, text = next(iter(refused.recipients.values()))
        return _reply(code, text)
    except smtplib.SMTPResponseException as error:
        return _reply(error.smtp_code, error.smtp_error)
    except (OSError, smtplib.SMTPException) as error:
        return Attempt(Outcome.TEMPORARY, f"{type(error).__name__}: {error}"[:300])
    return Attempt(Outcome.DELIVERED, "250")


def _reply(code: int, text: bytes | str) -> Attempt:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    detail = " ".join(f"{code} {words}".split())[:300]
    return Attempt(Outcome.PERMANENT if 500 <= code < 600 else Outcome.TEMPORARY, detail)


class RelayWorker(Periodic):
    """Drains the queue while the gateway runs (an asyncio task)."""

    def __init__(
        self,
        queue: RelayQueue,
        endpoints: Mapping[str, Endpoint],
        context: ssl.SSLContext,
        *,
        sign: Callable[[bytes], bytes],
        rule: RetryRule,
        hostname: str,
        interval: float = 5.0,
        timeout: float = 60.0,
        batch: int = 32,
    ) -> None:
        self._queue = queue
        self._endpoints = dict(endpoints)
        self._context = context
        self._sign = sign
        self._rule = rule
        self._hostname = hostname
        self._timeout = timeout
        self._batch = batch
        super().__init__("palais-relay", interval)
        # Outcomes of this node's attempts, and the whole queue as last seen
        # (every look): what /metrics shows (palais.gateway.metrics.RelayCounts).
        self.sent = 0
        self.retried = 0
        self.given_up = 0
        self.pending = 0
        self.oldest_pending: datetime | None = None

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the message in hand (its outcome recorded), then stop; past
        the send's own timeout, its lease lets another try later."""
        await super().stop(self._timeout + 5 if timeout is None else timeout)

    async def starting(self) -> None:
        resumed = await self._queue.resume()
        if resumed:
            log.info("relay resumed %d message(s) left in flight before a restart", resumed)

    async def look(self) -> bool:
        items = await self._queue.claim(self._batch)
        for item in items:
            if self.stopping:
                break  # its lease runs out; a later start takes it
            await self._relay(item)
        self.pending, self.oldest_pending = await self._queue.backlog()
        return len(items) == self._batch

    async def _relay(self, item: RelayItem) -> None:
        endpoint = self._endpoints.get(item.recipient)
        if endpoint is None:
            # The endpoint left the configuration: the row waits (it may come
            # back); the rule still gives up at the deadline.
            attempt = Attempt(Outcome.TEMPORARY, "no endpoint configured for this court system")
        else:
            data = self._sign(await self._queue.read(item))
            attempt = await asyncio.to_thread(
                send_once,
                endpoint,
                self._context,
                hostname=self._hostname,
                sender=item.sender,
                recipient=item.recipient,
                data=data,
                timeout=self._timeout,
            )
        failures = item.failures + (attempt.outcome is not Outcome.DELIVERED)
        decision = self._rule.decide(attempt, failures, item.queued, datetime.now(UTC))
        context = f"relay row={item.id} message=M{item.message} to={item.recipient}"
        if decision.sent:
            await self._queue.delivered(item)
            self.sent += 1
            log.info("%s message_id=%s sent", context, item.message_id)
        elif decision.give_up is not None:
            await self._queue.give_up(item, decision.give_up)
            self.given_up += 1
            log.warning("%s given up: %s", context, attempt.detail)
        else:
            assert decision.retry_at is not None
            await self._queue.retry(item, decision.retry_at, attempt.detail)
            self.retried += 1
            log.info("%s retry at %s: %s", context, decision.retry_at.isoformat(), attempt.detail)
