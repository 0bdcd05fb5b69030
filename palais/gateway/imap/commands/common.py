"""Small helpers shared by handlers: the acting identity, the selected view, keyword caps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from palais.gateway.imap import codes
from palais.gateway.imap.commands.registry import Reply, no
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


def keywords(flags: Iterable[str]) -> frozenset[str]:
    """The keywords among flags (system flags start with a backslash)."""
    return frozenset(f for f in flags if not f.startswith("\\"))


def keyword_refusal(session: Session, flags: Iterable[str]) -> Reply | None:
    """NO [LIMIT] when a message would get too many keywords, or one too long."""
    limits = session.limits
    chosen = keywords(flags)
    if any(len(k) > limits.max_keyword_length for k in chosen):
        session.limit_hit("max_keyword_length")
        return no(f"Keyword too long (at most {limits.max_keyword_length} characters)", codes.LIMIT)
    if len(chosen) > limits.max_keywords:
        session.limit_hit("max_keywords")
        return too_many_keywords(session)
    return None


def too_many_keywords(session: Session) -> Reply:
    return no(
        f"Too many keywords on one message (at most {session.limits.max_keywords})", codes.LIMIT
    )
