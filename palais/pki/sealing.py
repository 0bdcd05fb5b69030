"""Receipt mails prepared in a process of their own.

Writing a receipt (its French text, MIME parts, base64, digests) costs
several times its signature, and the writer thread that issues it shares
the interpreter lock with every session of the gateway. A worker process
does that part on the other core; the key never leaves the gateway's
process, which only signs what comes back (``ReceiptSealer.finish``), so a
key on an HSM is used the same way.

The worker is a convenience, not a dependency: if it dies or stalls, the
batch is prepared in the caller's thread (same bytes, the layout is pure)
and a new worker is started for the next one.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection

from palais.pki.receipt import PreparedReceipt, ReceiptLayout

log = logging.getLogger("palais.pki.sealing")

# A receipt is prepared in about 0.3 ms: a batch taking this long means the
# worker is stuck, not busy.
_STALL_SECONDS = 10.0

Request = tuple[bytes, str]  # canonical evidence, the holder it is addressed to


def prepare_all(layout: ReceiptLayout, requests: Sequence[Request]) -> list[PreparedReceipt]:
    return [layout.prepare(evidence, to) for evidence, to in requests]


def _serve(layout: ReceiptLayout, conn: Connection) -> None:
    """The worker: (ticket, requests) in, (ticket, prepared receipts) out,
    until the pipe closes."""
    while True:
        try:
            ticket, requests = conn.recv()
        except (EOFError, OSError):
            return
        conn.send((ticket, prepare_all(layout, requests)))


def _shut_down(conn: Connection) -> None:
    """Both directions of the pipe's socket ended, for every descriptor of
    it: a thread blocked reading it wakes, the worker reads its end."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass  # closed already, or the worker gone


class Preparing:
    """Receipts on their way through the worker; ``result`` waits for them
    (or prepares them in the caller's thread if the worker failed)."""

    def __init__(self, owner: SealingProcess, ticket: int, requests: Sequence[Request]) -> None:
        self._owner = owner
        self.ticket = ticket
        self.requests = requests
        self.done = threading.Event()
        self.prepared: list[PreparedReceipt] | None = None
        self.conn: Connection | None = None  # the pipe it was sent on

    def result(self) -> list[PreparedReceipt]:
        if self.done.wait(_STALL_SECONDS) and self.prepared is not None:
            return self.prepared
        return self._owner.failed(self)


class SealingProcess:
    """Prepares receipts in a worker process, asked as soon as they are
    known (``begin``: the writer sends each job's receipts at once, the
    worker prepares them while the writer carries out the batch's other
    jobs) and collected at the end of the batch (``Preparing.result``).

    One pipe to one process; a thread of the gateway receives what comes
    back, so that the worker never waits on a full pipe.
    """

    def __init__(self, layout: ReceiptLayout) -> None:
        self._layout = layout
        # spawn: the gateway has threads (writer, fsync) a fork would copy mid-flight.
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._tickets = itertools.count(1)
        self._waiting: dict[int, Preparing] = {}
        self._closed = False
        self.fallbacks = 0  # requests prepared here because the worker failed

    def start(self) -> None:
        """Start the worker now rather than at the first receipt (a spawn
        takes a few hundred milliseconds)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection | None:
        if self._closed:
            return None
        if self._conn is None or self._process is None or not self._process.is_alive():
            self._discard()
            ours, theirs = self._context.Pipe()
            process = self._context.Process(
                target=_serve, args=(self._layout, theirs), name="palais-sealer", daemon=True
            )
            process.start()
            theirs.close()
            self._process, self._conn = process, ours
            threading.Thread(
                target=self._receive, args=(ours,), name="palais-sealer-receive", daemon=True
            ).start()
        return self._conn

    def _receive(self, conn: Connection) -> None:
        while True:
            try:
                ticket, prepared = conn.recv()
            except (EOFError, OSError, TypeError):
                # TypeError: the pipe closed by ``_discard`` (a stalled worker
                # replaced) between two reads of one message, its handle gone.
                break
            with self._lock:
                waiting = self._waiting.pop(ticket, None)
            if waiting is not None:
                waiting.prepared = prepared
                waiting.done.set()
        # The worker is gone: whoever waits prepares its receipts itself.
        with self._lock:
            left = [w for w in self._waiting.values() if w.conn is conn]
        for waiting in left:
            waiting.done.set()

    def begin(self, requests: Sequence[Request]) -> Preparing:
        with self._lock:
            ticket = next(self._tickets)
            preparing = Preparing(self, ticket, requests)
            conn = self._ensure()
            if conn is None:  # closing: prepared here
                preparing.done.set()
                return preparing
            self._waiting[ticket] = preparing
            preparing.conn = conn
            try:
                conn.send((ticket, list(requests)))
            except (OSError, ValueError):
                self._waiting.pop(ticket, None)
                preparing.done.set()
        return preparing

    def failed(self, preparing: Preparing) -> list[PreparedReceipt]:
        """What the worker did not give back, prepared here; the worker is
        replaced if it stalled or died."""
        with self._lock:
            self._waiting.pop(preparing.ticket, None)
            if not self._closed:
                self.fallbacks += 1
                log.warning(
                    "receipt worker failed; preparing %d receipt(s) in the gateway process",
                    len(preparing.requests),
                )
                self._discard()
        return prepare_all(self._layout, preparing.requests)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            # Shut down, not just closed: our receiving thread, blocked reading
            # it, keeps the socket open, and the worker waited for its end
            # until killed a second later (every stop of a gateway paid that).
            _shut_down(conn)
        if process is not None:
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._discard()
