"""The instance's evidence key and service, as its settings name them.

Apart from the composition root so that a process of the gateway's (the
filing process) makes its own without importing every front-end.
"""

from __future__ import annotations

from palais.config import Settings
from palais.pki.evidence_service import KeyEvidenceService
from palais.pki.signing import EvidenceKey, load_file_key


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
    """The filing process's evidence service: the key opened there, its own
    receipt worker (``palais.storage.filing_process``)."""
    return instance_evidence(settings, worker=True)
