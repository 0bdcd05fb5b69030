"""palais.pki.merkle against the RFC 9162 definitions, written as the RFC writes them.

The reference below is the RFC's recursive MTH, PATH and PROOF transcribed
with list slices: slow and obviously right. The module under test computes
the same things by index arithmetic and verifies them with the RFC's
iterative algorithms; every tree size 0..70 and every index is compared.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palais.pki.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 70
LEAVES = [leaf_hash(f"leaf {i}".encode()) for i in range(MAX_SIZE)]


# -- the reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1, literally ----------------


def _ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _ref_k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _ref_k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def flipped(h: bytes) -> bytes:
    """The same hash with its last bit flipped."""
    return h[:-1] + bytes([h[-1] ^ 1])


# -- hashes ----------------------------------------------------------------------


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # A node's bytes as a leaf do not hash to the node.
    assert leaf_hash(left + right) != node_hash(left, right)


def test_empty_tree_root() -> None:
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert Frontier.empty().root() == EMPTY_ROOT


def test_known_vector_of_rfc6962_test_suite() -> None:
    # The root of the 8 leaves used by certificate-transparency-go's tests
    # (merkle/testonly): an independent check that our reference is the RFC's.
    inputs = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    leaves = [leaf_hash(x) for x in inputs]
    assert (
        root_of(leaves).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )
    assert (
        root_of(leaves[:3]).hex()
        == "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
    )


# -- roots and the frontier --------------------------------------------------------


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_root_and_frontier_match_the_reference(size: int) -> None:
    d = LEAVES[:size]
    expected = ref_mth(d)
    assert root_of(d) == expected
    frontier = Frontier.of(d)
    assert frontier.size == size
    assert frontier.root() == expected
    assert len(frontier.hashes) == bin(size).count("1")
    again = Frontier.from_json(frontier.to_json())
    assert again == frontier
    assert again.root() == expected


def test_frontier_appends_one_at_a_time() -> None:
    frontier = Frontier.empty()
    for n, h in enumerate(LEAVES, start=1):
        # Through JSON each time, as the gateway stores it between receipts.
        frontier = Frontier.from_json(frontier.to_json())
        frontier.append(h)
        assert frontier.size == n
        assert frontier.root() == ref_mth(LEAVES[:n])


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"size": 3, "hashes": []}',  # 3 leaves are two perfect subtrees
        '{"size": -1, "hashes": []}',
        '{"size": true, "hashes": []}',
        '{"size": 1, "hashes": ["00"]}',  # not a SHA-256 digest
        '{"size": 1, "hashes": [1]}',
        '{"size": 1, "hashes": ["zz"]}',
        '{"size": "1", "hashes": []}',
    ],
)
def test_frontier_refuses_what_it_did_not_write(text: str) -> None:
    with pytest.raises(ValueError):
        Frontier.from_json(text)


def test_frontier_refuses_a_leaf_hash_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        Frontier.empty().append(b"short")


def test_frontier_json_is_small_and_plain() -> None:
    frontier = Frontier.of(LEAVES[:5])
    assert json.loads(frontier.to_json()) == {
        "size": 5,
        "hashes": [ref_mth(LEAVES[:4]).hex(), LEAVES[4].hex()],
    }


# -- inclusion -------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_inclusion_proofs_match_the_reference_and_verify(size: int) -> None:
    d = LEAVES[:size]
    root = ref_mth(d)
    for index in range(size):
        proof = inclusion_proof(LEAVES, index, size)
        assert proof == ref_path(index, d)
        assert verify_inclusion(d[index], index, size, proof, root)


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_inclusion_proofs_fail_when_anything_changes(size: int) -> None:
    d = LEAVES[:size]
    root = ref_mth(d)
    for index in range(size):
        proof = inclusion_proof(d, index, size)
        leaf = d[index]
        assert not verify_inclusion(flipped(leaf), index, size, proof, root)
        assert not verify_inclusion(leaf, index, size, proof, flipped(root))
        for i in range(len(proof)):
            bad = [*proof[:i], flipped(proof[i]), *proof[i + 1 :]]
            assert not verify_inclusion(leaf, index, size, bad, root)
        for other in range(size):
            if other != index:
                assert not verify_inclusion(leaf, other, size, proof, root)
        # Outside the tree, or with a hash too many or too few.
        assert not verify_inclusion(leaf, size, size, proof, root)
        assert not verify_inclusion(leaf, -1, size, proof, root)
        assert not verify_inclusion(leaf, index, size, [*proof, leaf], root)
        if proof:
            assert not verify_inclusion(leaf, index, size, proof[:-1], root)


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_inclusion_ranges_partition_the_tree_around_the_leaf(size: int) -> None:
    for index in range(size):
        ranges = inclusion_ranges(index, size)
        assert [ref_mth(LEAVES[lo:hi]) for lo, hi in ranges] == ref_path(index, LEAVES[:size])
        covered = sorted(i for lo, hi in ranges for i in range(lo, hi))
        assert covered == [i for i in range(size) if i != index]


def test_inclusion_proof_refuses_a_leaf_outside_the_tree() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES, 5, 5)
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES[:3], 0, 4)
    with pytest.raises(ValueError):
        inclusion_ranges(0, 0)


# -- consistency -------------------------------------------------------------------


@pytest.mark.parametrize("new_size", range(MAX_SIZE + 1))
def test_consistency_proofs_match_the_reference_and_verify(new_size: int) -> None:
    d = LEAVES[:new_size]
    new_root = ref_mth(d)
    for old_size in range(new_size + 1):
        old_root = ref_mth(d[:old_size])
        proof = consistency_proof(LEAVES, old_size, new_size)
        if 0 < old_size < new_size:
            assert proof == ref_proof(old_size, d)
        else:
            assert proof == []
        assert verify_consistency(old_size, new_size, old_root, new_root, proof)


@pytest.mark.parametrize("new_size", range(1, MAX_SIZE + 1))
def test_consistency_proofs_fail_when_anything_changes(new_size: int) -> None:
    d = LEAVES[:new_size]
    new_root = ref_mth(d)
    for old_size in range(new_size + 1):
        old_root = ref_mth(d[:old_size])
        proof = consistency_proof(d, old_size, new_size)
        assert not verify_consistency(old_size, new_size, flipped(old_root), new_root, proof)
        if old_size > 0:
            # (Every tree extends the empty one, whatever its root.)
            assert not verify_consistency(old_size, new_size, old_root, flipped(new_root), proof)
        for i in range(len(proof)):
            bad = [*proof[:i], flipped(proof[i]), *proof[i + 1 :]]
            assert not verify_consistency(old_size, new_size, old_root, new_root, bad)
        # Another old size claimed with the same proof and root.
        for other in range(new_size + 1):
            if other != old_size and ref_mth(d[:other]) != old_root:
                assert not verify_consistency(other, new_size, old_root, new_root, proof)
        assert not verify_consistency(old_size, new_size, old_root, new_root, [*proof, new_root])
        if proof:
            assert not verify_consistency(old_size, new_size, old_root, new_root, proof[:-1])
    # A tree does not shrink.
    assert not verify_consistency(new_size, new_size - 1, new_root, ref_mth(d[:-1]), [])


def test_consistency_proof_refuses_sizes_out_of_order() -> None:
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, 5, 4)
    with pytest.raises(ValueError):
        consistency_proof(LEAVES[:3], 1, 4)


# -- bigger trees, at random ---------------------------------------------------------


@given(st.integers(min_value=1, max_value=600), st.data())
def test_random_big_trees(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old = data.draw(st.integers(min_value=0, max_value=size))
    root = ref_mth(leaves)
    assert root_of(leaves) == root == Frontier.of(leaves).root()
    proof = inclusion_proof(leaves, index, size)
    assert proof == ref_path(index, leaves)
    assert verify_inclusion(leaves[index], index, size, proof, root)
    cproof = consistency_proof(leaves, old, size)
    assert verify_consistency(old, size, ref_mth(leaves[:old]), root, cproof)
