"""What the operator's /metrics shows: one registry per gateway, prometheus_client types.

Every front-end records into the ``GatewayMetrics`` it is handed (a fresh,
private one when none is given, so a front-end started alone in a test needs
no wiring). Counters only go up, histograms keep their buckets; the HTTPS
endpoint renders the registry with prometheus_client's own exposition.
Label values are closed vocabularies (listener names, reasons, limit names,
IMAP command names): never an address or a client-chosen string, which
would let a client grow the registry without bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

__all__ = [
    "AuditCounts",
    "ClosureCounts",
    "CommitCounts",
    "CrlCounts",
    "DepartureCounts",
    "GatewayMetrics",
    "LifecycleCounts",
    "WriterCounts",
]

# Seconds; from a cached-session NOOP to a slow fsync under load.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class CommitCounts(Protocol):
    """What the storage writer counts (``palais.storage``'s ``CommitQueue``)."""

    @property
    def batches(self) -> int: ...
    @property
    def jobs(self) -> int: ...


@dataclass(frozen=True)
class AllWriters:
    """Several writers counted as one: the gateway's and its filing process's."""

    writers: tuple[CommitCounts, ...]

    @property
    def batches(self) -> int:
        return sum(w.batches for w in self.writers)

    @property
    def jobs(self) -> int:
        return sum(w.jobs for w in self.writers)


class FilingState(Protocol):
    """What the filing process's owner counts (``palais.storage.filing_process``)."""

    @property
    def jobs(self) -> int: ...
    @property
    def restarts(self) -> int: ...
    @property
    def running(self) -> bool: ...


class FilingCounts:
    """A collector: the filing process's filings, restarts and whether it runs
    (while it does not, the gateway's writer files in its place)."""

    def __init__(self, filings: FilingState) -> None:
        self._filings = filings

    def collect(self) -> Iterator[Metric]:
        filings = self._filings
        yield CounterMetricFamily(
            "palais_filing_process_jobs",
            "Filings committed by the filing process (SMTP ingest on a second core)",
            value=filings.jobs,
        )
        yield CounterMetricFamily(
            "palais_filing_process_restarts",
            "Times the filing process was started again after it ended",
            value=filings.restarts,
        )
        yield GaugeMetricFamily(
            "palais_filing_process_running",
            "1 while the filing process takes filings, 0 while the gateway's writer does",
            value=1 if filings.running else 0,
        )


class WriterCounts:
    """A collector: the writer's group commits and jobs, as counters."""

    def __init__(self, commits: CommitCounts) -> None:
        self._commits = commits

    def collect(self) -> Iterator[Metric]:
        # Two plain int reads; the writer thread only ever increments them.
        yield CounterMetricFamily(
            "palais_writer_batches",
            "Group commits of the storage writer (one fsync and one database commit each)",
            value=self._commits.batches,
        )
        yield CounterMetricFamily(
            "palais_writer_jobs",
            "Jobs committed by the storage writer",
            value=self._commits.jobs,
        )


class AuditCounts(Protocol):
    """What the audit log's queue counts (``palais.storage.audit.AuditLog``)."""

    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def pending(self) -> int: ...


class DepartureCounts(Protocol):
    """What the departure runner counts (``palais.storage.departure.DepartureRunner``)."""

    @property
    def executed(self) -> int: ...
    @property
    def failed(self) -> int: ...


class ClosureCounts(Protocol):
    """Sessions the watcher closed, by code (``palais.gateway.sessions.SessionWatcher``)."""

    @property
    def closed(self) -> Mapping[str, int]: ...


class CrlCounts(Protocol):
    """CRL fetches by result and stale CRLs (``palais.trust_live.LiveTrust``)."""

    @property
    def crl_fetches(self) -> Mapping[str, int]: ...
    def stale_crls(self) -> tuple[int, int]: ...


class RelayState(Protocol):
    """What the relay to court systems counts (``palais.gateway.relay.RelayWorker``)."""

    @property
    def sent(self) -> int: ...
    @property
    def retried(self) -> int: ...
    @property
    def given_up(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def oldest_pending(self) -> datetime | None: ...


class RelayCounts:
    """A collector: the relay's attempts by outcome (this node's) and the
    queue's backlog (every node's, as its last look saw it): what an
    operator alerts on when a court system's endpoint stops answering."""

    def __init__(self, relay: RelayState) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "palais_relay_attempts",
            "Sends to court systems' SMTP endpoints by this node, by outcome",
            labels=["outcome"],
        )
        relay = self._relay
        for outcome, value in (
            ("sent", relay.sent),
            ("retry", relay.retried),
            ("given_up", relay.given_up),
        ):
            attempts.add_metric([outcome], value)
        yield attempts
        yield GaugeMetricFamily(
            "palais_relay_pending",
            "Messages waiting to be relayed to a court system, all nodes",
            value=relay.pending,
        )
        oldest = relay.oldest_pending
        yield GaugeMetricFamily(
            "palais_relay_oldest_pending_seconds",
            "Age of the oldest message waiting to be relayed (0: none waits)",
            value=0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds()),
        )


class LifecycleCounts:
    """A collector: the identity lifecycle's counts, read from their owners at each scrape.

    Plain integers their owners keep (on the event loop or one worker
    thread, only ever incremented): nothing is mirrored on the hot paths.
    """

    def __init__(
        self,
        *,
        audit: AuditCounts | None = None,
        sessions: ClosureCounts | None = None,
        departures: DepartureCounts | None = None,
        crls: CrlCounts | None = None,
    ) -> None:
        self._audit = audit
        self._sessions = sessions
        self._departures = departures
        self._crls = crls

    def collect(self) -> Iterator[Metric]:
        if self._audit is not None:
            yield CounterMetricFamily(
                "palais_audit_events_written",
                "Refusal events written to the audit log by this gateway",
                value=self._audit.written,
            )
            yield CounterMetricFamily(
                "palais_audit_events_dropped",
                "Refusal events dropped: the bounded queue was full or the database refused",
                value=self._audit.dropped,
            )
            yield GaugeMetricFamily(
                "palais_audit_events_queued",
                "Refusal events waiting to be written",
                value=self._audit.pending,
            )
        if self._sessions is not None:
            closed = CounterMetricFamily(
                "palais_sessions_closed",
                "Open sessions closed by the session watcher, by reason",
                labels=["reason"],
            )
            for reason, count in sorted(dict(self._sessions.closed).items()):
                closed.add_metric([reason], count)
            yield closed
        if self._departures is not None:
            yield CounterMetricFamily(
                "palais_departures_executed",
                "Departures carried out by this gateway",
                value=self._departures.executed,
            )
            yield CounterMetricFamily(
                "palais_departures_failed",
                "Attempts to carry a departure out that failed (tried again later)",
                value=self._departures.failed,
            )
        if self._crls is not None:
            fetches = CounterMetricFamily(
                "palais_crl_fetches",
                "CRL fetches from distribution points, by result",
                labels=["result"],
            )
            counts = dict(self._crls.crl_fetches)
            for result in ("fetched", "unchanged", "rejected", "unreachable"):
                fetches.add_metric([result], counts.get(result, 0))
            yield fetches
            in_grace, beyond = self._crls.stale_crls()
            stale = GaugeMetricFamily(
                "palais_crls_stale",
                "CAs whose CRL is past its nextUpdate: still used (in_grace) or failing"
                " closed (beyond_grace)",
                labels=["state"],
            )
            stale.add_metric(["in_grace"], in_grace)
            stale.add_metric(["beyond_grace"], beyond)
            yield stale


class GatewayMetrics:
    """The gateway's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.up = Gauge("palais_up", "1 while the gateway runs", registry=registry)
        self.up.set(1)
        self.connections = Counter(
            "palais_connections",
            "Connections accepted by a listener",
            ["listener"],
            registry=registry,
        )
        self.open_connections = Gauge(
            "palais_open_connections",
            "Connections open now",
            ["listener"],
            registry=registry,
        )
        self.refusals = Counter(
            "palais_refusals",
            "Connections, certificates and commands refused, by reason",
            ["listener", "reason"],
            registry=registry,
        )
        self.limit_hits = Counter(
            "palais_limit_hits",
            "Requests stopped by a configured limit",
            ["listener", "limit"],
            registry=registry,
        )
        self.handshake_seconds = Histogram(
            "palais_tls_handshake_seconds",
            "TLS handshake time, completed handshakes",
            ["listener"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.smtp_messages = Counter(
            "palais_smtp_messages",
            "Messages at the end of DATA, by decision (accepted, refused, resent)",
            ["listener", "decision"],
            registry=registry,
        )
        self.smtp_data_seconds = Histogram(
            "palais_smtp_data_to_reply_seconds",
            "From the end of DATA to the reply (250 after the durable commit)",
            ["listener"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.imap_command_seconds = Histogram(
            "palais_imap_command_seconds",
            "IMAP command time, from the complete command to the tagged reply",
            ["command"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._writer: WriterCounts | None = None
        self._lifecycle: LifecycleCounts | None = None
        self._relay: RelayCounts | None = None
        self._filings: FilingCounts | None = None
        # One node of several: every sample carries node="..." (set before serving).
        self.node = ""

    def watch_writer(self, commits: CommitCounts) -> None:
        """Export the storage writer's own counts, read at every scrape.

        The writer thread keeps plain integers (``batches``, ``jobs``); a
        collector reads them when Prometheus asks rather than mirroring each
        commit into a second counter from the writer thread. Watching another
        writer replaces the previous one (a gateway restarted in-process).
        """
        if self._writer is not None:
            self.registry.unregister(self._writer)
        self._writer = WriterCounts(commits)
        self.registry.register(self._writer)

    def watch_filings(self, filings: FilingState) -> None:
        """Export the filing process's counts (read at every scrape)."""
        if self._filings is not None:
            self.registry.unregister(self._filings)
        self._filings = FilingCounts(filings)
        self.registry.register(self._filings)

    def watch_lifecycle(
        self,
        *,
        audit: AuditCounts | None = None,
        sessions: ClosureCounts | None = None,
        departures: DepartureCounts | None = None,
        crls: CrlCounts | None = None,
    ) -> None:
        """Export the audit log's, session watcher's, departures' and CRLs' counts."""
        if self._lifecycle is not None:
            self.registry.unregister(self._lifecycle)
        self._lifecycle = LifecycleCounts(
            audit=audit, sessions=sessions, departures=departures, crls=crls
        )
        self.registry.register(self._lifecycle)

    def watch_relay(self, relay: RelayState) -> None:
        """Export the relay's counts (read at every scrape)."""
        if self._relay is not None:
            self.registry.unregister(self._relay)
        self._relay = RelayCounts(relay)
        self.registry.register(self._relay)

    def exposition(self) -> bytes:
        """The Prometheus text format of everything recorded."""
        data: bytes = generate_latest(
            _Labelled(self.registry, self.node) if self.node else self.registry
        )
        return data


class _Labelled:
    """A registry's metrics, each sample with the node's label added."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self._registry = registry
        self._node = node

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            copy = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            copy.samples = [
                s._replace(labels={**s.labels, "node": self._node}) for s in metric.samples
            ]
            yield copy
