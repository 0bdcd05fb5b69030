"""Alerts wired for the gateway: the outbox, the sender and the HTTPS route.

Kept apart from ``palais.app`` so that the composition root stays one call:
``Alerts.open`` builds what ``[alerts]`` asks for from the running storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from palais.config import Settings
from palais.gateway.alert_sender import AlertCounts, AlertSender, SmtpRelay
from palais.gateway.alerts_api import PATH, alerts_route
from palais.gateway.https import Route
from palais.mailbox.alerts import DossierEventAlert
from palais.storage import Storage
from palais.storage.alerts import AlertStore, write_dossier_event_alert

__all__ = ["Alerts"]


@dataclass
class Alerts:
    store: AlertStore
    route: Route
    sender: AlertSender | None  # None without a relay: notices wait for one
    path: bytes = PATH
    _counts: tuple[CollectorRegistry, AlertCounts] | None = None

    @classmethod
    def open(
        cls,
        settings: Settings,
        storage: Storage,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> Alerts:
        a = settings.alerts
        store = AlertStore(storage.reader, storage.commits, grace=a.grace)
        # A dossier event's plan may carry its notices (DossierEventAlert).
        storage.mail.add_record_writer(DossierEventAlert, write_dossier_event_alert)
        domain = settings.instance.mail_domain
        people_domains = storage.directory.address_domains

        async def own_domains() -> frozenset[str]:
            return frozenset({domain.lower()}) | await people_domains()

        sender = None
        if a.relay_host:
            sender = AlertSender(
                store,
                SmtpRelay(a.relay_host, a.relay_port, starttls=a.relay_starttls),
                sender=a.sender or f"alertes@{domain}",
                domain=domain,
                digest_hour=a.digest_hour(),
                zone=ZoneInfo(a.timezone),
                poll_interval=a.poll_interval,
                retry_interval=a.retry_interval,
                max_retry_interval=a.max_retry_interval,
                instance=settings.instance.name.capitalize(),
                clock=clock,
            )
        return cls(store, alerts_route(store, own_domains, clock=clock), sender)

    def start(self, registry: CollectorRegistry | None = None) -> None:
        """Start sending; its counts in ``registry`` (the gateway's /metrics)."""
        if self.sender is not None:
            if registry is not None:
                self._counts = (registry, AlertCounts(self.sender))
                registry.register(self._counts[1])
            self.sender.start()

    async def stop(self) -> None:
        if self.sender is not None:
            await self.sender.stop()
        if self._counts is not None:
            registry, counts = self._counts
            registry.unregister(counts)
            self._counts = None
