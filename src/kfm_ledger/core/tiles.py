"""Tile coordinates and paths of c2sp.org/tlog-tiles, and a :class:`~kfm_ledger.core.merkle.HashReader`
over stored hash tiles.

Pure code: nothing here opens a file; :class:`TileHashReader` is given a function that does.

A *tile* ``(level, index, width)``: tile ``N`` of tile-level ``L`` holds, in order, the hashes
of the tree nodes ``(8L, 256N + i)`` for ``i`` in ``0 .. width-1`` (tlog-tiles "Merkle Tree":
``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])``).  A full tile has width 256
(8,192 bytes); the one rightmost tile of a level may be partial (width 1..255).  So the
node ``(8L, j)`` that :meth:`kfm_ledger.core.merkle.CompactRange.append` reports as complete is
hash ``j % 256`` of tile ``(L, j // 256)`` (see :func:`tile_position`).

Nodes between those levels are rehashed from a tile's hashes.  :func:`expand_tile` does it
for a whole tile at once, and a :class:`~kfm_ledger.core.tile_cache.TileCache` shared by the
readers of one log keeps expanded tiles, so that a long-lived process hashes each tile once,
not once per proof.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kfm_ledger.core.merkle import HASH_SIZE, NodeId
from kfm_ledger.errors import CorruptLedgerError, FormatError, IndexOutOfRangeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kfm_ledger.core.tile_cache import TileCache

__all__ = [
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileHashReader",
    "entries_path",
    "expand_tile",
    "hashes_of_tile",
    "parse_entries_path",
    "parse_tile_path",
    "tile_hash_count",
    "tile_path",
    "tile_position",
    "tile_width",
    "tiles_changed",
    "tiles_for_size",
]

#: Tree levels per tile (tlog-tiles uses height 8).
TILE_HEIGHT = 8
#: Hashes in a full tile: ``2 ** TILE_HEIGHT``.
TILE_WIDTH = 256
#: Largest ``<L>`` a tile path may carry (tlog-tiles: "between 0 and 63").
MAX_TILE_LEVEL = 63

_FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE
#: Tile indexes are bounded so that paths stay short (7 groups at most); 2**64 leaves is
#: far beyond any tree this project will hold.
_MAX_INDEX = 1 << 64


# ---------------------------------------------------------------- paths


def _encode_index(index: int) -> str:
    """``<N>``: 3-digit groups, all but the last prefixed ``x`` (1234067 -> ``x001/x234/067``)."""
    text = f"{index % 1000:03d}"
    index //= 1000
    while index:
        text = f"x{index % 1000:03d}/{text}"
        index //= 1000
    return text


def _width_suffix(width: int | None) -> str:
    if width is None or width == TILE_WIDTH:
        return ""
    if not 1 <= width < TILE_WIDTH:
        raise ValueError(f"invalid tile width {width}: want 1..{TILE_WIDTH}")
    return f".p/{width}"


def _check_index(index: int) -> None:
    if not 0 <= index < _MAX_INDEX:
        raise ValueError(f"invalid tile index {index}")


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """``tile/<L>/<N>[.p/<W>]`` (c2sp.org/tlog-tiles, "Merkle Tree").

    ``width`` None or 256 names the full tile; 1..255 a partial one.  ValueError for a level
    outside 0..63, a negative index or a width outside 1..256.
    """
    if not 0 <= level <= MAX_TILE_LEVEL:
        raise ValueError(f"invalid tile level {level}: want 0..{MAX_TILE_LEVEL}")
    _check_index(index)
    return f"tile/{level}/{_encode_index(index)}{_width_suffix(width)}"


def entries_path(index: int, width: int | None = None) -> str:
    """``tile/entries/<N>[.p/<W>]`` (c2sp.org/tlog-tiles, "Log entries")."""
    _check_index(index)
    return f"tile/entries/{_encode_index(index)}{_width_suffix(width)}"


# [0-9], not \d: \d also matches non-ASCII digits.
_INDEX_RE = r"((?:x[0-9]{3}/)*)([0-9]{3})"
_WIDTH_RE = r"(?:\.p/([1-9][0-9]{0,2}))?"
_TILE_PATH_RE = re.compile(r"tile/(0|[1-9][0-9]?)/" + _INDEX_RE + _WIDTH_RE)
_ENTRIES_PATH_RE = re.compile(r"tile/entries/" + _INDEX_RE + _WIDTH_RE)


def _parse_index_and_width(path: str, groups: str, last: str, width_text: str | None) -> tuple[int, int]:
    parts = groups.split("/")[:-1] if groups else []
    if parts and parts[0] == "x000":
        raise FormatError(
            f"tile path {path!r}: index has a leading zero group", what="tile path", field="index", found=path
        )
    if len(parts) > 6:
        raise FormatError(f"tile path {path!r}: index too large", what="tile path", field="index", found=path)
    index = 0
    for part in parts:
        index = index * 1000 + int(part[1:])
    index = index * 1000 + int(last)
    if index >= _MAX_INDEX:
        raise FormatError(f"tile path {path!r}: index too large", what="tile path", field="index", found=path)
    width = TILE_WIDTH
    if width_text is not None:
        width = int(width_text)
        if width >= TILE_WIDTH:
            raise FormatError(
                f"tile path {path!r}: partial width {width} not in 1..255", what="tile path", field="width", found=path
            )
    return index, width


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """``(level, index, width)`` of a hash tile path ``tile/<L>/<N>[.p/<W>]``; width 256 for a
    full tile.

    Strict (c2sp.org/tlog-tiles): ``<L>`` is 0..63 without leading zeros, ``<N>`` is written
    in canonical 3-digit groups (all but the last with ``x``, no all-zero leading group),
    ``<W>`` is 1..255 without leading zeros; no prefix or trailing text.  Entry bundle paths
    are not hash tiles: use :func:`parse_entries_path`.  Raises FormatError.
    """
    match = _TILE_PATH_RE.fullmatch(path)
    if match is None:
        raise FormatError(f"not a canonical hash tile path: {path!r}", what="tile path", found=path)
    level = int(match.group(1))
    if level > MAX_TILE_LEVEL:
        raise FormatError(
            f"tile path {path!r}: level {level} not in 0..{MAX_TILE_LEVEL}", what="tile path", field="level", found=path
        )
    index, width = _parse_index_and_width(path, match.group(2), match.group(3), match.group(4))
    return level, index, width


def parse_entries_path(path: str) -> tuple[int, int]:
    """``(index, width)`` of an entry bundle path ``tile/entries/<N>[.p/<W>]``; width 256 for
    a full bundle.  As strict as :func:`parse_tile_path`.  Raises FormatError."""
    match = _ENTRIES_PATH_RE.fullmatch(path)
    if match is None:
        raise FormatError(f"not a canonical entry bundle path: {path!r}", what="entry bundle path", found=path)
    return _parse_index_and_width(path, match.group(1), match.group(2), match.group(3))


# ------------------------------------------------------------ which tiles


def tile_hash_count(level: int, size: int) -> int:
    """How many tile-level-``level`` hashes (complete nodes at tree level ``8 * level``)
    exist in a tree of ``size`` leaves: ``size // 256**level``."""
    if level < 0 or size < 0:
        raise ValueError(f"invalid tile level {level} or tree size {size}")
    return size >> (TILE_HEIGHT * level)


def tile_width(level: int, index: int, size: int) -> int:
    """Width of tile ``(level, index)`` in a tree of ``size`` leaves: 256 if full,
    ``floor(size / 256**level) mod 256`` for the partial one (tlog-tiles "Partial Tiles"),
    0 if the tile does not exist at that size."""
    if index < 0:
        raise ValueError(f"invalid tile index {index}")
    count = tile_hash_count(level, size)
    full = count >> TILE_HEIGHT
    if index < full:
        return TILE_WIDTH
    if index == full:
        return count & (TILE_WIDTH - 1)
    return 0


def tiles_for_size(size: int) -> list[tuple[int, int, int]]:
    """Every ``(level, index, width)`` a log of ``size`` leaves publishes: all full tiles and,
    per level, the one partial tile if its width is not 0.  Ordered by level, then index.

    Size 70,000: 273 full level-0 tiles and level-0 partial 112; one full level-1 tile and
    level-1 partial 17; level-2 partial 1 (tlog-tiles "Partial Tiles").
    """
    if size < 0:
        raise ValueError(f"invalid tree size {size}")
    tiles: list[tuple[int, int, int]] = []
    level = 0
    count = size
    while count:
        full = count >> TILE_HEIGHT
        tiles.extend((level, i, TILE_WIDTH) for i in range(full))
        partial = count & (TILE_WIDTH - 1)
        if partial:
            tiles.append((level, full, partial))
        level += 1
        count >>= TILE_HEIGHT
    return tiles


def tiles_changed(old_size: int, new_size: int) -> list[tuple[int, int, int]]:
    """The tiles, with their width at ``new_size``, whose content differs between the two
    sizes: at each level, the tiles holding hashes ``[old count, new count)``.  This is what
    growing the tree from ``old_size`` to ``new_size`` must write (the right edge only).
    ValueError if ``old_size > new_size``."""
    if old_size < 0 or old_size > new_size:
        raise ValueError(f"invalid tree sizes {old_size} -> {new_size}")
    tiles: list[tuple[int, int, int]] = []
    level = 0
    old_count, new_count = old_size, new_size
    while new_count > old_count:
        last_tile = (new_count - 1) >> TILE_HEIGHT
        for index in range(old_count >> TILE_HEIGHT, last_tile + 1):
            width = TILE_WIDTH if index < last_tile else new_count - (index << TILE_HEIGHT)
            tiles.append((level, index, width))
        level += 1
        old_count >>= TILE_HEIGHT
        new_count >>= TILE_HEIGHT
    return tiles


def tile_position(node: NodeId) -> tuple[int, int, int] | None:
    """Where a tree node is stored: ``(tile level, tile index, position in the tile)`` for a
    node at a tree level that is a multiple of 8, else None (not stored, rehashed on read)."""
    level, index = node
    if level % TILE_HEIGHT:
        return None
    return level // TILE_HEIGHT, index >> TILE_HEIGHT, index & (TILE_WIDTH - 1)


def hashes_of_tile(data: bytes) -> list[bytes]:
    """The 32-byte hashes of a tile's bytes.  FormatError unless the length is a multiple of
    32 and at most 8,192 (a full tile)."""
    if len(data) % HASH_SIZE or len(data) > _FULL_TILE_BYTES:
        raise FormatError(
            f"tile is {len(data)} bytes: want a multiple of {HASH_SIZE}, at most {_FULL_TILE_BYTES}",
            what="tile",
            field="length",
        )
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


# ------------------------------------------------------------ tile reader


_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"


def _hash_up_blob(blob: bytes, levels: int) -> bytes:
    """Hash ``levels`` tree levels up from consecutive hashes joined in ``blob``: each
    parent is ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1), and a left and right
    child lie next to each other, so one 64-byte slice is one parent's input.  Returns the
    parents joined; a trailing unpaired hash is dropped (it has no complete parent)."""
    sha, prefix = _sha256, _NODE_PREFIX
    for _ in range(levels):
        blob = b"".join([sha(prefix + blob[o : o + 64]).digest() for o in range(0, len(blob) - 63, 64)])
    return blob


def expand_tile(data: bytes) -> tuple[bytes, ...]:
    """Every complete node hash inside one tile, by tree level above the tile's hashes.

    ``data`` is a tile of width ``w`` (``w * 32`` bytes, 1 <= w <= 256).  Entry ``r``
    (0 <= r <= 8) joins the ``w >> r`` complete nodes ``r`` levels above the tile's hashes,
    left to right: for tile ``N`` of tile-level ``L`` the ``p``-th is the node
    ``(8L + r, (N << (8 - r)) + p)``, the root over tile hashes ``[p << r, (p + 1) << r)``
    (tlog-tiles: "the Merkle Tree levels between those expressed by the tile hashes are
    reconstructed by hashing the leaves").  Entry 0 is ``data`` itself.  A node whose
    subtree runs past the width is not complete and is left out, so a partial tile never
    yields a hash that a wider tile would contradict.  255 hashes for a full tile.
    FormatError unless the length is a multiple of 32 in 32..8,192.
    """
    if not data or len(data) % HASH_SIZE or len(data) > _FULL_TILE_BYTES:
        raise FormatError(
            f"tile is {len(data)} bytes: want a multiple of {HASH_SIZE}, 32 to {_FULL_TILE_BYTES}",
            what="tile",
            field="length",
        )
    # Level by level, each over one bytes object: a parent costs one slice, one
    # concatenation and one hashlib call (about 0.35 us); about 95 us for a full tile.
    levels = [bytes(data)]
    for _ in range(TILE_HEIGHT):
        levels.append(_hash_up_blob(levels[-1], 1))
    return tuple(levels)


class TileHashReader:
    """A :class:`kfm_ledger.core.merkle.HashReader` over the stored hash tiles of a tree of
    ``size`` leaves (c2sp.org/tlog-tiles).

    ``read_tile(level, index, width)`` returns the bytes of that tile: at least
    ``width * 32`` bytes (the full tile or a wider partial will do; only the first
    ``width * 32`` bytes are used), or raises if it is missing.  The width asked for is the
    one ``size`` implies (:func:`tile_width`), so partial tiles are named exactly.

    Each tile is read at most once per reader; :attr:`tiles_read` counts the calls to
    ``read_tile``.  Without ``cache`` a node above the tile's hashes is hashed up from them
    on each request (only the hashes that node needs).  With a :class:`TileCache` (shared
    between readers of one log, any sizes) each tile is expanded whole the first time it is
    read (:func:`expand_tile`) and every later request, by this reader or another, is a
    lookup.  A reader is meant for one thread; the cache may be shared between threads.
    """

    def __init__(
        self,
        size: int,
        read_tile: Callable[[int, int, int], bytes],
        cache: TileCache | None = None,
        stored_expansion: Callable[[int, bytes], tuple[bytes, ...] | None] | None = None,
    ) -> None:
        if size < 0:
            raise ValueError(f"invalid tree size {size}")
        self.size = size
        self._read_tile = read_tile
        self._cache = cache
        self._stored_expansion_of = stored_expansion
        #: Stored expansion records used, and ones refused (their root did not match).
        self.expansions_used = 0
        self.expansions_refused = 0
        self._tiles: dict[tuple[int, int], bytes] = {}
        self._expanded: dict[tuple[int, int], tuple[bytes, ...]] = {}
        #: Number of ``read_tile`` calls made so far.
        self.tiles_read = 0

    def _tile(self, level: int, index: int, width: int) -> bytes:
        """The first ``width`` hashes of tile ``(level, index)``, from ``read_tile``."""
        data = self._read_tile(level, index, width)
        self.tiles_read += 1
        want = width * HASH_SIZE
        if len(data) < want or len(data) > _FULL_TILE_BYTES or len(data) % HASH_SIZE:
            raise CorruptLedgerError(
                f"{tile_path(level, index, width)}: tile is {len(data)} bytes, "
                f"want {want}" + (" or a wider tile" if width < TILE_WIDTH else ""),
                key=tile_path(level, index, width),
                index=index,
            )
        return bytes(data[:want])

    def _raw(self, level: int, index: int) -> bytes:
        key = (level, index)
        data = self._tiles.get(key)
        if data is None:
            data = self._tile(level, index, tile_width(level, index, self.size))
            self._tiles[key] = data
        return data

    def _levels(self, level: int, index: int, cache: TileCache) -> tuple[bytes, ...]:
        """Tile ``(level, index)`` expanded, at this size's width or wider (see
        :meth:`TileCache.get`): from this reader, the cache, or ``read_tile``."""
        position = (level, index)
        levels = self._expanded.get(position)
        if levels is None:
            width = tile_width(level, index, self.size)
            key = (level, index, width)
            levels = cache.get(key)
            if levels is None:
                levels = self._stored_expansion(index) if level == 0 and width == TILE_WIDTH else None
                if levels is None:
                    # _raw: the bytes _stored_expansion read, if it did (a tile is read once).
                    levels = expand_tile(self._raw(level, index))
                cache.put(key, levels)
            self._expanded[position] = levels
        return levels

    def _stored_expansion(self, index: int) -> tuple[bytes, ...] | None:
        """Full level-0 tile ``index`` expanded from stored, derived data (``stored_expansion``
        answers with an expansion bound to the tile's bytes, or None), if its root is the tile's
        hash in the level-1 tile; else None (and the tile is hashed instead).

        A record rewritten on purpose to match its tile is as trustworthy as the tiles
        themselves (which are not signed either): proofs checked against a signed root
        (``tlog_proof``, ``kfm verify``) still catch it.
        """
        if self._stored_expansion_of is None:
            return None
        # The tile is full at this size: _raw reads it at width 256 and keeps it for _levels.
        levels = self._stored_expansion_of(index, self._raw(0, index))
        if levels is None:
            return None
        # The tile is full at this size, so its root, node (8, index), is a hash of level-1 tile index >> 8.
        (root,) = self.read_node_hashes([(TILE_HEIGHT, index)])
        if len(levels) != TILE_HEIGHT + 1 or levels[TILE_HEIGHT] != root:
            self.expansions_refused += 1
            return None
        self.expansions_used += 1
        return levels

    def read_node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        """One hash per node, in order.  Node ``(k, i)`` must be complete at this size
        (``(i + 1) << k <= size``), else IndexOutOfRangeError.

        Node ``(k, i)`` with ``k = 8L + r`` is the root over the ``2**r`` consecutive hashes
        ``[i << r, (i + 1) << r)`` of tile-level ``L``, which lie in one tile; they are hashed
        up ``r`` levels (tlog-tiles: "the Merkle Tree levels between those expressed by the
        tile hashes are reconstructed by hashing the leaves"), or looked up in the cache.
        """
        # Check all first, then read each tile needed once, then hash.
        size = self.size
        for level, index in nodes:
            if level < 0 or index < 0 or (index + 1) << level > size:
                raise IndexOutOfRangeError(
                    f"node (level {level}, index {index}) is not complete in tree size {size}",
                    index=index,
                    size=size,
                )
        out: list[bytes] = []
        cache = self._cache
        if cache is not None:
            expanded = self._expanded
            for level, index in nodes:
                tile_level, r = level >> 3, level & 7  # level = 8 * tile_level + r
                shift = TILE_HEIGHT - r
                tile_index = index >> shift
                levels = expanded.get((tile_level, tile_index))
                if levels is None and r == 0 and (tile_level, tile_index) in self._tiles:
                    # A tile hash itself, from a tile this reader already holds unexpanded.
                    offset = (index & (TILE_WIDTH - 1)) * HASH_SIZE
                    out.append(self._tiles[(tile_level, tile_index)][offset : offset + HASH_SIZE])
                    continue
                if levels is None and r == 0 and len(nodes) == 1:
                    width = tile_width(tile_level, tile_index, size)
                    if width < TILE_WIDTH:
                        # One hash of a partial tile (the last leaf, checked by every append's
                        # recovery): read it, do not expand a tile whose width changes next append.
                        cached = cache.get((tile_level, tile_index, width))
                        if cached is None:
                            offset = (index & (TILE_WIDTH - 1)) * HASH_SIZE
                            out.append(self._raw(tile_level, tile_index)[offset : offset + HASH_SIZE])
                            continue
                        levels = expanded[(tile_level, tile_index)] = cached
                levels = levels or self._levels(tile_level, tile_index, cache)
                # A node complete in the tree is complete in the tile at the width this
                # size implies: it is hash number p of row r of the expansion.
                offset = (index & ((1 << shift) - 1)) * HASH_SIZE
                out.append(levels[r][offset : offset + HASH_SIZE])
            return out
        for level, index in nodes:
            tile_level, r = divmod(level, TILE_HEIGHT)
            first = index << r
            data = self._raw(tile_level, first >> TILE_HEIGHT)
            offset = (first & (TILE_WIDTH - 1)) * HASH_SIZE
            if r == 0:
                out.append(data[offset : offset + HASH_SIZE])
            else:
                out.append(_hash_up_blob(data[offset : offset + (HASH_SIZE << r)], r))
        return out

    def __repr__(self) -> str:
        return f"TileHashReader(size={self.size}, tiles_read={self.tiles_read})"
