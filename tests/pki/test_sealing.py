"""Receipts written in the worker process: the same receipts, signed here,
and nothing lost when the worker dies."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from palais.mailbox.evidence import canonical_json
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.sealing import SealingProcess
from tests.pki.test_verify import ORIGINAL, SENDER, Pki, _document, _pki, _verify


@pytest.fixture(scope="module")
def pki() -> Pki:
    return _pki()


@pytest.fixture
def service(pki: Pki) -> Iterator[KeyEvidenceService]:
    service = KeyEvidenceService(pki.key, domain="palais.test", worker=True)
    assert service.worker is not None
    service.worker.start()
    yield service
    service.close()


def _requests(pki: Pki, n: int, *, read: bool = False) -> list[tuple[bytes, str]]:
    evidence = canonical_json(_document(pki.evidence.cert, read=read))
    return [(evidence, SENDER.address)] * n


def _worker_pid(worker: SealingProcess) -> int:
    process = worker._process
    assert process is not None and process.pid is not None
    return process.pid


def test_a_batch_prepared_by_the_worker_verifies(pki: Pki, service: KeyEvidenceService) -> None:
    assert service.worker is not None
    worker_pid = _worker_pid(service.worker)
    assert worker_pid != os.getpid()
    requests = _requests(pki, 3) + _requests(pki, 2, read=True)
    receipts = service.seal_many(requests)
    assert service.worker.fallbacks == 0
    for receipt, (evidence, _) in zip(receipts, requests, strict=True):
        verdict = _verify(receipt.data, pki, original=ORIGINAL)
        assert verdict.ok, verdict
        assert receipt.evidence == evidence
        # Its header summary is the one the mail carries.
        assert receipt.summary.header_size == receipt.data.index(b"\r\n\r\n") + 4


def test_the_worker_gives_the_bytes_the_gateway_would(pki: Pki) -> None:
    inline = KeyEvidenceService(pki.key, domain="palais.test")
    worker = KeyEvidenceService(pki.key, domain="palais.test", worker=True)
    requests = _requests(pki, 2)
    try:
        one, two = inline.seal_many(requests), worker.seal_many(requests)
    finally:
        worker.close()
    # Same layout but for the signing time and the ECDSA signature's randomness.
    for a, b in zip(one, two, strict=True):
        assert a.data.split(b"Date: ")[0] == b.data.split(b"Date: ")[0]
        assert (
            a.data.split(b"smime.p7s\r\n\r\n")[0].split(b"\r\n\r\n", 1)[1]
            == (b.data.split(b"smime.p7s\r\n\r\n")[0].split(b"\r\n\r\n", 1)[1])
        )


def test_a_dead_worker_loses_no_receipt_and_is_replaced(
    pki: Pki, service: KeyEvidenceService
) -> None:
    worker = service.worker
    assert worker is not None
    first = _worker_pid(worker)
    os.kill(first, signal.SIGKILL)
    receipts = service.seal_many(_requests(pki, 4))
    assert len(receipts) == 4
    assert all(_verify(r.data, pki).ok for r in receipts)
    # Seen on the way (that batch prepared here) or before (a new worker at once).
    assert worker.fallbacks <= 1
    again = service.seal_many(_requests(pki, 2))
    assert all(_verify(r.data, pki).ok for r in again)
    assert _worker_pid(worker) != first
    assert worker.fallbacks <= 1  # the new worker prepared the second batch


def test_receipts_begun_in_jobs_come_back_whole_and_in_order(
    pki: Pki, service: KeyEvidenceService
) -> None:
    # As the writer does: each job sends its receipt at once, the batch
    # collects them at its end; more than a pipe's buffer is in flight.
    sealings = [service.seal_later(_requests(pki, 1)) for _ in range(60)]
    receipts = [r for s in sealings for r in s.receipts()]
    assert len(receipts) == 60 and len({r.data for r in receipts}) == 60
    assert all(_verify(r.data, pki).ok for r in receipts[::10])
    assert service.worker is not None and service.worker.fallbacks == 0


def test_after_close_receipts_are_prepared_in_process(pki: Pki) -> None:
    service = KeyEvidenceService(pki.key, domain="palais.test", worker=True)
    service.close()
    receipts = service.seal_many(_requests(pki, 3))
    assert all(_verify(r.data, pki).ok for r in receipts)
    assert service.worker is not None and service.worker._process is None
