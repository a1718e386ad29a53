"""kfm's stored tile expansions (``tile-expansions.bin``, derived): for each full level-0
tile, its 255 inner node hashes and a SHA-256 checksum over the tile and the nodes, so a
proof's first use of a tile reads 8 KB instead of hashing 255 nodes.

The record format is pure code here; a record is used only when its checksum matches the
tile it was made from (a torn, flipped or stale record never is), and then only if its root
is the tile's hash in the level-1 tile (:meth:`kfm_ledger.core.tiles.TileHashReader`).
"""

from __future__ import annotations

import hashlib

from kfm_ledger.core.merkle import HASH_SIZE
from kfm_ledger.core.tiles import TILE_HEIGHT, TILE_WIDTH
from kfm_ledger.errors import KfmError
from kfm_ledger.storage.base import AppendLog, Storage

__all__ = ["EXPANSION_BYTES", "ExpansionStore", "expansion_record", "levels_from_record"]

_sha256 = hashlib.sha256
_FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE

#: Inner node hashes of a full tile: rows 1..8 of :func:`expand_tile` (128 + 64 + ... + 1).
_EXPANSION_NODES = (TILE_WIDTH - 1) * HASH_SIZE
#: Bytes of a stored expansion record: the inner nodes, then a SHA-256 checksum.
EXPANSION_BYTES = _EXPANSION_NODES + HASH_SIZE
_EXPANSION_DOMAIN = b"kfm tile expansion v1\n"


def _expansion_checksum(tile: bytes, nodes: bytes) -> bytes:
    # Over the tile too: a record is bound to the tile it was made from, so a record left by
    # an append that was rolled back (another tile now at that index) fails, as a torn one does.
    return _sha256(_EXPANSION_DOMAIN + tile + nodes).digest()


def expansion_record(levels: tuple[bytes, ...]) -> bytes:
    """The stored form of a full tile's expansion: rows 1..8 joined, then
    SHA-256("kfm tile expansion v1\\n" || tile || rows) (:data:`EXPANSION_BYTES`)."""
    nodes = b"".join(levels[1:])
    if len(levels) != TILE_HEIGHT + 1 or len(levels[0]) != _FULL_TILE_BYTES or len(nodes) != _EXPANSION_NODES:
        raise ValueError("not the expansion of a full tile")
    return nodes + _expansion_checksum(levels[0], nodes)


def levels_from_record(tile: bytes, record: bytes) -> tuple[bytes, ...] | None:
    """A full tile's expansion from the tile and its stored record (inverse of
    :func:`expansion_record`), or None if the record's checksum does not match the two."""
    if len(tile) != _FULL_TILE_BYTES or len(record) != EXPANSION_BYTES:
        return None
    nodes = record[:_EXPANSION_NODES]
    if record[_EXPANSION_NODES:] != _expansion_checksum(tile, nodes):
        return None
    levels = [tile]
    at = 0
    for r in range(1, TILE_HEIGHT + 1):
        size = (TILE_WIDTH >> r) * HASH_SIZE
        levels.append(nodes[at : at + size])
        at += size
    return tuple(levels)


class ExpansionStore:
    """The ``tile-expansions.bin`` file of one ledger: record ``i`` (full level-0 tile ``i``)
    at byte ``i * EXPANSION_BYTES``.  Derived data: every failure to read or write it is
    swallowed (the tiles answer instead), and it is never created by a read.

    ``refused`` counts records whose checksum did not match their tile (torn, flipped or
    stale): those are never used.
    """

    def __init__(self, storage: Storage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._log: AppendLog | None = None
        self.refused = 0

    def _open(self) -> AppendLog:
        if self._log is None:
            self._log = self._storage.append_log(self._key)
        return self._log

    def problem(self) -> str | None:
        """Why the stored file cannot be used (a symbolic link, not a regular file, unreadable), or
        None when it is absent or opens.  Reads and writes swallow this (derived data: the tiles
        answer); ``kfm verify`` reports it."""
        try:
            if self._log is None and not self._storage.exists(self._key):
                return None
            self._open()
        except (OSError, KfmError) as e:
            return str(e)
        return None

    def read(self, tile_index: int) -> bytes | None:
        """The stored record of full level-0 tile ``tile_index``, if the file has one."""
        at = tile_index * EXPANSION_BYTES
        try:
            if self._log is None and not self._storage.exists(self._key):
                return None  # reading never creates it
            log = self._open()
            if at + EXPANSION_BYTES > log.size():
                return None
            return log.read(at, EXPANSION_BYTES)
        except (OSError, KfmError):
            return None  # derived data: the tiles answer

    def levels(self, tile_index: int, tile: bytes) -> tuple[bytes, ...] | None:
        """The expansion of full level-0 tile ``tile_index`` from its record, if one is stored
        and its checksum matches ``tile`` (for :class:`~kfm_ledger.core.tiles.TileHashReader`,
        which then checks the root)."""
        record = self.read(tile_index)
        if record is None:
            return None
        levels = levels_from_record(tile, record)
        if levels is None:
            self.refused += 1
        return levels

    def store(self, first_tile: int, records: list[bytes]) -> None:
        """Write the records of full level-0 tiles ``first_tile ..`` (best effort).

        Records must be contiguous from the start of the file; anything stored at or after
        ``first_tile`` (from an append that was rolled back) is cut first.
        """
        if not records:
            return
        try:
            log = self._open()
            at = first_tile * EXPANSION_BYTES
            if log.size() > at:
                log.truncate(at)
            if log.size() == at:
                log.append(b"".join(records))
        except (OSError, KfmError):
            pass

    def cut(self, full_tiles: int) -> None:
        """Keep the records of the first ``full_tiles`` tiles only (an unsigned append is
        undone); the file is removed when none is left.  Best effort."""
        keep = full_tiles * EXPANSION_BYTES
        try:
            if self._storage.exists(self._key) and self._open().size() > keep:
                self._open().truncate(keep)
                if keep == 0:  # the append created it: leave no trace
                    self.close()
                    self._storage.delete(self._key)
        except (OSError, KfmError):
            pass

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
