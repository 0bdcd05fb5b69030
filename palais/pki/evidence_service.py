"""The evidence service: seals receipts and signs the log's tree heads with one key.

Implements ``palais.mailbox.ports.EvidenceService`` for storage, which
calls it inside the transaction of the act a receipt proves. With
``worker=True`` the receipts of a batch are written in a worker process
(``palais.pki.sealing``) and only signed here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime

from palais.mailbox.ports import EvidenceTree
from palais.pki.evidencelog import sign_tree_head
from palais.pki.merkle import Frontier, leaf_hash
from palais.pki.receipt import PreparedReceipt, ReceiptSealer, SealedReceipt
from palais.pki.sealing import Preparing, Request, SealingProcess, prepare_all
from palais.pki.signing import EvidenceKey


class KeyEvidenceService:
    def __init__(self, key: EvidenceKey, *, domain: str, worker: bool = False) -> None:
        self._sealer = ReceiptSealer(key, domain=domain)
        self._key = key
        self.address = f"accuses@{domain}"
        self.worker = SealingProcess(self._sealer.layout) if worker else None

    @property
    def issuer(self) -> str:
        return self._sealer.issuer

    @property
    def issuer_certificate_sha256(self) -> str:
        return self._sealer.issuer_certificate_sha256

    def seal_later(self, requests: Sequence[Request]) -> _Sealing:
        worker = self.worker
        if worker is None:
            return _Sealing(self._sealer, prepare_all(self._sealer.layout, requests))
        return _Sealing(self._sealer, worker.begin(requests))

    def seal_many(self, requests: Sequence[Request]) -> list[SealedReceipt]:
        return self.seal_later(requests).receipts()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def leaf_hash(self, evidence: bytes) -> str:
        return leaf_hash(evidence).hex()

    def tree(self, frontier: str) -> EvidenceTree:
        return _Tree(Frontier.from_json(frontier) if frontier else Frontier.empty())

    def sign_tree_head(self, size: int, root: str, when: datetime) -> tuple[str, str]:
        head = sign_tree_head(self._key, size, bytes.fromhex(root), when)
        return head.document.decode(), base64.b64encode(head.signature).decode()


class _Sealing:
    """Receipts being prepared (here, or in the worker); signed when asked for."""

    def __init__(self, sealer: ReceiptSealer, prepared: list[PreparedReceipt] | Preparing) -> None:
        self._sealer = sealer
        self._prepared = prepared

    def receipts(self) -> list[SealedReceipt]:
        prepared = self._prepared
        if isinstance(prepared, Preparing):
            prepared = prepared.result()
        return [self._sealer.finish(p) for p in prepared]


class _Tree:
    """The compact range, kept as an object while a batch appends to it."""

    def __init__(self, frontier: Frontier) -> None:
        self._frontier = frontier

    @property
    def size(self) -> int:
        return self._frontier.size

    def append(self, leaf_hash: str) -> None:
        self._frontier.append(bytes.fromhex(leaf_hash))

    def root(self) -> str:
        return self._frontier.root().hex()

    def serialized(self) -> str:
        return self._frontier.to_json()
