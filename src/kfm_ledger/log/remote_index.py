"""The local commit index of an S3 ledger: a derived cache, caught up from new entry bundles.

The index (:class:`~kfm_ledger.index.CommitIndex`, SQLite) lives on the machine, not in the
bucket (:meth:`kfm_ledger.storage.s3.S3Storage.index_location`, under ``~/.cache/kfm/s3/``).
Besides the entries it keeps the compact range (RFC 9162 §2.1.1 peaks) of the rows it holds,
in the same transaction, so that catching up is checked without reading a tile: the rows
of the new bundles extend the stored compact range, and the result must be the signed
root, else nothing of them is trusted.

* A cache ahead of the bucket's signed tree (more rows than the checkpoint has) means the
  checkpoint was rolled back, or the bucket replaced: :class:`~kfm_ledger.errors.CorruptLedgerError`
  (``kfm rebuild`` discards the cache when the change is wanted).
* A cache whose rows do not lead to the signed root is discarded and rebuilt from every
  bundle once; if the bundles do not give the root either, the bucket is corrupt.

An entry's ``offset`` is the row's byte offset in the exported JSONL (``kfm export``), its
``length`` the row's length without the newline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence

from kfm_ledger import schema
from kfm_ledger.core import merkle
from kfm_ledger.errors import CorruptLedgerError, KfmError
from kfm_ledger.index import IndexedEntry, IndexLocation, open_commit_index

__all__ = ["RemoteIndex"]

_TREE_DDL = (
    "CREATE TABLE IF NOT EXISTS s3_tree (id INTEGER PRIMARY KEY CHECK (id = 0), "
    "size INTEGER NOT NULL, peaks BLOB NOT NULL)"
)
#: Rows indexed per transaction while catching up (a crash keeps what was committed).
CHUNK_ROWS = 65536

#: Reads the entries of leaves [start, stop) of the signed tree, in order.
ReadEntries = Callable[[int, int], Iterator[bytes]]


class RemoteIndex:
    """The commit index of one S3 ledger on this machine, with the compact range of its rows."""

    def __init__(self, location: IndexLocation) -> None:
        self.location = location
        self._open()

    def _open(self) -> None:
        def prepare(conn: sqlite3.Connection) -> None:
            conn.execute(_TREE_DDL)

        try:
            self.index = open_commit_index(self.location, prepare)
        except sqlite3.DatabaseError:
            # Derived data that no longer opens: start it again from the bundles.
            self.location.discard()
            self.index = open_commit_index(self.location, prepare)
        self.conn = self.index.connection

    def close(self) -> None:
        self.index.close()

    def discard(self) -> None:
        """Forget everything (``kfm rebuild``): the next catch-up reads every bundle."""
        self.close()
        self.location.discard()
        self._open()

    # -- state -------------------------------------------------------------------------
    def compact_range(self) -> merkle.CompactRange:
        """The compact range of the rows held (empty when the stored state is inconsistent)."""
        # One read transaction (a snapshot): another process may commit between two reads.
        self.conn.execute("BEGIN")
        try:
            row = self.conn.execute("SELECT size, peaks FROM s3_tree WHERE id = 0").fetchone()
            size = self.index.size()
        finally:
            self.conn.execute("COMMIT")
        if row is None or row[0] != size:
            if size:
                self.index.reset()
            return merkle.CompactRange()
        peaks_blob = bytes(row[1])
        peaks = [peaks_blob[i : i + merkle.HASH_SIZE] for i in range(0, len(peaks_blob), merkle.HASH_SIZE)]
        try:
            return merkle.CompactRange(size, peaks)
        except ValueError:
            self.index.reset()
            return merkle.CompactRange()

    def size(self) -> int:
        return self.compact_range().size

    # -- catching up -----------------------------------------------------------------------
    def catch_up(self, size: int, root: bytes, read_entries: ReadEntries, *, where: str) -> int:
        """Bring the index to the signed tree (``size``, ``root``); returns the rows added.

        ``read_entries(start, stop)`` yields the stored entries.  Checked as the module says;
        CorruptLedgerError (naming ``where``) when the signed tree cannot be reached.
        """
        for _attempt in range(5):
            try:
                return self._catch_up(size, root, read_entries, where)
            except (sqlite3.IntegrityError, _Moved):
                continue  # another process on this machine indexed the same rows first: look again
        return self._catch_up(size, root, read_entries, where)

    def _catch_up(self, size: int, root: bytes, read_entries: ReadEntries, where: str) -> int:
        crange = self.compact_range()
        if crange.size > size:
            raise CorruptLedgerError(
                f"{where}: the signed checkpoint is at tree size {size}, but this machine has already seen "
                f"{crange.size} rows of this ledger: the checkpoint was rolled back (or the ledger replaced); "
                "run `kfm verify`; `kfm rebuild` forgets what this machine saw",
                key="checkpoint",
                index=size,
            )
        if crange.size == size and (size == 0 or crange.root() == root):
            return 0
        def bad_bundles() -> CorruptLedgerError:
            return CorruptLedgerError(
                f"{where}: the entry bundles do not give the signed root at tree size {size}: "
                "a bundle was changed; run `kfm verify`",
                key="tile/entries/",
                index=size - 1,
            )

        try:
            return self._extend(crange, size, root, read_entries, where)
        except _Mismatch:
            if crange.size == 0:
                raise bad_bundles() from None
        # The cached rows lead elsewhere: derived data, start again from every bundle.
        self.index.reset()
        self.conn.execute("DELETE FROM s3_tree")
        try:
            return self._extend(merkle.CompactRange(), size, root, read_entries, where)
        except _Mismatch:
            raise bad_bundles() from None

    def _extend(
        self, crange: merkle.CompactRange, size: int, root: bytes, read_entries: ReadEntries, where: str
    ) -> int:
        start = crange.size
        offset = self.index.end_offset()
        batch: list[IndexedEntry] = []
        leaf = start
        chunk_start = start
        for entry in read_entries(start, size):
            try:
                row = schema.decode_row(entry)
            except KfmError as exc:
                raise CorruptLedgerError(
                    f"{where}: the row at index {leaf} in the entry bundles is not a valid row ({exc})",
                    key="tile/entries/",
                    index=leaf,
                ) from None
            crange.append(merkle.leaf_hash(entry))
            batch.append(IndexedEntry(leaf, row.lakefs_commit, offset, len(entry), row.created_at))
            offset += len(entry) + 1
            leaf += 1
            if len(batch) >= CHUNK_ROWS and leaf < size:
                self._commit(batch, crange, offset, expect=chunk_start)
                batch, chunk_start = [], leaf
        if leaf != size:
            raise CorruptLedgerError(
                f"{where}: the entry bundles hold {leaf} rows; the signed tree has {size}", key="tile/entries/",
                index=leaf,
            )
        if crange.root() != root:
            raise _Mismatch
        self._commit(batch, crange, offset, expect=chunk_start)
        return size - start

    def add_rows(self, start: int, entries: Sequence[bytes], rows: Sequence[schema.Row],
                 crange_after: merkle.CompactRange) -> bool:
        """Index rows this process appended (already checked: it computed the signed root).

        Returns False, adding nothing, when the index is not at ``start`` (another process
        moved it; a later catch-up brings it up to date).
        """
        if self.compact_range().size != start:
            return False
        offset = self.index.end_offset()
        batch = []
        for i, (entry, row) in enumerate(zip(entries, rows)):
            batch.append(IndexedEntry(start + i, row.lakefs_commit, offset, len(entry), row.created_at))
            offset += len(entry) + 1
        try:
            self._commit(batch, crange_after, offset, expect=start)
        except (sqlite3.IntegrityError, _Moved):
            return False
        return True

    def _commit(self, batch: Sequence[IndexedEntry], crange: merkle.CompactRange, end_offset: int,
                expect: int | None = None) -> None:
        idx = self.index
        idx.begin()
        try:
            if expect is not None and idx.size() != expect:
                raise _Moved
            if idx.insert_new(batch) != len(batch):
                raise sqlite3.IntegrityError("a commit is indexed twice")
            self.conn.execute(
                "INSERT INTO s3_tree(id, size, peaks) VALUES (0, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET size = excluded.size, peaks = excluded.peaks",
                (crange.size, b"".join(crange.peaks)),
            )
            idx.commit(size=crange.size, end_offset=end_offset)
        except BaseException:
            idx.rollback_if_open()
            raise


class _Mismatch(Exception):
    """The rows read do not give the signed root."""


class _Moved(Exception):
    """Another process moved the index while this one was about to add rows."""
