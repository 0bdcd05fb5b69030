"""Which communities each listener lets in (palais.mailbox.routing)."""

from __future__ import annotations

from palais.mailbox.identity import Role, TrustCommunity
from palais.mailbox.routing import (
    LISTENER_COMMUNITIES,
    SUBMITTING_ROLES,
    Listener,
    listener_roles,
)


def test_every_listener_has_its_communities() -> None:
    assert set(LISTENER_COMMUNITIES) == set(Listener)
    assert all(LISTENER_COMMUNITIES.values())


def test_people_court_systems_and_operators_are_kept_apart() -> None:
    people = {Role.AVOCAT, Role.COLLABORATEUR, Role.GREFFIER, Role.MAGISTRAT}
    for listener in (Listener.SMTPS, Listener.SUBMISSION):
        assert listener_roles(listener) == people
        assert TrustCommunity.COURT_SYSTEMS not in LISTENER_COMMUNITIES[listener]
    # A court system reads over IMAP what lawyers sent its juridiction.
    assert listener_roles(Listener.IMAPS) == people | {Role.COURT_SYSTEM}
    assert listener_roles(Listener.COURT) == {Role.COURT_SYSTEM}
    assert listener_roles(Listener.HTTPS) == people | {Role.ADMIN}
    assert TrustCommunity.COURT_SYSTEMS not in LISTENER_COMMUNITIES[Listener.HTTPS]
    assert people == SUBMITTING_ROLES
