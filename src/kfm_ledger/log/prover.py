"""Proofs from the stored tiles: tile reads, the tile cache, expansion records, stored checkpoints,
inclusion (RFC 9162 §2.1.3), consistency (RFC 9162 §2.1.4) and c2sp.org/tlog-proof.

Every answer that may rest on derived data (stored expansion records) is checked
against the signed tree head before it is returned; if the check fails, the
records are distrusted and the answer is computed again from the tiles alone.
Only the errors that mean "stored data disagreed" are caught for that:
:class:`~kfm_ledger.errors.ProofError` and :class:`~kfm_ledger.errors.CorruptLedgerError`
(a programming error propagates).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint, open_checkpoint, parse_unverified
from kfm_ledger.core.tile_cache import TileCache
from kfm_ledger.core.tlogproof import TlogProof
from kfm_ledger.errors import (
    CorruptLedgerError,
    IndexOutOfRangeError,
    KfmError,
    ObjectNotFoundError,
    ProofError,
)
from kfm_ledger.log.checkpoint_chain import previous_signed_size
from kfm_ledger.log.expansions import ExpansionStore
from kfm_ledger.storage import Storage

from .layout import CHECKPOINTS_PREFIX, EXPANSIONS_KEY, checkpoint_key, checkpoint_size_of

#: Expanded tiles a Ledger keeps (TileCache): about 16 KiB each; 4,096 hold every
#: tile of a 1M-row log (3,924), about 61 MiB once every level-0 tile has been proven.
TILE_CACHE_TILES = 4096


#: What a failed check of an answer against the signed tree raises: the stored data (a tile, an
#: expansion record) disagreed with the signed root.  ProofError covers RootMismatchError.
DISAGREEMENT: tuple[type[KfmError], ...] = (ProofError, CorruptLedgerError)


class Prover:
    """Reads tiles and proves; keeps the expanded tiles and the verified stored checkpoints.

    ``current`` gives the latest signed checkpoint (the Ledger's, which changes as
    the log grows); ``leaf_line`` the stored bytes of a leaf of the signed tree.
    """

    def __init__(
        self,
        storage: Storage,
        verifier: Verifier,
        current: Callable[[], SignedCheckpoint],
        leaf_line: Callable[[int], bytes],
    ) -> None:
        self.storage = storage
        self.verifier = verifier
        self._current = current
        self._leaf_line = leaf_line
        self.expansions = ExpansionStore(storage, EXPANSIONS_KEY)
        self.expansions_trusted = True  # False once a stored expansion gave a proof that failed
        # Expanded tiles, shared by every hash_reader (tiles of a signed size never
        # change, so entries stay valid as the log grows; cleared on rebuild).
        self.tile_cache = TileCache(max_tiles=TILE_CACHE_TILES)
        self._checkpoints: dict[int, SignedCheckpoint] = {}  # verified stored checkpoints by size

    @property
    def size(self) -> int:
        return self._current().checkpoint.size

    def close(self) -> None:
        self.expansions.close()

    # ------------------------------------------------------------ tiles
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
            "run `kfm rebuild` to recreate tiles from the JSONL",
            key=tiles.tile_path(level, index, width),
            index=index,
        )

    def hash_reader(self, size: int, *, stored_expansions: bool = True) -> tiles.TileHashReader:
        """A merkle.HashReader over the stored tiles for a tree of ``size`` leaves (c2sp.org/tlog-tiles).

        The one reader factory: every proof (inclusion, consistency, tlog-proof) and
        :meth:`Ledger.hash_reader <kfm_ledger.log.ledger.Ledger.hash_reader>` get their readers here.
        """
        return tiles.TileHashReader(
            size,
            self.read_tile,
            cache=self.tile_cache,
            stored_expansion=self.expansions.levels if stored_expansions and self.expansions_trusted else None,
        )

    def distrust_expansions(self) -> None:
        """A stored expansion record gave a wrong answer: use the tiles alone from now on."""
        self.expansions_trusted = False
        self.tile_cache.clear()  # it may hold levels that came from records

    # ------------------------------------------------------- checkpoints
    def check_size(self, size: int | None) -> int:
        signed_size = self.size
        if size is None:
            return signed_size
        if not 0 <= size <= signed_size:
            raise IndexOutOfRangeError(
                f"tree size {size} is beyond the signed tree size {signed_size}", index=size, size=signed_size
            )
        return size

    def checkpoint_sizes(self) -> list[int]:
        """Every tree size the log has signed a checkpoint for, ascending."""
        sizes = [s for s in map(checkpoint_size_of, self.storage.list(CHECKPOINTS_PREFIX)) if s is not None]
        return sorted(s for s in sizes if s <= self.size)

    def stored_checkpoint(self, size: int, checkpoint_sizes: Callable[[], list[int]] | None = None) -> SignedCheckpoint:
        """The signed checkpoint the log issued for ``size`` (verified; c2sp.org/tlog-checkpoint)."""
        current = self._current()
        if size == current.checkpoint.size:
            return current
        if size in self._checkpoints:
            return self._checkpoints[size]
        try:
            note = self.storage.read(checkpoint_key(size))
        except ObjectNotFoundError:
            near = (checkpoint_sizes or self.checkpoint_sizes)()
            successor = next((s for s in near if s > size), None)
            named = False
            if successor is not None and 0 <= size < current.checkpoint.size:
                with contextlib.suppress(KfmError):
                    named = previous_signed_size(self.stored_checkpoint(successor).checkpoint) == size
            if named:
                raise CorruptLedgerError(
                    f"the log signed a checkpoint for tree size {size} (the one for size {successor} names "
                    f"it) but {checkpoint_key(size)} is missing: restore it from a copy; run `kfm verify`",
                    key=checkpoint_key(size),
                ) from None
            hint = ", ".join(str(s) for s in near[-10:])
            raise IndexOutOfRangeError(
                f"the log never signed a checkpoint for tree size {size}; signed sizes include: {hint}",
                index=size,
                size=current.checkpoint.size,
            ) from None
        signed = open_checkpoint(note, [self.verifier], origin=current.checkpoint.origin)
        self._checkpoints[size] = signed  # checkpoints/<size> is written once: safe to keep
        return signed

    def signed_root_of(self, size: int) -> bytes | None:
        """The root the log signed for ``size``, when it keeps that checkpoint (signature not
        re-checked: for checking our own answers, not for deciding what to trust)."""
        current = self._current().checkpoint
        if size == current.size:
            return current.root
        if size in self._checkpoints:
            return self._checkpoints[size].checkpoint.root
        try:
            return parse_unverified(self.storage.read(checkpoint_key(size))).root
        except KfmError:
            return None

    # ------------------------------------------------------------ proofs
    def inclusion_proof(self, index: int, size: int | None) -> list[bytes]:
        """RFC 9162 §2.1.3 audit path for leaf ``index`` in the tree of ``size`` (default: signed size)."""
        size = self.check_size(size)
        if not 0 <= index < size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {size}", index=index, size=size)
        hashes = self.hash_reader(size)
        path = merkle.inclusion_proof(index, size, hashes)
        root = self.signed_root_of(size) if self.expansions_trusted else None
        if root is not None:
            # Inner nodes may have come from stored expansion records: check the path (the
            # leaf hash is a level-0 tile hash, never from a record) before answering.
            try:
                (leaf,) = hashes.read_node_hashes([(0, index)])
                merkle.verify_inclusion(leaf, index, size, path, root)
            except DISAGREEMENT:
                self.distrust_expansions()
                return self.inclusion_proof(index, size)
        return path

    def consistency_proof(self, old_size: int, new_size: int | None, *, stored_expansions: bool) -> list[bytes]:
        """RFC 9162 §2.1.4 consistency proof from ``old_size`` to ``new_size`` (default: signed size)."""
        new_size = self.check_size(new_size)
        use = stored_expansions and self.expansions_trusted
        reader = self.hash_reader(new_size, stored_expansions=stored_expansions)
        proof = merkle.consistency_proof(old_size, new_size, reader)
        if use and 0 < old_size < new_size:
            old_root, new_root = self.signed_root_of(old_size), self.signed_root_of(new_size)
            if old_root is not None and new_root is not None:
                # Checked against the two signed tree heads (records may have given inner nodes).
                try:
                    merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
                except DISAGREEMENT:
                    self.distrust_expansions()
                    return self.consistency_proof(old_size, new_size, stored_expansions=False)
        return proof

    def tlog_proof(
        self, index: int, size: int | None, stored_checkpoint: Callable[[int], SignedCheckpoint]
    ) -> TlogProof:
        """A c2sp.org/tlog-proof for leaf ``index`` against the checkpoint signed at ``size``.

        The proof is checked against that checkpoint before it is returned, so
        a corrupt tile is caught here, not by the client.
        """
        signed = stored_checkpoint(self.check_size(size))
        size = signed.checkpoint.size
        if not 0 <= index < size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {size}", index=index, size=size)
        path = merkle.inclusion_proof(index, size, self.hash_reader(size))
        # The stored line's bytes are the leaf (no need to decode the row: the proof check
        # below catches any change to them).
        leaf = merkle.leaf_hash(self._leaf_line(index))
        try:
            merkle.verify_inclusion(leaf, index, size, path, signed.checkpoint.root)
        except DISAGREEMENT as e:
            self.tile_cache.clear()  # re-read the tiles next time (they may be repaired)
            if self.expansions_trusted:
                # Perhaps the derived expansion records are wrong: answer from the tiles alone.
                self.distrust_expansions()
                return self.tlog_proof(index, size, stored_checkpoint)
            raise CorruptLedgerError(
                f"stored tiles give an inclusion proof for index {index} that does not verify "
                f"against the checkpoint at size {size} ({e}); run `kfm verify`",
                index=index,
            ) from None
        return TlogProof(index=index, hashes=tuple(path), checkpoint=signed.note)
