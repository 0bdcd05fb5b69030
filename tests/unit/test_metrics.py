"""The gateway's registry: the writer's counts read at scrape time, as counters."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from palais.gateway.metrics import GatewayMetrics


@dataclass
class Commits:
    batches: int = 0
    jobs: int = 0


def scrape(metrics: GatewayMetrics) -> dict[str, tuple[str, float]]:
    """Unlabelled samples by name, with their family's type."""
    return {
        s.name: (family.type, s.value)
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if not s.labels
    }


def test_writer_counts_are_counters_read_at_scrape_time() -> None:
    metrics = GatewayMetrics()
    assert "palais_writer_jobs_total" not in scrape(metrics)  # no writer yet
    commits = Commits()
    metrics.watch_writer(commits)
    assert scrape(metrics)["palais_writer_batches_total"] == ("counter", 0.0)
    commits.batches, commits.jobs = 2, 7
    values = scrape(metrics)
    assert values["palais_writer_batches_total"] == ("counter", 2.0)
    assert values["palais_writer_jobs_total"] == ("counter", 7.0)
    assert values["palais_up"] == ("gauge", 1.0)


def test_watching_another_writer_replaces_the_first() -> None:
    metrics = GatewayMetrics()
    metrics.watch_writer(Commits(batches=1, jobs=1))
    metrics.watch_writer(Commits(batches=5, jobs=9))  # would raise on a duplicate name
    text = metrics.exposition().decode()
    assert text.count("# TYPE palais_writer_jobs_total counter") == 1
    assert scrape(metrics)["palais_writer_jobs_total"] == ("counter", 9.0)


def test_registries_are_per_gateway() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.connections.labels("smtps").inc()
    assert b'palais_connections_total{listener="smtps"} 1.0' in first.exposition()
    assert b"palais_connections_total{" not in second.exposition()
