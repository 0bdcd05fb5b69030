"""The evidence service: seals receipts and signs the log's tree heads with one key.

Implements ``palais.mailbox.ports.EvidenceService`` for storage, which
calls it inside the transaction of the act a receipt proves.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from palais.mailbox.ports import EvidenceTree
from palais.pki.evidencelog import sign_tree_head
from palais.pki.merkle import Frontier, leaf_hash
from palais.pki.receipt import ReceiptSealer, SealedReceipt
from palais.pki.signing import EvidenceKey


class KeyEvidenceService:
    def __init__(self, key: EvidenceKey, *, domain: str) -> None:
        self._sealer = ReceiptSealer(key, domain=domain)
        self._key = key
        self.address = f"accuses@{domain}"

    @property
    def issuer(self) -> str:
        return self._sealer.issuer

    @property
    def issuer_certificate_sha256(self) -> str:
        return self._sealer.issuer_certificate_sha256

    def seal(self, document: Mapping[str, Any], *, to: str) -> SealedReceipt:
        return self._sealer.seal(document, to=to)

    def leaf_hash(self, evidence: bytes) -> str:
        return leaf_hash(evidence).hex()

    def tree(self, frontier: str) -> EvidenceTree:
        return _Tree(Frontier.from_json(frontier) if frontier else Frontier.empty())

    def sign_tree_head(self, size: int, root: str, when: datetime) -> tuple[str, str]:
        head = sign_tree_head(self._key, size, bytes.fromhex(root), when)
        return head.document.decode(), base64.b64encode(head.signature).decode()


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
