"""Session states, each holding only what is valid in it, and the one rule of what they permit."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from palais.mailbox.errors import PalaisError
from palais.mailbox.identity import Identity

if TYPE_CHECKING:
    from palais.gateway.imap.view import SelectedMailbox

__all__ = ["Authenticated", "Logout", "NotAuthenticated", "Selected", "State", "permits"]


class NotAuthenticated:
    """Before LOGIN/AUTHENTICATE: what the certificate proved, or why it proved nothing."""

    __slots__ = ("proven", "refusal")

    def __init__(self, proven: Identity | None, refusal: PalaisError | None) -> None:
        self.proven = proven
        self.refusal = refusal


class Authenticated:
    __slots__ = ("identity",)

    def __init__(self, identity: Identity) -> None:
        self.identity = identity


class Selected:
    __slots__ = ("identity", "mailbox")

    def __init__(self, identity: Identity, mailbox: SelectedMailbox) -> None:
        self.identity = identity
        self.mailbox = mailbox


class Logout:
    __slots__ = ()


State: TypeAlias = NotAuthenticated | Authenticated | Selected | Logout
StateName = str  # "not-authenticated" | "authenticated" | "selected" | "logout"

NOT_AUTHENTICATED = "not-authenticated"
AUTHENTICATED = "authenticated"
SELECTED = "selected"
ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
AUTHENTICATED_OR_SELECTED = frozenset({AUTHENTICATED, SELECTED})
SELECTED_ONLY = frozenset({SELECTED})
NOT_AUTHENTICATED_ONLY = frozenset({NOT_AUTHENTICATED})
AUTHENTICATED_ONLY = frozenset({AUTHENTICATED})

_NAMES: dict[type, StateName] = {
    NotAuthenticated: NOT_AUTHENTICATED,
    Authenticated: AUTHENTICATED,
    Selected: SELECTED,
    Logout: "logout",
}


def name_of(state: State) -> StateName:
    return _NAMES[type(state)]


def permits(state: State, allowed: frozenset[StateName]) -> bool:
    """The single place that decides whether a command may run in a state."""
    return name_of(state) in allowed
