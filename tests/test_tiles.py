"""Tests for kfm_ledger.core.tiles: c2sp.org/tlog-tiles paths, tile sets, TileHashReader."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.core.merkle import (
    CompactRange,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    subtree_nodes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from kfm_ledger.core.tile_cache import TileCache
from kfm_ledger.core.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileHashReader,
    entries_path,
    expand_tile,
    hashes_of_tile,
    parse_entries_path,
    parse_tile_path,
    tile_hash_count,
    tile_path,
    tile_position,
    tile_width,
    tiles_changed,
    tiles_for_size,
)
from kfm_ledger.errors import CorruptLedgerError, FormatError, IndexOutOfRangeError, RootMismatchError

# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (1234067, "x001/x234/067"),
        (5, "005"),
        (0, "000"),
        (999, "999"),
        (1000, "x001/000"),
        (256**3, "x016/x777/216"),
        (1_000_000, "x001/x000/000"),
    ],
)
def test_path_encoding(index: int, encoded: str) -> None:
    assert tile_path(0, index) == f"tile/0/{encoded}"
    assert tile_path(3, index, 256) == f"tile/3/{encoded}"
    assert tile_path(1, index, 17) == f"tile/1/{encoded}.p/17"
    assert entries_path(index) == f"tile/entries/{encoded}"
    assert entries_path(index, 255) == f"tile/entries/{encoded}.p/255"
    assert parse_tile_path(f"tile/0/{encoded}") == (0, index, 256)
    assert parse_tile_path(f"tile/63/{encoded}.p/1") == (63, index, 1)
    assert parse_entries_path(f"tile/entries/{encoded}.p/112") == (index, 112)
    assert parse_entries_path(f"tile/entries/{encoded}") == (index, 256)


def test_path_arguments_are_checked() -> None:
    for level, index, width in [(-1, 0, None), (64, 0, None), (0, -1, None), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(ValueError):
            tile_path(level, index, width)
    with pytest.raises(ValueError):
        entries_path(0, 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 63), st.integers(0, (1 << 64) - 1), st.integers(1, 256))
def test_path_round_trip(level: int, index: int, width: int) -> None:
    assert parse_tile_path(tile_path(level, index, width)) == (level, index, width)
    assert parse_entries_path(entries_path(index, width)) == (index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/5",  # not 3 digits
        "tile/0/05",
        "tile/0/0005",
        "tile/0/x005",  # last group with x
        "tile/0/x000/005",  # leading zero group
        "tile/0/x000/x001/005",
        "tile/0/x01/005",
        "tile/0/x1234/000",
        "tile/0/001/005",  # inner group without x
        "tile/0/005.p/0",  # width 0
        "tile/0/005.p/256",  # width of a full tile
        "tile/0/005.p/017",  # leading zero in width
        "tile/0/005.p/",
        "tile/0/005.p/-1",
        "tile/00/005",  # leading zero in level
        "tile/01/005",
        "tile/64/005",  # level beyond 63
        "tile/-1/005",
        "tile/0/x018/x446/x744/x073/x709/x551/616",  # index >= 2**64
        "tile/0/x001/x000/x000/x000/x000/x000/x000/000",  # too many groups
        "tile/entries/005",  # an entry bundle is not a hash tile
        "/tile/0/005",
        "tile/0/005/",
        "tile/0/005\n",
        " tile/0/005",
        "tile/0/\uff10\uff10\uff15",  # fullwidth digits
        "tile/0/\u0660\u0660\u0665",  # Arabic-Indic digits
        "tile/8/0/005",  # Go sumdb layout, not C2SP
        "",
    ],
)
def test_parse_tile_path_is_strict(path: str) -> None:
    with pytest.raises(FormatError):
        parse_tile_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "tile/entries/5",
        "tile/entries/x000/005",
        "tile/entries/005.p/0",
        "tile/entries/005.p/256",
        "tile/0/005",
        "tile/entries/005.p/07",
    ],
)
def test_parse_entries_path_is_strict(path: str) -> None:
    with pytest.raises(FormatError):
        parse_entries_path(path)


# ------------------------------------------------------------- tile sets


def test_tiles_for_size_70000() -> None:
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t[0] == 0]
    assert level0 == [(0, i, 256) for i in range(273)] + [(0, 273, 112)]
    assert [t for t in tiles if t[0] == 1] == [(1, 0, 256), (1, 1, 17)]
    assert [t for t in tiles if t[0] == 2] == [(2, 0, 1)]
    assert len(tiles) == 277


def test_tiles_for_small_sizes() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [(0, 0, 1)]
    assert tiles_for_size(255) == [(0, 0, 255)]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1" (tlog-tiles).
    assert tiles_for_size(256) == [(0, 0, 256), (1, 0, 1)]
    assert tiles_for_size(257) == [(0, 0, 256), (0, 1, 1), (1, 0, 1)]
    assert tiles_for_size(65536) == [(0, i, 256) for i in range(256)] + [(1, 0, 256), (2, 0, 1)]


def test_tile_width_and_hash_count() -> None:
    assert tile_hash_count(0, 70_000) == 70_000
    assert tile_hash_count(1, 70_000) == 273
    assert tile_hash_count(2, 70_000) == 1
    assert tile_hash_count(3, 70_000) == 0
    assert tile_width(0, 0, 70_000) == 256
    assert tile_width(0, 272, 70_000) == 256
    assert tile_width(0, 273, 70_000) == 112
    assert tile_width(0, 274, 70_000) == 0
    assert tile_width(1, 1, 70_000) == 17
    assert tile_width(2, 0, 70_000) == 1
    assert tile_width(3, 0, 70_000) == 0
    assert tile_width(0, 0, 0) == 0
    assert tile_width(1, 0, 256) == 1
    assert tile_width(0, 1, 256) == 0
    with pytest.raises(ValueError):
        tile_width(0, -1, 10)
    with pytest.raises(ValueError):
        tile_hash_count(-1, 10)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300_000))
def test_tiles_for_size_agrees_with_tile_width(size: int) -> None:
    tiles = tiles_for_size(size)
    for level, index, width in tiles:
        assert tile_width(level, index, size) == width > 0
    # The tile hashes at each level are exactly the complete nodes at tree level 8L.
    for level in range(4):
        assert sum(w for lv, _, w in tiles if lv == level) == tile_hash_count(level, size)


def test_tiles_changed_examples() -> None:
    assert tiles_changed(5, 5) == []
    assert tiles_changed(0, 1) == [(0, 0, 1)]
    assert tiles_changed(70_000, 70_001) == [(0, 273, 113)]
    assert tiles_changed(255, 256) == [(0, 0, 256), (1, 0, 1)]
    assert tiles_changed(255, 257) == [(0, 0, 256), (0, 1, 1), (1, 0, 1)]
    assert tiles_changed(0, 70_000) == tiles_for_size(70_000)
    assert tiles_changed(65535, 65536) == [(0, 255, 256), (1, 0, 256), (2, 0, 1)]
    with pytest.raises(ValueError):
        tiles_changed(6, 5)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 200_000), st.integers(0, 70_000))
def test_tiles_changed_is_the_difference_of_tile_sets(old: int, grow: int) -> None:
    new = old + grow
    want = set(tiles_for_size(new)) - set(tiles_for_size(old))
    got = tiles_changed(old, new)
    assert len(got) == len(set(got))
    assert set(got) == want


def test_tile_position() -> None:
    assert tile_position((0, 0)) == (0, 0, 0)
    assert tile_position((0, 69_999)) == (0, 273, 111)
    assert tile_position((8, 272)) == (1, 1, 16)
    assert tile_position((16, 0)) == (2, 0, 0)
    assert tile_position((1, 5)) is None
    assert tile_position((9, 5)) is None


def test_hashes_of_tile() -> None:
    data = bytes(range(64))
    assert hashes_of_tile(data) == [data[:32], data[32:]]
    assert hashes_of_tile(b"") == []
    assert len(hashes_of_tile(b"\x00" * 8192)) == 256
    for bad in [b"\x00" * 31, b"\x00" * 33, b"\x00" * (8192 + 32)]:
        with pytest.raises(FormatError):
            hashes_of_tile(bad)


# ------------------------------------------------------------ tile reader


MAX_SIZE = 65_537 + 300
SIZES = [1, 2, 255, 256, 257, 511, 512, 4_097, 65_535, 65_536, 65_537, MAX_SIZE]


class Log:
    """Synthetic leaves, the tree in memory, and tile buffers built the way the ledger builds
    them: from CompactRange.append output, keeping the nodes at levels 0, 8, 16."""

    def __init__(self, size: int) -> None:
        self.leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size)]
        self.tree = MemoryTree(self.leaves)
        self.buffers: dict[tuple[int, int], bytearray] = {}
        cr = CompactRange()
        for leaf in self.leaves:
            for node, h in cr.append(leaf):
                pos = tile_position(node)
                if pos is None:
                    continue
                tile_level, tile_index, offset = pos
                buf = self.buffers.setdefault((tile_level, tile_index), bytearray())
                assert len(buf) == offset * 32  # hashes arrive in order
                buf += h

    def published(self, size: int) -> dict[str, bytes]:
        """The tiles a log of this size publishes, by path, each exactly its width."""
        return {
            tile_path(level, index, width): bytes(self.buffers[(level, index)][: width * 32])
            for level, index, width in tiles_for_size(size)
        }


@pytest.fixture(scope="module")
def log() -> Log:
    return Log(MAX_SIZE)


def tile_levels(size: int) -> int:
    levels = 0
    while size >> (TILE_HEIGHT * levels):
        levels += 1
    return levels


def exact_reader(log: Log, size: int, cache: TileCache | None = None) -> tuple[TileHashReader, list[str]]:
    """A reader over exactly the published tiles: asking for a wrong width is a KeyError."""
    store = log.published(size)
    asked: list[str] = []

    def read_tile(level: int, index: int, width: int) -> bytes:
        path = tile_path(level, index, width)
        asked.append(path)
        return store[path]

    return TileHashReader(size, read_tile, cache=cache), asked


def test_tiles_match_tree_nodes(log: Log) -> None:
    # Tile N of level L holds nodes (8L, 256N .. 256N+255): check against MemoryTree.
    for (level, index), buf in log.buffers.items():
        hashes = hashes_of_tile(bytes(buf))
        nodes = [(TILE_HEIGHT * level, index * TILE_WIDTH + i) for i in range(len(hashes))]
        assert hashes == log.tree.read_node_hashes(nodes)
    assert len(log.buffers[(0, 0)]) == 8192
    assert len(log.buffers[(2, 0)]) == 32


@pytest.mark.parametrize("size", SIZES)
def test_reader_roots_and_proofs_equal_memory_tree(log: Log, size: int) -> None:
    reader, asked = exact_reader(log, size)
    root = tree_root(size, reader)
    assert root == log.tree.root(size)
    assert reader.tiles_read == len(set(asked)) == len(asked) <= tile_levels(size)
    levels = tile_levels(size)
    indexes = sorted({0, 1 % size, size // 2, size - 2 if size > 1 else 0, size - 1, (size * 7) // 9})
    for index in indexes:
        fresh, _ = exact_reader(log, size)
        proof = inclusion_proof(index, size, fresh)
        assert proof == inclusion_proof(index, size, log.tree)
        verify_inclusion(log.leaves[index], index, size, proof, root)
        assert fresh.tiles_read <= 2 * levels
    for old in sorted({1, size // 3 or 1, size - 1 or 1, 255 if size > 255 else 1, 256 if size > 256 else 1}):
        fresh, _ = exact_reader(log, size)
        proof = consistency_proof(old, size, fresh)
        assert proof == consistency_proof(old, size, log.tree)
        verify_consistency(old, size, log.tree.root(old), root, proof)
        assert fresh.tiles_read <= 2 * levels


def test_reader_caches_tiles(log: Log) -> None:
    reader, asked = exact_reader(log, 65_537)
    tree_root(65_537, reader)
    first = reader.tiles_read
    tree_root(65_537, reader)
    inclusion_proof(65_536, 65_537, reader)
    assert reader.tiles_read == first == len(asked)


def test_reader_accepts_wider_tiles(log: Log) -> None:
    # A store that always returns the widest tile it has (a full tile or a wider partial):
    # only the first width*32 bytes may be used.
    def read_tile(level: int, index: int, width: int) -> bytes:
        return bytes(log.buffers[(level, index)])

    for size in [3, 300, 65_537, MAX_SIZE - 5]:
        reader = TileHashReader(size, read_tile)
        assert tree_root(size, reader) == log.tree.root(size)
        assert inclusion_proof(size - 1, size, reader) == inclusion_proof(size - 1, size, log.tree)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_reader_random_sizes(log: Log, data: st.DataObject) -> None:
    size = data.draw(st.integers(1, MAX_SIZE))
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(1, size))
    reader, _ = exact_reader(log, size)
    assert inclusion_proof(index, size, reader) == inclusion_proof(index, size, log.tree)
    assert consistency_proof(old, size, reader) == consistency_proof(old, size, log.tree)
    assert tree_root(size, reader) == log.tree.root(size)
    assert reader.tiles_read <= 3 * tile_levels(size)


def test_reader_rejects_incomplete_nodes(log: Log) -> None:
    reader, asked = exact_reader(log, 300)
    for node in [(0, 300), (8, 1), (2, 75), (-1, 0), (0, -1)]:
        with pytest.raises(IndexOutOfRangeError, match="not complete in tree size 300"):
            reader.read_node_hashes([node])
    assert asked == []
    assert reader.read_node_hashes([(8, 0), (2, 74), (0, 299)]) == log.tree.read_node_hashes(
        [(8, 0), (2, 74), (0, 299)]
    )


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda data: data[:-32], r"tile/0/001\.p/44: tile is 1376 bytes, want 1408"),
        (lambda data: data + b"\x00", "tile is 1409 bytes"),
        (lambda data: data * 7, "tile is 9856 bytes"),
    ],
)
def test_reader_checks_tile_length(log: Log, returned: Callable[[bytes], bytes], message: str) -> None:
    store = log.published(300)

    def read_tile(level: int, index: int, width: int) -> bytes:
        return returned(store[tile_path(level, index, width)])

    with pytest.raises(CorruptLedgerError, match=message):
        TileHashReader(300, read_tile).read_node_hashes([(0, 299)])


def test_reader_detects_a_tampered_tile(log: Log) -> None:
    store = log.published(1000)
    path = tile_path(0, 1)
    tampered = bytearray(store[path])
    tampered[5] ^= 1  # hash of leaf 256
    store[path] = bytes(tampered)
    root = log.tree.root(1000)

    def read_tile(level: int, index: int, width: int) -> bytes:
        return store[tile_path(level, index, width)]

    # The root of size 1000 is read from the level-1 tile, which was not touched...
    assert tree_root(1000, TileHashReader(1000, read_tile)) == root
    # ... but a proof for leaf 300 uses the subtree over leaves 256..287 from tile 0/001.
    proof = inclusion_proof(300, 1000, TileHashReader(1000, read_tile))
    assert proof != inclusion_proof(300, 1000, log.tree)
    with pytest.raises(RootMismatchError):
        verify_inclusion(log.leaves[300], 300, 1000, proof, root)


def test_reader_propagates_missing_tile() -> None:
    def read_tile(level: int, index: int, width: int) -> bytes:
        raise KeyError(tile_path(level, index, width))

    with pytest.raises(KeyError, match=re.escape("tile/0/000.p/10")):
        tree_root(10, TileHashReader(10, read_tile))
    with pytest.raises(ValueError):
        TileHashReader(-1, read_tile)


# ------------------------------------------------------- expanded tiles, cache


def test_expand_tile_gives_every_complete_node(log: Log) -> None:
    # Tile 0/001 (nodes (0, 256..511)) and tile 1/000 (nodes (8, 0..255)) at several widths.
    for (level, index) in [(0, 1), (1, 0)]:
        full = bytes(log.buffers[(level, index)])
        for width in [1, 2, 3, 7, 8, 100, 128, 255, 256]:
            rows = expand_tile(full[: width * 32])
            assert len(rows) == TILE_HEIGHT + 1
            assert rows[0] == full[: width * 32]
            for r, row in enumerate(rows):
                count = width >> r
                assert len(row) == count * 32
                base = index << (TILE_HEIGHT - r)
                want = log.tree.read_node_hashes([(TILE_HEIGHT * level + r, base + p) for p in range(count)])
                assert [row[p * 32 : p * 32 + 32] for p in range(count)] == want
    for bad in [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * (8192 + 32)]:
        with pytest.raises(FormatError):
            expand_tile(bad)


def random_complete_nodes(
    draw: Callable[[st.SearchStrategy[int]], int], size: int, count: int
) -> list[tuple[int, int]]:
    nodes = []
    for _ in range(count):
        level = draw(st.integers(0, size.bit_length() - 1))
        nodes.append((level, draw(st.integers(0, (size >> level) - 1))))
    return nodes


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_cached_readers_equal_uncached_ones(log: Log, data: st.DataObject) -> None:
    """One small shared cache, readers at sizes that grow, shrink and cross tile boundaries:
    every hash equals the uncached reader's and the memory tree's."""
    cache = TileCache(max_tiles=data.draw(st.integers(1, 6)))
    sizes = data.draw(
        st.lists(
            st.one_of(st.integers(1, 600), st.integers(65_000, MAX_SIZE), st.integers(1, MAX_SIZE)),
            min_size=1,
            max_size=6,
        )
    )
    for size in sizes:
        nodes = random_complete_nodes(data.draw, size, data.draw(st.integers(1, 12)))
        cached, _ = exact_reader(log, size, cache)
        plain, _ = exact_reader(log, size)
        got = cached.read_node_hashes(nodes)
        assert got == plain.read_node_hashes(nodes) == log.tree.read_node_hashes(nodes)
        assert len(cache) <= cache.max_tiles


def test_cache_grows_with_the_tree(log: Log) -> None:
    """Sizes one apart in the same tiles: each new size's newest nodes are right, though the
    cache holds the same tiles at the previous width."""
    cache = TileCache()
    for size in list(range(1, 600)) + list(range(65_530, 65_545)):
        reader, asked = exact_reader(log, size, cache)
        nodes = subtree_nodes(0, size) + [(0, size - 1)]
        assert reader.read_node_hashes(nodes) == log.tree.read_node_hashes(nodes)
        # The right edge is partial at a new width every time: the level-0 tile holding
        # the newest leaf is always read, never answered by the narrower cached one.
        if size % 256:
            assert tile_path(0, (size - 1) // 256, size % 256) in asked
        assert tree_root(size, reader) == log.tree.root(size)


def test_a_narrower_entry_never_answers_a_wider_width(log: Log) -> None:
    cache = TileCache()
    garbage = expand_tile(b"\xee" * 32 * 10)
    cache.put((0, 0, 10), garbage)  # a poisoned partial of width 10
    assert cache.get((0, 0, 10)) is garbage
    assert cache.get((0, 0, 5)) is garbage  # a wider entry answers a narrower width
    assert cache.get((0, 0, 11)) is None
    reader, asked = exact_reader(log, 20, cache)
    nodes = [(0, p) for p in range(20)] + [(1, 3), (2, 4), (4, 0)]
    assert reader.read_node_hashes(nodes) == log.tree.read_node_hashes(nodes)
    assert asked == ["tile/0/000.p/20"]
    # The width-20 entry replaced the width-10 one, and answers width 10 from now on.
    assert (0, 0, 10) not in cache and (0, 0, 20) in cache
    assert exact_reader(log, 10, cache)[0].read_node_hashes([(0, 9)]) == log.tree.read_node_hashes([(0, 9)])


def test_full_tile_answers_partial_widths(log: Log) -> None:
    cache = TileCache()
    full, _ = exact_reader(log, 600, cache)
    full.read_node_hashes([(0, 0)])
    assert (0, 0, 256) in cache
    reader, asked = exact_reader(log, 200, cache)
    nodes = [(7, 0), (6, 2), (3, 24), (0, 199)]
    assert reader.read_node_hashes(nodes) == log.tree.read_node_hashes(nodes)
    assert asked == [] and reader.tiles_read == 0
    cache.put((0, 0, 100), expand_tile(bytes(log.buffers[(0, 0)][: 100 * 32])))
    assert (0, 0, 100) not in cache  # the full tile is there: no partial is kept


def test_warm_cache_reads_no_tiles(log: Log) -> None:
    cache = TileCache()
    first, _ = exact_reader(log, MAX_SIZE, cache)
    proof = inclusion_proof(70_000 % MAX_SIZE, MAX_SIZE, first)
    assert first.tiles_read == len(cache) == tile_levels(MAX_SIZE) + 1 > 0
    second, asked = exact_reader(log, MAX_SIZE, cache)
    assert inclusion_proof(70_000 % MAX_SIZE, MAX_SIZE, second) == proof
    assert second.tiles_read == 0 and asked == []
    assert cache.hits >= len(cache) and cache.misses == len(cache)


def test_a_tile_without_an_expansion_record_is_read_once(log: Log) -> None:
    # The stored-expansion callback sees the tile's bytes and has no record: the same bytes
    # are expanded, not read again.
    offered: list[tuple[int, bytes]] = []

    def no_record(index: int, data: bytes) -> tuple[bytes, ...] | None:
        offered.append((index, data))
        return None

    store = log.published(600)
    reader = TileHashReader(600, lambda lv, i, w: store[tile_path(lv, i, w)], TileCache(), stored_expansion=no_record)
    assert reader.read_node_hashes([(3, 5)]) == log.tree.read_node_hashes([(3, 5)])
    assert reader.tiles_read == 1
    assert offered == [(0, store[tile_path(0, 0)])]


def test_cache_is_a_bounded_lru() -> None:
    def tile(seed: int, width: int = 256) -> tuple[bytes, ...]:
        return expand_tile(hashlib.sha256(bytes([seed])).digest() * width)

    cache = TileCache(max_tiles=3)
    for i in range(3):
        cache.put((0, i, 256), tile(i))
    assert cache.get((0, 0, 256)) == tile(0)  # 0 is now the most recently used
    cache.put((0, 3, 256), tile(3))  # evicts 1, the least recently used
    assert len(cache) == 3
    assert cache.get((0, 1, 256)) is None
    assert [cache.get((0, i, 256)) is not None for i in (0, 2, 3)] == [True, True, True]
    for i in range(100):
        cache.put((1, i, 256), tile(i))
        assert len(cache) <= 3
    assert [k for k in range(100) if (1, k, 256) in cache] == [97, 98, 99]
    assert cache.nbytes == 3 * 511 * 32
    # One partial per position: the widest.
    small = TileCache(max_tiles=10)
    small.put((0, 5, 3), tile(1, 3))
    small.put((0, 5, 9), tile(1, 9))
    small.put((0, 5, 4), tile(1, 4))
    assert len(small) == 1 and (0, 5, 9) in small
    assert small.nbytes == (9 + 4 + 2 + 1) * 32
    small.put((0, 5, 256), tile(1))
    assert len(small) == 1 and (0, 5, 256) in small
    assert small.nbytes == 511 * 32
    # Evicting a partial forgets its width (a later narrower one can be cached again).
    one = TileCache(max_tiles=1)
    one.put((0, 0, 9), tile(2, 9))
    one.put((0, 1, 256), tile(2))
    one.put((0, 0, 4), tile(2, 4))
    assert (0, 0, 4) in one and len(one) == 1
    assert one.nbytes == (4 + 2 + 1) * 32
    one.clear()
    assert len(one) == 0 and one.get((0, 0, 4)) is None and one.nbytes == 0


def test_cache_checks_what_it_is_given() -> None:
    with pytest.raises(ValueError):
        TileCache(max_tiles=0)
    cache = TileCache()
    rows = expand_tile(b"\x01" * 32 * 10)
    for key in [(0, 0, 11), (0, 0, 9), (0, 0, 256), (0, 0, 0), (0, -1, 10), (-1, 0, 10), (0, 0, 257)]:
        with pytest.raises(ValueError):
            cache.put(key, rows)
    with pytest.raises(ValueError):
        cache.put((0, 0, 10), rows[:-1])
    assert len(cache) == 0


def test_cached_reader_checks_tile_length(log: Log) -> None:
    store = log.published(300)
    cache = TileCache()

    def read_tile(level: int, index: int, width: int) -> bytes:
        return store[tile_path(level, index, width)][:-32]

    with pytest.raises(CorruptLedgerError, match=r"tile/0/001\.p/44: tile is 1376 bytes, want 1408"):
        TileHashReader(300, read_tile, cache=cache).read_node_hashes([(0, 299)])
    assert len(cache) == 0
    with pytest.raises(IndexOutOfRangeError):
        TileHashReader(300, read_tile, cache=cache).read_node_hashes([(0, 300)])


def test_cache_shared_between_threads(log: Log) -> None:
    cache = TileCache(max_tiles=4)
    sizes = [300, 1_000, 4_097, 65_536, 65_537, MAX_SIZE]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for k in range(40):
                size = sizes[(seed + k) % len(sizes)]
                index = (seed * 7_919 + k * 104_729) % size
                reader, _ = exact_reader(log, size, cache)
                assert inclusion_proof(index, size, reader) == inclusion_proof(index, size, log.tree)
                assert len(cache) <= 4
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) <= 4
