"""Fan-out of mailbox changes to the sessions that have a box selected."""

from __future__ import annotations

import logging
from collections.abc import Callable

from palais.mailbox.model import MailboxEvent

log = logging.getLogger("palais.storage.hub")
Listener = Callable[[MailboxEvent], None]


class EventHub:
    """``palais.mailbox.ports.EventBus`` within one process."""

    def __init__(self) -> None:
        self._listeners: dict[int, list[Listener]] = {}

    def subscribe(self, mailbox_id: int, listener: Listener) -> Callable[[], None]:
        self._listeners.setdefault(mailbox_id, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(mailbox_id)
            if listeners and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[mailbox_id]

        return unsubscribe

    def publish(self, events: list[MailboxEvent]) -> None:
        for ev in events:
            for listener in list(self._listeners.get(ev.mailbox_id, ())):
                try:
                    listener(ev)
                except Exception:  # one broken session must not starve the others
                    log.exception("mailbox listener failed")
