"""The shared connection count behind every listener (palais.gateway.admission)."""

from __future__ import annotations

import logging

import pytest

from palais.gateway.admission import (
    IMAP_GOODBYE,
    MAX_GOODBYES,
    SMTP_GOODBYE,
    Admission,
    Gate,
)
from palais.gateway.metrics import GatewayMetrics

LOG = logging.getLogger("tests.admission")


def gates(admission: Admission) -> tuple[Gate, Gate, GatewayMetrics]:
    metrics = GatewayMetrics()
    smtp = Gate("submission", admission, goodbye=SMTP_GOODBYE, metrics=metrics, log=LOG)
    imap = Gate("imaps", admission, goodbye=IMAP_GOODBYE, metrics=metrics, log=LOG)
    return smtp, imap, metrics


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_per_address_cap_holds_across_listeners() -> None:
    admission = Admission(max_connections=100, max_per_address=3)
    smtp, imap, metrics = gates(admission)
    held = [smtp.admit(("10.0.0.1", 1000 + i)) for i in range(2)]
    held.append(imap.admit(("10.0.0.1", 2000)))
    assert all(t is not None and t.admitted for t in held)
    refused = imap.admit(("10.0.0.1", 2001))
    assert refused is not None and not refused.admitted  # its goodbye, then close
    other = smtp.admit(("10.0.0.2", 1000))
    assert other is not None and other.admitted
    hits = sample(
        metrics, "palais_limit_hits_total", listener="imaps", limit="connections_per_address"
    )
    assert hits == 1
    assert sample(metrics, "palais_open_connections", listener="submission") == 3
    assert sample(metrics, "palais_connections_total", listener="imaps") == 2
    refused.release()
    assert admission.open == 4


def test_global_cap_and_release() -> None:
    admission = Admission(max_connections=2, max_per_address=10)
    smtp, _, metrics = gates(admission)
    first, second = smtp.admit(("10.0.0.1", 1)), smtp.admit(("10.0.0.2", 1))
    assert first is not None and second is not None
    third = smtp.admit(("10.0.0.3", 1))
    assert third is not None and not third.admitted
    hits = sample(metrics, "palais_limit_hits_total", listener="submission", limit="connections")
    assert hits == 1
    first.release()
    first.release()  # idempotent: one place given back, not two
    assert admission.open == 1 and admission.open_from("10.0.0.1") == 0
    again = smtp.admit(("10.0.0.3", 2))
    assert again is not None and again.admitted
    assert smtp.admit(("10.0.0.4", 1)) is not None
    assert sample(metrics, "palais_open_connections", listener="submission") == 2


def test_refused_connections_answered_only_up_to_the_goodbye_pool() -> None:
    admission = Admission(max_connections=1, max_per_address=1)
    smtp, _, _ = gates(admission)
    assert smtp.admit(("10.0.0.1", 1)) is not None
    goodbyes = [smtp.admit(("10.0.0.9", i)) for i in range(MAX_GOODBYES)]
    assert all(t is not None and not t.admitted for t in goodbyes)
    assert smtp.admit(("10.0.0.9", 9999)) is None  # closed without a word
    goodbye = goodbyes[0]
    assert goodbye is not None
    goodbye.release()
    assert smtp.admit(("10.0.0.9", 10000)) is not None


def test_a_flood_of_refusals_is_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    admission = Admission(max_connections=1, max_per_address=1)
    smtp, _, metrics = gates(admission)
    assert smtp.admit(("10.0.0.1", 1)) is not None
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for i in range(500):
            ticket = smtp.admit(("10.0.0.1", 2 + i))
            assert ticket is not None and not ticket.admitted
            ticket.release()
    lines = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert 1 <= len(lines) <= 2  # one per REFUSAL_LOG_INTERVAL
    assert "limit=connections" in lines[0].getMessage()
    hits = sample(metrics, "palais_limit_hits_total", listener="submission", limit="connections")
    assert hits == 500  # every one counted


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Admission(max_connections=0)
    with pytest.raises(ValueError):
        Admission(max_per_address=0)
