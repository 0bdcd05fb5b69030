"""The alerts' sender: notices due go to the outside relay (an SMTP smarthost).

A task on the gateway's loop looks every ``poll_interval`` seconds: it has
the outbox derive the notices of what was filed since its last look, then
sends, per person whose notices are due (at once, or the daily digest at the
configured hour in the configured zone: ``palais.mailbox.alerts.cutoff``),
one mail through the relay. A relay that is down or answers 4xx: the
notices are tried again later, each time twice as late; one that refuses
them for good (5xx): they are marked failed and logged. The clock is
injectable, so that tests move the day forward.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from palais.mailbox.alerts import (
    AlertSetting,
    PendingNotice,
    compose,
    cutoff,
    retry_delay,
)
from palais.periodic import Periodic

__all__ = ["AlertCounts", "AlertOutbox", "AlertSender", "RelayRefused", "SmtpRelay"]

log = logging.getLogger("palais.alerts")


class AlertOutbox(Protocol):
    async def gather(self, now: datetime) -> int: ...

    async def waiting(self, now: datetime) -> list[tuple[AlertSetting, datetime]]: ...

    async def claim(
        self, person: str, upto: datetime, now: datetime, lease: float
    ) -> list[PendingNotice]: ...

    async def sent(self, ids: Sequence[int], now: datetime) -> None: ...

    async def not_sent(
        self, ids: Sequence[int], error: str, *, retry_at: datetime | None
    ) -> None: ...


class RelayRefused(Exception):
    """The relay refused the notice for good (5xx): trying again is useless."""


@dataclass(frozen=True)
class SmtpRelay:
    """The configured smarthost, reached with the standard library's client."""

    host: str
    port: int = 25
    starttls: bool = False
    timeout: float = 30.0

    def _send(self, sender: str, to: str, data: bytes) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as client:
                if self.starttls:
                    client.starttls(context=ssl.create_default_context())
                client.sendmail(sender, [to], data)
        except smtplib.SMTPRecipientsRefused as refused:
            codes = [code for code, _ in refused.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise RelayRefused(f"recipient refused ({codes[0]})") from None
            raise
        except smtplib.SMTPResponseException as answer:
            if answer.smtp_code >= 500:
                raise RelayRefused(f"refused ({answer.smtp_code})") from None
            raise

    async def send(self, sender: str, to: str, data: bytes) -> None:
        await asyncio.to_thread(self._send, sender, to, data)


class Relay(Protocol):
    async def send(self, sender: str, to: str, data: bytes) -> None: ...


class AlertSender(Periodic):
    def __init__(
        self,
        outbox: AlertOutbox,
        relay: Relay,
        *,
        sender: str,
        domain: str,
        digest_hour: time,
        zone: tzinfo,
        poll_interval: float = 5.0,
        retry_interval: float = 60.0,
        max_retry_interval: float = 3600.0,
        lease: float = 600.0,
        instance: str = "Palais",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._outbox = outbox
        self._relay = relay
        self._sender = sender
        self._domain = domain
        self._hour = digest_hour
        self._zone = zone
        self._retry = retry_interval
        self._max_retry = max_retry_interval
        self._lease = lease
        self._instance = instance
        self._clock = clock
        super().__init__("palais-alerts", poll_interval)
        self.sent = 0  # mails the relay took
        self.failures = 0  # tries it did not

    async def look(self) -> bool:
        # Stopped, it ends after the send in flight, if any: its outcome is
        # recorded, so that it is not sent again after a restart.
        await self.run_once()
        return False

    async def run_once(self) -> int:
        """One look: new notices derived, those due sent; how many mails went."""
        now = self._clock()
        await self._outbox.gather(now)
        mails = 0
        for setting, oldest in await self._outbox.waiting(now):
            if self.stopping:
                break
            upto = cutoff(setting.mode, now, hour=self._hour, zone=self._zone)
            if oldest > upto:
                continue
            notices = await self._outbox.claim(setting.person, upto, now, self._lease)
            if notices and await self._send(setting, notices, now):
                mails += 1
        return mails

    async def _send(
        self, setting: AlertSetting, notices: list[PendingNotice], now: datetime
    ) -> bool:
        ids = [n.id for n in notices]
        # The same notices make the same Message-ID: a mail sent again after
        # a crash between the relay's answer and the mark can be recognised.
        message_id = f"<alerte.{ids[0]}.{len(ids)}.{ids[-1]}@{self._domain}>"
        data = compose(
            notices,
            mode=setting.mode,
            to=setting.address,
            sender=self._sender,
            now=now,
            zone=self._zone,
            message_id=message_id,
            instance=self._instance,
        )
        try:
            await self._relay.send(self._sender, setting.address, data)
        except RelayRefused as refused:
            self.failures += 1
            log.warning("alerts: the relay refused %d notice(s) for good: %s", len(ids), refused)
            await self._outbox.not_sent(ids, str(refused), retry_at=None)
            return False
        except (OSError, smtplib.SMTPException) as error:
            self.failures += 1
            attempts = max(n.attempts for n in notices) + 1
            delay = retry_delay(attempts, first=self._retry, longest=self._max_retry)
            log.warning(
                "alerts: relay unavailable (%s), %d notice(s) tried again in %.0f s",
                type(error).__name__,
                len(ids),
                delay,
            )
            await self._outbox.not_sent(
                ids, type(error).__name__, retry_at=now + timedelta(seconds=delay)
            )
            return False
        await self._outbox.sent(ids, self._clock())
        self.sent += 1
        return True


class AlertCounts(Collector):
    """The sender's counts, read at each scrape of /metrics."""

    def __init__(self, sender: AlertSender) -> None:
        self._sender = sender

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "palais_alerts_sent", "Alert mails the outside relay took", value=self._sender.sent
        )
        yield CounterMetricFamily(
            "palais_alerts_failures",
            "Tries to send alert mails the outside relay did not take",
            value=self._sender.failures,
        )
