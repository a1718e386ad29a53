"""Tests for kfm_ledger.core.merkle: RFC 6962 vectors, a naive RFC 9162 reference, pymerkle."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    MemoryTree,
    NodeId,
    consistency_proof,
    consistency_proof_plan,
    fold_subtrees,
    inclusion_proof,
    inclusion_proof_plan,
    leaf_hash,
    node_hash,
    range_hash,
    root_from_inclusion_proof,
    subtree_nodes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from kfm_ledger.errors import CorruptLedgerError, IndexOutOfRangeError, ProofError, RootMismatchError

# ----------------------------------------------------------------- vectors

# RFC 6962 test leaves (FORMATS.md; Google certificate-transparency and transparency-dev/merkle).
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
# MTH of the first 1..8 leaves, as published in transparency-dev/merkle proof/verify_test.go (`roots`).
RFC6962_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
# (index 0-based, size, proof): transparency-dev `inclusionProofs` (there the leaf is 1-based).
RFC6962_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
# (old size, new size, proof): transparency-dev `consistencyProofs`.
RFC6962_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# --------------------------------------------------- naive RFC 9162 reference
# Written straight from the recursive definitions of RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1.
# Each proof element is returned as (begin, end, tag): the range whose MTH it is, and how a
# verifier must use it ("L" left sibling, "R" right sibling, "S" consistency start node).


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes], begin: int, end: int) -> bytes:
    n = end - begin
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[begin]
    k = _split(n)
    return hashlib.sha256(b"\x01" + ref_mth(leaves, begin, begin + k) + ref_mth(leaves, begin + k, end)).digest()


def ref_path(m: int, begin: int, end: int) -> list[tuple[int, int, str]]:
    """PATH(m, D[begin:end]) with m relative to begin."""
    n = end - begin
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return ref_path(m, begin, begin + k) + [(begin + k, end, "R")]
    return ref_path(m - k, begin + k, end) + [(begin, begin + k, "L")]


def ref_subproof(m: int, begin: int, end: int, b: bool) -> list[tuple[int, int, str]]:
    """SUBPROOF(m, D[begin:end], b) with m relative to begin."""
    n = end - begin
    if m == n:
        return [] if b else [(begin, end, "S")]
    k = _split(n)
    if m <= k:
        return ref_subproof(m, begin, begin + k, b) + [(begin + k, end, "R")]
    return ref_subproof(m - k, begin + k, end, False) + [(begin, begin + k, "L")]


def ref_proof(m: int, n: int) -> list[tuple[int, int, str]]:
    """PROOF(m, D[n]) for 0 < m <= n."""
    return ref_subproof(m, 0, n, True)


def synthetic_leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(salt + i.to_bytes(8, "big")).digest() for i in range(n)]


@cache
def cached_tree(n: int) -> tuple[list[bytes], MemoryTree]:
    leaves = synthetic_leaves(n)
    return leaves, MemoryTree(leaves)


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# ------------------------------------------------------------------ hashing


def test_leaf_hash_of_empty_string() -> None:
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_node_hash_has_domain_separation() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != node_hash(b, a)
    assert leaf_hash(a + b) != node_hash(a, b)


def test_empty_root() -> None:
    assert base64.b64encode(EMPTY_ROOT).decode() == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert HASH_SIZE == len(EMPTY_ROOT) == 32
    assert tree_root(0, MemoryTree()) == EMPTY_ROOT
    assert MemoryTree().root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert fold_subtrees([]) == EMPTY_ROOT


def test_rfc6962_roots() -> None:
    tree = MemoryTree(leaf_hash(d) for d in RFC6962_LEAVES)
    for size, want in enumerate(RFC6962_ROOTS, start=1):
        assert tree.root(size) == want, size
        assert ref_mth([leaf_hash(d) for d in RFC6962_LEAVES], 0, size) == want, size


@pytest.mark.parametrize(("index", "size", "proof"), RFC6962_INCLUSION)
def test_rfc6962_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    tree = MemoryTree(leaf_hash(d) for d in RFC6962_LEAVES)
    want = [bytes.fromhex(h) for h in proof]
    assert inclusion_proof(index, size, tree) == want
    leaf = leaf_hash(RFC6962_LEAVES[index])
    root = RFC6962_ROOTS[size - 1]
    verify_inclusion(leaf, index, size, want, root)
    # The transparency-dev corruptions: all must fail.
    bad: list[tuple[bytes, int, int, list[bytes], bytes]] = [
        (leaf, index - 1, size, want, root),
        (leaf, index + 1, size, want, root),
        (leaf, index ^ 2, size, want, root),
        (leaf, index, size * 2, want, root),
        (leaf, index, size // 2, want, root),
        (leaf_hash(b"WrongLeaf"), index, size, want, root),
        (leaf, index, size, want, EMPTY_ROOT),
        (leaf, index, size, want, SOME_HASH),
        (leaf, index, size, want + [root], root),
        (leaf, index, size, [root] + want, root),
    ]
    bad += [(leaf, index, size, want[:i] + [flip(want[i], 3)] + want[i + 1 :], root) for i in range(len(want))]
    if want:
        bad.append((leaf, index, size, want[:-1], root))
    for probe in bad:
        with pytest.raises(ProofError):
            verify_inclusion(*probe)


@pytest.mark.parametrize(("old", "new", "proof"), RFC6962_CONSISTENCY)
def test_rfc6962_consistency_vectors(old: int, new: int, proof: list[str]) -> None:
    tree = MemoryTree(leaf_hash(d) for d in RFC6962_LEAVES)
    want = [bytes.fromhex(h) for h in proof]
    assert consistency_proof(old, new, tree) == want
    r1, r2 = RFC6962_ROOTS[old - 1], RFC6962_ROOTS[new - 1]
    verify_consistency(old, new, r1, r2, want)
    if not want:
        return
    bad = [
        (old - 1, new, r1, r2, want),
        (old + 1, new, r1, r2, want),
        (old ^ 2, new, r1, r2, want),
        (old, new * 2, r1, r2, want),
        (old, new // 2, r1, r2, want),
        (old, new, SOME_HASH, r2, want),
        (old, new, r1, SOME_HASH, want),
        (old, new, r2, r1, want),
        (old, new, r1, r2, []),
        (old, new, r1, r2, want + [r1]),
        (old, new, r1, r2, want + [r2]),
        (old, new, r1, r2, [r1] + want),
        (old, new, r1, r2, [want[0]] + want),
        (old, new, r1, r2, want[:-1]),
    ]
    bad += [(old, new, r1, r2, want[:i] + [flip(want[i], 4)] + want[i + 1 :]) for i in range(len(want))]
    for probe in bad:
        with pytest.raises(ProofError):
            verify_consistency(*probe)


# ------------------------------------------------------------ subtree nodes


def test_subtree_nodes_examples() -> None:
    assert subtree_nodes(0, 0) == []
    assert subtree_nodes(5, 5) == []
    assert subtree_nodes(0, 1) == [(0, 0)]
    assert subtree_nodes(0, 8) == [(3, 0)]
    assert subtree_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert subtree_nodes(3, 17) == [(0, 3), (2, 1), (3, 1), (0, 16)]
    assert subtree_nodes(1 << 40, (1 << 40) + 1) == [(0, 1 << 40)]
    for begin, end in [(-1, 3), (4, 3)]:
        with pytest.raises(ValueError):
            subtree_nodes(begin, end)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1 << 20), st.integers(0, 1 << 20))
def test_subtree_nodes_are_the_maximal_cover(a: int, length: int) -> None:
    begin, end = a, a + length
    nodes = subtree_nodes(begin, end)
    pos = begin
    for level, index in nodes:
        assert index << level == pos  # contiguous, left to right
        pos += 1 << level
        # maximal: the parent is not inside the range
        parent_begin = (index >> 1) << (level + 1)
        assert parent_begin < begin or parent_begin + (2 << level) > end
    assert pos == end
    assert len(nodes) <= 2 * 21


# ------------------------------------------------------ plans vs reference


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_plans_match_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 2000))
    index = data.draw(st.integers(0, n - 1))
    assert inclusion_proof_plan(index, n) == [(b, e) for b, e, _ in ref_path(index, 0, n)]
    m = data.draw(st.integers(1, n))
    assert consistency_proof_plan(m, n) == [(b, e) for b, e, _ in ref_proof(m, n)]


def test_plans_for_every_small_size() -> None:
    for n in range(1, 65):
        for i in range(n):
            assert inclusion_proof_plan(i, n) == [(b, e) for b, e, _ in ref_path(i, 0, n)]
        for m in range(1, n + 1):
            assert consistency_proof_plan(m, n) == [(b, e) for b, e, _ in ref_proof(m, n)]


def test_plan_errors() -> None:
    with pytest.raises(IndexOutOfRangeError, match="index 9 out of bounds for tree size 8"):
        inclusion_proof_plan(9, 8)
    for index, size in [(8, 8), (0, 0), (-1, 5)]:
        with pytest.raises(IndexOutOfRangeError):
            inclusion_proof_plan(index, size)
    assert consistency_proof_plan(0, 0) == []
    assert consistency_proof_plan(7, 7) == []
    with pytest.raises(IndexOutOfRangeError, match="empty tree"):
        consistency_proof_plan(0, 5)
    with pytest.raises(IndexOutOfRangeError):
        consistency_proof_plan(6, 5)


def test_plans_are_logarithmic_for_huge_trees() -> None:
    size = (1 << 62) + 12345
    plan = inclusion_proof_plan(size - 1, size)
    assert len(plan) == bin(size - 1).count("1")
    assert len(inclusion_proof_plan(0, size)) == 63
    assert len(consistency_proof_plan((1 << 40) + 3, size)) <= 2 * 63


# ----------------------------------------- proofs from a reader vs reference


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_proofs_equal_reference_verify_and_reject_corruption(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300), label="size")
    leaves, tree = cached_tree(n)
    tree_size = n
    root = tree.root(tree_size)
    assert root == ref_mth(leaves, 0, tree_size)

    # ---- inclusion
    index = data.draw(st.integers(0, n - 1), label="index")
    ref = ref_path(index, 0, n)
    proof = inclusion_proof(index, n, tree)
    assert proof == [ref_mth(leaves, b, e) for b, e, _ in ref]
    verify_inclusion(leaves[index], index, n, proof, root)
    assert root_from_inclusion_proof(leaves[index], index, n, proof) == root

    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1), label="flip position")
        bit = data.draw(st.integers(0, 255), label="flip bit")
        with pytest.raises(RootMismatchError):
            verify_inclusion(leaves[index], index, n, proof[:pos] + [flip(proof[pos], bit)] + proof[pos + 1 :], root)
        with pytest.raises(ProofError, match=f"proof has {len(proof) - 1} hashes, want {len(proof)}"):
            verify_inclusion(leaves[index], index, n, proof[:-1], root)
    with pytest.raises(ProofError, match=f"proof has {len(proof) + 1} hashes"):
        verify_inclusion(leaves[index], index, n, proof + [root], root)
    with pytest.raises(RootMismatchError):
        verify_inclusion(flip(leaves[index], 0), index, n, proof, root)
    # Any other index is rejected (the audit path's directions differ at the highest
    # differing bit of the two indexes, or the length differs).
    other = data.draw(st.integers(0, n).filter(lambda i: i != index), label="wrong index")
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], other, n, proof, root)
    # Another size is accepted exactly when RFC 9162 gives the same proof shape: the path
    # does not commit to the size (e.g. index 0: sizes 3 and 4), the signed root does.
    wrong_size = data.draw(st.integers(index + 1, 2 * n + 1).filter(lambda s: s != n), label="wrong size")
    same_shape = [t for _, _, t in ref_path(index, 0, wrong_size)] == [t for _, _, t in ref]
    if same_shape:
        verify_inclusion(leaves[index], index, wrong_size, proof, root)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, wrong_size, proof, root)

    # ---- consistency
    m = data.draw(st.integers(1, n), label="old size")
    old_root = tree.root(m)
    ref_c = ref_proof(m, n)
    cproof = consistency_proof(m, n, tree)
    assert cproof == [ref_mth(leaves, b, e) for b, e, _ in ref_c]
    verify_consistency(m, n, old_root, root, cproof)
    if m == n:
        assert cproof == []
        return
    pos = data.draw(st.integers(0, len(cproof) - 1), label="flip position")
    bit = data.draw(st.integers(0, 255), label="flip bit")
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, old_root, root, cproof[:pos] + [flip(cproof[pos], bit)] + cproof[pos + 1 :])
    with pytest.raises(ProofError, match=f"proof has {len(cproof) - 1} hashes, want {len(cproof)}"):
        verify_consistency(m, n, old_root, root, cproof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(m, n, old_root, root, cproof + [root])
    with pytest.raises(ProofError):
        verify_consistency(m, n, old_root, root, [cproof[0]] + cproof)
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, flip(old_root, 7), root, cproof)
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, old_root, flip(root, 7), cproof)
    # Other sizes: accepted exactly when the reference proof has the same shape.
    shape = [t for _, _, t in ref_c]
    wrong_old = data.draw(st.integers(1, n - 1).filter(lambda s: s != m) | st.just(m), label="wrong old")
    wrong_new = data.draw(st.integers(n + 1, 2 * n + 2), label="wrong new")
    for om, on in [(wrong_old, n), (m, wrong_new)]:
        if (om, on) == (m, n):
            continue
        if [t for _, _, t in ref_proof(om, on)] == shape:
            verify_consistency(om, on, old_root, root, cproof)
        else:
            with pytest.raises(ProofError):
                verify_consistency(om, on, old_root, root, cproof)


def test_every_proof_in_small_trees() -> None:
    for n in range(1, 34):
        leaves, tree = cached_tree(n)
        roots = [tree.root(s) for s in range(n + 1)]
        for s in range(1, n + 1):
            assert roots[s] == ref_mth(leaves, 0, s)
            for i in range(s):
                p = inclusion_proof(i, s, tree)
                assert p == [ref_mth(leaves, b, e) for b, e, _ in ref_path(i, 0, s)]
                verify_inclusion(leaves[i], i, s, p, roots[s])
            for m in range(1, s + 1):
                c = consistency_proof(m, s, tree)
                assert c == [ref_mth(leaves, b, e) for b, e, _ in ref_proof(m, s)]
                verify_consistency(m, s, roots[m], roots[s], c)


def test_known_size_ambiguity_of_inclusion_paths() -> None:
    # RFC 9162 audit paths for index 0 in sizes 3 and 4 have the same shape (two right
    # siblings): the proof for size 3 also "verifies" for size 4 against the size-3 root.
    # It is the signed (size, root) pair that binds the size.
    leaves, tree = cached_tree(3)
    proof = inclusion_proof(0, 3, tree)
    verify_inclusion(leaves[0], 0, 4, proof, tree.root(3))


# ------------------------------------------------------ verification errors


def test_verify_inclusion_errors() -> None:
    leaves, tree = cached_tree(12)
    root = tree.root()
    proof = inclusion_proof(3, 12, tree)
    assert len(proof) == 4
    with pytest.raises(ProofError, match="proof has 5 hashes, want 4 for index 3 in tree size 12"):
        verify_inclusion(leaves[3], 3, 12, proof + [root], root)
    with pytest.raises(ProofError, match="index 12 out of bounds for tree size 12"):
        verify_inclusion(leaves[3], 12, 12, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[3], -1, 12, proof, root)
    with pytest.raises(ProofError, match="out of bounds"):
        verify_inclusion(leaves[0], 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="proof hash 2 is 31 bytes"):
        verify_inclusion(leaves[3], 3, 12, proof[:2] + [proof[2][:31]] + proof[3:], root)
    with pytest.raises(ProofError, match="leaf hash is 0 bytes"):
        verify_inclusion(b"", 3, 12, proof, root)
    with pytest.raises(ProofError, match="root is 33 bytes"):
        verify_inclusion(leaves[3], 3, 12, proof, root + b"\x00")
    with pytest.raises(RootMismatchError) as info:
        verify_inclusion(leaves[4], 3, 12, proof, root)
    assert info.value.expected == root
    assert info.value.calculated == root_from_inclusion_proof(leaves[4], 3, 12, proof)
    # A one-leaf tree: empty proof, the root is the leaf hash.
    verify_inclusion(leaves[0], 0, 1, [], leaves[0])
    with pytest.raises(RootMismatchError):
        verify_inclusion(leaves[0], 0, 1, [], leaves[1])
    with pytest.raises(ProofError):
        verify_inclusion(leaves[0], 0, 1, [leaves[0]], leaves[0])


def test_verify_consistency_edge_cases() -> None:
    _leaves, tree = cached_tree(10)
    r = [tree.root(s) for s in range(11)]
    # Equal sizes: empty proof, equal roots.
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(5, 5, r[5], r[5], [])
    with pytest.raises(RootMismatchError):
        verify_consistency(5, 5, r[5], r[6], [])
    with pytest.raises(ProofError, match="want 0"):
        verify_consistency(5, 5, r[5], r[5], [r[5]])
    with pytest.raises(RootMismatchError):
        verify_consistency(0, 0, r[1], r[1], [])
    with pytest.raises(ProofError):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    # From size 0: never.
    for proof in ([], [EMPTY_ROOT], [r[10]]):
        with pytest.raises(ProofError, match="from size 0 never verifies"):
            verify_consistency(0, 10, EMPTY_ROOT, r[10], proof)
    # Backwards, negative, short hashes.
    with pytest.raises(ProofError, match="larger"):
        verify_consistency(6, 5, r[6], r[5], [])
    with pytest.raises(ProofError):
        verify_consistency(-1, 5, r[6], r[5], [])
    good = consistency_proof(3, 10, tree)
    verify_consistency(3, 10, r[3], r[10], good)
    with pytest.raises(ProofError, match="proof hash 1 is 0 bytes"):
        verify_consistency(3, 10, r[3], r[10], [good[0], b""] + good[2:])
    with pytest.raises(ProofError, match="old root is 31 bytes"):
        verify_consistency(3, 10, r[3][:31], r[10], good)
    with pytest.raises(ProofError, match=r"proof has 0 hashes, want \d+ for tree sizes 3 -> 10"):
        verify_consistency(3, 10, r[3], r[10], [])
    with pytest.raises(RootMismatchError, match="old root mismatch"):
        verify_consistency(3, 10, r[4], r[10], good)
    with pytest.raises(RootMismatchError, match="new root mismatch"):
        verify_consistency(3, 10, r[3], r[9], good)
    # Power-of-two old size: the old root is not in the proof.
    assert consistency_proof(4, 10, tree)[0] != r[4]
    verify_consistency(4, 10, r[4], r[10], consistency_proof(4, 10, tree))


# ------------------------------------------------------ huge trees, lazily


class UniformTree:
    """A consistent HashReader for any size: every leaf hash is the same, so node (k, i)
    is H_k with H_0 = leaf and H_{k+1} = node_hash(H_k, H_k).  Counts reader calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0
        self.level_hashes = [leaf_hash(b"uniform")]
        for _ in range(64):
            self.level_hashes.append(node_hash(self.level_hashes[-1], self.level_hashes[-1]))

    def read_node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        self.calls += 1
        for level, index in nodes:
            assert (index + 1) << level <= self.size, (level, index)
        return [self.level_hashes[level] for level, _ in nodes]


@pytest.mark.parametrize("size", [(1 << 61) + 7, (1 << 40) - 1, 1_000_003])
def test_huge_tree_proofs_are_batched_and_verify(size: int) -> None:
    reader = UniformTree(size)
    root = tree_root(size, reader)
    leaf = reader.level_hashes[0]
    for index in [0, size // 3, size - 2, size - 1]:
        reader.calls = 0
        proof = inclusion_proof(index, size, reader)
        assert reader.calls == 1  # one batched read for the whole proof
        verify_inclusion(leaf, index, size, proof, root)
    for old in [1, 2, size // 2 + 1, size - 1]:
        reader.calls = 0
        proof = consistency_proof(old, size, reader)
        assert reader.calls == 1
        verify_consistency(old, size, tree_root(old, reader), root, proof)


def test_reader_contract_is_checked() -> None:
    class Short:
        def read_node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
            return [EMPTY_ROOT] * (len(nodes) - 1)

    class Truncated:
        def read_node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
            return [EMPTY_ROOT[:16] for _ in nodes]

    with pytest.raises(CorruptLedgerError, match="returned 0 hashes for 1 nodes"):
        tree_root(8, Short())
    with pytest.raises(CorruptLedgerError, match="16 bytes"):
        inclusion_proof(3, 8, Truncated())


def test_memory_tree_reader_and_range_hash() -> None:
    leaves, tree = cached_tree(13)
    assert tree.size == 13
    assert tree.read_node_hashes([(0, 12), (2, 2), (3, 0)]) == [
        leaves[12],
        ref_mth(leaves, 8, 12),
        ref_mth(leaves, 0, 8),
    ]
    for node in [(0, 13), (2, 3), (4, 0), (-1, 0)]:
        with pytest.raises(IndexOutOfRangeError):
            tree.read_node_hashes([node])
    assert range_hash(8, 13, tree) == ref_mth(leaves, 8, 13)
    assert range_hash(4, 4, tree) == EMPTY_ROOT
    with pytest.raises(IndexOutOfRangeError):
        tree.root(14)
    with pytest.raises(ValueError):
        MemoryTree([b"short"])


# ------------------------------------------------------------ compact range


def test_compact_range_root_at_every_size_and_completed_nodes() -> None:
    leaves, tree = cached_tree(300)
    cr = CompactRange()
    for i, leaf in enumerate(leaves):
        done = cr.append(leaf)
        # The leaf itself, then each parent it completes, bottom-up.
        trailing_ones = ((i + 1) & -(i + 1)).bit_length() - 1
        want_nodes = [(level, i >> level) for level in range(trailing_ones + 1)]
        assert [node for node, _ in done] == want_nodes
        assert [h for _, h in done] == tree.read_node_hashes(want_nodes)
        assert cr.size == i + 1
        assert cr.root() == ref_mth(leaves, 0, i + 1)
        assert list(cr.peaks) == tree.read_node_hashes(subtree_nodes(0, i + 1))
        assert cr.nodes() == subtree_nodes(0, i + 1)


def test_compact_range_resume_and_extend() -> None:
    leaves, tree = cached_tree(300)
    cr = CompactRange()
    cr.extend(leaves[:77])
    assert cr.size == 77 and cr.root() == tree.root(77)
    resumed = CompactRange(77, cr.peaks)
    assert resumed.root() == tree.root(77)
    for leaf in leaves[77:]:
        resumed.append(leaf)
    cr.extend(leaves[77:])
    assert resumed.root() == cr.root() == tree.root(300)
    assert resumed.peaks == cr.peaks


def test_compact_range_rejects_bad_state() -> None:
    with pytest.raises(ValueError, match="has 2 peaks, got 1"):
        CompactRange(3, [EMPTY_ROOT])
    with pytest.raises(ValueError):
        CompactRange(0, [EMPTY_ROOT])
    with pytest.raises(ValueError):
        CompactRange(1, [b"x" * 31])
    with pytest.raises(ValueError):
        CompactRange(-1)
    with pytest.raises(ValueError):
        CompactRange().append(b"x" * 33)
    cr = CompactRange()
    with pytest.raises(ValueError):
        cr.extend([EMPTY_ROOT, b"short"])
    assert cr.size == 1  # the good leaf before the bad one was appended


# ---------------------------------------------------------------- pymerkle


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 33, 100])
def test_cross_check_with_pymerkle(n: int) -> None:
    pymerkle = pytest.importorskip("pymerkle")
    data = [f"row {i}".encode() for i in range(n)]
    other = pymerkle.InmemoryTree()
    for d in data:
        other.append_entry(d)
    tree = MemoryTree(leaf_hash(d) for d in data)
    for size in sorted({1, n // 2 or 1, n}):
        assert tree.root(size) == other.get_root(size)
        for index in range(size):
            path = other.prove_inclusion(index + 1, size).serialize()["path"]  # 1-based index
            # pymerkle's path starts with the leaf hash itself.
            assert bytes.fromhex(path[0]) == leaf_hash(data[index])
            assert [bytes.fromhex(h) for h in path[1:]] == inclusion_proof(index, size, tree)


def test_joined_leaf_hashes_are_each_entrys_leaf_hash_in_order() -> None:
    entries = [b"", b"a", b"\x00", b"row\n" * 100]
    from kfm_ledger.core.merkle import joined_leaf_hashes

    assert joined_leaf_hashes(entries) == b"".join(leaf_hash(e) for e in entries)
    assert joined_leaf_hashes([]) == b""
