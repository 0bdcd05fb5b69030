"""The instance's evidence key and service, as its settings name them.

Apart from the composition root so that a process of the gateway's (the
filing process) makes its own without importing every front-end.
"""

from __future__ import annotations

import os

from palais.config import Settings
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.signing import EvidenceKey, load_file_key

# The filing process's receipt worker runs beside it and the gateway: a third core.
_WORKER_FROM_CORES = 3


def evidence_key(settings: Settings) -> EvidenceKey:
    """The evidence key the settings name: on an HSM, or in a key file."""
    e = settings.evidence
    if e.pkcs11_module:
        from palais.pki.hsm import open_pkcs11_key, pin_from

        return open_pkcs11_key(
            e.pkcs11_module,
            e.pkcs11_token,
            e.pkcs11_key_label,
            pin_from(e.pkcs11_pin),
            e.certificate,
        )
    return load_file_key(e.certificate, e.key)


def instance_evidence(
    settings: Settings, key: EvidenceKey | None = None, *, worker: bool = False
) -> KeyEvidenceService:
    """The evidence service of the settings' key; ``worker``: receipts
    written in a worker process (a gateway; a command that issues a few
    needs none)."""
    evidence = KeyEvidenceService(
        key or evidence_key(settings), domain=settings.instance.mail_domain, worker=worker
    )
    if evidence.worker is not None:
        evidence.worker.start()  # before the listeners: a spawn takes a moment
    return evidence


def filing_evidence(settings: Settings) -> KeyEvidenceService:
    """The filing process's evidence service (``palais.storage.filing_process``):
    the key opened there, and a receipt worker of its own only when the
    machine has a core for it. On two cores the worker shares them with the
    gateway and the filing process, and passing it each receipt costs the
    filing process more than it saves (receipts prepared in the filing
    process: 1.24 ms of CPU a message against 1.34, and ingest 5 % faster;
    bench/results/filing-cpu-2026-12-02.md)."""
    return instance_evidence(settings, worker=len(os.sched_getaffinity(0)) >= _WORKER_FROM_CORES)
