"""Departure rules: when a departure takes effect, who may succeed whom, what moves, who is told."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from email.parser import BytesParser
from email.policy import default
from zoneinfo import ZoneInfo

import pytest

from palais.mailbox.departure import (
    DepartureFacts,
    DepartureRefused,
    DepartureState,
    DossierFacts,
    check_cancel,
    check_departure,
    effective_at,
    plan_departure,
)
from palais.mailbox.enrolment import AccountFacts
from palais.mailbox.identity import Role

PARIS = ZoneInfo("Europe/Paris")
SERVICE = "cph@greffes.test"
CLERK = AccountFacts(1, "clerk@justice.test", Role.GREFFIER, "Nadia BERNARD", True, SERVICE)
NEW_CLERK = AccountFacts(2, "new@justice.test", Role.GREFFIER, "Jean NOUVEAU", True, None)
JUDGE = AccountFacts(3, "judge@justice.test", Role.MAGISTRAT, "Paul LEFEVRE", True)
JUDGE2 = AccountFacts(4, "judge2@justice.test", Role.MAGISTRAT, "Anne SUIVANTE", True)
LAWYER = AccountFacts(5, "me@avocats.test", Role.AVOCAT, "Camille DUPONT", True)
NOW = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)


def test_a_departure_takes_effect_at_midnight_after_the_last_day_in_the_zone() -> None:
    # Winter: Paris is UTC+1, so 00:00 on 1 December is 23:00 UTC on the 30th.
    assert effective_at(date(2026, 11, 30), PARIS) == datetime(2026, 11, 30, 23, tzinfo=UTC)
    # Summer: UTC+2.
    assert effective_at(date(2026, 7, 14), PARIS) == datetime(2026, 7, 14, 22, tzinfo=UTC)
    assert effective_at(date(2026, 7, 14), UTC) == datetime(2026, 7, 15, tzinfo=UTC)


def test_today_is_a_last_day_yesterday_is_not() -> None:
    when = check_departure(CLERK, None, last_day=date(2026, 11, 30), now=NOW, zone=PARIS)
    assert when == datetime(2026, 11, 30, 23, tzinfo=UTC)
    with pytest.raises(DepartureRefused, match="2026-11-29 is in the past"):
        check_departure(CLERK, None, last_day=date(2026, 11, 29), now=NOW, zone=PARIS)
    # At 23:30 UTC it is already 1 December in Paris: 30 November is past there.
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    with pytest.raises(DepartureRefused, match="today is 2026-12-01"):
        check_departure(CLERK, None, last_day=date(2026, 11, 30), now=late, zone=PARIS)


@pytest.mark.parametrize(
    ("departing", "successor", "words"),
    [
        (LAWYER, None, "is a avocat: departures are for clerks"),
        (replace(CLERK, active=False), None, "already deactivated"),
        (CLERK, CLERK, "cannot succeed themselves"),
        (CLERK, JUDGE, "a greffier's dossiers go to a greffier"),
        (JUDGE, NEW_CLERK, "a magistrat's dossiers go to a magistrat"),
        (CLERK, LAWYER, "is a avocat"),
        (CLERK, replace(NEW_CLERK, active=False), "is deactivated"),
        (CLERK, replace(NEW_CLERK, service="other@greffes.test"), "belongs to another service"),
    ],
)
def test_who_may_leave_and_who_may_succeed(
    departing: AccountFacts, successor: AccountFacts | None, words: str
) -> None:
    with pytest.raises(DepartureRefused, match=words) as refused:
        check_departure(departing, successor, last_day=date(2026, 12, 4), now=NOW, zone=PARIS)
    assert departing.address in refused.value.reason


def test_a_successor_who_leaves_first_cannot_take_them() -> None:
    with pytest.raises(DepartureRefused, match="leaves on 2026-12-02"):
        check_departure(
            JUDGE,
            JUDGE2,
            last_day=date(2026, 12, 4),
            now=NOW,
            zone=PARIS,
            successor_leaves=date(2026, 12, 2),
        )
    check_departure(
        JUDGE,
        JUDGE2,
        last_day=date(2026, 12, 4),
        now=NOW,
        zone=PARIS,
        successor_leaves=date(2026, 12, 5),
    )


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(DepartureRefused) as refused:
        check_departure(LAWYER, LAWYER, last_day=date(2020, 1, 1), now=NOW, zone=PARIS)
    assert len(refused.value.details) == 3


def test_cancel_until_it_takes_effect() -> None:
    takes_effect = datetime(2026, 12, 4, 23, tzinfo=UTC)
    check_cancel(DepartureState.PENDING, takes_effect, NOW)
    with pytest.raises(DepartureRefused, match="took effect"):
        check_cancel(DepartureState.PENDING, takes_effect, takes_effect)
    with pytest.raises(DepartureRefused, match="is done"):
        check_cancel(DepartureState.DONE, takes_effect, NOW)
    with pytest.raises(DepartureRefused, match="is cancelled"):
        check_cancel(DepartureState.CANCELLED, takes_effect, NOW)


def dossier(number: str, capacity: str | None) -> DossierFacts:
    return DossierFacts(
        number, f"{number}@dossiers.test", SERVICE, "CPH BORDEAUX", capacity, (LAWYER,)
    )


def facts(
    departing: AccountFacts, successor: AccountFacts | None, *dossiers: DossierFacts
) -> DepartureFacts:
    return DepartureFacts(
        7,
        departing,
        successor,
        date(2026, 12, 4),
        tuple(dossiers),
        effective_at=datetime(2026, 12, 4, 23, tzinfo=UTC),
    )


def test_a_magistrate_s_successor_takes_part_and_gets_a_copy_of_the_mail() -> None:
    plan = plan_departure(facts(JUDGE, JUDGE2, dossier("2025-0000001", "magistrat")), zone=PARIS)
    assert plan.notices == ()
    handover = plan.handover
    assert handover is not None and handover.join_service is None
    assert handover.participations == (("2025-0000001", "magistrat"),)
    assert (handover.copy_mail_from, handover.copy_mail_to) == (JUDGE.address, JUDGE2.address)
    assert handover.mail_dossiers == ("2025-0000001",)


def test_a_clerk_s_successor_joins_the_service_and_nothing_is_copied() -> None:
    plan = plan_departure(facts(CLERK, NEW_CLERK, dossier("2025-0000001", None)), zone=PARIS)
    handover = plan.handover
    assert handover is not None and handover.join_service == SERVICE
    assert handover.participations == () and handover.copy_mail_from is None
    # A successor already in the service joins nothing.
    plan = plan_departure(
        facts(CLERK, replace(NEW_CLERK, service=SERVICE), dossier("2025-0000001", None)),
        zone=PARIS,
    )
    assert plan.handover is not None and plan.handover.join_service is None


def test_without_a_successor_each_lawyer_gets_a_french_notice_from_the_service() -> None:
    plan = plan_departure(
        facts(CLERK, None, dossier("2025-0000001", None), dossier("2025-0000002", None)),
        zone=PARIS,
    )
    assert plan.handover is None
    assert [(n.dossier, n.lawyer, n.mailbox_owner) for n in plan.notices] == [
        ("2025-0000001", LAWYER.address, LAWYER.address),
        ("2025-0000002", LAWYER.address, LAWYER.address),
    ]
    mail = BytesParser(policy=default).parsebytes(plan.notices[0].data)
    assert mail["Subject"] == "[2025-0000001] Départ du greffier en charge du dossier"
    assert mail["From"].addresses[0].addr_spec == SERVICE
    assert mail["To"].addresses[0].addr_spec == LAWYER.address
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Date"] == "Sat, 05 Dec 2026 00:00:00 +0100"
    body = mail.get_body()
    assert body is not None
    text = body.get_content()
    assert "Nadia BERNARD, greffier qui suivait le dossier 2025-0000001" in text
    assert "a quitté ses fonctions le 04/12/2026" in text
    assert "reste suivi par le service CPH BORDEAUX" in text
    assert b"\r\n" in plan.notices[0].data and b"\n\n" not in plan.notices[0].data
    # The same facts give the same bytes (planned again inside the transaction).
    again = plan_departure(
        facts(CLERK, None, dossier("2025-0000001", None), dossier("2025-0000002", None)),
        zone=PARIS,
    )
    assert again.notices == plan.notices


def test_a_successor_who_became_unable_is_set_aside_and_the_lawyers_told() -> None:
    plan = plan_departure(
        facts(JUDGE, replace(JUDGE2, active=False), dossier("2025-0000001", "magistrat")),
        zone=PARIS,
    )
    assert plan.handover is None
    assert plan.successor_set_aside is not None and "deactivated" in plan.successor_set_aside
    assert len(plan.notices) == 1
