"""Opening a dossier and joining it: the plans, without storage."""

from __future__ import annotations

import pytest

from palais.mailbox.dossiers import (
    DossierOpening,
    Participation,
    plan_dossier_opening,
    plan_participation,
)
from palais.mailbox.errors import ErrorKind, PalaisError

LAWYER = Participation(1, "camille.dupont@avocats.test", "avocat")
CLERK_SERVICE = "cph-bordeaux@justice.test"


def open_dossier(
    *,
    number: str = "2025-0000138",
    address: str = "2025-0000138@dossiers.test",
    juridiction: str = "CPH BORDEAUX",
    participants: tuple[Participation, ...] = (LAWYER,),
) -> DossierOpening:
    return plan_dossier_opening(
        number=number,
        address=address,
        juridiction=juridiction,
        service_id=7,
        service_address=CLERK_SERVICE,
        participants=participants,
    )


def test_the_service_and_every_participant_get_the_boxes_once() -> None:
    magistrate = Participation(2, "juge@justice.test", "magistrat")
    # A clerk who takes part reads the service's mailbox: no second set of boxes.
    clerk = Participation(3, CLERK_SERVICE, "greffier")
    plan = open_dossier(participants=(LAWYER, magistrate, clerk))
    assert plan.box_owners == (CLERK_SERVICE, LAWYER.mailbox_owner, "juge@justice.test")
    assert plan.participants == (LAWYER, magistrate, clerk)


def test_addresses_are_kept_in_lower_case() -> None:
    plan = open_dossier(address="2025-0000138@Dossiers.TEST")
    assert plan.address == "2025-0000138@dossiers.test"


def test_every_broken_rule_is_listed_and_nothing_is_planned() -> None:
    with pytest.raises(PalaisError) as refused:
        open_dossier(
            number="138", address="nowhere", juridiction=" ", participants=(LAWYER, LAWYER)
        )
    error = refused.value
    assert error.kind is ErrorKind.NOT_POSSIBLE
    assert len(error.details) == 4
    assert any("national dossier number" in d for d in error.details)
    assert any("takes part twice" in d for d in error.details)


def test_joining_brings_the_boxes_to_the_joiners_mailbox() -> None:
    assert plan_participation(LAWYER, [2, 3]) == (LAWYER.mailbox_owner,)


def test_joining_twice_is_refused() -> None:
    with pytest.raises(PalaisError, match="joins twice"):
        plan_participation(LAWYER, [1])
