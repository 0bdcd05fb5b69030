"""The outside relay alerts go through, for tests: an aiosmtpd server on
127.0.0.1 that keeps what it receives (started and stopped at will, to play
a relay that is down)."""

from __future__ import annotations

import socket
import threading
import time
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OutsideRelay:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.received: list[tuple[str, list[str], bytes]] = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(
                (str(envelope.mail_from), list(envelope.rcpt_tos), bytes(envelope.original_content))
            )
        return "250 2.0.0 OK"

    def start(self) -> OutsideRelay:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def mails(self) -> list[EmailMessage]:
        with self.lock:
            found = [message_from_bytes(d, policy=default) for _, _, d in self.received]
        return [m for m in found if isinstance(m, EmailMessage)]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        """The mails received once there are ``count`` (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.mails()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"the relay received {len(self.mails())} mails, not {count}")
