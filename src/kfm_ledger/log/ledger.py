"""The Ledger facade: open (signature checked), init, close, lookups; everything else delegates.

Appends live in :mod:`.append` and :mod:`.bulk_append`, tiles in :mod:`.tile_writer`,
crash recovery in :mod:`.recovery`, proofs in :mod:`.prover`, rebuild in
:mod:`.rebuild`; the storage keys in :mod:`.layout`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint, open_checkpoint, sign_checkpoint
from kfm_ledger.errors import (
    CorruptLedgerError,
    IndexOutOfRangeError,
    KeyFormatError,
    KfmError,
    LedgerExistsError,
    NotALedgerError,
    ObjectNotFoundError,
    StorageError,
)
from kfm_ledger.index import CommitIndex, IndexedEntry, IndexLocation, SqliteFileIndex, open_commit_index
from kfm_ledger.storage import (
    IndexLocator,
    LocalFiles,
    LocalStorage,
    Storage,
    local_dir_of,
    local_path_of,
    read_private_of,
)

from .index_sync import catch_up_index
from .keys import load_signer, read_text_key
from .layout import CHECKPOINT_KEY, INDEX_FILE, JSONL_KEY, SKEY_KEY, VKEY_KEY, checkpoint_key
from .lines import split_lines
from .prover import Prover
from .signed_log import SignedLog

if TYPE_CHECKING:
    from .append import AppendResult
    from .progress import Progress
    from .recovery import PendingAppend, RecoveryReport
    from .tile_writer import RightEdge

# The writing side (append, bulk_append, recovery, rebuild, tile_writer) is imported on
# first use: a reader (open, get, prove) does not load it.


def open_storage(location: str | os.PathLike[str] | Storage) -> Storage:
    """A Storage for a directory path (or the Storage itself)."""
    if isinstance(location, (str, os.PathLike)):
        return LocalStorage(location)
    return location


def index_location_for(storage: Storage) -> IndexLocation:
    """Where a ledger on ``storage`` keeps its derived commit index, unless ``index=`` says.

    A storage that says where (:class:`~kfm_ledger.storage.IndexLocator`, e.g.
    :class:`~kfm_ledger.storage.MemoryStorage`): its ``index_location()``.  A
    storage with local files: ``index.sqlite`` beside the ledger.  Any other
    backend: :class:`~kfm_ledger.errors.StorageError`; pass ``index=`` (an
    :class:`~kfm_ledger.index.IndexLocation`) to :meth:`Ledger.open`.
    """
    if isinstance(storage, IndexLocator):
        return storage.index_location()
    if isinstance(storage, LocalFiles):
        return SqliteFileIndex(storage.local_path(INDEX_FILE))
    raise StorageError(
        f"{storage.describe()} has no local files and does not say where the commit index lives "
        "(no index_location()): pass index= to Ledger.open, e.g. "
        "index=kfm_ledger.index.SqliteFileIndex('/var/lib/kfm/index.sqlite') "
        "or index=kfm_ledger.index.MemoryIndex() (rebuilt from the rows in every process)",
        key=INDEX_FILE,
    )


def _alive(ledger: weakref.ref[Ledger]) -> Ledger:
    led = ledger()
    if led is None:
        raise ReferenceError("the Ledger this Prover belonged to was freed")
    return led


class Ledger(SignedLog):
    """A Rollback Registry Index ledger.

    Open one with :meth:`open` (read side: the tree as of the latest signed
    checkpoint, whose signature is checked on open) or create one with
    :meth:`init`.  Writing methods take the log's :class:`~kfm_ledger.core.keys.Signer`.
    """

    def __init__(
        self, storage: Storage, verifier: Verifier, signed: SignedCheckpoint, *, index: IndexLocation | None = None
    ) -> None:
        self.storage = storage
        #: Where the derived commit index lives (default: :func:`index_location_for`).
        self.index_location = index if index is not None else index_location_for(storage)
        self.verifier = verifier
        self._signed = signed
        self._jsonl = storage.append_log(JSONL_KEY)
        self._index: CommitIndex | None = None
        self._lock_depth = 0
        # The Prover reaches back through a weak reference: a Ledger dropped without close() is
        # then freed (and its files closed) at once, not by the cyclic garbage collector.
        ledger = weakref.ref(self)
        self.prover = Prover(
            storage, verifier, lambda: _alive(ledger)._signed, lambda index: _alive(ledger)._leaf_line(index)
        )
        #: The right edge of the tiles this Ledger wrote last (reused by the next append
        #: only while that tree is the signed one); set by append, cleared by rebuild.
        self._right_edge: RightEdge | None = None

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
            raise LedgerExistsError(f"a ledger already exists in {storage.describe()}", path=local_dir_of(storage))
        if isinstance(storage, LocalStorage):
            # A directory someone else made or filled may hold planted links or files: refused
            # unless it is new, empty (and ours), or what a crashed init of ours left.
            storage.check_new_ledger_dir()
        log = storage.append_log(JSONL_KEY)
        try:
            if log.size():
                raise LedgerExistsError(
                    f"{JSONL_KEY} in {storage.describe()} already holds rows but there is no checkpoint; "
                    "refusing to initialise over them",
                    path=local_dir_of(storage),
                )
            if signer is None and storage.exists(SKEY_KEY):
                # An init that crashed before its checkpoint: finish it with the key it made.
                signer = load_signer(read_private_of(storage, SKEY_KEY))
                store_key = False
            generated = signer is None
            if signer is None:
                signer = Signer.generate(origin)
            if signer.name != origin:
                raise KeyFormatError(
                    f"the signing key is named {signer.name!r} but the origin is {origin!r}: "
                    "a checkpoint's key name must equal its origin (c2sp.org/tlog-checkpoint)",
                    what="signer key",
                    field="name",
                    found=signer.name,
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
        storage.write_once(checkpoint_key(0), note)
        storage.write_atomic(CHECKPOINT_KEY, note)
        return cls.open(storage)

    @classmethod
    def open(
        cls, location: str | os.PathLike[str] | Storage, *, vkey: str | None = None, index: IndexLocation | None = None
    ) -> Ledger:
        """Open a ledger; its latest checkpoint must verify with ``vkey`` (default: ``log.vkey``).

        ``index``: where the derived commit index lives (default: :func:`index_location_for`).
        """
        storage = open_storage(location)
        try:
            note = storage.read(CHECKPOINT_KEY)
        except ObjectNotFoundError:
            raise NotALedgerError(
                f"no ledger in {storage.describe()} (no 'checkpoint'); create one with `kfm init --origin ORIGIN`",
                path=local_dir_of(storage),
            ) from None
        if vkey is None:
            try:
                vkey = read_text_key(storage.read(VKEY_KEY), VKEY_KEY, kind="verifier key")
            except ObjectNotFoundError:
                raise NotALedgerError(
                    f"no {VKEY_KEY} in {storage.describe()}; pass --vkey", path=local_dir_of(storage)
                ) from None
        verifier = Verifier.from_vkey(vkey)
        signed = open_checkpoint(note, [verifier])
        return cls(storage, verifier, signed, index=index)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        self.prover.close()
        self._jsonl.close()

    def __del__(self) -> None:
        # Dropped without close(): the JSONL and the expansion store close when freed, but a
        # sqlite3 connection sits in a reference cycle of its own (CPython 3.11: its statement
        # cache) and would keep the index's files open until the cyclic collector ran.
        index = self.__dict__.get("_index")
        if index is not None:
            with contextlib.suppress(sqlite3.Error):  # e.g. freed on another thread than it was made
                index.close()

    # --------------------------------------------------------- properties

    @property
    def jsonl_path(self) -> str | None:
        """The JSONL's local path when the storage has one (for bulk readers)."""
        return local_path_of(self.storage, JSONL_KEY)

    def _set_signed(self, signed: SignedCheckpoint) -> None:
        """Adopt a checkpoint this process verified and published (append, recovery)."""
        self._signed = signed

    def refresh(self) -> None:
        """Re-read the latest signed checkpoint (another process may have appended)."""
        note = self.storage.read(CHECKPOINT_KEY)
        if note != self._signed.note:  # the same bytes were verified already
            self._signed = open_checkpoint(note, [self.verifier], origin=self.origin)

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
            with self.writer_lock(wait=60.0):
                idx = self._raw_index()
                if idx.size() < self.size:
                    catch_up_index(self, limit=self.size)
        return idx

    def stored_index(self) -> CommitIndex | None:
        """The commit index as stored (possibly behind), or None if it does not open; no repair."""
        if self._index is not None:
            return self._index
        try:
            self._index = open_commit_index(self.index_location)
        except sqlite3.DatabaseError:
            return None
        return self._index

    def _raw_index(self) -> CommitIndex:
        """The commit index as stored (possibly behind); recreated empty if it does not open."""
        if self._index is None:
            try:
                self._index = open_commit_index(self.index_location)
            except sqlite3.DatabaseError:
                # Derived data that no longer opens: start it again from the JSONL.
                with self.writer_lock(wait=60.0):
                    self.index_location.discard()
                    self._index = open_commit_index(self.index_location)
        return self._index

    def pending_append(self) -> PendingAppend | None:
        """The record of an interrupted append, if there is one (see docs/operations.md)."""
        from .recovery import read_pending

        return read_pending(self)

    @contextlib.contextmanager
    def _writer_lock(self, *, wait: float) -> Iterator[None]:
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

    def writer_lock(self, *, wait: float = 10.0) -> contextlib.AbstractContextManager[None]:
        """The ledger's exclusive writer lock (re-entrant within this object)."""
        return self._writer_lock(wait=wait)

    # ----------------------------------------------------------- lookups
    def _entry_at(self, e: IndexedEntry) -> schema.Entry:
        """The stored row an index entry points at."""
        line = self._jsonl.read(e.offset, e.length)
        return schema.Entry(e.leaf, line, schema.decode_row(line))

    def stored_line(self, e: IndexedEntry) -> bytes:
        """The bytes an index entry points at in the JSONL, as stored: not proven (the caller
        proves them, e.g. the lookup API, which serves them with their inclusion proof)."""
        return self._jsonl.read(e.offset, e.length)

    def _leaf_line(self, index: int) -> bytes:
        located = self.index.at(index)
        if located is None:
            raise CorruptLedgerError(
                f"commit index has no entry for leaf {index}; run `kfm rebuild`", key=INDEX_FILE, index=index
            )
        return self._jsonl.read(located.offset, located.length)

    #: Lookups and scans prove the rows they return against the signed checkpoint
    #: (:mod:`.reader`); False only where a user explicitly asked (``--unverified``).
    verify_reads: bool = True
    #: A local file holding the Parquet mirror instead of the ledger's own (``--out`` / ``--mirror-file``;
    #: :mod:`kfm_ledger.mirror.files`); None: the ledger's ``rollback-index.parquet``.
    mirror_file: str | os.PathLike[str] | None = None

    def _read_entry(self, e: IndexedEntry, asked: str | None, verified: bool | None) -> schema.Entry:
        line = self._jsonl.read(e.offset, e.length)
        if not (self.verify_reads if verified is None else verified):
            return schema.Entry(e.leaf, line, schema.decode_row(line))
        from .reader import proven_entry

        return proven_entry(self, e.leaf, line, asked)

    def entry(self, index: int, *, verified: bool | None = None) -> schema.Entry:
        """The row at leaf ``index`` (0-based) of the signed tree, proven against the signed
        checkpoint (inclusion proof of the bytes read) unless ``verified`` is False
        (default: :attr:`verify_reads`); CorruptLedgerError names a row that fails."""
        if not 0 <= index < self.size:
            raise IndexOutOfRangeError(
                f"index {index} out of bounds for tree size {self.size}", index=index, size=self.size
            )
        e = self.index.at(index)
        if e is None:
            raise CorruptLedgerError(
                f"commit index has no entry for leaf {index}; run `kfm rebuild`", key=INDEX_FILE, index=index
            )
        return self._read_entry(e, None, verified)

    def iter_lines(self, start: int = 0, stop: int | None = None, *, verified: bool | None = None) -> Iterator[bytes]:
        """Stream the stored lines of leaves [start, stop) (default: the whole signed tree).

        Proven unless ``verified`` is False (default :attr:`verify_reads`): the tree is
        recomputed as the lines stream, and the last line is handed out only after the root
        equals the signed root (CorruptLedgerError names the row otherwise).
        """
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return
        if not (self.verify_reads if verified is None else verified):
            yield from self._raw_lines(start, stop)
            return
        from .reader import verified_lines

        yield from verified_lines(self, start, stop, self._raw_lines(start, stop))

    def _raw_lines(self, start: int, stop: int) -> Iterator[bytes]:
        offset = 0
        if start:
            e = self.index.at(start)
            if e is None:
                raise CorruptLedgerError(
                    f"commit index has no entry for leaf {start}", key=INDEX_FILE, index=start
                )
            offset = e.offset
        n = start
        for line, complete in split_lines(self._jsonl.iter_chunks(offset)):
            if n >= stop or not complete:
                break
            yield line
            n += 1
        if n < stop:
            raise CorruptLedgerError(
                f"{JSONL_KEY} ends after {n} rows; the signed tree has {self.size}", key=JSONL_KEY, line=n + 1, index=n
            )

    def iter_entries(
        self, start: int = 0, stop: int | None = None, *, verified: bool | None = None
    ) -> Iterator[schema.Entry]:
        """Stream (index, line, row) for leaves [start, stop), proven as :meth:`iter_lines`."""
        for i, line in enumerate(self.iter_lines(start, stop, verified=verified), start):
            try:
                row = schema.decode_row(line)
            except KfmError:
                if verified is False or not self.verify_reads:
                    raise
                self.entry(i)  # a signed row always decodes: this names the changed row
                raise
            yield schema.Entry(i, line, row)

    # ------------------------------------------------------------ proofs (see .prover)

    def hash_reader(self, size: int | None = None, *, stored_expansions: bool = True) -> tiles.TileHashReader:
        """A merkle.HashReader over the stored tiles for a tree of ``size`` leaves.

        With ``stored_expansions`` a full level-0 tile's inner nodes may come from
        ``tile-expansions.bin`` (derived data; each record is checksummed over its tile and
        root-checked against the level-1 tile) instead of being hashed.
        """
        return self.prover.hash_reader(self.size if size is None else size, stored_expansions=stored_expansions)

    def read_expansion_record(self, tile_index: int) -> bytes | None:
        """The stored expansion record of full level-0 tile ``tile_index`` (derived data), if any."""
        return self.prover.expansions.read(tile_index)

    def expansion_store_problem(self) -> str | None:
        """Why ``tile-expansions.bin`` cannot be used (e.g. a planted symbolic link), or None."""
        return self.prover.expansions.problem()

    def consistency_proof(
        self, old_size: int, new_size: int | None = None, *, stored_expansions: bool = True
    ) -> list[bytes]:
        """RFC 9162 §2.1.4 consistency proof from ``old_size`` to ``new_size`` (default: signed size).

        ``stored_expansions=False`` builds it from the tiles alone (what `kfm verify` does).
        """
        return self.prover.consistency_proof(old_size, new_size, stored_expansions=stored_expansions)

    # ------------------------------------------------------------ writing

    def recover(self, signer: Signer | None = None, *, wait: float = 10.0) -> RecoveryReport:
        """Finish or undo an interrupted append (takes the writer lock).

        Recovery never signs: it publishes a checkpoint the log already signed,
        or removes an append the log never signed.  ``signer`` is accepted for
        compatibility and, when given, must be the log's key.
        """
        if signer is not None:
            self._check_signer(signer)
        from .recovery import recover_locked

        with self.writer_lock(wait=wait):
            report = recover_locked(self)
            # The explicit repair also sweeps every folder for what interrupted writes left.
            swept = self.storage.discard_stale_temporaries([""], recursive=True)
            return dataclasses.replace(
                report, temporaries_removed=tuple(sorted(set(report.temporaries_removed) | set(swept)))
            )

    def append(
        self, batch: bytes | Sequence[schema.Row], *, signer: Signer, wait: float = 10.0, max_problems: int = 1000
    ) -> AppendResult:
        """Validate a batch and append it under a new signed checkpoint.

        ``batch`` is input bytes (one JSON object, a JSON array or JSONL) or rows.
        Everything is validated before anything is written: on any problem
        :class:`~kfm_ledger.errors.InputRejected` lists them (line, field, why; at most
        ``max_problems``, and counts them all: ``total``, with ``total_exact``) and the
        ledger is unchanged.  All or nothing: an append that fails
        or is killed before its checkpoint is signed leaves no row behind.  One
        writer at a time: waits up to ``wait`` seconds for the lock, then raises
        LockedError.
        """
        from .append import append

        return append(self, batch, signer=signer, wait=wait, max_problems=max_problems)

    def append_file(
        self,
        path: str | os.PathLike[str],
        *,
        signer: Signer,
        wait: float = 10.0,
        workers: int | None = None,
        max_problems: int = 1000,
        progress: Progress | None = None,
    ) -> AppendResult:
        """:meth:`append` for an input file, streamed: memory does not grow with the file.

        JSONL input larger than :data:`~kfm_ledger.log.bulk.PARALLEL_THRESHOLD` is
        validated on every core in chunks (pass 1, under the writer lock): leaf
        hashes kept (32 bytes a row), index entries inserted into the commit index
        inside one open transaction, whose UNIQUE commit column finds repeats in the
        batch and against the ledger.  On a local ledger each chunk that passed goes
        to the JSONL at once, under a provisional pending-append record, and a child
        process writes its entry bundles to temporary files (input not canonical as
        given is spooled first; canonical input is copied from the file and every row
        checked against its leaf hash).  Then the batch is finished (pass 2) with the
        same steps, crash order and all-or-nothing rule as :meth:`append`; a refused
        batch has its transaction rolled back and whatever pass 1 wrote undone, the
        ledger's bytes as they were.  A JSON array or a single object, or a small
        file, goes through :meth:`append`.  At most ``max_problems`` problems are listed.

        ``progress(done, total)``, if given, is called in bytes of the input file as
        pass 1 validates it, once per chunk of about 4 MiB (never per row); it ends with
        ``(file size, file size)`` when every row has passed, before the write (pass 2,
        about a quarter of the time).  An input that goes through :meth:`append` gets that
        one final call only.
        """
        from .bulk_append import append_file

        return append_file(
            self, path, signer=signer, wait=wait, workers=workers, max_problems=max_problems, progress=progress
        )

    def rebuild(self, *, wait: float = 10.0, progress: Progress | None = None) -> int:
        """Recreate the commit index and every tile from the JSONL (derived data).

        Signs nothing.  The rows are hashed first, without writing: if they no
        longer give the signed root, :class:`CorruptLedgerError` is raised and
        nothing is touched.  Then the index is rebuilt and the tiles rewritten:
        every full tile, the partial tiles of the latest and of every earlier
        signed size that are still partial, and nothing else.  Returns the rows indexed.

        ``progress(done, total)``, if given, is called in bytes of the JSONL read, counted
        over the three passes (hash check, index, tiles): ``total`` is three times the
        JSONL's size; once per read chunk of about 1 MiB, ending with ``(total, total)``.
        """
        from .rebuild import rebuild

        return rebuild(self, wait=wait, progress=progress)
