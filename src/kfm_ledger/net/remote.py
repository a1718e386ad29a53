"""A log seen through its c2sp.org/tlog-tiles HTTP API, verified: what a client or monitor
reads from a server, checked against the log's signed checkpoint before it is used.

* :meth:`RemoteLog.checkpoint` fetches ``/checkpoint`` and opens it with the log's verifier key
  (c2sp.org/tlog-checkpoint; the key's name must be the origin), then counts witness
  cosignatures (c2sp.org/tlog-cosignature) against a quorum.
* :meth:`RemoteLog.hash_reader` is a :class:`~kfm_ledger.core.tiles.TileHashReader` over
  ``/tile/<L>/<N>[.p/<W>]``; a missing partial tile falls back to the full tile
  (tlog-tiles "Partial Tiles": "MAY fetch the full tile ... as a fallback").  Tiles are only
  asked for at widths a verified checkpoint implies.  Nothing from a tile is believed until the
  hashes it gives fold to a signed root (:func:`kfm_ledger.core.merkle.verify_inclusion`).
* :meth:`RemoteLog.entry` reads one entry from ``/tile/entries/<N>[.p/<W>]`` and proves it:
  its RFC 9162 leaf hash, with the audit path computed from the tiles, must give the signed root.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.entry_bundle import MAX_ENTRY_BYTES, iter_entry_bundle
from kfm_ledger.core.keys import ALG_COSIGNATURE_V1, Verifier
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint, open_checkpoint
from kfm_ledger.errors import (
    CorruptLedgerError,
    FormatError,
    NetworkError,
    ProofError,
    QuorumError,
    RemoteDataError,
)

from .http_client import Fetcher

__all__ = ["MAX_CHECKPOINT_BYTES", "ProvenEntry", "RemoteLog", "WitnessPolicy"]

#: The largest checkpoint accepted (a note with many cosignatures stays far below).
MAX_CHECKPOINT_BYTES = 64 * 1024
#: A full hash tile.
MAX_TILE_BYTES = tiles.TILE_WIDTH * merkle.HASH_SIZE
#: The largest entry bundle possible: 256 entries of 2 + 65,535 bytes.
MAX_BUNDLE_BYTES = tiles.TILE_WIDTH * (2 + MAX_ENTRY_BYTES)
#: A lookup answer (the row, its proof and checkpoint) is far below this.
MAX_LOOKUP_BYTES = 1 << 20


@dataclass(frozen=True)
class WitnessPolicy:
    """Require ``quorum`` distinct witnesses among ``witnesses`` (type 0x04 cosigner keys) to
    have cosigned a checkpoint (c2sp.org/tlog-cosignature).  ``quorum`` 0: none required."""

    witnesses: tuple[Verifier, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        for w in self.witnesses:
            if w.alg != ALG_COSIGNATURE_V1:
                raise FormatError(
                    f"witness key {w.name}+{w.key_id.hex()} is a type 0x{w.alg:02x} key, not a cosignature/v1 "
                    "(0x04) key",
                    what="witness key",
                    field="key type",
                )
        if not 0 <= self.quorum <= len(self.witnesses):
            raise FormatError(
                f"quorum {self.quorum} needs at least that many witness keys ({len(self.witnesses)} given)",
                what="quorum",
            )

    def check(self, signed: SignedCheckpoint) -> list[str]:
        """The names of the witnesses whose cosignature verified; QuorumError below the quorum."""
        keys = {(w.name, w.key_id) for w in self.witnesses}
        found = sorted({s.name for s in signed.verified if (s.name, s.key_id) in keys})
        if len(found) < self.quorum:
            raise QuorumError(
                f"checkpoint (size {signed.checkpoint.size}) has {len(found)} verified witness cosignature(s) "
                f"({', '.join(found) or 'none'}), {self.quorum} required",
                required=self.quorum,
                found=found,
            )
        return found


@dataclass(frozen=True)
class ProvenEntry:
    """An entry proven under a signed checkpoint: its bytes, index and audit path."""

    index: int
    line: bytes
    hashes: tuple[bytes, ...]
    checkpoint: SignedCheckpoint


class RemoteLog:
    """One log server (``fetcher``) and the keys to check it with."""

    def __init__(self, fetcher: Fetcher, verifier: Verifier, policy: WitnessPolicy | None = None) -> None:
        self.fetcher = fetcher
        self.verifier = verifier
        self.policy = policy or WitnessPolicy()
        # Tiles fetched, by (level, index, width): read again by readers of other sizes (only
        # hashes that fold to a signed root are ever used).
        self._tiles: dict[tuple[int, int, int], bytes] = {}

    # ------------------------------------------------------------ checkpoint
    def checkpoint(self) -> tuple[SignedCheckpoint, list[str]]:
        """The served checkpoint, verified (log signature, origin = key name) and with the
        witness quorum met; and the names of the witnesses that cosigned it."""
        note = self.fetcher.get("checkpoint", MAX_CHECKPOINT_BYTES).body
        signed = self.open(note)
        return signed, self.policy.check(signed)

    def open(self, note: bytes) -> SignedCheckpoint:
        """Open a signed checkpoint with the log key (and the witness keys, so their
        cosignatures are checked); raises a VerificationError or FormatError."""
        return open_checkpoint(note, [self.verifier, *self.policy.witnesses], origin=self.verifier.name)

    # ------------------------------------------------------------ tiles
    def read_tile(self, level: int, index: int, width: int) -> bytes:
        """Tile (level, index) with at least ``width`` hashes: the partial of that width, or
        the full tile when the partial is gone (404).  Not trusted: see the module docstring."""
        key = (level, index, width)
        cached = self._tiles.get(key) or self._tiles.get((level, index, tiles.TILE_WIDTH))
        if cached is not None:
            return cached
        paths = [tiles.tile_path(level, index, width)]
        if width < tiles.TILE_WIDTH:
            paths.append(tiles.tile_path(level, index))
        for n, path in enumerate(paths):
            try:
                data = self.fetcher.get(path, MAX_TILE_BYTES).body
            except NetworkError as err:
                if err.status == 404 and n + 1 < len(paths):
                    continue
                raise
            got_width = tiles.TILE_WIDTH if n else width
            self._tiles[(level, index, got_width)] = data
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def hash_reader(self, size: int) -> tiles.TileHashReader:
        """A merkle.HashReader over the server's tiles for a tree of ``size`` leaves (suspect
        until a result folds to a signed root)."""
        return tiles.TileHashReader(size, self.read_tile)

    # ------------------------------------------------------------ entries
    def bundle(self, bundle_index: int, size: int) -> list[bytes]:
        """The entries of bundle ``bundle_index`` in a tree of ``size`` entries (the partial
        of the width ``size`` implies, else the full bundle, first ``W`` entries).  Suspect:
        each entry must still be proven.  FormatError for a malformed bundle."""
        width = min(tiles.TILE_WIDTH, size - bundle_index * tiles.TILE_WIDTH)
        if width <= 0:
            raise ValueError(f"bundle {bundle_index} is beyond tree size {size}")
        paths = [tiles.entries_path(bundle_index, width)]
        if width < tiles.TILE_WIDTH:
            paths.append(tiles.entries_path(bundle_index))
        for n, path in enumerate(paths):
            try:
                data = self.fetcher.get(path, MAX_BUNDLE_BYTES, accept_gzip=True).body
            except NetworkError as err:
                if err.status == 404 and n + 1 < len(paths):
                    continue
                raise
            entries: list[bytes] = []
            for entry in iter_entry_bundle(data):
                entries.append(entry)
                if len(entries) == width:
                    break
            if len(entries) < width:
                raise RemoteDataError(
                    f"{self.fetcher.url(path)}: entry bundle holds {len(entries)} entries, want {width}",
                    url=self.fetcher.url(path),
                    what="entry bundle",
                )
            return entries
        raise AssertionError("unreachable")  # pragma: no cover

    def entry(self, index: int, signed: SignedCheckpoint) -> ProvenEntry:
        """Entry ``index`` proven under ``signed``: fetched from its bundle, its leaf hash checked
        with the audit path computed from the tiles.  RemoteDataError says whether the entry or
        the tiles disagree with the signed root."""
        cp = signed.checkpoint
        if not 0 <= index < cp.size:
            raise RemoteDataError(f"index {index} is outside the signed tree (size {cp.size})", what="index")
        bundle_index = index // tiles.TILE_WIDTH
        line = self.bundle(bundle_index, cp.size)[index % tiles.TILE_WIDTH]
        reader = self.hash_reader(cp.size)
        hashes = self._audit_path(index, cp.size, reader)
        leaf = merkle.leaf_hash(line)
        try:
            merkle.verify_inclusion(leaf, index, cp.size, hashes, cp.root)
        except ProofError:
            raise self._which_is_wrong(index, cp, hashes, reader) from None
        return ProvenEntry(index, line, tuple(hashes), signed)

    def _audit_path(self, index: int, size: int, reader: tiles.TileHashReader) -> list[bytes]:
        try:
            return merkle.inclusion_proof(index, size, reader)
        except (CorruptLedgerError, FormatError) as err:  # a tile of the wrong length
            raise RemoteDataError(f"{self.fetcher.base_url}: served tiles are malformed: {err}", what="tile") from None

    def _which_is_wrong(
        self, index: int, cp: Checkpoint, hashes: Sequence[bytes], reader: tiles.TileHashReader
    ) -> RemoteDataError:
        """Why an entry did not prove: the tiles' leaf hash proves (so the entry is wrong) or not."""
        bundle_url = self.fetcher.url(tiles.entries_path(index // tiles.TILE_WIDTH))
        tile_leaf = reader.read_node_hashes([(0, index)])[0]
        if merkle.root_from_inclusion_proof(tile_leaf, index, cp.size, hashes) == cp.root:
            return RemoteDataError(
                f"entry {index} served in {bundle_url} does not hash to leaf {index} of the signed tree "
                f"(size {cp.size}): the server sent a wrong entry",
                url=bundle_url,
                what="entry",
            )
        return RemoteDataError(
            f"the tiles served by {self.fetcher.base_url} do not hash to the signed root of tree size {cp.size} "
            f"(checked with leaf {index}): the server sent a tampered tile",
            url=self.fetcher.url(tiles.tile_path(0, index // tiles.TILE_WIDTH)),
            what="tile",
        )

    # ------------------------------------------------------------ lookups
    def lookup_index(self, commit: str) -> int:
        """The leaf index the server's ``/lookup/<commit>`` names: a hint only (the entry at that
        index is then fetched and proven, and must be for ``commit``)."""
        from .lookup import check_commit_text

        check_commit_text(commit)
        resp = self.fetcher.get(f"lookup/{commit}", MAX_LOOKUP_BYTES)
        try:
            doc = json.loads(resp.body)
            index = doc["index"]
        except (ValueError, KeyError, TypeError):
            raise RemoteDataError(
                f"{self.fetcher.url('lookup/' + commit)}: not a lookup answer (JSON with an integer 'index')",
                url=self.fetcher.url("lookup/" + commit),
                what="lookup",
            ) from None
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise RemoteDataError(
                f"{self.fetcher.url('lookup/' + commit)}: 'index' is not a non-negative integer",
                url=self.fetcher.url("lookup/" + commit),
                what="lookup",
            )
        return index

