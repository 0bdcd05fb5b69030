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

import logging
import multiprocessing
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
    """The worker: batches in, prepared receipts out, until the pipe closes."""
    while True:
        try:
            requests = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(prepare_all(layout, requests))


class SealingProcess:
    """Prepares batches of receipts in a worker process (``prepare``).

    One pipe to one process, used by one caller at a time (the writer
    thread): a pool's queues and manager thread cost more per batch than
    the pipe's round trip.
    """

    def __init__(self, layout: ReceiptLayout, *, smallest: int = 2) -> None:
        self._layout = layout
        # A single receipt is prepared here: the round trip to the worker
        # costs about what preparing it does, and adds latency.
        self._smallest = smallest
        # spawn: the gateway has threads (writer, fsync) a fork would copy mid-flight.
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.fallbacks = 0  # batches prepared here because the worker failed

    def start(self) -> None:
        """Start the worker now rather than at the first batch (a spawn takes
        a few hundred milliseconds)."""
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
        return self._conn

    def prepare(self, requests: Sequence[Request]) -> list[PreparedReceipt]:
        if len(requests) < self._smallest:
            return prepare_all(self._layout, requests)
        with self._lock:
            conn = self._ensure()
            if conn is None:  # closing: the last batches are prepared here
                return prepare_all(self._layout, requests)
            try:
                conn.send(list(requests))
                if not conn.poll(_STALL_SECONDS):
                    raise TimeoutError("the receipt worker did not answer")
                prepared: list[PreparedReceipt] = conn.recv()
                return prepared
            except (EOFError, OSError, TimeoutError) as error:
                self.fallbacks += 1
                log.warning(
                    "receipt worker failed (%s); preparing %d receipt(s) in the gateway process",
                    type(error).__name__,
                    len(requests),
                )
                self._discard()
        return prepare_all(self._layout, requests)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._discard()
