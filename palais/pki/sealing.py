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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from palais.pki.receipt import PreparedReceipt, ReceiptLayout

log = logging.getLogger("palais.pki.sealing")

# A receipt is prepared in about 0.3 ms: a batch taking this long means the
# worker is stuck, not busy.
_STALL_SECONDS = 10.0

Request = tuple[bytes, str]  # canonical evidence, the holder it is addressed to

_layout: ReceiptLayout | None = None  # the worker's own


def _start_worker(layout: ReceiptLayout) -> None:
    global _layout
    _layout = layout


def _prepare_in_worker(requests: Sequence[Request]) -> list[PreparedReceipt]:
    assert _layout is not None, "the worker is started with its layout"
    return prepare_all(_layout, requests)


def prepare_all(layout: ReceiptLayout, requests: Sequence[Request]) -> list[PreparedReceipt]:
    return [layout.prepare(evidence, to) for evidence, to in requests]


class SealingProcess:
    """Prepares batches of receipts in a worker process (``prepare``)."""

    def __init__(self, layout: ReceiptLayout, *, smallest: int = 2) -> None:
        self._layout = layout
        # A single receipt is prepared here: the round trip to the worker
        # costs about what preparing it does, and adds latency.
        self._smallest = smallest
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.fallbacks = 0  # batches prepared here because the worker failed

    def _worker(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._pool is None and not self._closed:
                # spawn: the gateway has threads (writer, fsync) a fork would copy mid-flight.
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self._layout,),
                )
            return self._pool

    def start(self) -> None:
        """Start the worker now rather than at the first batch (a spawn takes
        a few hundred milliseconds)."""
        pool = self._worker()
        if pool is not None:
            pool.submit(prepare_all, self._layout, []).result()

    def prepare(self, requests: Sequence[Request]) -> list[PreparedReceipt]:
        if len(requests) < self._smallest:
            return prepare_all(self._layout, requests)
        pool = self._worker()
        if pool is None:  # closing: the last batches are prepared here
            return prepare_all(self._layout, requests)
        try:
            return pool.submit(_prepare_in_worker, list(requests)).result(_STALL_SECONDS)
        except (BrokenProcessPool, FutureTimeout, OSError) as error:
            self.fallbacks += 1
            log.warning(
                "receipt worker failed (%s); preparing %d receipt(s) in the gateway process",
                type(error).__name__,
                len(requests),
            )
            self._discard(pool)
            return prepare_all(self._layout, requests)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
