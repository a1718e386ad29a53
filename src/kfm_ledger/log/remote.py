"""A ledger in an S3 bucket (``s3://bucket/prefix``): open, init, proven reads, export.

The bucket holds the same objects as a local ledger (c2sp.org/tlog-tiles under the
prefix: ``checkpoint``, ``checkpoints/<size>``, ``tile/...``, ``log.vkey``) with the rows in
entry bundles (``tile/entries/...``) instead of a JSONL; ``kfm export`` writes the JSONL a
local ledger would hold.  Appends are compare-and-swap writes of ``checkpoint``
(:mod:`kfm_ledger.log.cas_append`); there is no lock.  The commit index is a local cache
(:mod:`kfm_ledger.log.remote_index`).

Every read is checked against the signed checkpoint: a row by an inclusion proof
(RFC 9162 §2.1.3) from the tiles, a stream of rows (export) by recomputing the root
over every entry before its last row is handed out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.entry_bundle import decode_entry_bundle
from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint, open_checkpoint, sign_checkpoint
from kfm_ledger.errors import (
    CorruptLedgerError,
    FormatError,
    ImmutableObjectError,
    IndexOutOfRangeError,
    KeyFormatError,
    KfmError,
    LedgerExistsError,
    NotALedgerError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from kfm_ledger.index import CommitIndex, IndexedEntry, IndexLocation

from .keys import read_text_key
from .layout import CHECKPOINT_KEY, VKEY_KEY, checkpoint_key, mirror_file_name
from .prover import Prover
from .reader import asked_row
from .remote_index import RemoteIndex
from .signed_log import SignedLog

if TYPE_CHECKING:
    from kfm_ledger.storage.s3 import S3Storage

    from .append import AppendResult
    from .progress import Progress

__all__ = ["RemoteLedger"]

#: The largest ``checkpoint`` / ``log.vkey`` object read (a note is a few hundred bytes).
MAX_NOTE_BYTES = 1 << 20
#: The largest entry bundle read: 256 entries of at most 65,535 bytes and their prefixes.
MAX_BUNDLE_BYTES = tiles.TILE_WIDTH * (0xFFFF + 2)
#: Bundles fetched at once while streaming rows (verify, export, catching the index up).
STREAM_WINDOW = 32


class RemoteLedger(SignedLog):
    """A ledger in an S3 bucket; open with :meth:`open`, create with :meth:`init`."""

    #: Lookups prove the rows they return (False only where a user asked: ``--unverified``).
    verify_reads: bool = True
    #: Tells :func:`kfm_ledger.verify.verify_ledger` to check this ledger with :mod:`.remote_verify`.
    is_remote = True
    #: The local file holding this ledger's Parquet mirror (``kfm mirror --out``, ``--mirror-file``); the
    #: mirror never goes to the bucket (docs/s3.md), so without one the readers scan the bundles.
    mirror_file: str | os.PathLike[str] | None = None

    def __init__(
        self,
        storage: S3Storage,
        verifier: Verifier,
        signed: SignedCheckpoint,
        etag: str,
        *,
        index: IndexLocation | None = None,
    ) -> None:
        self.storage = storage
        self.verifier = verifier
        self._signed = signed
        self._etag = etag
        self.index_location = index if index is not None else storage.index_location()
        self._index: RemoteIndex | None = None
        self.prover = Prover(storage, verifier, lambda: self._signed, self.entry_bytes)
        self.prover.expansions_trusted = False  # no tile-expansions.bin in a bucket
        #: The writer's state for the next append (:mod:`.cas_append`), valid while ``checkpoint`` is at ``_etag``.
        self.writer_state: object | None = None
        #: The ``checkpoint`` version whose tree this process saw complete (:func:`.cas_append.complete`).
        self.completed_etag: str | None = None

    # ------------------------------------------------------------ opening
    @classmethod
    def init(cls, storage: S3Storage, *, origin: str, signer: Signer) -> RemoteLedger:
        """Create an empty ledger in the bucket: ``log.vkey``, ``checkpoints/0``, then ``checkpoint``.

        The signing key stays with the caller (never written to the bucket).  Every object is
        created with ``If-None-Match: *``; ``checkpoint`` last, so a crashed init can be run
        again with the same key.  LedgerExistsError when a ledger (or another key's init) is there.
        """
        if signer.name != origin:
            raise KeyFormatError(
                f"the signing key is named {signer.name!r} but the origin is {origin!r}: "
                "a checkpoint's key name must equal its origin (c2sp.org/tlog-checkpoint)",
                what="signer key",
                field="name",
                found=signer.name,
            )
        if storage.exists(CHECKPOINT_KEY):
            raise LedgerExistsError(f"a ledger already exists in {storage.describe()}", path=storage.url())
        verifier = signer.verifier()
        note = sign_checkpoint(Checkpoint(origin=origin, size=0, root=merkle.EMPTY_ROOT), signer)
        try:
            storage.write_once(VKEY_KEY, (verifier.vkey_text() + "\n").encode())
            storage.write_once(checkpoint_key(0), note)
            storage.create(CHECKPOINT_KEY, note)
        except (ImmutableObjectError, PreconditionFailedError):
            raise LedgerExistsError(
                f"{storage.describe()} already holds a ledger or another key's start of one "
                f"({VKEY_KEY} or {CHECKPOINT_KEY} differ); nothing was overwritten",
                path=storage.url(),
            ) from None
        return cls.open(storage)

    @classmethod
    def open(cls, storage: S3Storage, *, vkey: str | None = None, index: IndexLocation | None = None) -> RemoteLedger:
        """Open the ledger; its ``checkpoint`` must verify with ``vkey`` (default: the bucket's ``log.vkey``).

        A signed checkpoint whose tiles and bundles a crashed writer left incomplete is
        completed here from its staging object (:func:`kfm_ledger.log.cas_append.complete`).
        """
        try:
            note, etag = storage.read_versioned(CHECKPOINT_KEY, max_bytes=MAX_NOTE_BYTES)
        except ObjectNotFoundError:
            raise NotALedgerError(
                f"no ledger in {storage.describe()} (no 'checkpoint'); create one with "
                "`kfm init --origin ORIGIN --ledger s3://... --key-out FILE`",
                path=storage.url(),
            ) from None
        if vkey is None:
            try:
                vkey = read_text_key(storage.read_capped(VKEY_KEY, MAX_NOTE_BYTES), VKEY_KEY, kind="verifier key")
            except ObjectNotFoundError:
                raise NotALedgerError(
                    f"no {VKEY_KEY} in {storage.describe()}; pass --vkey", path=storage.url()
                ) from None
        verifier = Verifier.from_vkey(vkey)
        signed = open_checkpoint(note, [verifier])
        led = cls(storage, verifier, signed, etag, index=index)
        from .cas_append import complete

        complete(led)
        return led

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        self.prover.close()

    # --------------------------------------------------------- properties

    @property
    def etag(self) -> str:
        """The ETag of ``checkpoint`` as last read (the version a compare-and-swap builds on)."""
        return self._etag

    def describe(self) -> str:
        return self.storage.describe()

    def _adopt(self, signed: SignedCheckpoint, etag: str) -> None:
        """Adopt a checkpoint verified by this process (read, or published by its own swap)."""
        if signed.checkpoint.size < self.size:
            raise CorruptLedgerError(
                f"{self.describe()}: checkpoint went back from tree size {self.size} to "
                f"{signed.checkpoint.size}: rolled back; run `kfm verify`",
                key=CHECKPOINT_KEY,
                index=signed.checkpoint.size,
            )
        self._signed = signed
        self._etag = etag

    def refresh(self) -> bool:
        """Re-read ``checkpoint`` (other writers may have appended); True if it moved."""
        note, etag = self.storage.read_versioned(CHECKPOINT_KEY, max_bytes=MAX_NOTE_BYTES)
        if etag == self._etag and note == self._signed.note:
            return False
        signed = (
            self._signed if note == self._signed.note else open_checkpoint(note, [self.verifier], origin=self.origin)
        )
        self._adopt(signed, etag)
        from .cas_append import complete

        complete(self)  # nothing reads a tree's objects before they all exist
        return True

    # ------------------------------------------------------------- rows
    def read_bundle(self, index: int, width: int) -> list[bytes]:
        """The first ``width`` entries of entry bundle ``index`` (c2sp.org/tlog-tiles "Log entries").

        Tries the exact partial bundle, then the full one (which starts with the same
        entries).  Unchecked: callers prove the entries against the signed tree.
        """
        keys = [tiles.entries_path(index, width)] if width < tiles.TILE_WIDTH else []
        keys.append(tiles.entries_path(index))
        for key in keys:
            try:
                data = self.storage.read_capped(key, MAX_BUNDLE_BYTES)
            except ObjectNotFoundError:
                continue
            try:
                entries = decode_entry_bundle(data)
            except FormatError as exc:
                raise CorruptLedgerError(f"{key}: {exc}", key=key, index=index) from None
            if len(entries) < width:
                raise CorruptLedgerError(
                    f"{key} holds {len(entries)} entries, {width} expected", key=key, index=index
                )
            return entries[:width]
        raise CorruptLedgerError(
            f"missing entry bundle {tiles.entries_path(index, width)} in {self.describe()}",
            key=tiles.entries_path(index, width),
            index=index,
        )

    def raw_entries(self, start: int, stop: int) -> Iterator[bytes]:
        """Entries of leaves [start, stop) of the signed tree, in order, fetched in parallel windows (unchecked)."""
        if start >= stop:
            return
        first, last = start // tiles.TILE_WIDTH, (stop - 1) // tiles.TILE_WIDTH
        # Each bundle as the signed tree has it (its width at the tree size, not at ``stop``).
        jobs = [(i, min(tiles.TILE_WIDTH, self.size - i * tiles.TILE_WIDTH)) for i in range(first, last + 1)]
        pool = self.storage.pool()
        for w in range(0, len(jobs), STREAM_WINDOW):
            window = jobs[w : w + STREAM_WINDOW]
            futures = [pool.submit(self.read_bundle, i, width) for i, width in window]
            for (i, _width), fut in zip(window, futures):
                entries = fut.result()
                base = i * tiles.TILE_WIDTH
                yield from entries[max(start - base, 0) : stop - base]

    def entry_bytes(self, index: int) -> bytes:
        """The stored entry of leaf ``index`` (unchecked; :meth:`entry` proves it)."""
        if not 0 <= index < self.size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {self.size}", index=index,
                                       size=self.size)
        bundle = index // tiles.TILE_WIDTH
        width = min(tiles.TILE_WIDTH, self.size - bundle * tiles.TILE_WIDTH)
        return self.read_bundle(bundle, width)[index % tiles.TILE_WIDTH]

    def _proven(self, index: int, entry: bytes, asked: str | None) -> schema.Entry:
        """The row at ``index``, proven by an inclusion proof from the tiles against the signed root."""
        try:
            path = self.prover.inclusion_proof(index, self.size)
            merkle.verify_inclusion(merkle.leaf_hash(entry), index, self.size, path, self.root)
        except KfmError as exc:
            self.prover.tile_cache.clear()
            raise CorruptLedgerError(
                f"the row at index {index} read from {self.describe()} is not the one the signed checkpoint "
                f"covers ({exc}); run `kfm verify`",
                key=tiles.entries_path(index // tiles.TILE_WIDTH),
                index=index,
            ) from None
        return asked_row(index, entry, asked, key=tiles.entries_path(index // tiles.TILE_WIDTH))

    def _read_entry(self, e: IndexedEntry, asked: str | None, verified: bool | None) -> schema.Entry:
        """The row an index entry names, proven unless ``verified`` is False (see :meth:`entry`)."""
        data = self.entry_bytes(e.leaf)
        if not (self.verify_reads if verified is None else verified):
            return schema.Entry(e.leaf, data, schema.decode_row(data))
        return self._proven(e.leaf, data, asked)

    def entry(self, index: int, *, verified: bool | None = None) -> schema.Entry:
        """The row at leaf ``index``, proven unless ``verified`` is False (default :attr:`verify_reads`)."""
        data = self.entry_bytes(index)
        if not (self.verify_reads if verified is None else verified):
            return schema.Entry(index, data, schema.decode_row(data))
        return self._proven(index, data, None)

    # ------------------------------------------------------------- index
    def remote_index(self) -> RemoteIndex:
        """The local commit index (possibly behind the signed tree)."""
        if self._index is None:
            self._index = RemoteIndex(self.index_location)
        return self._index

    @property
    def index(self) -> CommitIndex:
        """The commit index, caught up with the signed tree (reads the new bundles)."""
        idx = self.remote_index()
        for attempt in range(5):
            if idx.size() > self.size:
                # Another process on this machine indexed a newer tree: read the newer checkpoint (a
                # checkpoint that is still behind the rows this machine saw was rolled back).
                self.refresh()
            try:
                idx.catch_up(self.size, self.root, self.raw_entries, where=self.describe())
                return idx.index
            except CorruptLedgerError:
                # Another process may have indexed a newer tree between our look and the catch-up:
                # look again; a real rollback stays behind every time and is raised.
                if attempt == 4 or idx.size() <= self.size:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def lines_checked_against(self, indexes: Sequence[int], hashes: Sequence[bytes] | None) -> list[bytes]:
        """:func:`~kfm_ledger.log.reader.lines_checked_against` for an S3 ledger: the rows of
        ``indexes`` (ascending) from their entry bundles (c2sp.org/tlog-tiles), one read per
        bundle, each checked against the leaf hash a current mirror gives for it (RFC 9162
        §2.1.1); ``hashes`` None skips the check (``--unverified``).  A row that does not match
        is proven against the tiles, so the error names the row when the bundle was changed and
        the mirror file when the row is the signed one."""
        width = tiles.TILE_WIDTH
        bundles: dict[int, list[bytes]] = {}
        out: list[bytes] = []
        for index in indexes:
            b = index // width
            if b not in bundles:
                bundles[b] = self.read_bundle(b, min(width, self.size - b * width))
            out.append(bundles[b][index % width])
        for index, line, expected in zip(indexes, out, hashes or ()):
            if merkle.leaf_hash(line) != expected:
                self._proven(index, line, None)  # raises naming the row when the row was changed
                raise CorruptLedgerError(
                    f"the mirror's leaf hash for row {index} is not the signed row's, though its metadata names "
                    "the current checkpoint: the mirror file was modified; run `kfm mirror --out FILE` to "
                    "regenerate it (or use --source jsonl)",
                    key=mirror_file_name(self.mirror_file),  # (an s3:// ledger's mirror is a local file)
                    index=index,
                )
        return out

    def iter_lines(self, start: int = 0, stop: int | None = None, *, verified: bool | None = None) -> Iterator[bytes]:
        """Stream the rows of leaves [start, stop) (default all), proven unless ``verified`` is False.

        Proven: the rows' hashes, between the complete subtrees left of ``start`` and right of
        ``stop`` read from the tiles (RFC 9162 §2.1.1), must give the signed root; the last row
        is handed out only after they do (memory: one window of bundles).  Neither the rows nor
        the tile hashes are trusted alone: a wrong one gives another root.
        """
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return
        if not (self.verify_reads if verified is None else verified):
            yield from self.raw_entries(start, stop)
            return
        reader = self.hash_reader(self.size)
        crange = merkle.CompactRange(start, reader.read_node_hashes(merkle.subtree_nodes(0, start)) if start else [])
        held: bytes | None = None
        for entry in self.raw_entries(start, stop):
            crange.append(merkle.leaf_hash(entry))
            if held is not None:
                yield held
            held = entry
        right = merkle.subtree_nodes(stop, self.size)
        for (level, _), node in zip(right, reader.read_node_hashes(right)):
            crange.append_subtree(level, node)
        if crange.root() != self.root:
            raise CorruptLedgerError(
                f"rows {start}..{stop - 1} in the entry bundles of {self.describe()} and the tiles do not give the "
                f"signed root at tree size {self.size}: a bundle or tile was changed; run `kfm verify`",
                key="tile/entries/",
                index=self.size - 1,
            )
        if held is not None:
            yield held

    def iter_entries(self, start: int = 0, stop: int | None = None, *, verified: bool | None = None
                     ) -> Iterator[schema.Entry]:
        for i, line in enumerate(self.iter_lines(start, stop, verified=verified), start):
            yield schema.Entry(i, line, schema.decode_row(line))

    def export(self, out: IO[bytes], *, verified: bool = True) -> int:
        """Write the JSONL a local ledger holds after the same appends (one row and a newline each); rows written."""
        n = 0
        buf: list[bytes] = []
        for line in self.iter_lines(verified=verified):
            buf.append(line)
            buf.append(b"\n")
            n += 1
            if len(buf) >= 8192:
                out.write(b"".join(buf))
                buf.clear()
        out.write(b"".join(buf))
        return n

    # ------------------------------------------------------------ proofs

    def hash_reader(self, size: int | None = None, *, stored_expansions: bool = False) -> tiles.TileHashReader:
        return self.prover.hash_reader(self.size if size is None else size, stored_expansions=False)

    def consistency_proof(self, old_size: int, new_size: int | None = None, *, stored_expansions: bool = False
                          ) -> list[bytes]:
        return self.prover.consistency_proof(old_size, new_size, stored_expansions=False)

    # ------------------------------------------------------------ writing

    def append(
        self, batch: bytes | Sequence[schema.Row], *, signer: Signer, wait: float = 10.0, max_problems: int = 1000
    ) -> AppendResult:
        """Validate a batch and append it by compare-and-swap of ``checkpoint`` (:mod:`.cas_append`).

        ``wait``: seconds to keep retrying after lost races before giving up
        (:class:`~kfm_ledger.errors.ContentionError`).  A refusal lists at most ``max_problems``
        problems and counts them all, as :meth:`Ledger.append <kfm_ledger.log.ledger.Ledger.append>`'s.
        """
        from .cas_append import append

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
        """:meth:`append` for an input file (read whole, at most :data:`~kfm_ledger.log.cas_append.MAX_BATCH_BYTES`).

        ``workers`` is accepted for the same call as a local ledger's and has no effect: an S3
        batch is validated in this process.
        """
        from .cas_append import append_file

        return append_file(self, path, signer=signer, wait=wait, max_problems=max_problems, progress=progress)

    def recover(self, signer: Signer | None = None, *, wait: float = 10.0) -> RecoverySummary:
        """Complete the latest signed tree if a writer died before it did, and remove stale staging objects."""
        if signer is not None:
            self._check_signer(signer)
        from .cas_append import complete, sweep_staging

        self.refresh()
        completed = complete(self)
        removed = sweep_staging(self)
        return RecoverySummary(self.size, completed, tuple(removed))

    def rebuild(self, *, wait: float = 10.0, progress: Progress | None = None) -> int:
        """Forget this machine's commit index and build it again from every bundle (checked against the root)."""
        idx = self.remote_index()
        idx.discard()
        idx.catch_up(self.size, self.root, self.raw_entries, where=self.describe())
        if progress is not None:
            progress(self.size, self.size)
        return self.size


class RecoverySummary:
    """What :meth:`RemoteLedger.recover` did (the fields the CLI prints, as the local report has them)."""

    bytes_rolled_back = 0

    def __init__(self, size: int, completed: int, removed: tuple[str, ...]) -> None:
        self.size = size
        self.rows_rolled_forward = completed
        self.temporaries_removed = removed

