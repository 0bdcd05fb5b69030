"""Relay rules: which copy is relayed, the backoff schedule, when to give up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from palais.mailbox.evidence import (
    Deposit,
    EventCode,
    deposit_and_delivery,
    evidence_document,
    message_facts,
    relayed_delivery,
)
from palais.mailbox.filing import Destination, FilingPlan
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import BoxKind
from palais.mailbox.relay import Attempt, Outcome, RelayOrder, RetryRule, divert_to_relay

COURT = "portalis@cph.test"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _plan() -> FilingPlan:
    return FilingPlan(
        "2025-0000138",
        (
            Destination("a@x.test", BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination("greffe@x.test", BoxKind.RECUS),
            Destination(COURT, BoxKind.RECUS),
        ),
    )


def test_a_court_system_with_an_endpoint_gets_a_relay_order_instead_of_its_inbox() -> None:
    plan = divert_to_relay(_plan(), {COURT}, "a@x.test")
    assert [d.owner for d in plan.destinations] == ["a@x.test", "greffe@x.test"]
    assert plan.records == (RelayOrder(COURT, "a@x.test"),)


def test_nobody_relayed_leaves_the_plan_as_it_was() -> None:
    plan = _plan()
    assert divert_to_relay(plan, {"other@cph.test"}, "a@x.test") is plan
    assert divert_to_relay(plan, frozenset(), "a@x.test") is plan


def test_the_sender_s_own_copy_is_never_relayed() -> None:
    # A court system writing to itself keeps its Envoyés copy; only INBOX copies leave.
    plan = _plan()
    assert divert_to_relay(plan, {"a@x.test"}, "a@x.test") is plan


def test_backoff_doubles_up_to_its_ceiling() -> None:
    rule = RetryRule(first=60, factor=2, ceiling=600, give_up_after=86400)
    assert [rule.delay(n).total_seconds() for n in range(1, 8)] == [
        60,
        120,
        240,
        480,
        600,
        600,
        600,
    ]
    assert rule.delay(10_000).total_seconds() == 600  # no overflow far past the ceiling


def test_a_temporary_failure_is_retried_after_the_delay() -> None:
    rule = RetryRule(first=60, factor=2, ceiling=600, give_up_after=86400)
    failed = Attempt(Outcome.TEMPORARY, "ConnectionRefusedError")
    now = T0 + timedelta(minutes=5)
    decision = rule.decide(failed, 3, T0, now)
    assert decision.retry_at == now + timedelta(seconds=240)
    assert not decision.sent and decision.give_up is None


def test_the_last_attempt_falls_on_the_deadline_then_it_gives_up() -> None:
    rule = RetryRule(first=60, factor=2, ceiling=3600, give_up_after=3000)
    failed = Attempt(Outcome.TEMPORARY, "451 4.3.0 busy")
    near = T0 + timedelta(seconds=2900)
    assert rule.decide(failed, 5, T0, near).retry_at == T0 + timedelta(seconds=3000)
    final = rule.decide(failed, 6, T0, T0 + timedelta(seconds=3000))
    assert final.give_up is not None
    assert "6 tentatives" in final.give_up and "451 4.3.0 busy" in final.give_up


def test_a_permanent_refusal_gives_up_at_once_with_the_endpoint_s_reply() -> None:
    rule = RetryRule()
    refused = Attempt(Outcome.PERMANENT, "550 5.1.1 unknown dossier")
    decision = rule.decide(refused, 1, T0, T0)
    assert decision.give_up is not None and "550 5.1.1 unknown dossier" in decision.give_up


def test_a_250_is_sent() -> None:
    assert RetryRule().decide(Attempt(Outcome.DELIVERED), 0, T0, T0).sent


@pytest.mark.parametrize(
    ("first", "factor", "ceiling", "give_up_after"),
    [(0, 2, 60, 60), (60, 0.5, 600, 60), (60, 2, 30, 60), (60, 2, 600, 0)],
)
def test_a_nonsensical_schedule_is_refused(
    first: float, factor: float, ceiling: float, give_up_after: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        RetryRule(first, factor, ceiling, give_up_after)


# -- what the receipts say of a relayed message ------------------------------------


def test_a_relayed_copy_is_deposited_at_filing_and_delivered_at_the_endpoint_s_250() -> None:
    lawyer = Identity(1, "a@x.test", Role.AVOCAT, "A", "f" * 64, "a@x.test")
    written = [("d@x.test", "greffe@x.test"), (COURT, COURT)]
    order = deposit_and_delivery(lawyer, written, "2025-0000138", T0, relayed={COURT})
    depot, remise = order.events
    assert depot.code is EventCode.DEPOT
    assert [p.address for p in depot.recipients] == ["d@x.test", COURT]
    assert remise.code is EventCode.REMISE
    assert [p.address for p in remise.recipients] == ["d@x.test"]  # not the court yet
    data = b"Subject: s\r\nMessage-ID: <m@x>\r\n\r\nb\r\n"
    document = evidence_document(
        order,
        message_facts(data, "<m@x>", "s"),
        evidence_id="e-1",
        issuer="Palais",
        issuer_certificate_sha256="c" * 64,
        position=0,
        previous="0" * 64,
    )
    later = T0 + timedelta(hours=2)
    (event,) = relayed_delivery(Deposit(7, lawyer.address, T0, document), [COURT], now=later).events
    assert (event.code, event.time, [p.address for p in event.recipients]) == (
        EventCode.REMISE,
        later,
        [COURT],
    )
