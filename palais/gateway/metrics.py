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

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

__all__ = ["CommitCounts", "GatewayMetrics", "WriterCounts"]

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

    def exposition(self) -> bytes:
        """The Prometheus text format of everything recorded."""
        data: bytes = generate_latest(self.registry)
        return data
