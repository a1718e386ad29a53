"""The Merkle tree of RFC 9162 §2.1 (the same tree as RFC 6962 §2.1): hashes, tree heads,
inclusion and consistency proofs, their verification, and compact ranges.

Pure code: nothing here opens a file.  Hashes are 32-byte ``bytes`` throughout.

Vocabulary
----------
* ``D[begin:end]`` is a range of leaves; ``MTH(D[begin:end])`` its Merkle Tree Hash
  (RFC 9162 §2.1.1).  Leaf indexes are 0-based.
* A *node* ``(level, index)`` (:data:`NodeId`) is the root of the *complete* subtree over the
  ``2**level`` leaves ``[index << level, (index + 1) << level)``.  Level 0 nodes are leaf
  hashes.  Those are the only hashes storage keeps (tlog-tiles keeps levels 0, 8, 16, ...).
* Any hash a proof needs is the MTH of a range ``[begin, end)`` with ``begin`` a multiple of
  a power of two ``>= end - begin``; such a range is rebuilt from the complete subtrees that
  cover it (:func:`subtree_nodes`), folded from the right (:func:`fold_subtrees`).

Proof building is split the transparency-dev/merkle way: a *plan* (which ranges, from
``(index, size)`` alone), one batched read of stored node hashes through a
:class:`HashReader`, then hashing.  Verification derives the shape of a proof from the
sizes alone and never takes a length, a direction or an algorithm from the proof.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Sequence
from typing import Protocol

from kfm_ledger.errors import CorruptLedgerError, IndexOutOfRangeError, ProofError, RootMismatchError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "HashReader",
    "MemoryTree",
    "NodeId",
    "consistency_proof",
    "consistency_proof_plan",
    "fold_subtrees",
    "inclusion_proof",
    "inclusion_proof_plan",
    "joined_leaf_hashes",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_from_inclusion_proof",
    "subtree_nodes",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

#: Size in bytes of every hash in the tree (SHA-256).
HASH_SIZE = 32

#: MTH({}) = SHA-256() (RFC 9162 §2.1.1): the root of the empty tree.
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

#: ``(level, index)``: the root of the complete subtree over leaves
#: ``[index << level, (index + 1) << level)``.
NodeId = tuple[int, int]

_sha256 = hashlib.sha256
_DIGEST = operator.methodcaller("digest")
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


# ------------------------------------------------------------------ hashing


def leaf_hash(data: bytes) -> bytes:
    """``MTH({d}) = SHA-256(0x00 || d)`` (RFC 9162 §2.1.1): the hash of one leaf's bytes."""
    return _sha256(_LEAF_PREFIX + data).digest()


def joined_leaf_hashes(entries: Iterable[bytes]) -> bytes:
    """:func:`leaf_hash` of each entry, concatenated (32 bytes an entry), computed in C-level maps:
    no Python code runs per entry (a bulk append hashes a million rows)."""
    return b"".join(map(_DIGEST, map(_sha256, map(_LEAF_PREFIX.__add__, entries))))


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1): an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


# ----------------------------------------------------------- ranges and nodes


def subtree_nodes(begin: int, end: int) -> list[NodeId]:
    """The maximal complete subtrees covering ``[begin, end)``, left to right.

    This is the compact-range decomposition of transparency-dev/merkle: each node is as
    high as the alignment of its start and the remaining length allow.  ``[0, 13)`` gives
    ``[(3, 0), (2, 2), (0, 12)]``.  ``[5, 5)`` gives ``[]``.

    Raises ValueError if ``begin > end`` or ``begin < 0``.
    """
    if begin < 0 or begin > end:
        raise ValueError(f"invalid leaf range [{begin}, {end})")
    nodes: list[NodeId] = []
    while begin < end:
        # No wider than what is left of the range ...
        level = (end - begin).bit_length() - 1
        # ... and no higher than the alignment of its start (0 is aligned to everything).
        if begin:
            aligned = (begin & -begin).bit_length() - 1
            if aligned < level:
                level = aligned
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its :func:`subtree_nodes` decomposition.

    Folds from the right: ``node_hash(h[0], node_hash(h[1], ... h[-1]))``.  For a range
    ``[begin, end)`` with ``begin`` a multiple of a power of two ``>= end - begin`` (the only
    ranges RFC 9162 §2.1.3/§2.1.4 proofs use, and every ``[0, size)``) this is
    ``MTH(D[begin:end])``, because RFC 9162 splits at the largest power of two below the
    length, i.e. peels off the leftmost complete subtree.  An empty sequence gives
    :data:`EMPTY_ROOT` (the empty range).
    """
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = _sha256(_NODE_PREFIX + hashes[i] + acc).digest()
    return acc


def _sibling_ranges(index: int, level: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTH are the siblings on the path from node ``(level, index)`` up to
    the root of the tree of ``size`` leaves, bottom-up.

    The RFC 9162 tree equals the perfect binary tree over ``2**ceil(log2 size)`` leaves with
    empty nodes removed and one-child nodes collapsed; so at each level the sibling is
    either the complete left neighbour, or the right neighbour cut at ``size`` (skipped when
    that is empty: the parent is then the node itself).  Requires the node to be complete.
    """
    ranges: list[tuple[int, int]] = []
    last = (size - 1) >> level  # index of the rightmost node of this level
    while last:
        if index & 1:
            ranges.append(((index - 1) << level, index << level))
        elif index < last:
            begin = (index + 1) << level
            end = begin + (1 << level)
            ranges.append((begin, end if end < size else size))
        index >>= 1
        last >>= 1
        level += 1
    return ranges


def inclusion_proof_plan(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges ``[begin, end)`` whose MTH form the audit path ``PATH(index, D[size])`` of
    RFC 9162 §2.1.3.1, leaf sibling first.

    Raises IndexOutOfRangeError unless ``0 <= index < size``.
    """
    if index < 0 or index >= size:
        raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {size}", index=index, size=size)
    return _sibling_ranges(index, 0, size)


def _consistency_start(old_size: int) -> tuple[int, int]:
    """The node where RFC 9162 §2.1.4.1 ``SUBPROOF`` stops: the largest complete subtree
    ending at ``old_size`` (``level`` = trailing zero bits of ``old_size``)."""
    level = (old_size & -old_size).bit_length() - 1
    return level, (old_size - 1) >> level


def consistency_proof_plan(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """``PROOF(m, D[n])`` of RFC 9162 §2.1.4.1 as ranges ``[begin, end)``, in proof order.

    ``m == n`` gives ``[]``.  Otherwise ``0 < m < n`` is required (a proof from the empty
    tree is not defined), else IndexOutOfRangeError.

    The proof is the largest complete subtree ending at ``m`` (left out when that is the
    whole old tree, i.e. ``m`` is a power of two: ``SUBPROOF(m, D[m], true) = {}``), then the
    siblings on that subtree's path to the new root.
    """
    if old_size == new_size and old_size >= 0:
        return []
    if old_size <= 0 or old_size > new_size:
        raise IndexOutOfRangeError(
            f"no consistency proof from tree size {old_size} to tree size {new_size}: "
            "need 0 < old size <= new size (a proof from the empty tree is not defined)",
            index=old_size,
            size=new_size,
        )
    level, index = _consistency_start(old_size)
    ranges = _sibling_ranges(index, level, new_size)
    if index:
        ranges.insert(0, (old_size - (1 << level), old_size))
    return ranges


# ------------------------------------------------------------ building proofs


class HashReader(Protocol):
    """Where stored node hashes come from (a tile store, memory)."""

    def read_node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        """Return exactly one 32-byte hash per node asked for, in order, or raise.

        Every node asked for is complete in the tree the reader serves.
        """
        ...


def _read_checked(reader: HashReader, nodes: Sequence[NodeId]) -> list[bytes]:
    hashes = reader.read_node_hashes(nodes)
    if len(hashes) != len(nodes):
        raise CorruptLedgerError(
            f"hash reader returned {len(hashes)} hashes for {len(nodes)} nodes"
        )
    for node, h in zip(nodes, hashes):
        if len(h) != HASH_SIZE:
            raise CorruptLedgerError(
                f"hash reader returned {len(h)} bytes for node (level {node[0]}, index {node[1]}), want {HASH_SIZE}",
                index=node[1] << node[0],  # the first leaf under the node
            )
    return hashes


def _hash_ranges(ranges: Sequence[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """MTH of each range, with a single batched reader call for all their nodes."""
    per_range = [subtree_nodes(begin, end) for begin, end in ranges]
    nodes = [node for group in per_range for node in group]
    hashes = _read_checked(reader, nodes) if nodes else []
    out: list[bytes] = []
    pos = 0
    for group in per_range:
        out.append(fold_subtrees(hashes[pos : pos + len(group)]))
        pos += len(group)
    return out


def range_hash(begin: int, end: int, reader: HashReader) -> bytes:
    """``MTH(D[begin:end])`` from stored nodes (see :func:`fold_subtrees` for which ranges
    this is defined on); :data:`EMPTY_ROOT` for an empty range."""
    nodes = subtree_nodes(begin, end)
    if not nodes:
        return EMPTY_ROOT
    return fold_subtrees(_read_checked(reader, nodes))


def tree_root(size: int, reader: HashReader) -> bytes:
    """``MTH(D[0:size])`` (RFC 9162 §2.1.1); :data:`EMPTY_ROOT` for size 0."""
    if size < 0:
        raise ValueError(f"invalid tree size {size}")
    return range_hash(0, size, reader)


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """The audit path ``PATH(index, D[size])`` (RFC 9162 §2.1.3.1), leaf sibling first.

    Raises IndexOutOfRangeError unless ``0 <= index < size``.
    """
    return _hash_ranges(inclusion_proof_plan(index, size), reader)


def consistency_proof(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """``PROOF(old_size, D[new_size])`` (RFC 9162 §2.1.4.1).

    ``[]`` when the sizes are equal; IndexOutOfRangeError unless ``0 < old <= new``.
    """
    return _hash_ranges(consistency_proof_plan(old_size, new_size), reader)


# ---------------------------------------------------------- verifying proofs


def _check_hash(
    h: bytes, what: str, *, index: int | None = None, size: int | None = None, old_size: int | None = None
) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, want {HASH_SIZE}", index=index, size=size, old_size=old_size)


def _path_length(index: int, level: int, size: int) -> int:
    """``len(_sibling_ranges(index, level, size))`` without building the list."""
    count = 0
    last = (size - 1) >> level
    while last:
        if (index & 1) or index < last:
            count += 1
        index >>= 1
        last >>= 1
    return count


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` and the leaf hash ``leaf`` imply for ``(index, size)``
    (RFC 9162 §2.1.3.2).

    The shape (how many hashes, which side each is on) comes from ``(index, size)`` only.
    Raises ProofError if ``index`` is not below ``size``, if the proof has the wrong number
    of hashes, or if a hash is not 32 bytes.
    """
    if index < 0 or index >= size:
        raise ProofError(f"index {index} out of bounds for tree size {size}", index=index, size=size)
    _check_hash(leaf, "leaf hash", index=index, size=size)
    want = _path_length(index, 0, size)
    if len(proof) != want:
        raise ProofError(
            f"proof has {len(proof)} hashes, want {want} for index {index} in tree size {size}",
            index=index,
            size=size,
        )
    acc = leaf
    leaf_index = index
    last = size - 1
    pos = 0
    while last:
        if index & 1:
            sibling = proof[pos]
            _check_hash(sibling, f"proof hash {pos}", index=leaf_index, size=size)
            acc = _sha256(_NODE_PREFIX + sibling + acc).digest()
            pos += 1
        elif index < last:
            sibling = proof[pos]
            _check_hash(sibling, f"proof hash {pos}", index=leaf_index, size=size)
            acc = _sha256(_NODE_PREFIX + acc + sibling).digest()
            pos += 1
        index >>= 1
        last >>= 1
    return acc


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that the leaf hash ``leaf`` is at ``index`` in the tree of ``size`` leaves with
    head ``root`` (RFC 9162 §2.1.3.2).  Returns None; raises ProofError on a malformed proof
    and RootMismatchError when the computed root differs."""
    _check_hash(root, "root", index=index, size=size)
    calculated = root_from_inclusion_proof(leaf, index, size, proof)
    if calculated != root:
        raise RootMismatchError(expected=root, calculated=calculated)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` leaves with head ``new_root`` extends the tree of
    ``old_size`` leaves with head ``old_root`` (RFC 9162 §2.1.4.2).

    * ``old_size == new_size``: the proof must be empty and the roots equal (for size 0
      both must be :data:`EMPTY_ROOT`).
    * ``old_size == 0 < new_size``: always ProofError: a consistency proof from size 0 never
      verifies (the empty tree is a prefix of every tree; there is nothing to prove).
    * ``old_size > new_size`` or a negative size: ProofError.
    * Wrong number of hashes, a hash not 32 bytes: ProofError.
    * A recomputed root differs: RootMismatchError (``what`` says which root).
    """
    _check_hash(old_root, "old root", old_size=old_size, size=new_size)
    _check_hash(new_root, "new root", old_size=old_size, size=new_size)
    if old_size < 0 or new_size < 0:
        raise ProofError(f"invalid tree sizes {old_size} and {new_size}", old_size=old_size, size=new_size)
    if old_size > new_size:
        raise ProofError(
            f"old tree size {old_size} is larger than new tree size {new_size}", old_size=old_size, size=new_size
        )
    if old_size == new_size:
        if proof:
            raise ProofError(
                f"proof has {len(proof)} hashes, want 0 for equal tree sizes {old_size}",
                old_size=old_size,
                size=new_size,
            )
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise RootMismatchError(expected=EMPTY_ROOT, calculated=old_root, what="empty tree root")
        if new_root != old_root:
            raise RootMismatchError(expected=old_root, calculated=new_root, what="root of equal-size trees")
        return
    if old_size == 0:
        raise ProofError(
            f"a consistency proof from size 0 never verifies (asked for 0 -> {new_size})", old_size=0, size=new_size
        )

    level, index = _consistency_start(old_size)
    # SUBPROOF(m, D[m], true) = {}: when the old tree is a complete subtree (m a power of
    # two) the verifier starts from the old root itself, else from the proof's first hash.
    lead = 1 if index else 0
    want = lead + _path_length(index, level, new_size)
    if len(proof) != want:
        raise ProofError(
            f"proof has {len(proof)} hashes, want {want} for tree sizes {old_size} -> {new_size}",
            old_size=old_size,
            size=new_size,
        )
    for pos, h in enumerate(proof):
        _check_hash(h, f"proof hash {pos}", old_size=old_size, size=new_size)

    old_acc = proof[0] if lead else old_root
    new_acc = old_acc
    pos = lead
    last = (new_size - 1) >> level
    while last:
        if index & 1:
            # Left sibling: part of both trees.
            sibling = proof[pos]
            old_acc = _sha256(_NODE_PREFIX + sibling + old_acc).digest()
            new_acc = _sha256(_NODE_PREFIX + sibling + new_acc).digest()
            pos += 1
        elif index < last:
            # Right sibling: leaves beyond the old tree, only in the new one.
            new_acc = _sha256(_NODE_PREFIX + new_acc + proof[pos]).digest()
            pos += 1
        index >>= 1
        last >>= 1
    if old_acc != old_root:
        raise RootMismatchError(expected=old_root, calculated=old_acc, what="old root")
    if new_acc != new_root:
        raise RootMismatchError(expected=new_root, calculated=new_acc, what="new root")


# ------------------------------------------------------------- compact range


class CompactRange:
    """Compact range ``[0, size)``: the roots of the maximal complete subtrees, left to right
    (transparency-dev/merkle compact ranges; one peak per set bit of ``size``).

    Enough state to append leaves and compute the tree head, O(log size) memory.
    """

    __slots__ = ("_peaks", "_size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"invalid tree size {size}")
        want = size.bit_count()
        if len(peaks) != want:
            raise ValueError(f"compact range of size {size} has {want} peaks, got {len(peaks)}")
        for i, p in enumerate(peaks):
            if len(p) != HASH_SIZE:
                raise ValueError(f"peak {i} is {len(p)} bytes, want {HASH_SIZE}")
        self._size = size
        self._peaks: list[bytes] = [bytes(p) for p in peaks]

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        """The hashes of :func:`subtree_nodes` ``(0, size)``, left to right."""
        return tuple(self._peaks)

    def nodes(self) -> list[NodeId]:
        """The node ids of :attr:`peaks`: ``subtree_nodes(0, size)``."""
        return subtree_nodes(0, self._size)

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        """Append one leaf *hash*; return every node that became complete, bottom-up: the
        leaf itself at ``(0, index)``, then each new parent.  Amortised O(1)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, want {HASH_SIZE}")
        index = self._size
        peaks = self._peaks
        done: list[tuple[NodeId, bytes]] = [((0, index), leaf)]
        acc = leaf
        level = 0
        while index & 1:  # a right child: merge with the peak to its left
            acc = _sha256(_NODE_PREFIX + peaks.pop() + acc).digest()
            index >>= 1
            level += 1
            done.append(((level, index), acc))
        peaks.append(acc)
        self._size += 1
        return done

    def append_subtree(self, level: int, root: bytes) -> list[tuple[NodeId, bytes]]:
        """Append a complete subtree of ``2**level`` leaves by its root hash.

        The size must be a multiple of ``2**level`` (the subtree is then the node
        ``(level, size >> level)``).  Returns every node that became complete,
        bottom-up: the subtree's root, then each new parent.  Appending 256 leaves
        this way costs one call instead of 256 (tlog-tiles writers append whole tiles).
        """
        if len(root) != HASH_SIZE:
            raise ValueError(f"subtree hash is {len(root)} bytes, want {HASH_SIZE}")
        if level < 0 or self._size & ((1 << level) - 1):
            raise ValueError(f"a subtree of 2**{level} leaves cannot start at leaf {self._size}")
        leaves = 1 << level
        index = self._size >> level
        peaks = self._peaks
        done: list[tuple[NodeId, bytes]] = [((level, index), root)]
        acc = root
        while index & 1:
            acc = _sha256(_NODE_PREFIX + peaks.pop() + acc).digest()
            index >>= 1
            level += 1
            done.append(((level, index), acc))
        peaks.append(acc)
        self._size += leaves
        return done

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaf hashes, reporting nothing (the fast path for streaming
        verification)."""
        peaks = self._peaks
        size = self._size
        sha = _sha256
        prefix = _NODE_PREFIX
        try:
            for leaf in leaves:
                if len(leaf) != HASH_SIZE:
                    raise ValueError(f"leaf hash {size} is {len(leaf)} bytes, want {HASH_SIZE}")
                acc = leaf
                index = size
                while index & 1:
                    acc = sha(prefix + peaks.pop() + acc).digest()
                    index >>= 1
                peaks.append(acc)
                size += 1
        finally:
            self._size = size

    def root(self) -> bytes:
        """``MTH(D[0:size])``; :data:`EMPTY_ROOT` when empty."""
        return fold_subtrees(self._peaks)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"


# --------------------------------------------------------------- memory tree


class MemoryTree:
    """An in-memory :class:`HashReader` for tests and small trees: built from leaf hashes,
    keeps every complete node (about two hashes per leaf)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, want {HASH_SIZE}")
        levels = self._levels
        index = len(levels[0])
        levels[0].append(leaf)
        level = 0
        while index & 1:
            row = levels[level]
            parent = _sha256(_NODE_PREFIX + row[index - 1] + row[index]).digest()
            level += 1
            index >>= 1
            if level == len(levels):
                levels.append([])
            levels[level].append(parent)

    def read_node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        """The stored hash of each complete node; IndexOutOfRangeError for any other."""
        out: list[bytes] = []
        levels = self._levels
        for level, index in nodes:
            if level < 0 or index < 0 or level >= len(levels) or index >= len(levels[level]):
                raise IndexOutOfRangeError(
                    f"node (level {level}, index {index}) is not complete in tree size {self.size}",
                    index=index,
                    size=self.size,
                )
            out.append(levels[level][index])
        return out

    def root(self, size: int | None = None) -> bytes:
        """``MTH(D[0:size])`` for any ``size`` up to :attr:`size` (default: all leaves)."""
        if size is None:
            size = self.size
        if size < 0 or size > self.size:
            raise IndexOutOfRangeError(
                f"tree size {size} out of bounds for {self.size} leaves", index=size, size=self.size
            )
        return tree_root(size, self)

    def __repr__(self) -> str:
        return f"MemoryTree(size={self.size})"
