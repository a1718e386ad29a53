"""Writing the hash tiles for appended leaves (c2sp.org/tlog-tiles), touching only the right edge.

The right edge of the tree (its compact-range peaks and the hashes already in each
level's partial tile) is a value, :class:`RightEdge`: :func:`write_tiles` takes the
edge the same Ledger wrote last (or None) and returns the new one in :class:`TilesWritten`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfm_ledger.core import merkle, tiles
from kfm_ledger.errors import CorruptLedgerError
from kfm_ledger.log.expansions import expansion_record

from . import entries
from .layout import TILES_PREFIX, checkpoint_key

if TYPE_CHECKING:
    from kfm_ledger.storage import Storage

    from .ledger import Ledger

WriteMany = Callable[[list[tuple[str, bytes]]], None]


@dataclass(frozen=True)
class RightEdge:
    """The right edge of the tree of ``size`` leaves and root ``root`` as its tiles hold it."""

    size: int
    root: bytes
    peaks: tuple[bytes, ...]  #: the compact range's peaks (RFC 9162 §2.1.1 subtrees, left to right)
    #: (tile level, the hashes of its partial tile) per level that has one, ascending: a tuple,
    #: not a dict, so that the value is immutable all through
    partials: tuple[tuple[int, tuple[bytes, ...]], ...]


@dataclass(frozen=True)
class TilesWritten:
    """What :func:`write_tiles` wrote: the new tree and the tiles that became full."""

    size: int
    root: bytes
    completed: tuple[tuple[int, int], ...]  #: (level, index) of tiles that became full
    edge: RightEdge
    bundles_completed: tuple[int, ...] = ()  #: indexes of entry bundles that became full


def refuse_tiles_in_the_way(storage: Storage, old_size: int, new_size: int) -> None:
    """Refuse, before writing anything, when objects the append would create already exist."""
    if storage.exists(checkpoint_key(new_size)):
        raise CorruptLedgerError(
            f"{checkpoint_key(new_size)} already exists beyond the signed tree (size {old_size}): the log "
            "once signed a tree of that size and must not sign another; nothing was written — inspect it",
            key=checkpoint_key(new_size),
        )
    keys = [
        ("tile", tiles.tile_path(lv, index, width), index)
        for lv, index, width in tiles.tiles_changed(old_size, new_size)
    ]
    keys += [
        ("entry bundle", tiles.entries_path(index, width), index)
        for index, width in entries.bundles_changed(old_size, new_size)
    ]
    for kind, key, index in keys:
        if storage.exists(key):
            raise CorruptLedgerError(
                f"{kind} {key} already exists beyond the signed tree (size {old_size}); nothing was "
                "written: run `kfm verify`, then `kfm rebuild` to recreate the tiles and entry bundles",
                key=key,
                index=index,
            )


def _stored_edge(led: Ledger, old_size: int) -> tuple[merkle.CompactRange, dict[int, list[bytes]]]:
    """The right edge at ``old_size`` read from the stored tiles (checked against the signed root)."""
    reader = led.hash_reader(old_size)
    peaks = reader.read_node_hashes(merkle.subtree_nodes(0, old_size)) if old_size else []
    crange = merkle.CompactRange(old_size, peaks)
    if old_size and old_size == led.size and crange.root() != led.root:
        # The stored right edge does not give the signed root: building on it would
        # sign a tree that is not the hash of the rows.
        led.prover.tile_cache.clear()
        raise CorruptLedgerError(
            f"the stored tiles do not give the signed root at size {old_size}: a tile was changed; "
            "nothing was written: run `kfm verify`, then `kfm rebuild`",
            key=TILES_PREFIX,  # the right edge's tiles (which one is wrong, kfm verify finds)
            index=old_size - 1,  # the last signed leaf, at the right edge
        )
    # The right edge: per tile level, the hashes already in its partial tile.
    buffers: dict[int, list[bytes]] = {}
    level = 0
    while (old_size >> (tiles.TILE_HEIGHT * level)) > 0:
        count = old_size >> (tiles.TILE_HEIGHT * level)
        width = count % tiles.TILE_WIDTH
        if width:
            data = led.read_tile(level, count // tiles.TILE_WIDTH, width)
            buffers[level] = tiles.hashes_of_tile(data[: width * merkle.HASH_SIZE])
        level += 1
    return crange, buffers


# Kept whole (>80 lines): a hot loop whose closures share its locals, its writes in crash order.
def write_tiles(
    led: Ledger,
    old_size: int,
    leaf_hashes: bytes | bytearray | Iterable[bytes],
    write_many: WriteMany,
    edge: RightEdge | None,
) -> TilesWritten:
    """Write the tiles for leaves appended after ``old_size``, touching only the right edge.

    ``leaf_hashes`` is the leaves' hashes, concatenated or one by one.  A
    compact range over [0, old_size) is seeded from ``edge`` when it is the
    signed tree's, else from the stored tiles; each completed node at levels 0,
    8, 16, ... is a tile hash (c2sp.org/tlog-tiles: tile-level L holds the roots
    of 256**L-leaf subtrees).  Where 256 leaves fill a level-0 tile, the tile is
    their hashes as given and its root enters the compact range as one subtree
    (255 pairwise hashes, RFC 9162 §2.1.1, no per-leaf bookkeeping).  Tiles are
    handed to ``write_many`` in groups (one directory sync per group).

    Besides the tiles it writes the expansion records of the level-0 tiles that became
    full (``led.prover.expansions``, derived data, after the tiles they come from), and
    when the stored right edge does not give the signed root it clears the Prover's tile
    cache (thread-safe) before raising.  It changes nothing else of the Ledger: the new
    edge is returned, not kept.  Safe to run in a thread while the caller writes the rows
    and the index (the append holds the writer lock; nothing else uses the records then).
    """
    # Read in place (a bulk append's 32 MB of leaf hashes are not copied whole; the caller
    # does not change them while this runs), each tile and hash taken out as bytes.
    hash_bytes: bytes | memoryview = (
        leaf_hashes
        if isinstance(leaf_hashes, bytes)
        else memoryview(leaf_hashes).cast("B")
        if isinstance(leaf_hashes, (bytearray, memoryview))
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

    if edge is not None and edge.size == old_size == led.size and edge.root == led.root:
        # The right edge this Ledger wrote last, for the tree that was then signed:
        # the same hashes the stored tiles hold, without reading them again.
        crange = merkle.CompactRange(old_size, edge.peaks)
        buffers = {level: list(hashes) for level, hashes in edge.partials}
    else:
        crange, buffers = _stored_edge(led, old_size)
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
            tile = bytes(hash_bytes[pos : pos + tile_bytes])
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
                led.prover.expansions.store(first_full, records)
                first_full, records = tile_index + 1, []
            add_nodes(crange.append_subtree(tiles.TILE_HEIGHT, levels[tiles.TILE_HEIGHT]))
            pos += tile_bytes
        else:
            before = len(completed)
            add_nodes(crange.append(bytes(hash_bytes[pos : pos + merkle.HASH_SIZE])))
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
    led.prover.expansions.store(first_full, records)
    root = crange.root()
    partials = tuple((lv, tuple(b)) for lv, b in sorted(buffers.items()) if b)
    new_edge = RightEdge(new_size, root, tuple(crange.peaks), partials)
    return TilesWritten(new_size, root, tuple(completed), new_edge)


#: An entry-bundle group handed to ``write_many`` at once (one pair of disk flushes each).
BUNDLE_GROUP_BYTES = 64 << 20


def edge_leaf_hashes(led: Ledger, old_size: int, edge: RightEdge | None) -> list[bytes]:
    """The leaf hashes of the right-edge partial level-0 tile of the signed tree of ``old_size``
    (the leaves of its partial entry bundle): from ``edge`` when it is the signed tree's."""
    width = old_size % tiles.TILE_WIDTH
    if not width:
        return []
    if edge is not None and edge.size == old_size == led.size and edge.root == led.root:
        for level, hashes in edge.partials:
            if level == 0:
                return list(hashes)
    return led.hash_reader(old_size).read_node_hashes([(0, i) for i in range(old_size - width, old_size)])


def write_bundles(
    led: Ledger,
    old_size: int,
    pieces: Iterable[entries.Piece],
    write_many: WriteMany,
    edge: RightEdge | None,
    *,
    write_stream: Callable[[Iterable[tuple[str, bytes]]], None] | None = None,
) -> tuple[int, ...]:
    """Write the entry bundles (c2sp.org/tlog-tiles "Log entries") for entries appended after
    ``old_size``; return the indexes of the bundles that became full.

    With ``write_stream`` (a local ledger's :meth:`~kfm_ledger.storage.local.LocalStorage.write_once_stream`)
    every bundle goes to it as it is cut, none held; else they go to ``write_many`` in groups of
    :data:`BUNDLE_GROUP_BYTES`.

    The right-edge partial bundle of the old tree is read and checked against the signed leaf
    hashes first (:func:`kfm_ledger.log.entries.edge_head`): the new bundle that extends it
    repeats its entries.  Like tiles, bundles are immutable objects written before signing;
    a crash after leaves them beyond the signed size, and recovery deletes them.
    """
    head = entries.edge_head(led, old_size, edge_leaf_hashes(led, old_size, edge))
    completed: list[int] = []

    def cut() -> Iterator[tuple[str, bytes]]:
        for key, data in entries.batch_bundles(old_size, head, pieces):
            if ".p/" not in key:
                completed.append(tiles.parse_entries_path(key)[0])
            yield key, data

    if write_stream is not None:
        write_stream(cut())
        return tuple(completed)
    group: list[tuple[str, bytes]] = []
    group_bytes = 0
    for key, data in cut():
        group.append((key, data))
        group_bytes += len(data)
        if group_bytes >= BUNDLE_GROUP_BYTES:
            write_many(group)
            group, group_bytes = [], 0
    if group:
        write_many(group)
    return tuple(completed)


def write_tiles_and_bundles(
    led: Ledger,
    old_size: int,
    leaf_hashes: bytes | bytearray | Iterable[bytes],
    write_many: WriteMany,
    edge: RightEdge | None,
    pieces: Callable[[], Iterable[entries.Piece]] | None,
    *,
    parallel: bool = False,
) -> TilesWritten:
    """:func:`write_tiles` and (unless ``pieces`` is None: a ledger without entry bundles)
    :func:`write_bundles` for the same entries; the bundles that became full in the result.

    With ``parallel`` (a large batch) the bundles are written in a thread of their own while the
    tiles are (``pieces`` may wait for the rows: a bulk append's bundles are cut from the rows
    once they are copied); both are done, or both failed and stopped, when this returns.
    """
    if pieces is None:
        return write_tiles(led, old_size, leaf_hashes, write_many, edge)
    if not parallel:
        tiled = write_tiles(led, old_size, leaf_hashes, write_many, edge)
        return dataclasses.replace(tiled, bundles_completed=write_bundles(led, old_size, pieces(), write_many, edge))
    stream = getattr(led.storage, "write_once_stream", None)  # a local ledger: no bundle held in memory
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kfm-bundles")
    try:
        bundles = pool.submit(lambda: write_bundles(led, old_size, pieces(), write_many, edge, write_stream=stream))
        try:
            tiled = write_tiles(led, old_size, leaf_hashes, write_many, edge)
        finally:
            concurrent.futures.wait([bundles])  # no bundle is written after this returns (or raises)
        done = bundles.result()
    finally:
        pool.shutdown(wait=True)
    return dataclasses.replace(tiled, bundles_completed=done)


def delete_replaced_partials(storage: Storage, tiled: TilesWritten) -> None:
    """Step 7: delete the partial tiles and entry bundles that full ones now replace."""
    for tile_level, tile_index in tiled.completed:
        delete_partials(storage, tile_level, tile_index)
    for index in tiled.bundles_completed:
        entries.delete_partial_bundles(storage, index)


def delete_partials(storage: Storage, level: int, index: int) -> None:
    """Delete the partial tiles of tile (level, index), which is full now."""
    for key in list(storage.list(tiles.tile_path(level, index) + ".p/")):
        storage.delete(key)


def prune_partials(storage: Storage, size: int) -> None:
    """Delete leftover partials of the last full tile per level and of the last full entry
    bundle (an interrupted step 7)."""
    entries.prune_partial_bundles(storage, size)
    level = 0
    while (size >> (tiles.TILE_HEIGHT * level)) >= tiles.TILE_WIDTH:
        count = size >> (tiles.TILE_HEIGHT * level)
        delete_partials(storage, level, count // tiles.TILE_WIDTH - 1)
        level += 1
