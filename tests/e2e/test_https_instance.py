"""The gateway's HTTPS listener, reached with curl like an operator would."""

from __future__ import annotations

import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.instance import Instance

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def test_health_without_certificate(instance: Instance) -> None:
    out = instance.curl_https("/health")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200" and '"ok"' in body


Sample = tuple[str, frozenset[tuple[str, str]]]


def sample(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


def metrics(inst: Instance) -> tuple[str, dict[Sample, float]]:
    """The admin's scrape: its text, and every sample by (name, labels)."""
    out = inst.curl_https("/metrics", "admin1")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", out.stderr
    values = {
        sample(s.name, **s.labels): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    return body, values


def test_metrics_for_operators_only(instance: Instance) -> None:
    assert instance.curl_https("/metrics").stdout.endswith("401")
    # People reach HTTPS (their printable receipts) but not the operators' metrics;
    # a court system's certificate fails the handshake.
    assert instance.curl_https("/metrics", "avocat1").stdout.endswith("\n403")
    court = instance.curl_https("/metrics", "court1")
    assert court.returncode != 0 and "alert unknown ca" in court.stderr, court.stderr
    body, values = metrics(instance)
    assert "# TYPE palais_up gauge\npalais_up 1.0\n" in body
    for counter in ("connections", "refusals", "smtp_messages", "writer_batches", "writer_jobs"):
        assert f"# TYPE palais_{counter}_total counter\n" in body
    for histogram in (
        "tls_handshake_seconds",
        "smtp_data_to_reply_seconds",
        "imap_command_seconds",
    ):
        assert f"# TYPE palais_{histogram} histogram\n" in body
    assert sample("palais_writer_batches_total") in values
    # The scrapes themselves: this listener's connections and handshakes.
    assert values[sample("palais_connections_total", listener="https")] >= 1
    assert values[sample("palais_tls_handshake_seconds_count", listener="https")] >= 1
    assert 'palais_tls_handshake_seconds_bucket{le="+Inf",listener="https"}' in body


def test_a_submission_moves_the_counters(instance: Instance) -> None:
    _, before = metrics(instance)
    instance.submit("metrics")
    body, after = metrics(instance)
    jobs, batches = sample("palais_writer_jobs_total"), sample("palais_writer_batches_total")
    assert after[jobs] > before[jobs]
    assert after[batches] > before[batches]
    accepted = sample("palais_smtp_messages_total", listener="smtps", decision="accepted")
    assert after[accepted] == before.get(accepted, 0.0) + 1
    data_count = sample("palais_smtp_data_to_reply_seconds_count", listener="smtps")
    assert after[data_count] == before.get(data_count, 0.0) + 1
    assert 'palais_smtp_data_to_reply_seconds_bucket{le="+Inf",listener="smtps"}' in body


def test_thunderbird_autoconfig(instance: Instance) -> None:
    out = instance.curl_https("/.well-known/autoconfig/mail/config-v1.1.xml")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200"
    assert str(instance.port("imaps")) in body and "<socketType>SSL</socketType>" in body


def test_gateway_runs_on_uvloop_by_default(instance: Instance) -> None:
    # The shared instance keeps palais init's default; test_durability runs one on asyncio.
    assert "loop=uvloop" in instance.read_log()
