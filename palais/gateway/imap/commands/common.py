"""Small helpers shared by handlers: the acting identity and the selected view."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palais.gateway.imap.states import Authenticated, Selected
from palais.mailbox.identity import Identity

if TYPE_CHECKING:
    from palais.gateway.imap.session import Session
    from palais.gateway.imap.view import SelectedMailbox


def identity(session: Session) -> Identity:
    state = session.state
    if isinstance(state, (Authenticated, Selected)):
        return state.identity
    raise AssertionError("command ran in a state its declaration does not allow")


def selected(session: Session) -> SelectedMailbox:
    state = session.state
    if isinstance(state, Selected):
        return state.mailbox
    raise AssertionError("command ran in a state its declaration does not allow")
