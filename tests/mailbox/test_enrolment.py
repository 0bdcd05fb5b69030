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
    EnrolmentPolicy,
    EnrolmentRefused,
    IdentityChangeRefused,
    ReferredToOperator,
    RegistrationClosed,
    community_of,
    decide_enrolment,
    decide_link,
    decide_merge,
)
from palais.mailbox.errors import ErrorKind, NotAllowed
from palais.mailbox.identity import CertificateIdentity, Identity, Role, TrustCommunity

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


def test_a_certificate_linked_to_an_account_of_another_address_proves_that_account() -> None:
    # Only a renewal, an operator's link or a merge links a card: the link is
    # the decision, and the account (its address, its mail) is the identity.
    moved = account(address="old@barreau.test")
    decided = decide_enrolment(CERT, EnrolmentFacts(holder=moved))
    assert decided == Enrolment(EnrolmentAction.KNOWN, moved)
    assert decided.identity(CERT).address == "old@barreau.test"


def test_a_referral_names_neither_the_account_nor_the_fingerprint_to_the_client() -> None:
    moved = account(address="old@barreau.test", role=Role.COLLABORATEUR)
    with pytest.raises(ReferredToOperator) as referred:
        decide_enrolment(CERT, EnrolmentFacts(holder=moved))
    assert "old@barreau.test" in referred.value.reason
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


# -- keyed by identifier: renewals (A), operators' links (B) and merges (C) ------

NUMBER = "CNB-75-012345"
CARD = replace(CERT, serial_number=NUMBER, fingerprint="ef" * 32)
KEYED = account(identifier=NUMBER)


def test_case_a_a_renewed_card_with_the_same_number_reaches_the_same_account() -> None:
    facts = EnrolmentFacts(holder=None, same_address=KEYED, same_identifier=KEYED)
    decided = decide_enrolment(CARD, facts)
    assert decided == Enrolment(EnrolmentAction.LINK_RENEWED_CARD, KEYED)
    assert decided.identity(CARD).account_id == KEYED.account_id


def test_case_a_with_another_role_or_another_address_goes_to_an_operator() -> None:
    other_role = account(identifier=NUMBER, role=Role.COLLABORATEUR)
    with pytest.raises(ReferredToOperator, match="collaborateur"):
        decide_enrolment(CARD, EnrolmentFacts(holder=None, same_identifier=other_role))
    moved = account(identifier=NUMBER, address="old@barreau.test")
    with pytest.raises(ReferredToOperator, match=r"old@barreau\.test"):
        decide_enrolment(CARD, EnrolmentFacts(holder=None, same_identifier=moved))


def test_case_a_for_a_deactivated_account_is_refused() -> None:
    gone = account(identifier=NUMBER, active=False)
    with pytest.raises(EnrolmentRefused):
        decide_enrolment(CARD, EnrolmentFacts(holder=None, same_identifier=gone))


def test_case_b_an_address_keyed_by_another_number_goes_to_an_operator() -> None:
    stranger = replace(CARD, serial_number="CNB-13-999999")
    with pytest.raises(ReferredToOperator) as referred:
        decide_enrolment(stranger, EnrolmentFacts(holder=None, same_address=KEYED))
    assert NUMBER in referred.value.reason and "CNB-13-999999" in referred.value.reason
    # A card without a number cannot prove it either.
    with pytest.raises(ReferredToOperator, match="none"):
        decide_enrolment(CERT, EnrolmentFacts(holder=None, same_address=KEYED))


def test_an_account_from_before_identifiers_is_linked_and_keyed_by_the_card() -> None:
    decided = decide_enrolment(CARD, EnrolmentFacts(holder=None, same_address=MINE))
    assert decided == Enrolment(EnrolmentAction.LINK_RENEWED_CARD, MINE, adopt_identifier=NUMBER)


def test_registration_on_first_use_can_be_turned_off() -> None:
    facts = EnrolmentFacts(holder=None)
    assert decide_enrolment(CARD, facts).action is EnrolmentAction.REGISTER
    with pytest.raises(RegistrationClosed) as closed:
        decide_enrolment(CARD, facts, EnrolmentPolicy.REFUSE)
    assert isinstance(closed.value, ReferredToOperator)
    # Known cards and renewals are not registrations: the policy leaves them be.
    assert decide_enrolment(CARD, EnrolmentFacts(holder=KEYED), EnrolmentPolicy.REFUSE).action is (
        EnrolmentAction.KNOWN
    )
    renewal = EnrolmentFacts(holder=None, same_identifier=KEYED)
    assert decide_enrolment(CARD, renewal, EnrolmentPolicy.REFUSE).action is (
        EnrolmentAction.LINK_RENEWED_CARD
    )


def test_identifiers_are_scoped_by_the_issuing_community() -> None:
    assert community_of(Role.COLLABORATEUR) is TrustCommunity.AVOCATS
    assert community_of(Role.MAGISTRAT) is TrustCommunity.JUSTICE


def test_case_b_link_keys_the_account_by_the_new_card() -> None:
    new_number = replace(CARD, serial_number="CNB-75-777777")
    plan = decide_link(KEYED, new_number, holder=None, identifier_holder=None)
    assert (plan.account, plan.identifier, plan.community) == (
        KEYED,
        "CNB-75-777777",
        TrustCommunity.AVOCATS,
    )
    # A card without a number keeps the account's.
    assert decide_link(KEYED, CERT, holder=None, identifier_holder=None).identifier == NUMBER


@pytest.mark.parametrize(
    ("target", "holder", "identifier_holder", "says"),
    [
        (account(active=False), None, None, "deactivated"),
        (account(role=Role.COLLABORATEUR), None, None, "collaborateur"),
        (MINE, MINE, None, "already linked"),
        (MINE, account(account_id=8, address="x@b.test"), None, "x@b.test"),
        (MINE, None, account(account_id=8, address="y@b.test"), "y@b.test"),
    ],
)
def test_case_b_link_refusals_say_what_is_wrong(
    target: AccountFacts,
    holder: AccountFacts | None,
    identifier_holder: AccountFacts | None,
    says: str,
) -> None:
    with pytest.raises(IdentityChangeRefused, match=says):
        decide_link(target, CARD, holder=holder, identifier_holder=identifier_holder)


DUPLICATE = account(account_id=9, address="me.new@barreau.test", identifier=None)


def test_case_c_merge_moves_the_duplicate_s_mail_to_the_target() -> None:
    plan = decide_merge(DUPLICATE, KEYED)
    assert plan.mailbox_owner == KEYED.address
    assert plan.move_from == (DUPLICATE.address,)
    assert plan.service is None
    assert plan.identifier == NUMBER
    # The target takes the source's identifier when it has none.
    assert decide_merge(KEYED, DUPLICATE).identifier == NUMBER


def test_case_c_a_clerk_merged_reads_the_service_and_brings_no_personal_mail_twice() -> None:
    clerk = account(role=Role.GREFFIER, service="greffe@cph.test")
    duplicate = account(account_id=9, address="g2@cph.test", role=Role.GREFFIER)
    plan = decide_merge(duplicate, clerk)
    assert (plan.mailbox_owner, plan.move_from, plan.service) == (
        "greffe@cph.test",
        ("g2@cph.test",),
        "greffe@cph.test",
    )
    # The target joins the source's service: its own boxes go there too.
    plan = decide_merge(clerk, duplicate)
    assert (plan.mailbox_owner, plan.move_from, plan.service) == (
        "greffe@cph.test",
        ("g2@cph.test",),
        "greffe@cph.test",
    )


@pytest.mark.parametrize(
    ("source", "target", "says"),
    [
        (MINE, MINE, "itself"),
        (account(account_id=9, role=Role.COLLABORATEUR), MINE, "collaborateur"),
        (DUPLICATE, account(active=False), "deactivated"),
        (
            account(account_id=9, role=Role.GREFFIER, service="a@cph.test"),
            account(role=Role.GREFFIER, service="b@cph.test"),
            "two services",
        ),
    ],
)
def test_case_c_merge_refusals_say_what_is_wrong(
    source: AccountFacts, target: AccountFacts, says: str
) -> None:
    with pytest.raises(IdentityChangeRefused, match=says):
        decide_merge(source, target)
