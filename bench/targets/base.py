"""The Target abstraction: one system under test, seen from the outside.

The workloads only ever talk to a target through this interface (SMTP with a
client certificate in, IMAP with a client certificate out, a few hooks), so
the same code measures Palais and the Postfix + Dovecot peer.

Lifecycle, as driven by the runner::

    target = SomeTarget(...)
    target.start()          # may raise TargetUnavailable: the target is skipped
    ...workloads...         # use the attributes and hooks below
    target.stop()           # always called (also after a failed start)
"""

from __future__ import annotations

import abc
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TargetUnavailable(Exception):
    """The target cannot be started or used; the reason is shown in the report."""


@dataclass(frozen=True)
class Identity:
    """A mail user holding a client certificate."""

    name: str  # short name, e.g. "avocat1"
    address: str  # mail address, e.g. "avocat1@barreau.test"
    cert: Path  # PEM certificate (chain) presented in the TLS handshake
    key: Path  # PEM private key
    imap_user: str | None = None  # for LOGIN fallback; None = AUTHENTICATE EXTERNAL


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    implicit_tls: bool = True  # False = STARTTLS (SMTP only)


class Target(abc.ABC):
    """Base class. Subclasses fill the attributes in ``start()`` at the latest.

    Attributes used by the workloads:

    ``name``                  "palais", "peer" or "cyrus" (JSON key)
    ``label``                 human description with versions, for the table
    ``smtp``                  Endpoint of the mutual-TLS submission listener
    ``imap``                  Endpoint of the IMAPS (mutual TLS) listener
    ``ca_file``               CA bundle that verifies the *server* certificates
    ``server_hostname``       SNI / name expected in the server certificate
    ``sender``                Identity that sends (MAIL FROM = sender.address)
    ``reader``                Identity that reads the recipient's INBOX over IMAP
    ``recipient``             RCPT TO address whose mail lands in reader's INBOX
    ``background_recipient``  RCPT TO for the push workload's background load
                              (may equal ``recipient``; the push workload maps
                              IDLE notifications to messages by Message-ID)
    ``inbox``                 the reader's mailbox that receives (normally INBOX)
    """

    name: str = "target"
    # The workloads this target runs (None: all); for the others the report
    # shows ``not_run`` (e.g. an IMAP-only server and the SMTP workloads).
    workloads: frozenset[str] | None = None
    not_run: str = "n/a"

    def __init__(self) -> None:
        self.label: str = self.name
        self.smtp: Endpoint | None = None
        self.imap: Endpoint | None = None
        self.ca_file: Path | None = None
        self.server_hostname: str = "localhost"
        self.sender: Identity | None = None
        self.reader: Identity | None = None
        self.recipient: str = ""
        self.background_recipient: str = ""
        self.inbox: str = "INBOX"
        self.notes: list[str] = []

    # -- lifecycle ------------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """Start the system (bounded in time). Raise TargetUnavailable if impossible."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop everything started by ``start()``; must be safe to call twice."""

    # -- descriptions -----------------------------------------------------------
    def versions(self) -> dict[str, str]:
        """Software versions, for the report."""
        return {}

    def settings(self) -> dict[str, Any]:
        """Notable configuration (ports, auth mechanism, tuning), for the report."""
        return {}

    # -- workload hooks -----------------------------------------------------------
    def subject_prefix(self, recipient: str) -> str:
        """Text every Subject must start with when writing to ``recipient``."""
        return ""

    @abc.abstractmethod
    def populate(
        self,
        mailbox: str,
        n: int,
        *,
        message_factory: Callable[[int], bytes],
    ) -> str:
        """Put ``n`` messages into the reader's mailbox ``mailbox``, fast, bypassing SMTP.

        ``message_factory(i)`` returns message i (0 <= i < n) as RFC 5322
        bytes with CRLF line ends; messages must end up in that order (UIDs
        ascending with i). Every 100th message (i % 100 == 0) has the word
        ``bench.corpus.SEARCH_WORD`` in its Subject; the IMAP workload checks
        that UID SEARCH finds exactly those. Return the name of the mailbox
        the reader must SELECT to see them (normally ``mailbox`` itself).
        Raise NotImplementedError (or TargetUnavailable) if unsupported.
        """

    def memory_root_pids(self) -> list[int]:
        """PIDs whose whole process trees hold the IMAP sessions (for RSS)."""
        return []

    #: process names (/proc/PID/comm) left out of the memory sums (e.g. delivery agents)
    memory_exclude: frozenset[str] = frozenset()

    def prepare_memory(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Called before the memory workload (bounded): e.g. restart a long-lived process
        so that heap kept from earlier workloads does not hide the sessions' cost."""

    def quiesce(self, timeout: float = 30.0) -> bool:
        """Wait (bounded) until the target has no work in flight, before a workload.
        Return False if it was still busy when the time ran out."""
        return True

    # -- helpers shared by all targets --------------------------------------------
    def client_context(self, identity: Identity) -> ssl.SSLContext:
        """TLS client context presenting ``identity``'s certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.check_hostname = False  # we connect to 127.0.0.1; the chain is still verified
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(identity.cert), str(identity.key))
        return ctx


def wait_for_port(
    host: str, port: int, timeout: float, *, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until a TCP port accepts connections (bounded)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise TargetUnavailable(f"process exited before {host}:{port} was listening")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TargetUnavailable(f"{host}:{port} not listening after {timeout:.0f}s ({last})")


def free_port_block(count: int, start: int = 24000, stop: int = 60000, step: int = 10) -> int:
    """First base port such that base..base+count-1 are all free on 127.0.0.1."""
    for base in range(start, stop, step):
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise TargetUnavailable("no free block of ports on 127.0.0.1")
