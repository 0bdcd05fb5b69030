"""Command handlers: one per verb, each declared with its syntax and allowed states.

Importing this package registers every handler in ``REGISTRY``.
"""

from __future__ import annotations

from palais.gateway.imap.commands.registry import REGISTRY, Handler

# Imported for their registration side effect.
from palais.gateway.imap.commands import (  # noqa: F401  isort: skip
    any_state,
    auth,
    mailboxes,
    selection,
    append,
    fetch,
    search,
    sort,
    store,
    copy_move,
    idle,
)

__all__ = ["REGISTRY", "Handler"]
