"""A bounded, thread-safe LRU cache of expanded tiles (c2sp.org/tlog-tiles), shared by the
:class:`~kfm_ledger.core.tiles.TileHashReader` instances of one log.

Pure code: no I/O.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from kfm_ledger.core.merkle import HASH_SIZE
from kfm_ledger.core.tiles import TILE_HEIGHT, TILE_WIDTH

__all__ = ["TileCache", "TileKey"]


#: Key of an expanded tile in a :class:`TileCache`: ``(level, index, width)``.
TileKey = tuple[int, int, int]


class TileCache:
    """A bounded, thread-safe LRU cache of expanded tiles (:func:`~kfm_ledger.core.tiles.expand_tile`), to share
    between the :class:`~kfm_ledger.core.tiles.TileHashReader` instances of one log so that a long-lived process
    hashes each tile once, not once per proof.

    Entries are keyed by ``(level, index, width)``: a full tile and each partial width are
    different entries.  :meth:`get` answers a key with its own entry or with a *wider* one
    of the same tile (the full tile, or a wider partial): c2sp.org/tlog-tiles makes every
    partial tile a prefix of any wider one, and storage already answers a missing partial
    with the full tile.  The caller must use only the nodes complete at the width it asked
    for; :class:`~kfm_ledger.core.tiles.TileHashReader` asks only for nodes complete at its tree size, which are
    exactly those.  A narrower entry never answers a wider key, so a reader at a grown tree
    never sees a node that was not complete in the tile it has, nor stale data.  A tile with
    a given key never changes in an append-only log, so entries need no invalidation while
    the log behaves; call :meth:`clear` after tiles were rewritten (a rebuild) or found
    corrupt.

    At most ``max_tiles`` entries are kept, the least recently used going first; a full
    tile costs about 16 KiB (511 hashes).  Per tile position only the widest partial is
    kept, and none once the full tile is cached: a log growing one row at a time would
    otherwise fill the cache with partials that a wider entry answers anyway.  One instance
    serves one log: keys do not say which log a tile belongs to.
    """

    def __init__(self, max_tiles: int = 1024) -> None:
        if max_tiles < 1:
            raise ValueError(f"invalid max_tiles {max_tiles}: want at least 1")
        self._max_tiles = max_tiles
        self._entries: OrderedDict[TileKey, tuple[bytes, ...]] = OrderedDict()
        #: (level, index) -> width of the partial tile cached for that position.
        self._partial_width: dict[tuple[int, int], int] = {}
        self._nbytes = 0
        self._lock = threading.Lock()
        #: Lookups answered from the cache.
        self.hits = 0
        #: Lookups that found nothing.
        self.misses = 0

    @property
    def max_tiles(self) -> int:
        """The most entries the cache holds."""
        return self._max_tiles

    @property
    def nbytes(self) -> int:
        """Bytes of hashes held (16,352 per full tile; Python's object overhead not counted)."""
        return self._nbytes

    def get(self, key: TileKey) -> tuple[bytes, ...] | None:
        """An expansion of tile ``(level, index)`` at ``width`` or wider (marked most
        recently used), or None.  Row ``r`` of the answer may hold more than
        ``width >> r`` hashes: only the first ``width >> r`` belong to the width asked for."""
        level, index, width = key
        entries = self._entries
        with self._lock:
            found = TILE_WIDTH
            levels = entries.get((level, index, TILE_WIDTH))
            if levels is None:
                found = self._partial_width.get((level, index), 0)
                if found >= width:
                    levels = entries.get((level, index, found))
            if levels is None:
                self.misses += 1
                return None
            entries.move_to_end((level, index, found))
            self.hits += 1
            return levels

    def put(self, key: TileKey, levels: tuple[bytes, ...]) -> None:
        """Cache the expansion of the tile ``key`` names.  ValueError unless ``levels`` has
        the shape :func:`~kfm_ledger.core.tiles.expand_tile` gives a tile of that width, so an entry can never
        claim more complete nodes than its tile has."""
        level, index, width = key
        if not 1 <= width <= TILE_WIDTH or level < 0 or index < 0:
            raise ValueError(f"invalid tile key {key}")
        if len(levels) != TILE_HEIGHT + 1 or any(
            len(blob) != (width >> r) * HASH_SIZE for r, blob in enumerate(levels)
        ):
            raise ValueError(f"expanded tile does not have the shape of a tile of width {width}")
        position = (level, index)
        with self._lock:
            entries = self._entries
            if width < TILE_WIDTH:
                if (level, index, TILE_WIDTH) in entries:
                    return  # the full tile answers every width
                old_width = self._partial_width.get(position, 0)
                if old_width >= width:
                    return  # a partial at least as wide answers this width
            else:
                old_width = self._partial_width.pop(position, 0)
            if old_width:
                self._forget(entries.pop((level, index, old_width), None))
            if width < TILE_WIDTH:
                self._partial_width[position] = width
            self._forget(entries.get(key))
            entries[key] = levels
            entries.move_to_end(key)
            self._nbytes += sum(map(len, levels))
            while len(entries) > self._max_tiles:
                (old_level, old_index, evicted_width), evicted = entries.popitem(last=False)
                self._forget(evicted)
                if evicted_width < TILE_WIDTH:
                    self._partial_width.pop((old_level, old_index), None)

    def _forget(self, levels: tuple[bytes, ...] | None) -> None:
        if levels is not None:
            self._nbytes -= sum(map(len, levels))

    def clear(self) -> None:
        """Forget every entry (after tiles were rewritten, or one was found corrupt)."""
        with self._lock:
            self._entries.clear()
            self._partial_width.clear()
            self._nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return (
            f"TileCache({len(self._entries)}/{self._max_tiles} tiles, {self._nbytes / 2**20:.1f} MiB, "
            f"hits={self.hits}, misses={self.misses})"
        )
