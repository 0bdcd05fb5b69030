"""Enrolment rules, one test per rule: the facts go in, a decision comes out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from palais.mailbox.enrolment import (
    AccountFacts,
    Enrolment,
    EnrolmentAction,
    EnrolmentFacts,
    EnrolmentRefused,
    ReferredToOperator,
    decide_enrolment,
)
from palais.mailbox.errors import ErrorKind, NotAllowed
from palais.mailbox.identity import CertificateIdentity, Identity, Role

CERT = CertificateIdentity(
    role=Role.AVOCAT,
    address="me@barreau.test",
    display_name="Maître Me",
    fingerprint="ab" * 32,
    subject="CN=Maître Me",
)
MINE = AccountFacts(
    account_id=7,
    address="me@barreau.test",
    role=Role.AVOCAT,
    display_name="Me (directory)",
    active=True,
)


def account(**changes: Any) -> AccountFacts:
    return replace(MINE, **changes)


def test_a_certificate_linked_to_its_account_is_known() -> None:
    decided = decide_enrolment(CERT, EnrolmentFacts(holder=MINE))
    assert decided == Enrolment(EnrolmentAction.KNOWN, MINE)
    # The identity is the directory's account, proven by this certificate.
    assert decided.identity(CERT) == Identity(
        7, "me@barreau.test", Role.AVOCAT, "Me (directory)", CERT.fingerprint, "me@barreau.test"
    )


def test_a_clerk_reads_the_mailbox_of_their_service() -> None:
    clerk = account(role=Role.GREFFIER, service="greffe@cph.test")
    cert = CertificateIdentity(Role.GREFFIER, MINE.address, "G", "cd" * 32, "CN=G")
    assert decide_enrolment(cert, EnrolmentFacts(holder=clerk)).identity(cert).mailbox_owner == (
        "greffe@cph.test"
    )


def test_a_deactivated_account_is_refused_with_its_certificate() -> None:
    with pytest.raises(EnrolmentRefused) as refused:
        decide_enrolment(CERT, EnrolmentFacts(holder=account(active=False)))
    assert refused.value.text == "This account is deactivated"
    assert "me@barreau.test" in refused.value.reason


def test_a_certificate_bound_to_another_address_goes_to_an_operator() -> None:
    moved = account(address="old@barreau.test")
    with pytest.raises(ReferredToOperator) as referred:
        decide_enrolment(CERT, EnrolmentFacts(holder=moved))
    assert "old@barreau.test" in referred.value.reason
    # The safe text names neither the other address nor the fingerprint.
    assert "old@" not in referred.value.text
    assert CERT.fingerprint not in referred.value.text


def test_a_certificate_bound_to_an_account_of_another_role_goes_to_an_operator() -> None:
    with pytest.raises(ReferredToOperator):
        decide_enrolment(CERT, EnrolmentFacts(holder=account(role=Role.COLLABORATEUR)))


def test_first_connection_of_an_unknown_certificate_registers_its_holder() -> None:
    decided = decide_enrolment(CERT, EnrolmentFacts(holder=None, same_address=None))
    assert decided == Enrolment(EnrolmentAction.REGISTER, None)
    assert decided.identity(CERT, account_id=42) == Identity(
        42, CERT.address, CERT.role, CERT.display_name, CERT.fingerprint, CERT.address
    )
    with pytest.raises(ValueError):
        decided.identity(CERT)  # the new account's id is needed


def test_an_address_that_is_a_service_or_a_dossier_is_not_registered() -> None:
    facts = EnrolmentFacts(holder=None, same_address=None, address_reserved=True)
    with pytest.raises(ReferredToOperator) as referred:
        decide_enrolment(CERT, facts)
    assert "service" in referred.value.reason


def test_a_renewed_card_is_linked_to_the_account_of_its_address_and_role() -> None:
    decided = decide_enrolment(CERT, EnrolmentFacts(holder=None, same_address=MINE))
    assert decided == Enrolment(EnrolmentAction.LINK_RENEWED_CARD, MINE)
    assert decided.identity(CERT).account_id == MINE.account_id
    assert decided.identity(CERT).fingerprint == CERT.fingerprint


def test_a_new_card_for_another_role_goes_to_an_operator() -> None:
    facts = EnrolmentFacts(holder=None, same_address=account(role=Role.COLLABORATEUR))
    with pytest.raises(ReferredToOperator) as referred:
        decide_enrolment(CERT, facts)
    assert referred.value.reason == "me@barreau.test is a collaborateur, certificate says avocat"


def test_a_new_card_for_a_deactivated_account_is_refused_not_linked() -> None:
    facts = EnrolmentFacts(holder=None, same_address=account(active=False))
    with pytest.raises(EnrolmentRefused):
        decide_enrolment(CERT, facts)


def test_refusals_are_permission_errors_the_front_ends_already_translate() -> None:
    for error in (EnrolmentRefused(), ReferredToOperator()):
        assert isinstance(error, NotAllowed)
        assert error.permanent
        assert error.kind is ErrorKind.NOT_ALLOWED
