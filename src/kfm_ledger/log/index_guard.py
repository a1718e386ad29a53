"""Append's "is this commit stored?" answered from the commit index only after checking it.

The seal (:mod:`kfm_ledger.index_seal`) binds per-bucket keyed sums of the index's
entries to the signed tree (size, root).  Before a dedup decision the writer checks the
seal's MAC against the signed checkpoint and recomputes the sum of every bucket it reads;
when either disagrees the index was changed behind kfm's back (or built without the key:
a reader's catch-up, ``kfm rebuild``, an older version) and is rebuilt from the rows,
after the rows are proven to hash (RFC 9162 §2.1.1) to the signed root.  See
docs/operations.md, "The commit index's seal".
"""

from __future__ import annotations

import hmac
import itertools
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import CorruptLedgerError
from kfm_ledger.index import CommitIndex, Seal
from kfm_ledger.index_seal import BUCKETS, MODULUS, SealTable, add_terms, bucket_of, bucket_sum, seal_key, seal_mac

from .index_sync import catch_up_index
from .layout import INDEX_FILE

if TYPE_CHECKING:
    from .ledger import Ledger

#: Past this many buckets to check, one scan of the whole index instead of a query per bucket.
_SCAN_ALL_BUCKETS = BUCKETS // 16


class IndexChanged(Exception):
    """A bucket's entries do not sum to the sealed value (internal: the caller reseals)."""


def _valid_table(seal: Seal | None, key: bytes, size: int, root: bytes) -> SealTable | None:
    """The sealed table if its MAC checks and it describes the tree (size, root), else None."""
    if seal is None or seal.size != size or seal.root != root:
        return None
    try:
        table = SealTable(seal.sums)
    except ValueError:
        return None
    if not hmac.compare_digest(seal.mac, seal_mac(key, size, root, bytes(table.data))):
        return None
    return table


class SealedIndex:
    """The commit index with its seal checked against the signed tree (size, root)."""

    def __init__(self, idx: CommitIndex, key: bytes, table: SealTable, size: int, root: bytes) -> None:
        self.idx, self.key, self.table, self.size, self.root = idx, key, table, size, root

    def stored(self, commits: Iterable[str]) -> dict[str, int]:
        """Commit -> leaf for those of ``commits`` among the signed rows.

        Every bucket read is summed and compared with the seal first: an answer (found or
        not) only comes from a bucket whose entries are exactly the sealed ones.  Raises
        :class:`IndexChanged` otherwise.
        """
        wanted: dict[int, set[str]] = defaultdict(set)
        for commit in commits:
            wanted[bucket_of(commit)].add(commit)
        found: dict[str, int] = {}
        for bucket, entries in self._entries(wanted.keys()):
            if bucket_sum(self.key, entries) != self.table.get(bucket):
                raise IndexChanged(bucket)
            names = wanted[bucket]
            for leaf, commit, _ in entries:
                if commit in names:
                    found[commit] = leaf
        # An entry for one of them outside its bucket (its bucket column edited) is not in
        # the signed rows' multiset, but its UNIQUE commit would refuse the insert: an edit.
        try:
            listed = self.idx.lookup_many([c for names in wanted.values() for c in names])
        except sqlite3.Error as e:
            raise IndexChanged(str(e)) from None
        if any(leaf < self.size and found.get(commit) != leaf for commit, leaf in listed.items()):
            raise IndexChanged("an entry outside its bucket")
        return found

    def check(self, buckets: Iterable[int]) -> None:
        """Raise :class:`IndexChanged` unless each of ``buckets`` holds exactly the sealed entries
        (among the signed rows: entries a bulk append's open transaction added are above them)."""
        buckets = set(buckets)
        if len(buckets) < _SCAN_ALL_BUCKETS:
            for bucket, entries in self._entries(buckets):
                if bucket_sum(self.key, entries) != self.table.get(bucket):
                    raise IndexChanged(bucket)
            return
        # Most buckets: one scan of the index, the terms summed per bucket column 10,000 entries
        # at a time (C-level maps), then every touched bucket compared.
        sums: dict[int, int] = {}
        try:
            rows = self.idx.bucketed_entries(below=self.size)
            while chunk := list(itertools.islice(rows, 10_000)):
                in_bucket, leaves, commits, created = zip(*chunk)
                add_terms(self.key, sums, leaves, commits, created, in_bucket)
        except (sqlite3.Error, TypeError, ValueError, AttributeError) as e:
            raise IndexChanged(str(e)) from None
        for bucket in buckets:
            if sums.get(bucket, 0) % MODULUS != self.table.get(bucket):
                raise IndexChanged(bucket)

    def _entries(self, buckets: Iterable[int]) -> list[tuple[int, list[tuple[int, str, str]]]]:
        """(bucket, its entries below the sealed size) for each of ``buckets``; an index that
        cannot be read as the schema says (a hostile edit) is :class:`IndexChanged` too."""
        buckets = sorted(buckets)
        try:
            if len(buckets) < _SCAN_ALL_BUCKETS:
                return [(b, self.idx.bucket_entries(b, below=self.size)) for b in buckets]
            grouped: dict[int, list[tuple[int, str, str]]] = {b: [] for b in buckets}
            for bucket, leaf, commit, created_at in self.idx.bucketed_entries(below=self.size):
                if bucket in grouped:
                    grouped[bucket].append((leaf, commit, created_at))
        except (sqlite3.Error, TypeError, ValueError, AttributeError) as e:
            raise IndexChanged(str(e)) from None
        return list(grouped.items())


def check_seal(led: Ledger, idx: CommitIndex, signer: Signer) -> SealedIndex | None:
    """The index with a seal that describes the signed tree, or None (no repair; no lock needed)."""
    key = seal_key(signer)
    if led.size == 0:  # the empty tree: nothing is stored, whatever the index holds
        return SealedIndex(idx, key, SealTable(), 0, led.root)
    try:
        table = _valid_table(idx.seal(), key, led.size, led.root)
    except sqlite3.Error:
        return None
    return None if table is None else SealedIndex(idx, key, table, led.size, led.root)


def sealed_index(led: Ledger, signer: Signer) -> SealedIndex:
    """The index, checked against its seal, or rebuilt from the proven rows and sealed.

    Called under the writer lock, after recovery (so the index holds no entry of an
    unsigned row).  The rebuild reads every row once (one pass to prove them, one to index).
    """
    sealed = check_seal(led, led._raw_index(), signer)
    if sealed is not None:
        return sealed
    return reseal(led, signer)


def reseal(led: Ledger, signer: Signer) -> SealedIndex:
    """Rebuild the index from the rows once they hash to the signed root, and seal it."""
    from .rebuild import _check_rows

    key = seal_key(signer)
    _check_rows(led)  # CorruptLedgerError (nothing touched) if the rows are not the signed ones
    idx = led._raw_index()
    idx.delta = None
    try:
        idx.reset()
    except sqlite3.Error:  # a schema edited past what reset() drops: start from an empty file
        idx.close()
        led._index = None
        led.index_location.discard()
        idx = led._raw_index()
    catch_up_index(led, limit=led.size)
    if idx.size() != led.size:
        raise CorruptLedgerError(
            f"the commit index holds {idx.size()} rows after a rebuild, the signed tree {led.size}",
            key=INDEX_FILE,
        )
    table = SealTable()
    table.add(key, idx.seal_entries(below=led.size))
    _store(idx, key, table, led.size, led.root)
    return SealedIndex(idx, key, table, led.size, led.root)


def _store(idx: CommitIndex, key: bytes, table: SealTable, size: int, root: bytes) -> None:
    data = bytes(table.data)
    idx.write_seal(Seal(size, root, data, seal_mac(key, size, root, data)))


def seal_appended(led: Ledger, sealed: SealedIndex, new_size: int) -> None:
    """After an append is signed and published: add its entries' terms (collected while
    they were inserted, :meth:`CommitIndex.track`) and seal the table to the new signed tree.

    A failure here is not the append's: the next writer finds no valid seal and reseals.
    """
    idx = sealed.idx
    delta, idx.delta = idx.delta, None
    if delta is None or led.size != new_size:
        return
    table = sealed.table
    for bucket, value in delta.sums.items():
        table.put(bucket, table.get(bucket) + value)
    try:
        _store(idx, sealed.key, table, led.size, led.root)
    except sqlite3.Error:
        pass
