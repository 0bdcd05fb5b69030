"""/metrics of the identity lifecycle: the audit queue, sessions closed, departures carried
out, read from their real owners at scrape time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from prometheus_client.parser import text_string_to_metric_families

from palais.gateway.metrics import GatewayMetrics
from palais.gateway.sessions import Registration, SessionWatcher
from palais.mailbox.audit import AuditAction
from palais.mailbox.identity import Identity, Role
from palais.storage import Storage
from palais.storage.audit import AuditLog
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_departure import (
    CLERK,
    EFFECTIVE,
    Clock,
    prepare,
    runner,
    set_departure,
)


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


class Session:
    def __init__(self, watcher: SessionWatcher) -> None:
        self.watcher = watcher
        self.registration: Registration | None = None
        self.told: list[str] = []

    def end_session(self, reason: str) -> None:
        self.told.append(reason)
        assert self.registration is not None
        self.watcher.unregister(self, self.registration)


def test_lifecycle_counts_on_metrics(storage: Storage) -> None:
    prepare(storage)
    set_departure(storage, CLERK, None)
    departures = runner(storage, Clock(EFFECTIVE))
    audit = AuditLog(storage.commits, capacity=3)

    async def deactivated(fingerprints: Collection[str]) -> Mapping[str, tuple[int, bool]]:
        return {f: (7, False) for f in fingerprints}

    watcher = SessionWatcher(
        check_certificate=lambda der, listener: None,
        standing=deactivated,
        interval=60,
        log=logging.getLogger("test"),
        audit=audit,
    )
    metrics = GatewayMetrics()
    metrics.watch_lifecycle(audit=audit, sessions=watcher, departures=departures)
    before = samples(metrics)
    assert before[("palais_departures_executed_total", ())] == 0
    assert before[("palais_sessions_closed_total", (("reason", "account-deactivated"),))] == 0
    assert before[("palais_audit_events_dropped_total", ())] == 0

    async def go() -> None:
        for n in range(2):
            session = Session(watcher)
            identity = Identity(7, "x@avocats.test", Role.AVOCAT, "X", f"{n}" * 64, "x")
            session.registration = watcher.register(
                session, listener="imaps", der=b"der", identity=identity
            )
        # Not draining yet: a full queue drops (two closures fill it with the flood below).
        for n in range(3):
            audit.refused(
                AuditAction.CONNECTION_REFUSED, listener="https", peer=None, reason=f"r{n}"
            )
        await watcher.check()
        assert await departures.run_due()
        await audit.close()

    asyncio.run(go())
    after = samples(metrics)
    assert after[("palais_sessions_closed_total", (("reason", "account-deactivated"),))] == 2
    assert after[("palais_sessions_closed_total", (("reason", "certificate-refused"),))] == 0
    assert after[("palais_departures_executed_total", ())] == 1
    assert after[("palais_departures_failed_total", ())] == 0
    written = after[("palais_audit_events_written_total", ())]
    dropped = after[("palais_audit_events_dropped_total", ())]
    assert written + dropped == 5 and written == audit.written and dropped == audit.dropped
    assert after[("palais_audit_events_queued", ())] == 0
