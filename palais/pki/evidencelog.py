"""Signed tree heads of the evidence log, and the exported log checked offline.

A signed tree head (STH) says, under the evidence key, "the log had
``size`` leaves and this root at this time": with the leaves, anyone can
recompute the root, and with one receipt and an inclusion proof, see that
the receipt was in the log the gateway signed. The document is canonical
JSON (``palais.mailbox.evidence.canonical_json``), like the evidence
itself, and those exact bytes are what the key signs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from palais.mailbox.evidence import canonical_json, parse_timestamp, timestamp
from palais.pki.signing import EvidenceKey, certificate_sha256

TREE_HEAD_VERSION: Final = 1
LOG_NAME: Final = "palais-evidence"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_TREE_HEAD_KEYS: Final = frozenset(
    {"version", "log", "size", "root", "time", "signer_certificate_sha256"}
)


def tree_head_document(
    size: int, root: bytes, time: datetime, signer_certificate_sha256: str
) -> bytes:
    """The bytes an STH signs: canonical JSON of the log's size, root, time and signer."""
    if size < 0:
        raise ValueError(f"a log cannot have {size} leaves")
    if len(root) != 32:
        raise ValueError("a tree root is a SHA-256 digest of 32 bytes")
    if time.tzinfo is None:
        # timestamp() would read a naive time as local: say which instant it is.
        raise ValueError("a tree head's time must carry its time zone")
    if not _HEX64.fullmatch(signer_certificate_sha256):
        raise ValueError("the signer's certificate hash is 64 lower-case hex digits")
    return canonical_json(
        {
            "version": TREE_HEAD_VERSION,
            "log": LOG_NAME,
            "size": size,
            "root": root.hex(),
            "time": timestamp(time),
            "signer_certificate_sha256": signer_certificate_sha256,
        }
    )


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What an STH document says."""

    size: int
    root: bytes
    time: datetime
    signer_certificate_sha256: str


def parse_tree_head(document: bytes) -> TreeHead:
    """The tree head ``tree_head_document`` wrote; ValueError for anything else.

    Strict, spelling included (canonical JSON, no extra keys): a document
    that could be written two ways could be signed in one and shown in the
    other.
    """
    try:
        data: Any = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from error
    if not isinstance(data, dict) or set(data) != _TREE_HEAD_KEYS:
        raise ValueError(f"a tree head has exactly the keys {sorted(_TREE_HEAD_KEYS)}")
    if data["version"] != TREE_HEAD_VERSION or data["log"] != LOG_NAME:
        raise ValueError(f"not a version {TREE_HEAD_VERSION} tree head of {LOG_NAME}")
    size, root, time, signer = (
        data["size"],
        data["root"],
        data["time"],
        data["signer_certificate_sha256"],
    )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("a tree head's size is a non-negative integer")
    if not isinstance(root, str) or not _HEX64.fullmatch(root):
        raise ValueError("a tree head's root is 64 lower-case hex digits")
    if not isinstance(signer, str) or not _HEX64.fullmatch(signer):
        raise ValueError("a tree head's signer is 64 lower-case hex digits")
    if not isinstance(time, str):
        raise ValueError("a tree head's time is a string")
    when = parse_timestamp(time)  # ValueError if it is not our one spelling
    head = TreeHead(size, bytes.fromhex(root), when, signer)
    if tree_head_document(size, head.root, when, signer) != document:
        raise ValueError("a tree head is canonical JSON")
    return head


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """An STH document and the evidence key's signature of exactly those bytes."""

    document: bytes
    signature: bytes

    @property
    def head(self) -> TreeHead:
        return parse_tree_head(self.document)


def sign_tree_head(key: EvidenceKey, size: int, root: bytes, time: datetime) -> SignedTreeHead:
    """The tree head of a log of ``size`` leaves with ``root``, signed by ``key`` at ``time``.

    Raises ``EvidenceUnavailable`` (from the key) if it cannot sign now.
    """
    document = tree_head_document(size, root, time, certificate_sha256(key.certificate))
    return SignedTreeHead(document, key.sign(document))
