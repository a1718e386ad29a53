"""The ledger: open (with crash recovery), append, look up, prove.

Layout (keys in a :class:`~kfm_ledger.storage.Storage`; a local directory by
default)::

    rollback-index.jsonl     the authoritative rows, one canonical JSON line each
    checkpoint               the latest signed checkpoint (c2sp.org/tlog-checkpoint)
    checkpoints/<size>       every checkpoint the log ever signed, kept forever
    tile/<L>/<N>[.p/<W>]     hash tiles (c2sp.org/tlog-tiles), derived data
    log.vkey                 the log's verifier key (Go sumdb/note text format)
    log.key                  the log's signing key, mode 0600 (unless kept elsewhere)
    index.sqlite             commit -> leaf index, derived data

    pending-append           present only while an append is in progress (see below)

An append is all or nothing.  Its steps, each with what a crash after it leaves
(the same comments stand at each step in :meth:`Ledger._commit_batch`):

1. the pending-append record (old/new size and JSONL length), written atomically;
2. the rows appended to the JSONL and fsync'd;
3. the commit index updated;
4. the tiles for the new leaves written (immutable objects);
5. the new checkpoint signed and kept as ``checkpoints/<size>`` (5a: the point
   of no return), then ``checkpoint`` replaced atomically (5b): only now does
   append report success;
6. the record removed; 7. partial tiles that full tiles replace deleted.

**Recovery rule** (:meth:`Ledger._recover_locked`, run by every writer before
it writes and by ``kfm recover``; it never signs): with a record that matches
the signed tree, roll forward if ``checkpoints/<new size>`` exists and the
written tiles give its root, else roll back (cut the JSONL to where the batch
began, drop its index entries and tiles).  With no record, the JSONL must end
exactly after the last signed row; otherwise the writer stops and nothing is
cut.  docs/operations.md has the full table.
"""

from __future__ import annotations

import array
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.note import Signer, Verifier
from kfm_ledger.core.signed_checkpoint import (
    SignedCheckpoint,
    open_checkpoint,
    parse_unverified,
    sign_checkpoint,
)
from kfm_ledger.core.tile_cache import TileCache
from kfm_ledger.core.tlogproof import TlogProof
from kfm_ledger.log.checkpoint_chain import previous_signed_size, previous_size_line
from kfm_ledger.log.expansions import ExpansionStore, expansion_record

from .errors import (
    AmbiguousCommitError,
    CommitNotFoundError,
    CorruptLedgerError,
    IndexOutOfRangeError,
    InputRejected,
    KeyFormatError,
    KfmError,
    LedgerExistsError,
    NotALedgerError,
    ObjectNotFoundError,
    RowProblem,
    SchemaError,
    StorageError,
)
from .index import CommitIndex, IndexedEntry
from .storage import LocalStorage, Storage

JSONL_KEY = "rollback-index.jsonl"
CHECKPOINT_KEY = "checkpoint"
CHECKPOINTS_PREFIX = "checkpoints/"
VKEY_KEY = "log.vkey"
SKEY_KEY = "log.key"
MIRROR_KEY = "rollback-index.parquet"
PENDING_KEY = "pending-append"
#: Derived data: rows 1..8 of every full level-0 tile's expansion and a checksum, record
#: i at byte i * EXPANSION_BYTES, so a proof's first use of a tile reads 8 KB
#: instead of hashing 255 nodes.  Checked on use; rebuilt by `kfm rebuild`.
EXPANSIONS_KEY = "tile-expansions.bin"
#: A bulk append whose input has at least one row per this many bytes for every row
#: already in the ledger builds the UNIQUE commit index once, after all its inserts.
DEFER_UNIQUE_BYTES_PER_ROW = 1024
#: From this many rows on, an append writes its tiles while it writes the rows.
OVERLAP_TILES_AT = 65536
#: Expanded tiles a Ledger keeps (TileCache): about 16 KiB each; 4,096 hold every
#: tile of a 1M-row log (3,924), about 61 MiB once every level-0 tile has been proven.
TILE_CACHE_TILES = 4096


def open_storage(location: str | os.PathLike[str] | Storage) -> Storage:
    """A Storage for a directory path (or the Storage itself)."""
    if isinstance(location, (str, os.PathLike)):
        return LocalStorage(location)
    return location


def read_text_key(data: bytes, what: str) -> str:
    """The single key line of a key file (Go's sumdb/note text format)."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyFormatError(f"{what}: not UTF-8 text") from None
    if not text or "\n" in text:
        raise KeyFormatError(f"{what}: expected exactly one key line")
    return text


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows [first_index, first_index + count) under ``checkpoint``."""

    first_index: int
    count: int
    checkpoint: SignedCheckpoint
    recovered: int = 0  #: rows of an interrupted, already-signed append published first


@dataclass(frozen=True)
class PendingAppend:
    """The record an append writes before its first row: where its batch begins and ends."""

    old_size: int
    old_end: int  #: JSONL byte length before the batch (the signed end)
    new_size: int
    new_end: int  #: JSONL byte length after the batch

    def to_json(self) -> bytes:
        return json.dumps(
            {"old_size": self.old_size, "old_end": self.old_end, "new_size": self.new_size, "new_end": self.new_end}
        ).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> PendingAppend:
        obj = json.loads(data)
        values = [obj[k] for k in ("old_size", "old_end", "new_size", "new_end")]
        if not all(type(v) is int and v >= 0 for v in values):
            raise ValueError("sizes and offsets must be non-negative integers")
        p = cls(*values)
        if not (p.old_size < p.new_size and p.old_end < p.new_end):
            raise ValueError("the batch must add rows and bytes")
        return p


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery found and did."""

    bytes_rolled_back: int  #: bytes of an unsigned append removed from the JSONL
    rows_rolled_forward: int  #: rows of an already-signed append whose checkpoint was published
    size: int
    #: temporary files that interrupted writes left behind, removed
    temporaries_removed: tuple[str, ...] = ()


def split_lines(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Split a byte stream into lines; yields (line without '\\n', complete?)."""
    rest = b""
    for chunk in chunks:
        if rest:
            chunk = rest + chunk
        parts = chunk.split(b"\n")
        rest = parts.pop()
        for p in parts:
            yield p, True
    if rest:
        yield rest, False


class Ledger:
    """A Rollback Registry Index ledger.

    Open one with :meth:`open` (read side: the tree as of the latest signed
    checkpoint, whose signature is checked on open) or create one with
    :meth:`init`.  Writing methods take the log's :class:`~kfm_ledger.core.note.Signer`.
    """

    def __init__(self, storage: Storage, verifier: Verifier, signed: SignedCheckpoint) -> None:
        self.storage = storage
        self.verifier = verifier
        self._signed = signed
        self._log = storage.append_log(JSONL_KEY)
        self._index: CommitIndex | None = None
        self._lock_depth = 0
        self._expansions = ExpansionStore(storage, EXPANSIONS_KEY)
        self._expansions_trusted = True  # False once a stored expansion gave a proof that failed
        #: (size, root, compact-range peaks, partial-tile hashes per level) of the last tiles written
        self._right_edge: tuple[int, bytes, tuple[bytes, ...], dict[int, tuple[bytes, ...]]] | None = None
        # Expanded tiles, shared by every hash_reader of this Ledger (tiles of a signed
        # size never change, so entries stay valid as the log grows; cleared on rebuild).
        self._tile_cache = TileCache(max_tiles=TILE_CACHE_TILES)
        self._checkpoints: dict[int, SignedCheckpoint] = {}  # verified stored checkpoints by size
        self._signed_in_this_call = False  # set by _integrate once checkpoints/<new size> is written

    # ------------------------------------------------------------ opening
    @classmethod
    def init(
        cls,
        location: str | os.PathLike[str] | Storage,
        *,
        origin: str,
        signer: Signer | None = None,
        store_key: bool = True,
    ) -> Ledger:
        """Create an empty ledger: an empty JSONL, ``log.vkey``, the signed size-0 checkpoint.

        Without ``signer`` a new Ed25519 key named ``origin`` is generated and
        saved as ``log.key`` (mode 0600).  With one, its name must be ``origin``
        and it is saved only if ``store_key`` is true.
        """
        storage = open_storage(location)
        if storage.exists(CHECKPOINT_KEY):
            raise LedgerExistsError(f"a ledger already exists in {storage.describe()}")
        log = storage.append_log(JSONL_KEY)
        try:
            if log.size():
                raise LedgerExistsError(
                    f"{JSONL_KEY} in {storage.describe()} already holds rows but there is no checkpoint; "
                    "refusing to initialise over them"
                )
            if signer is None and storage.exists(SKEY_KEY):
                # An init that crashed before its checkpoint: finish it with the key it made.
                signer = load_signer(storage.read(SKEY_KEY))
                store_key = False
            generated = signer is None
            if signer is None:
                signer = Signer.generate(origin)
            if signer.name != origin:
                raise KeyFormatError(
                    f"the signing key is named {signer.name!r} but the origin is {origin!r}: "
                    "a checkpoint's key name must equal its origin (c2sp.org/tlog-checkpoint)"
                )
            verifier = signer.verifier()
            # Crash order: key, vkey, empty JSONL, checkpoints/0, and `checkpoint` last:
            # until it exists the directory is not a ledger and init can be run again.
            if generated or store_key:
                storage.write_private(SKEY_KEY, (signer.private_key_text() + "\n").encode())
            storage.write_atomic(VKEY_KEY, (verifier.vkey_text() + "\n").encode())
            log.sync()
        finally:
            log.close()
        note = sign_checkpoint(Checkpoint(origin=origin, size=0, root=merkle.EMPTY_ROOT), signer)
        storage.write_once(CHECKPOINTS_PREFIX + "0", note)
        storage.write_atomic(CHECKPOINT_KEY, note)
        return cls.open(storage)

    @classmethod
    def open(
        cls, location: str | os.PathLike[str] | Storage, *, vkey: str | None = None
    ) -> Ledger:
        """Open a ledger; its latest checkpoint must verify with ``vkey`` (default: ``log.vkey``)."""
        storage = open_storage(location)
        try:
            note = storage.read(CHECKPOINT_KEY)
        except ObjectNotFoundError:
            raise NotALedgerError(
                f"no ledger in {storage.describe()} (no 'checkpoint'); create one with `kfm init --origin ORIGIN`"
            ) from None
        if vkey is None:
            try:
                vkey = read_text_key(storage.read(VKEY_KEY), VKEY_KEY)
            except ObjectNotFoundError:
                raise NotALedgerError(f"no {VKEY_KEY} in {storage.describe()}; pass --vkey") from None
        verifier = Verifier.from_vkey(vkey)
        signed = open_checkpoint(note, [verifier])
        return cls(storage, verifier, signed)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        self._expansions.close()
        self._log.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------- properties
    @property
    def checkpoint(self) -> SignedCheckpoint:
        """The latest signed checkpoint (verified when the ledger was opened)."""
        return self._signed

    @property
    def origin(self) -> str:
        return self._signed.checkpoint.origin

    @property
    def size(self) -> int:
        """The signed tree size: rows 0 .. size-1 are in the ledger."""
        return self._signed.checkpoint.size

    @property
    def root(self) -> bytes:
        return self._signed.checkpoint.root

    @property
    def jsonl_path(self) -> str | None:
        """The JSONL's local path when the storage has one (for bulk readers)."""
        return self.storage.local_path(JSONL_KEY)

    # ------------------------------------------------------------- index
    @property
    def index(self) -> CommitIndex:
        """The commit index, caught up with the signed rows.

        The index is derived data: when it is behind (a fresh checkout, a crash)
        or unreadable, it is rebuilt from the JSONL under the writer lock, so
        two readers never rebuild it at once.
        """
        idx = self._raw_index()
        if idx.size() < self.size:
            with self._writer_lock(wait=60.0):
                idx = self._raw_index()
                if idx.size() < self.size:
                    self._catch_up_index(limit=self.size)
        return idx

    def stored_index(self) -> CommitIndex | None:
        """The commit index as stored (possibly behind), or None if it does not open; no repair."""
        if self._index is not None:
            return self._index
        try:
            self._index = CommitIndex(self.storage.open_index_db())
        except sqlite3.DatabaseError:
            return None
        return self._index

    def pending_append(self) -> PendingAppend | None:
        """The record of an interrupted append, if there is one (see docs/operations.md)."""
        return self._read_pending()

    def _raw_index(self) -> CommitIndex:
        if self._index is None:
            try:
                self._index = CommitIndex(self.storage.open_index_db())
            except sqlite3.DatabaseError:
                # Derived data that no longer opens: start it again from the JSONL.
                with self._writer_lock(wait=60.0):
                    self.storage.discard_index_db()
                    self._index = CommitIndex(self.storage.open_index_db())
        return self._index

    @contextlib.contextmanager
    def _writer_lock(self, *, wait: float) -> Iterator[None]:
        """The storage's writer lock; re-entrant within this Ledger object."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with self.storage.lock(wait=wait):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    def _catch_up_index(self, *, limit: int | None) -> tuple[int, int, int]:
        """Index the complete lines after the index's high-water mark.

        Returns (rows indexed, byte offset after the last complete line, torn bytes after it).
        Stops after ``limit`` rows in total when given (readers index only signed rows).
        Every line is validated as new input is (schema, canonical bytes, one row per
        commit, created_at monotonic); a failure raises :class:`CorruptLedgerError`.
        """
        idx = self._raw_index()
        if idx.end_offset() > self._log.size():
            # The JSONL is shorter than what was indexed: not ours to guess why.
            idx.reset()
        size, offset = idx.size(), idx.end_offset()
        last_created = None
        if size:
            prev = idx.at(size - 1)
            if prev is not None:
                last_created = schema.parse_created_at(prev.created_at)
        batch: list[IndexedEntry] = []
        seen: dict[str, int] = {}
        added = 0
        torn = 0

        def flush() -> None:
            nonlocal batch
            if batch:
                found = idx.lookup_many([e.lakefs_commit for e in batch])
                if found:
                    commit, leaf = next(iter(found.items()))
                    line_no = seen[commit] + 1
                    raise CorruptLedgerError(
                        f"{JSONL_KEY} line {line_no}: lakefs_commit {commit!r} already appears "
                        f"at line {leaf + 1} (one row per lakeFS commit)"
                    )
                idx.add(batch, size=batch[-1].leaf + 1, end_offset=batch[-1].offset + batch[-1].length + 1)
                batch = []
                seen.clear()

        for line, complete in split_lines(self._log.iter_chunks(offset)):
            if not complete:
                torn = len(line)
                break
            if limit is not None and size >= limit:
                break
            try:
                row = schema.decode_canonical_line(line)
            except SchemaError as e:
                raise CorruptLedgerError(f"{JSONL_KEY} line {size + 1}: {e}") from None
            created = schema.created_at_datetime(row)
            if last_created is not None and created < last_created:
                raise CorruptLedgerError(
                    f"{JSONL_KEY} line {size + 1}: created_at {row.created_at} is earlier than the previous row's"
                )
            if row.lakefs_commit in seen:
                raise CorruptLedgerError(
                    f"{JSONL_KEY} line {size + 1}: lakefs_commit {row.lakefs_commit!r} already appears "
                    f"at line {seen[row.lakefs_commit] + 1}"
                )
            last_created = created
            seen[row.lakefs_commit] = size
            batch.append(IndexedEntry(size, row.lakefs_commit, offset, len(line), row.created_at))
            offset += len(line) + 1
            size += 1
            added += 1
            if len(batch) >= 10_000:
                flush()
        flush()
        return added, offset, torn

    # ----------------------------------------------------------- lookups
    def _entry_at(self, e: IndexedEntry) -> schema.Entry:
        line = self._log.read(e.offset, e.length)
        return schema.Entry(e.leaf, line, schema.decode_row(line))

    def entry(self, index: int) -> schema.Entry:
        """The row at leaf ``index`` (0-based) of the signed tree."""
        if not 0 <= index < self.size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {self.size}")
        e = self.index.at(index)
        if e is None:
            raise CorruptLedgerError(f"commit index has no entry for leaf {index}; run `kfm rebuild`")
        return self._entry_at(e)

    def find(self, commit_prefix: str, *, limit: int = 20) -> list[IndexedEntry]:
        """Signed rows whose lakeFS commit is ``commit_prefix`` or starts with it."""
        exact = self.index.lookup(commit_prefix)
        if exact is not None and exact.leaf < self.size:
            return [exact]
        return self.index.find_prefix(commit_prefix, below=self.size, limit=limit)

    def get(self, commit: str) -> schema.Entry:
        """The row for a lakeFS commit id, or a unique prefix of one (as in git)."""
        if not commit:
            raise CommitNotFoundError(commit)
        found = self.find(commit)
        if not found:
            raise CommitNotFoundError(commit)
        if len(found) > 1:
            raise AmbiguousCommitError(commit, [f"{e.lakefs_commit} (index {e.leaf})" for e in found])
        return self._entry_at(found[0])

    def iter_lines(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Stream the stored lines of leaves [start, stop) (default: the whole signed tree)."""
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return
        offset = 0
        if start:
            e = self.index.at(start)
            if e is None:
                raise CorruptLedgerError(f"commit index has no entry for leaf {start}")
            offset = e.offset
        n = start
        for line, complete in split_lines(self._log.iter_chunks(offset)):
            if n >= stop or not complete:
                break
            yield line
            n += 1
        if n < stop:
            raise CorruptLedgerError(f"{JSONL_KEY} ends after {n} rows; the signed tree has {self.size}")

    def iter_entries(self, start: int = 0, stop: int | None = None) -> Iterator[schema.Entry]:
        """Stream (index, line, row) for leaves [start, stop)."""
        for i, line in enumerate(self.iter_lines(start, stop), start):
            yield schema.Entry(i, line, schema.decode_row(line))

    # ------------------------------------------------------------ proofs
    def read_tile(self, level: int, index: int, width: int) -> bytes:
        """Bytes of tile (level, index) holding at least ``width`` hashes.

        Tries the exact partial tile, then the full tile, then the widest
        partial (c2sp.org/tlog-tiles: a full tile or a wider partial tile
        starts with the same hashes).
        """
        full = tiles.tile_path(level, index)
        keys = [tiles.tile_path(level, index, width)] if width < tiles.TILE_WIDTH else []
        keys.append(full)
        for key in keys:
            try:
                return self.storage.read(key)
            except ObjectNotFoundError:
                continue
        wider = []
        for key in self.storage.list(full + ".p/"):
            try:
                w = int(key.rsplit("/", 1)[1])
            except ValueError:
                continue
            if w >= width:
                wider.append((w, key))
        if wider:
            return self.storage.read(max(wider)[1])
        raise CorruptLedgerError(
            f"missing tile {tiles.tile_path(level, index, width)} (needed for width {width}); "
            "run `kfm rebuild` to recreate tiles from the JSONL"
        )

    def hash_reader(self, size: int | None = None, *, stored_expansions: bool = True) -> tiles.TileHashReader:
        """A merkle.HashReader over the stored tiles for a tree of ``size`` leaves.

        With ``stored_expansions`` a full level-0 tile's inner nodes may come from
        :data:`EXPANSIONS_KEY` (derived data; each record is checksummed over its tile and
        root-checked against the level-1 tile) instead of being hashed.
        """
        return tiles.TileHashReader(
            self.size if size is None else size,
            self.read_tile,
            cache=self._tile_cache,
            stored_expansion=self._expansions.levels if stored_expansions and self._expansions_trusted else None,
        )

    def read_expansion_record(self, tile_index: int) -> bytes | None:
        """The stored expansion record of full level-0 tile ``tile_index`` (derived data), if any."""
        return self._expansions.read(tile_index)

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise IndexOutOfRangeError(f"tree size {size} is beyond the signed tree size {self.size}")
        return size

    def checkpoint_sizes(self) -> list[int]:
        """Every tree size the log has signed a checkpoint for, ascending."""
        sizes = []
        for key in self.storage.list(CHECKPOINTS_PREFIX):
            name = key[len(CHECKPOINTS_PREFIX) :]
            if name.isdigit() and str(int(name)) == name:
                sizes.append(int(name))
        return sorted(s for s in sizes if s <= self.size)

    def stored_checkpoint(self, size: int) -> SignedCheckpoint:
        """The signed checkpoint the log issued for ``size`` (verified)."""
        if size == self.size:
            return self._signed
        if size in self._checkpoints:
            return self._checkpoints[size]
        try:
            note = self.storage.read(f"{CHECKPOINTS_PREFIX}{size}")
        except ObjectNotFoundError:
            near = self.checkpoint_sizes()
            successor = next((s for s in near if s > size), None)
            named = False
            if successor is not None and 0 <= size < self.size:
                with contextlib.suppress(KfmError):
                    named = previous_signed_size(self.stored_checkpoint(successor).checkpoint) == size
            if named:
                raise CorruptLedgerError(
                    f"the log signed a checkpoint for tree size {size} (the one for size {successor} names "
                    f"it) but {CHECKPOINTS_PREFIX}{size} is missing: restore it from a copy; run `kfm verify`"
                ) from None
            hint = ", ".join(str(s) for s in near[-10:])
            raise IndexOutOfRangeError(
                f"the log never signed a checkpoint for tree size {size}; signed sizes include: {hint}"
            ) from None
        signed = open_checkpoint(note, [self.verifier], origin=self.origin)
        self._checkpoints[size] = signed  # checkpoints/<size> is written once: safe to keep
        return signed

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3 audit path for leaf ``index`` in the tree of ``size`` (default: signed size)."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {size}")
        reader = self.hash_reader(size)
        path = merkle.inclusion_proof(index, size, reader)
        root = self._signed_root_of(size) if self._expansions_trusted else None
        if root is not None:
            # Inner nodes may have come from stored expansion records: check the path (the
            # leaf hash is a level-0 tile hash, never from a record) before answering.
            try:
                (leaf,) = reader.read_node_hashes([(0, index)])
                merkle.verify_inclusion(leaf, index, size, path, root)
            except KfmError:
                self._distrust_expansions()
                return self.inclusion_proof(index, size)
        return path

    def _signed_root_of(self, size: int) -> bytes | None:
        """The root the log signed for ``size``, when it keeps that checkpoint (signature not
        re-checked: for checking our own answers, not for deciding what to trust)."""
        if size == self.size:
            return self.root
        if size in self._checkpoints:
            return self._checkpoints[size].checkpoint.root
        try:
            return parse_unverified(self.storage.read(f"{CHECKPOINTS_PREFIX}{size}")).root
        except KfmError:
            return None

    def _distrust_expansions(self) -> None:
        """A stored expansion record gave a wrong answer: use the tiles alone from now on."""
        self._expansions_trusted = False
        self._tile_cache.clear()  # it may hold levels that came from records

    def consistency_proof(
        self, old_size: int, new_size: int | None = None, *, stored_expansions: bool = True
    ) -> list[bytes]:
        """RFC 9162 §2.1.4 consistency proof from ``old_size`` to ``new_size`` (default: signed size).

        ``stored_expansions=False`` builds it from the tiles alone (what `kfm verify` does).
        """
        new_size = self._check_size(new_size)
        use = stored_expansions and self._expansions_trusted
        reader = self.hash_reader(new_size, stored_expansions=stored_expansions)
        proof = merkle.consistency_proof(old_size, new_size, reader)
        if use and 0 < old_size < new_size:
            old_root, new_root = self._signed_root_of(old_size), self._signed_root_of(new_size)
            if old_root is not None and new_root is not None:
                # Checked against the two signed tree heads (records may have given inner nodes).
                try:
                    merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
                except KfmError:
                    self._distrust_expansions()
                    return self.consistency_proof(old_size, new_size, stored_expansions=False)
        return proof

    def tlog_proof(self, index: int, size: int | None = None) -> TlogProof:
        """A c2sp.org/tlog-proof for leaf ``index`` against the checkpoint signed at ``size``.

        The proof is checked against that checkpoint before it is returned, so
        a corrupt tile is caught here, not by the client.
        """
        signed = self.stored_checkpoint(self._check_size(size))
        size = signed.checkpoint.size
        if not 0 <= index < size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {size}")
        path = merkle.inclusion_proof(index, size, self.hash_reader(size))
        # The stored line's bytes are the leaf (no need to decode the row: the proof check
        # below catches any change to them).
        located = self.index.at(index)
        if located is None:
            raise CorruptLedgerError(f"commit index has no entry for leaf {index}; run `kfm rebuild`")
        leaf = merkle.leaf_hash(self._log.read(located.offset, located.length))
        try:
            merkle.verify_inclusion(leaf, index, size, path, signed.checkpoint.root)
        except Exception as e:
            self._tile_cache.clear()  # re-read the tiles next time (they may be repaired)
            if self._expansions_trusted:
                # Perhaps the derived expansion records are wrong: answer from the tiles alone.
                self._distrust_expansions()
                return self.tlog_proof(index, size)
            raise CorruptLedgerError(
                f"stored tiles give an inclusion proof for index {index} that does not verify "
                f"against the checkpoint at size {size} ({e}); run `kfm verify`"
            ) from None
        return TlogProof(index=index, hashes=tuple(path), checkpoint=signed.note)

    # ------------------------------------------------------------ writing
    def _check_signer(self, signer: Signer) -> None:
        if signer.verifier().vkey_text() != self.verifier.vkey_text():
            raise KeyFormatError(
                f"the signing key ({signer.name}) does not match the ledger's verifier key "
                f"({self.verifier.vkey_text()})"
            )

    def writer_lock(self, *, wait: float = 10.0) -> contextlib.AbstractContextManager[None]:
        """The ledger's exclusive writer lock (re-entrant within this object)."""
        return self._writer_lock(wait=wait)

    def refresh(self) -> None:
        """Re-read the latest signed checkpoint (another process may have appended)."""
        self._reload_checkpoint()

    def _reload_checkpoint(self) -> None:
        note = self.storage.read(CHECKPOINT_KEY)
        if note != self._signed.note:  # the same bytes were verified already
            self._signed = open_checkpoint(note, [self.verifier], origin=self.origin)

    def recover(self, signer: Signer | None = None, *, wait: float = 10.0) -> RecoveryReport:
        """Finish or undo an interrupted append (takes the writer lock).

        Recovery never signs: it publishes a checkpoint the log already signed,
        or removes an append the log never signed.  ``signer`` is accepted for
        compatibility and, when given, must be the log's key.
        """
        if signer is not None:
            self._check_signer(signer)
        with self._writer_lock(wait=wait):
            report = self._recover_locked()
            # The explicit repair also sweeps every folder for what interrupted writes left.
            swept = self.storage.discard_stale_temporaries([""], recursive=True)
            return dataclasses.replace(
                report, temporaries_removed=tuple(sorted(set(report.temporaries_removed) | set(swept)))
            )

    def _read_pending(self) -> PendingAppend | None:
        try:
            data = self.storage.read(PENDING_KEY)
        except ObjectNotFoundError:
            return None
        try:
            return PendingAppend.from_json(data)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptLedgerError(f"{PENDING_KEY} is unreadable ({e}); inspect it before writing") from None

    def _signed_end(self) -> int:
        """Byte offset in the JSONL just after the last signed row.

        Found through the commit index, and checked: the line there must end in
        a newline and hash to the signed tree's last leaf (from the tiles), so a
        stale or edited index can never make recovery cut the wrong bytes.
        """
        if self.size == 0:
            return 0
        idx = self._raw_index()
        if idx.size() < self.size:
            self._catch_up_index(limit=self.size)
        e = idx.at(self.size - 1)
        total = self._log.size()
        if e is None or e.offset + e.length + 1 > total:
            raise CorruptLedgerError(
                f"{JSONL_KEY} ({total} bytes) is shorter than the signed rows (size {self.size}): rows were "
                "removed; restore the file from a copy"
            )
        line = self._log.read(e.offset, e.length + 1)
        (last_leaf,) = self.hash_reader().read_node_hashes([(0, self.size - 1)])
        if line[-1:] != b"\n" or merkle.leaf_hash(line[:-1]) != last_leaf:
            raise CorruptLedgerError(
                f"the commit index's position for row {self.size - 1} does not match {JSONL_KEY} or the tiles; "
                "run `kfm verify`, then `kfm rebuild`"
            )
        return e.offset + e.length + 1

    def _recover_locked(self) -> RecoveryReport:
        """The recovery rule (docs/operations.md), run under the writer lock; it never signs.

        With a pending-append record that matches the signed tree: if the log
        already signed the new size (``checkpoints/<new size>``, whose root the
        rows' tiles must give), roll forward and publish it; else roll back: cut
        the JSONL to where the batch began, forget its index entries and delete
        the tiles it may have written.  Without one, the JSONL must end exactly
        after the last signed row; anything else was not written by kfm and
        stops the writer (nothing is cut).
        """
        self._reload_checkpoint()
        pending = self._read_pending()
        swept: tuple[str, ...] = ()
        if pending is not None and self.size == pending.new_size:
            # Step 6 was interrupted: the append had finished.
            swept = self._discard_temporaries_of(pending)
            self.storage.delete(PENDING_KEY)
            pending = None
        end = self._signed_end()
        total = self._log.size()
        if pending is None:
            if total != end:
                raise CorruptLedgerError(
                    f"{JSONL_KEY} has {total - end} byte(s) after the last signed row (index {self.size - 1}, "
                    f"ending at byte {end}) that no interrupted kfm append accounts for: inspect and remove "
                    f"them by hand (`truncate -s {end} {JSONL_KEY}`), then retry"
                )
            self._raw_index().truncate(self.size, end)  # entries of rows that are not signed
            self._prune_partials(self.size)
            return RecoveryReport(bytes_rolled_back=0, rows_rolled_forward=0, size=self.size, temporaries_removed=swept)
        if pending.old_size != self.size or pending.old_end != end:
            raise CorruptLedgerError(
                f"{PENDING_KEY} describes an append from size {pending.old_size} (byte {pending.old_end}) to "
                f"{pending.new_size}, but the signed tree has size {self.size} ending at byte {end}: it does not "
                "belong to this ledger; nothing was changed — inspect it and remove it by hand"
            )
        signed_note = None
        try:
            signed_note = self.storage.read(f"{CHECKPOINTS_PREFIX}{pending.new_size}")
        except ObjectNotFoundError:
            pass
        if signed_note is not None:
            # The log signed the new tree head (step 5a): never sign another tree of
            # that size.  Its rows were fsync'd and tiled before; check, then publish.
            new = open_checkpoint(signed_note, [self.verifier], origin=self.origin)
            if new.checkpoint.size != pending.new_size or total != pending.new_end:
                raise CorruptLedgerError(
                    f"{CHECKPOINTS_PREFIX}{pending.new_size} is signed but {JSONL_KEY} holds {total} bytes, not the "
                    f"{pending.new_end} the interrupted append wrote: inspect the ledger before writing"
                )
            try:
                root = merkle.tree_root(pending.new_size, self.hash_reader(pending.new_size))
            except KfmError:
                root = b""
            if root != new.checkpoint.root:
                raise CorruptLedgerError(
                    f"{CHECKPOINTS_PREFIX}{pending.new_size} is signed but the tiles written for it do not give "
                    "its root: inspect the ledger before writing"
                )
            self.storage.write_atomic(CHECKPOINT_KEY, signed_note)
            self._signed = new
            self._catch_up_index(limit=self.size)
            self.storage.delete(PENDING_KEY)
            self._prune_partials(self.size)
            return RecoveryReport(
                bytes_rolled_back=0,
                rows_rolled_forward=pending.new_size - pending.old_size,
                size=self.size,
                temporaries_removed=self._discard_temporaries_of(pending),
            )
        # Roll back: the append never reported success and the log never signed it.
        cut = max(0, total - pending.old_end)
        self._undo_append(pending)
        return RecoveryReport(
            bytes_rolled_back=cut, rows_rolled_forward=0, size=self.size,
            temporaries_removed=self._discard_temporaries_of(pending),
        )

    def _discard_temporaries_of(self, pending: PendingAppend) -> tuple[str, ...]:
        """Temporary files an interrupted append may have left (in the folders it writes), removed."""
        folders = {"", CHECKPOINTS_PREFIX}
        for level, index, width in tiles.tiles_changed(pending.old_size, pending.new_size):
            folders.add(tiles.tile_path(level, index, width).rsplit("/", 1)[0] + "/")
        try:
            return tuple(sorted(self.storage.discard_stale_temporaries(sorted(folders))))
        except (OSError, KfmError):  # clean-up only
            return ()

    def _undo_append(self, pending: PendingAppend) -> None:
        """Remove every trace of an unsigned append: JSONL tail, index rows, new tiles, the record."""
        if self._log.size() > pending.old_end:
            self._log.truncate(pending.old_end)
        self._raw_index().truncate(pending.old_size, pending.old_end)
        for level, index, width in tiles.tiles_changed(pending.old_size, pending.new_size):
            # Tiles for the new size never exist at the old size (a full tile that
            # became full, the right edge's new width): all of them are the append's.
            self.storage.delete(tiles.tile_path(level, index, width))
        # Their expansion records too (derived; refused on use anyway: their roots differ).
        self._expansions.cut(pending.old_size // tiles.TILE_WIDTH)
        self.storage.delete(PENDING_KEY)

    def _lines_from(self, start: int, stop: int) -> Iterator[bytes]:
        e = self._raw_index().at(start)
        if e is None:
            raise CorruptLedgerError(f"commit index has no entry for leaf {start}")
        n = start
        for line, complete in split_lines(self._log.iter_chunks(e.offset)):
            if n >= stop or not complete:
                break
            yield line
            n += 1

    def append(
        self,
        batch: bytes | Sequence[schema.Row],
        *,
        signer: Signer,
        wait: float = 10.0,
    ) -> AppendResult:
        """Validate a batch and append it under a new signed checkpoint.

        ``batch`` is input bytes (one JSON object, a JSON array or JSONL) or rows.
        Everything is validated before anything is written: on any problem
        :class:`~kfm_ledger.errors.InputRejected` lists every one (line, field,
        why) and the ledger is unchanged.  All or nothing: an append that fails
        or is killed before its checkpoint is signed leaves no row behind.  One
        writer at a time: waits up to ``wait`` seconds for the lock, then raises
        LockedError.
        """
        self._check_signer(signer)
        if isinstance(batch, (bytes, bytearray, memoryview)):
            parsed, problems = schema.check_batch(bytes(batch))
        else:
            parsed, problems = schema.check_rows(batch)
        if problems:
            # Every problem, the ledger's rules for the rows that passed too: read-only
            # (nothing will be written, so no lock or recovery) against the signed rows,
            # and only when the stored index covers them.
            if parsed:
                try:
                    self.refresh()
                    idx = self.stored_index()
                    if idx is not None and idx.size() >= self.size:
                        problems += self._ledger_problems(parsed, idx)
                except KfmError:  # pragma: no cover - the schema problems are reported anyway
                    pass
            problems.sort(key=lambda p: p.line)
            raise InputRejected(problems)
        if not parsed:
            raise InputRejected([RowProblem(1, "$", "no rows in the input")])
        with self._writer_lock(wait=wait):
            recovery = self._recover_locked()
            old_size = self.size
            idx = self._raw_index()
            problems = self._ledger_problems(parsed, idx)
            if problems:
                raise InputRejected(problems)
            new_size = old_size + len(parsed)
            payload = b"".join(line + b"\n" for _, _, line in parsed)

            def index_entries(old_end: int) -> Iterator[IndexedEntry]:
                pos = old_end
                for i, (_, row, line) in enumerate(parsed):
                    yield IndexedEntry(old_size + i, row.lakefs_commit, pos, len(line), row.created_at)
                    pos += len(line) + 1

            return self._commit_batch(
                new_size=new_size,
                payload_size=len(payload),
                write_rows=lambda: self._log.append(payload),
                write_index=lambda old_end: idx.add(
                    index_entries(old_end), size=new_size, end_offset=old_end + len(payload)
                ),
                leaf_hashes=(merkle.leaf_hash(line) for _, _, line in parsed),
                signer=signer,
                recovered=recovery.rows_rolled_forward,
            )

    def _commit_batch(
        self,
        *,
        new_size: int,
        payload_size: int,
        write_rows: Callable[[], None],
        write_index: Callable[[int], None],
        leaf_hashes: bytes | Iterable[bytes],
        signer: Signer,
        recovered: int,
    ) -> AppendResult:
        """Write a validated batch: steps 1-7 with their crash order (docs/operations.md).

        Called under the writer lock after recovery and every check. ``write_rows``
        appends the batch's ``payload_size`` canonical bytes; ``write_index(old_end)``
        records (or commits) the batch's index entries for rows starting at JSONL byte ``old_end``.
        """
        old_size = self.size
        self._refuse_tiles_in_the_way(old_size, new_size)
        old_end = self._log.size()
        pending = PendingAppend(old_size, old_end, new_size, old_end + payload_size)
        self._signed_in_this_call = False
        # Step 1: the pending-append record, durable before any row is written.
        # Crash after it: recovery rolls the append back (nothing was signed).
        self.storage.write_atomic(PENDING_KEY, pending.to_json())
        tiles_job: Future[tuple[int, bytes, list[tuple[int, int]]]] | None = None
        try:
            if new_size - old_size >= OVERLAP_TILES_AT:
                # A large batch writes its tiles (step 4) in a thread while steps 2-3
                # run: creating thousands of tile files waits on the disk, copying
                # the rows on the CPU.  The crash rule is unchanged: until step 5
                # signs, rows, index entries and tiles beyond the signed size are
                # all rolled back, and step 5 starts only when every one is durable.
                pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kfm-tiles")
                tiles_job = pool.submit(self._write_tiles, old_size, leaf_hashes, self.storage.write_once_many)
                pool.shutdown(wait=False)  # the job runs on; its result is awaited below
            # Step 2: rows to the JSONL, then fsync.  Crash during or after
            # (even a torn last line): rolled back, the record says where it began.
            write_rows()
            self._log.sync()
            # Step 3: the commit index.  Rolled back with the rows.
            write_index(old_end)
            # Step 4: tiles (immutable objects).  Crash after: rolled back (deleted).
            if tiles_job is not None:
                tiled = tiles_job.result()
            else:
                tiled = self._write_tiles(old_size, leaf_hashes, self.storage.write_once_many)
            # Steps 5-7: signed checkpoint, record removed, pruning (in _integrate).
            self._integrate(tiled, signer)
        except BaseException as e:
            if tiles_job is not None:
                concurrent.futures.wait([tiles_job])  # its tiles exist before any undo deletes them
            # Not a crash but a failure (I/O error, a tile in the way): undo now if
            # the log has not signed the new size; otherwise recovery publishes it.
            if not self._signed_in_this_call:
                try:
                    self._undo_append(pending)
                except Exception:  # pragma: no cover - the next writer's recovery retries
                    pass
                raise
            if isinstance(e, (OSError, KfmError)):
                raise StorageError(
                    f"the batch is signed ({CHECKPOINTS_PREFIX}{new_size}) but publishing it failed: {e}; the next "
                    "writer or `kfm recover` publishes it — do not append it again"
                ) from e
            raise
        return AppendResult(
            first_index=old_size, count=new_size - old_size, checkpoint=self._signed, recovered=recovered
        )

    def append_file(
        self,
        path: str | os.PathLike[str],
        *,
        signer: Signer,
        wait: float = 10.0,
        workers: int | None = None,
        max_problems: int = 1000,
    ) -> AppendResult:
        """:meth:`append` for an input file, streamed: memory does not grow with the file.

        JSONL input larger than :data:`~kfm_ledger.bulk.PARALLEL_THRESHOLD` is
        validated on every core in chunks (pass 1, under the writer lock):
        canonical lines are spooled to a temporary file, leaf hashes kept (32
        bytes a row), and index entries inserted into the commit index inside one
        open transaction, whose UNIQUE commit column finds repeats in the batch
        and against the ledger.  Only when every row has passed is the batch
        written (pass 2) with the same steps, crash order and all-or-nothing rule
        as :meth:`append`; otherwise the transaction is rolled back.  A JSON
        array or a single object, or a small file, goes through :meth:`append`.
        At most ``max_problems`` problems are listed.
        """
        from . import bulk

        path = os.fspath(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if size < bulk.PARALLEL_THRESHOLD or head[:1] == b"[" or not head:
            with open(path, "rb") as f:
                return self.append(f.read(), signer=signer, wait=wait)
        self._check_signer(signer)
        problems: list[RowProblem] = []
        more_problems = 0

        commit_lines: set[int] = set()  # lines already reported for a repeated commit

        def problem(p: RowProblem) -> None:
            nonlocal more_problems
            if p.path == "$.lakefs_commit":
                if p.line in commit_lines:
                    return  # one report per line
                commit_lines.add(p.line)
            if len(problems) < max_problems:
                problems.append(p)
            else:
                more_problems += 1

        hashes = bytearray()
        lines = array.array("q")  # input line of each row, by position in the batch
        spooled_chunks: list[tuple[int, int, int]] = []
        with open(path, "rb") as f:
            bom = 3 if f.read(3) == b"\xef\xbb\xbf" else 0  # a UTF-8 byte order mark is ignored
        # The writer lock is held for the whole append: the batch's index entries go
        # into the commit index inside one open transaction while the workers
        # validate (the index's UNIQUE commit column finds repeats, in the batch and
        # against the ledger).  Nothing is committed or written to the ledger before
        # every row has passed; a crash in this pass leaves only a rolled-back
        # transaction and anonymous spool files.
        with self._writer_lock(wait=wait), bulk.SpooledInput(path, start=bom, workers=workers) as spooled_input:
            recovery = self._recover_locked()
            old_size = self.size
            old_end = self._log.size()
            idx = self._raw_index()
            last = idx.at(old_size - 1) if old_size else None
            previous: tuple[int, str] | None = None
            seq = 0
            spooled = 0
            # A batch at least as large as the ledger (by a rough 1 KB a row) builds the
            # UNIQUE commit index once at the end instead of row by row.
            idx.begin(defer_unique=size // DEFER_UNIQUE_BYTES_PER_ROW >= old_size)
            try:
                for result in spooled_input.results():
                    for p in result.all_problems():
                        problem(p)
                    if result.first_created is not None:
                        first_line, first_text = result.first_created
                        first_key = schema.created_at_order_key(first_text)
                        if previous is not None and first_key < schema.created_at_order_key(previous[1]):
                            problem(schema.backwards_problem(first_line, first_text, *previous))
                        elif previous is None and last is not None:
                            if first_key < schema.created_at_order_key(last.created_at):
                                problem(_before_last_row_problem(first_line, first_text, last))
                        previous = result.last_created
                    count = len(result.lengths)
                    first_leaf = old_size + seq
                    offsets = itertools.accumulate(map((1).__add__, result.lengths), initial=old_end + spooled)
                    rows = zip(
                        range(first_leaf, first_leaf + count), result.commits, offsets, result.lengths,
                        result.created_at,
                    )
                    if idx.insert_new(rows) != count:
                        self._report_repeats(
                            [IndexedEntry(first_leaf + k, commit, 0, 0, "") for k, commit in enumerate(result.commits)],
                            lines, result.lines, old_size, idx, problem,
                        )
                    lines.extend(result.lines)
                    seq += count
                    spooled += sum(result.lengths) + count
                    if not problems and result.spool is not None:
                        spooled_chunks.append(result.spool)
                        hashes += result.leaf_hashes
                for commit, leaves in idx.finish_inserts(limit=max_problems + 1):
                    self._report_repeated_leaves(commit, leaves, lines, old_size, problem)
                if problems:
                    problems.sort(key=lambda p: p.line)
                    if more_problems:
                        problems.append(RowProblem(problems[-1].line, "$", f"... and {more_problems} more problem(s)"))
                    raise InputRejected(problems)
                if seq == 0:
                    raise InputRejected([RowProblem(1, "$", "no rows in the input")])
                new_size = old_size + seq

                def write_rows() -> None:
                    for chunk in spooled_chunks:
                        spooled_input.copy(chunk, self._log.append)
                    # Dropping the spools now spares the disk their write-back (and every
                    # later fsync the wait for it).
                    spooled_input.close()

                return self._commit_batch(
                    new_size=new_size,
                    payload_size=spooled,
                    write_rows=write_rows,
                    write_index=lambda _old_end: idx.commit(size=new_size, end_offset=old_end + spooled),
                    leaf_hashes=hashes,
                    signer=signer,
                    recovered=recovery.rows_rolled_forward,
                )
            finally:
                idx.rollback_if_open()

    def _report_repeats(
        self,
        rows: list[IndexedEntry],
        lines: array.array[int],
        chunk_lines: array.array[int],
        old_size: int,
        idx: CommitIndex,
        problem: Callable[[RowProblem], None],
    ) -> None:
        """Name the rows of a chunk whose commit the index already held (rare path).

        ``lines`` maps the batch's earlier rows to input lines, ``chunk_lines`` this chunk's.
        """
        first_leaf = rows[0].leaf if rows else 0

        def line_of(leaf: int) -> int:
            k = leaf - old_size
            return lines[k] if k < len(lines) else chunk_lines[leaf - first_leaf]

        for e in rows:
            found = idx.lookup(e.lakefs_commit)
            if found is None or found.leaf == e.leaf:
                continue
            self._report_repeated_leaves(e.lakefs_commit, [found.leaf, e.leaf], lines, old_size, problem, line_of)

    @staticmethod
    def _report_repeated_leaves(
        commit: str,
        leaves: list[int],
        lines: array.array[int],
        old_size: int,
        problem: Callable[[RowProblem], None],
        line_of: Callable[[int], int] | None = None,
    ) -> None:
        """One problem for each but the first of ``leaves`` (sorted), all rows of one commit."""
        line_of = line_of or (lambda leaf: lines[leaf - old_size])
        first = leaves[0]
        for leaf in leaves[1:]:
            if first < old_size:
                problem(_stored_commit_problem(line_of(leaf), commit, first))
            else:
                problem(schema.repeated_commit_problem(line_of(leaf), commit, line_of(first)))

    def _refuse_tiles_in_the_way(self, old_size: int, new_size: int) -> None:
        """Refuse, before writing anything, when objects the append would create already exist."""
        if self.storage.exists(f"{CHECKPOINTS_PREFIX}{new_size}"):
            raise CorruptLedgerError(
                f"{CHECKPOINTS_PREFIX}{new_size} already exists beyond the signed tree (size {old_size}): the log "
                "once signed a tree of that size and must not sign another; nothing was written — inspect it"
            )
        for level, index, width in tiles.tiles_changed(old_size, new_size):
            key = tiles.tile_path(level, index, width)
            if self.storage.exists(key):
                raise CorruptLedgerError(
                    f"tile {key} already exists beyond the signed tree (size {old_size}); nothing was "
                    "written: run `kfm verify`, then `kfm rebuild` to recreate the tiles"
                )

    def _ledger_problems(self, parsed: list[tuple[int, schema.Row, bytes]], idx: CommitIndex) -> list[RowProblem]:
        """The ledger-wide invariants: one row per commit; created_at not before the last row's."""
        old_size = self.size
        problems: list[RowProblem] = []
        # Signed rows only: entries beyond the signed size belong to an append not yet
        # signed (another writer between steps 3 and 5, or one that crashed there).
        found = idx.lookup_many([row.lakefs_commit for _, row, _ in parsed])
        existing = {commit: leaf for commit, leaf in found.items() if leaf < old_size}
        for line_no, row, line in parsed:
            if row.lakefs_commit in existing:
                leaf = existing[row.lakefs_commit]
                same = self._entry_at(idx.at(leaf)).line == line  # type: ignore[arg-type]
                problems.append(_stored_commit_problem(line_no, row.lakefs_commit, leaf, same_bytes=same))
        if old_size:
            last = idx.at(old_size - 1)
            if last is not None:
                line_no, row, _ = parsed[0]
                if schema.created_at_datetime(row) < schema.parse_created_at(last.created_at):
                    problems.append(_before_last_row_problem(line_no, row.created_at, last))
        problems.sort(key=lambda p: p.line)
        return problems

    def _write_tiles(
        self,
        old_size: int,
        leaf_hashes: bytes | Iterable[bytes],
        write_many: Callable[[list[tuple[str, bytes]]], None],
    ) -> tuple[int, bytes, list[tuple[int, int]]]:
        """Write the tiles for leaves appended after ``old_size``, touching only the right edge.

        ``leaf_hashes`` is the leaves' hashes, concatenated or one by one.  A
        compact range over [0, old_size) is seeded from the stored tiles; each
        completed node at levels 0, 8, 16, ... is a tile hash (c2sp.org/tlog-tiles:
        tile-level L holds the roots of 256**L-leaf subtrees).  Where 256 leaves
        fill a level-0 tile, the tile is their hashes as given and its root enters
        the compact range as one subtree (255 pairwise hashes, no per-leaf
        bookkeeping).  Tiles are handed to ``write_many`` in groups (one directory
        sync per group).  Returns (new size, new root, the tiles that became full).
        """
        hash_bytes = (
            bytes(leaf_hashes)
            if isinstance(leaf_hashes, (bytes, bytearray, memoryview))
            else b"".join(leaf_hashes)
        )
        if len(hash_bytes) % merkle.HASH_SIZE:
            raise ValueError(f"leaf hashes are {len(hash_bytes)} bytes, not a multiple of {merkle.HASH_SIZE}")
        pending: list[tuple[str, bytes]] = []

        def write(key: str, data: bytes) -> None:
            pending.append((key, data))
            if len(pending) >= 4096:  # 32 MiB of tiles per group
                write_many(pending)
                pending.clear()

        edge = self._right_edge
        if edge is not None and edge[0] == old_size == self.size and edge[1] == self.root:
            # The right edge this Ledger wrote last, for the tree that was then signed:
            # the same hashes the stored tiles hold, without reading them again.
            crange = merkle.CompactRange(old_size, edge[2])
            buffers = {level: list(hashes) for level, hashes in edge[3].items()}
        else:
            reader = self.hash_reader(old_size)
            peaks = reader.read_node_hashes(merkle.subtree_nodes(0, old_size)) if old_size else []
            crange = merkle.CompactRange(old_size, peaks)
            if old_size and old_size == self.size and crange.root() != self.root:
                # The stored right edge does not give the signed root: building on it would
                # sign a tree that is not the hash of the rows.
                self._tile_cache.clear()
                raise CorruptLedgerError(
                    f"the stored tiles do not give the signed root at size {old_size}: a tile was changed; "
                    "nothing was written: run `kfm verify`, then `kfm rebuild`"
                )
            # The right edge: per tile level, the hashes already in its partial tile.
            buffers = {}
            level = 0
            while (old_size >> (tiles.TILE_HEIGHT * level)) > 0:
                count = old_size >> (tiles.TILE_HEIGHT * level)
                width = count % tiles.TILE_WIDTH
                if width:
                    data = self.read_tile(level, count // tiles.TILE_WIDTH, width)
                    buffers[level] = tiles.hashes_of_tile(data[: width * merkle.HASH_SIZE])
                level += 1
        completed: list[tuple[int, int]] = []
        last_full_tile = [b""]  # the level-0 tile add_nodes filled last

        def add_nodes(nodes: list[tuple[merkle.NodeId, bytes]]) -> None:
            for (node_level, node_index), node in nodes:
                if node_level % tiles.TILE_HEIGHT:
                    continue
                tile_level = node_level // tiles.TILE_HEIGHT
                buf = buffers.setdefault(tile_level, [])
                buf.append(node)
                if len(buf) == tiles.TILE_WIDTH:
                    # A full tile.  Crash after: it lies beyond the signed size,
                    # readers ignore it, and recovery deletes it with the rows.
                    tile_index = node_index // tiles.TILE_WIDTH
                    data = b"".join(buf)
                    write(tiles.tile_path(tile_level, tile_index), data)
                    completed.append((tile_level, tile_index))
                    if tile_level == 0:
                        last_full_tile[0] = data
                    buf.clear()

        tile_bytes = tiles.TILE_WIDTH * merkle.HASH_SIZE
        first_full = -1  # the first level-0 tile this call completes
        records: list[bytes] = []  # their expansion records (EXPANSIONS_KEY)
        pos = 0
        end = len(hash_bytes)
        while pos < end:
            if crange.size % tiles.TILE_WIDTH == 0 and end - pos >= tile_bytes:
                tile = hash_bytes[pos : pos + tile_bytes]
                # The 255 nodes above the tile's leaves, level by level (RFC 9162 §2.1.1 for a
                # perfect subtree); the last is the root of its 256 leaves.
                levels = tiles.expand_tile(tile)
                tile_index = crange.size // tiles.TILE_WIDTH
                write(tiles.tile_path(0, tile_index), tile)  # crash after: as above
                completed.append((0, tile_index))
                if first_full < 0:
                    first_full = tile_index
                records.append(expansion_record(levels))
                if len(records) == 512:  # 4 MiB: stored in groups, memory stays flat
                    self._expansions.store(first_full, records)
                    first_full, records = tile_index + 1, []
                add_nodes(crange.append_subtree(tiles.TILE_HEIGHT, levels[tiles.TILE_HEIGHT]))
                pos += tile_bytes
            else:
                before = len(completed)
                add_nodes(crange.append(hash_bytes[pos : pos + merkle.HASH_SIZE]))
                pos += merkle.HASH_SIZE
                for tile_level, tile_index in completed[before:]:
                    if tile_level == 0:  # a level-0 tile filled leaf by leaf
                        if first_full < 0:
                            first_full = tile_index
                        records.append(expansion_record(tiles.expand_tile(last_full_tile[0])))
        new_size = crange.size
        for tile_level, buf in sorted(buffers.items()):
            if buf:
                # The right-edge partial tile for the new size (immutable too).
                tile_index = (new_size >> (tiles.TILE_HEIGHT * tile_level)) // tiles.TILE_WIDTH
                write(tiles.tile_path(tile_level, tile_index, len(buf)), b"".join(buf))
        if pending:
            write_many(pending)
        # Derived data, after the tiles it is derived from (and, like them, before signing).
        self._expansions.store(first_full, records)
        root = crange.root()
        # Kept for the next append, which uses it only if this tree (size and root) is then the signed one.
        self._right_edge = (new_size, root, crange.peaks, {level: tuple(buf) for level, buf in buffers.items() if buf})
        return new_size, root, completed

    def _integrate(self, tiled: tuple[int, bytes, list[tuple[int, int]]], signer: Signer) -> None:
        """Sign the new tree head that :meth:`_write_tiles` computed (steps 5-7)."""
        new_size, root, completed = tiled
        # The signed tree head names the one before it (docs/formats.md), so that a kept
        # checkpoint that goes missing is noticed by `kfm verify`.
        extensions = (previous_size_line(self.size),)
        note = sign_checkpoint(Checkpoint(origin=self.origin, size=new_size, root=root, extensions=extensions), signer)
        # Step 5a: keep the signed checkpoint.  This is the point of no return: the
        # log has signed this tree, so a crash after it rolls forward, never back.
        # Step 5b: publish it.  From here on the rows are in the ledger.  (One storage
        # call does both, in that order; the local backend links one file to both names.)
        kept = f"{CHECKPOINTS_PREFIX}{new_size}"
        try:
            self.storage.write_once_and_publish(kept, CHECKPOINT_KEY, note)
        finally:
            # Once checkpoints/<new size> exists a failure must not undo the rows
            # (when storage cannot even say, leave it to the next recovery).
            try:
                self._signed_in_this_call = self.storage.exists(kept)
            except Exception:  # pragma: no cover - exercised by fault injection only
                self._signed_in_this_call = True
        self._signed = open_checkpoint(note, [self.verifier], origin=self.origin)
        # Step 6: the append is complete.  Crash before: recovery sees the new
        # size signed and only removes the record.  Step 7: partial tiles that a
        # full tile now replaces.  Both are clean-up: a failure here does not undo
        # a published append (the next recovery finishes them).
        try:
            self.storage.delete(PENDING_KEY)
            for tile_level, tile_index in completed:
                self._delete_partials(tile_level, tile_index)
        except Exception:  # pragma: no cover - exercised by fault injection only
            pass

    def _delete_partials(self, level: int, index: int) -> None:
        for key in list(self.storage.list(tiles.tile_path(level, index) + ".p/")):
            self.storage.delete(key)

    def _prune_partials(self, size: int) -> None:
        """Delete leftover partials of the last full tile per level (an interrupted step 5)."""
        level = 0
        while (size >> (tiles.TILE_HEIGHT * level)) >= tiles.TILE_WIDTH:
            count = size >> (tiles.TILE_HEIGHT * level)
            self._delete_partials(level, count // tiles.TILE_WIDTH - 1)
            level += 1

    def rebuild(self, *, wait: float = 10.0) -> int:
        """Recreate the commit index and every tile from the JSONL (derived data).

        Signs nothing.  The rows are hashed first, without writing: if they no
        longer give the signed root, :class:`CorruptLedgerError` is raised and
        nothing is touched.  Then the index is rebuilt and the tiles rewritten:
        every full tile, the partial tiles of the latest and of every earlier
        signed size that are still partial, and nothing else.  Returns the rows indexed.
        """
        with self._writer_lock(wait=wait):
            if self._read_pending() is not None:
                self._recover_locked()  # finish or undo the interrupted append first
            else:
                self._reload_checkpoint()
            crange = merkle.CompactRange()
            n = 0
            for line, complete in split_lines(self._log.iter_chunks(0)):
                if n >= self.size or not complete:
                    break
                crange.append(merkle.leaf_hash(line))
                n += 1
            if n < self.size:
                raise CorruptLedgerError(
                    f"{JSONL_KEY} holds {n} complete rows but the signed checkpoint covers {self.size}: "
                    "rows were removed; nothing was rebuilt"
                )
            if crange.root() != self.root:
                raise CorruptLedgerError(
                    f"the rows of {JSONL_KEY} do not hash to the signed root at size {self.size}: rows were "
                    "changed; nothing was rebuilt (run `kfm verify` to find them)"
                )
            self._raw_index().reset()
            added, _, _ = self._catch_up_index(limit=self.size)
            written: set[str] = set()

            def write(key: str, data: bytes) -> None:
                self.storage.write_atomic(key, data)
                written.add(key)

            def write_many(items: list[tuple[str, bytes]]) -> None:
                for key, data in items:
                    write(key, data)

            lines = self._lines_from(0, self.size) if self.size else iter(())
            self._write_tiles(0, (merkle.leaf_hash(line) for line in lines), write_many)
            # Partial tiles of earlier signed sizes: prefixes of today's partial tiles.
            for size in self.checkpoint_sizes():
                for level, index, width in tiles.tiles_for_size(size):
                    key = tiles.tile_path(level, index, width)
                    if width < tiles.TILE_WIDTH and key not in written:
                        if tiles.tile_width(level, index, self.size) == tiles.TILE_WIDTH:
                            continue  # that tile is full now: clients fall back to it
                        data = self.read_tile(level, index, width)[: width * merkle.HASH_SIZE]
                        write(key, data)
            for key in list(self.storage.list("tile/")):
                if not key.startswith("tile/entries/") and key not in written:
                    self.storage.delete(key)
            self._tile_cache.clear()  # tiles were rewritten
            self._right_edge = None
            return added


def _stored_commit_problem(line: int, commit: str, leaf: int, *, same_bytes: bool = False) -> RowProblem:
    """The ledger rule "one row per lakeFS commit", broken by a commit already stored at ``leaf``."""
    return RowProblem(
        line,
        "$.lakefs_commit",
        f"commit {commit!r} is already in the ledger at index {leaf}"
        + (" with identical bytes (was this batch appended before?)" if same_bytes else "")
        + "; one row per lakeFS commit",
    )


def _before_last_row_problem(line: int, created_at: str, last: IndexedEntry) -> RowProblem:
    """The ledger rule "created_at never goes backwards", broken by a batch's first row."""
    return RowProblem(
        line,
        "$.created_at",
        f"{created_at} is earlier than the last row's created_at {last.created_at} (index {last.leaf}); "
        "created_at never goes backwards",
    )


def load_signer(data: bytes, what: str = SKEY_KEY) -> Signer:
    """A Signer from a key file's bytes (Go's ``PRIVATE+KEY+...`` text)."""
    return Signer.from_private_key_text(read_text_key(data, what))
