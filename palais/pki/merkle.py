"""The evidence log's Merkle tree, as RFC 9162 (Certificate Transparency 2.0) defines it.

Every evidence document's exact bytes are one leaf of an append-only tree.
A leaf's hash is ``SHA-256(0x00 || bytes)`` and an inner node's
``SHA-256(0x01 || left || right)``: the prefixes keep a leaf from ever being
passed off as a node (second-preimage attacks). The empty tree's hash is
``SHA-256("")``.

Pure functions on bytes, so that the gateway, the exporter and the offline
verifier compute exactly the same thing:

* ``root_of``, ``inclusion_proof``, ``consistency_proof`` work from the
  list of leaf hashes (the exporter and the verifier have it);
* ``verify_inclusion`` and ``verify_consistency`` need only the proof, as a
  third party holding one receipt and two signed tree heads would;
* ``Frontier`` is what the gateway keeps between receipts: the roots of the
  perfect subtrees the tree is made of (one per bit set in its size), enough
  to append a leaf and compute the new root without reading the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Final

from palais.mailbox.digest import sha256

HASH_SIZE: Final = 32
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || data)."""
    return bytes(sha256(_LEAF_PREFIX, data).digest())


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) for 0 < hi - lo, without copying the list."""
    n = hi - lo
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(_subtree_root(leaves, lo, lo + k), _subtree_root(leaves, lo + k, hi))


def _check_size(leaves: Sequence[bytes], size: int) -> None:
    if not 0 <= size <= len(leaves):
        raise ValueError(f"tree size {size} is not within the {len(leaves)} leaves given")


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH: the root hash of the tree of these leaf hashes (RFC 9162 §2.1.1)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[lo, hi)`` whose subtree roots make PATH(index, D[size]), in the
    proof's order (nearest sibling first).

    What a verifier reading the leaves as a stream needs to know in advance:
    each range's root can be accumulated as the leaves go by.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m = lo + k, m - k
    # Found root-down; the proof starts at the leaf.
    ranges.reverse()
    return ranges


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]): the audit path of leaf ``index`` in the tree of the first
    ``size`` leaves (RFC 9162 §2.1.3.1), nearest sibling first."""
    _check_size(leaf_hashes, size)
    return [_subtree_root(leaf_hashes, lo, hi) for lo, hi in inclusion_ranges(index, size)]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True if ``proof`` shows the leaf at ``index`` in the tree of ``size`` with ``root``
    (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False  # a longer proof than the tree is deep
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Past the right edge of an unbalanced tree, levels with no
            # sibling are skipped: the node moves up unchanged.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1): what shows that the tree of
    ``new_size`` leaves extends the tree of the first ``old_size``.

    Empty when ``old_size`` is 0 or equal to ``new_size``: there is nothing to prove
    beyond comparing the roots.
    """
    _check_size(leaf_hashes, new_size)
    if not 0 <= old_size <= new_size:
        raise ValueError(f"a tree of {old_size} leaves cannot grow into {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    # SUBPROOF(m, D[lo:hi], b), unrolled: each step descends into one half and
    # records the other half's root, so the list is built root-down, reversed below.
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_subtree_root(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree_root(leaf_hashes, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    # m == hi - lo: the old tree's subtree itself; the verifier knows it
    # already when it is the whole old tree (b = true in the RFC).
    if not whole:
        proof.append(_subtree_root(leaf_hashes, lo, hi))
    proof.reverse()
    return proof


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True if ``proof`` shows that the tree of ``new_size`` with ``new_root`` extends the
    tree of ``old_size`` with ``old_root`` (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        # Every tree extends the empty one; its root is still checked.
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a perfect subtree of the new one: its root is the
        # proof's starting point, left out of the proof.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class Frontier:
    """The compact range of an append-only tree: the roots of its perfect subtrees.

    A tree of size n is, left to right, one perfect subtree per bit set in n,
    largest first; their roots are all that appending and the root need. The
    gateway stores this (``evidence_head.frontier``) and updates it in the
    transaction that logs a receipt, instead of reading every leaf.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int, hashes: Sequence[bytes]) -> None:
        if size < 0:
            raise ValueError(f"a tree cannot have {size} leaves")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of {size} leaves has {size.bit_count()} perfect subtrees,"
                f" not {len(hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("subtree hashes are SHA-256 digests of 32 bytes")
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, [])

    @classmethod
    def of(cls, leaf_hashes: Sequence[bytes]) -> Frontier:
        """The frontier of a tree with these leaves (to rebuild it from the log)."""
        frontier = cls.empty()
        for h in leaf_hashes:
            frontier.append(h)
        return frontier

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect subtrees' roots, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add a leaf (its hash) at position ``size``."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError("a leaf hash is a SHA-256 digest of 32 bytes")
        # Like a binary increment: each trailing 1 bit of the size is a
        # subtree of the new leaf's height that now has a right sibling.
        h = leaf_hash
        n = self._size
        while n & 1:
            h = node_hash(self._hashes.pop(), h)
            n >>= 1
        self._hashes.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the whole tree: the subtrees folded from the right, as RFC 9162 splits."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def to_json(self) -> str:
        return json.dumps(
            {"size": self._size, "hashes": [h.hex() for h in self._hashes]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Frontier:
        """The frontier ``to_json`` wrote; ValueError on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a frontier is a JSON object")
        size = data.get("size")
        hashes = data.get("hashes")
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(hashes, list):
            raise ValueError("a frontier has an integer size and a list of hashes")
        if not all(isinstance(h, str) for h in hashes):
            raise ValueError("a frontier's hashes are hex strings")
        return cls(size, [bytes.fromhex(h) for h in hashes])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash((self._size, tuple(self._hashes)))

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"
