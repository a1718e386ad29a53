"""The right edge of a tree and the staging object of an S3 append: what the append adds, decided once.

Pure computation (bytes in, bytes out), used by :mod:`kfm_ledger.log.cas_append`.

A tree of ``size`` leaves is extended by tiles at its right edge only (c2sp.org/tlog-tiles):
the partial tile of each tile level and the partial entry bundle.  :class:`TreeEdge` holds
exactly those hashes and entries; the compact range (RFC 9162 §2.1.1 subtrees) and the
root follow from them (:meth:`TreeEdge.root`), so an edge read from a bucket is checked
against a signed root before anything is built on it.

:func:`extend` computes, from an edge and new entries, every object the append creates
(full and partial hash tiles, full and partial entry bundles) and the new edge.  It is a
function of its inputs only: two writers completing the same append write the same bytes
(Tessera's rule: integration is deterministic from already-sequenced entries).

The staging object (:class:`Staging`, ``staging/<size>-<root hex>``) is written before the
checkpoint's compare-and-swap and holds the edge and the new entries: anyone who finds a
signed checkpoint whose objects are incomplete rebuilds them from it, and checks that they
give the signed root before writing one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.entry_bundle import encode_entry_bundle, iter_entry_bundle
from kfm_ledger.errors import FormatError

__all__ = [
    "STAGING_PREFIX",
    "Extension",
    "Staging",
    "TreeEdge",
    "extend",
    "staging_key",
]

#: Where staging objects live (not part of the tlog-tiles layout; removed once complete).
STAGING_PREFIX = "staging/"
_MAGIC = b"kfm-staging/1\n"


def staging_key(size: int, root: bytes) -> str:
    """``staging/<size>-<root hex>``: the staging object of the append that made this tree."""
    return f"{STAGING_PREFIX}{size}-{root.hex()}"


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree over ``hashes`` (a power of two of them; RFC 9162 §2.1.1)."""
    level = list(hashes)
    while len(level) > 1:
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@dataclass(frozen=True)
class TreeEdge:
    """The right edge of a tree of ``size`` leaves.

    ``partials``: per tile level, ascending, the hashes of its partial tile (``(size >> 8L) mod 256``
    of them; levels whose partial tile is empty are left out).  ``bundle``: the entries of the
    partial entry bundle (``size mod 256`` of them).
    """

    size: int
    partials: tuple[tuple[int, tuple[bytes, ...]], ...]
    bundle: tuple[bytes, ...]

    @classmethod
    def empty(cls) -> TreeEdge:
        return cls(0, (), ())

    def widths(self) -> dict[int, int]:
        """The partial tile width expected at each tile level for :attr:`size`."""
        out = {}
        level = 0
        while (self.size >> (tiles.TILE_HEIGHT * level)) > 0:
            width = (self.size >> (tiles.TILE_HEIGHT * level)) % tiles.TILE_WIDTH
            if width:
                out[level] = width
            level += 1
        return out

    def check_shape(self) -> None:
        """FormatError unless the partial tiles and the bundle have the widths ``size`` implies,
        and the bundle's entries hash to the level-0 partial tile's hashes."""
        have = {level: len(hashes) for level, hashes in self.partials}
        if have != self.widths() or any(len(h) != merkle.HASH_SIZE for _, hs in self.partials for h in hs):
            raise FormatError(
                f"right edge of size {self.size}: partial tiles {have}, expected {self.widths()}",
                what="right edge",
                field="partial tiles",
                found=str(have),
            )
        if len(self.bundle) != self.size % tiles.TILE_WIDTH:
            raise FormatError(
                f"right edge of size {self.size}: {len(self.bundle)} entries in the partial bundle, "
                f"expected {self.size % tiles.TILE_WIDTH}",
                what="right edge",
                field="partial bundle",
                found=str(len(self.bundle)),
            )
        level0 = dict(self.partials).get(0, ())
        if tuple(merkle.leaf_hash(e) for e in self.bundle) != tuple(level0):
            raise FormatError(
                f"right edge of size {self.size}: the partial bundle's entries do not hash to the "
                "level-0 partial tile",
                what="right edge",
                field="partial bundle",
                found="other entries",
            )

    def compact_range(self) -> merkle.CompactRange:
        """The compact range of the tree: per tile level, highest first, the binary split of its partial tile."""
        peaks: list[bytes] = []
        for _level, hashes in sorted(self.partials, reverse=True):
            start = 0
            width = len(hashes)
            for bit in range(tiles.TILE_HEIGHT, -1, -1):
                if width & (1 << bit):
                    peaks.append(_perfect_root(hashes[start : start + (1 << bit)]))
                    start += 1 << bit
        return merkle.CompactRange(self.size, peaks)

    def root(self) -> bytes:
        """The tree's root (RFC 9162 §2.1.1; the empty tree's root for size 0)."""
        return self.compact_range().root()


@dataclass(frozen=True)
class Extension:
    """What :func:`extend` computed: the objects to create, in a safe order, and the new edge."""

    objects: tuple[tuple[str, bytes], ...]
    edge: TreeEdge
    root: bytes


def extend(edge: TreeEdge, entries: Sequence[bytes]) -> Extension:
    """Every hash tile and entry bundle that appending ``entries`` to the tree at ``edge`` creates.

    Full tiles and full bundles the new leaves complete, then the partial tile of each level
    and the partial bundle at the new size (c2sp.org/tlog-tiles).  Deterministic.
    """
    crange = edge.compact_range()
    buffers: dict[int, list[bytes]] = {level: list(hashes) for level, hashes in edge.partials}
    objects: list[tuple[str, bytes]] = []

    def add_nodes(nodes: list[tuple[merkle.NodeId, bytes]]) -> None:
        for (node_level, node_index), node in nodes:
            if node_level % tiles.TILE_HEIGHT:
                continue
            tile_level = node_level // tiles.TILE_HEIGHT
            buf = buffers.setdefault(tile_level, [])
            buf.append(node)
            if len(buf) == tiles.TILE_WIDTH:
                objects.append((tiles.tile_path(tile_level, node_index // tiles.TILE_WIDTH), b"".join(buf)))
                buf.clear()

    bundle = list(edge.bundle)
    for entry in entries:
        index = crange.size
        add_nodes(crange.append(merkle.leaf_hash(entry)))
        bundle.append(entry)
        if len(bundle) == tiles.TILE_WIDTH:
            objects.append((tiles.entries_path(index // tiles.TILE_WIDTH), encode_entry_bundle(bundle)))
            bundle = []
    new_size = crange.size
    partials = []
    for tile_level, buf in sorted(buffers.items()):
        if buf:
            tile_index = (new_size >> (tiles.TILE_HEIGHT * tile_level)) // tiles.TILE_WIDTH
            objects.append((tiles.tile_path(tile_level, tile_index, len(buf)), b"".join(buf)))
            partials.append((tile_level, tuple(buf)))
    if bundle:
        objects.append((tiles.entries_path(new_size // tiles.TILE_WIDTH, len(bundle)), encode_entry_bundle(bundle)))
    new_edge = TreeEdge(new_size, tuple(partials), tuple(bundle))
    return Extension(tuple(objects), new_edge, crange.root())


# -- the staging object ------------------------------------------------------------------
@dataclass(frozen=True)
class Staging:
    """The staging object of one append: the signed note, the edge it builds on, the new entries."""

    note: bytes
    edge: TreeEdge
    entries: tuple[bytes, ...]

    def encode(self) -> bytes:
        """``kfm-staging/1``, then length-prefixed parts (big-endian; entries as an entry bundle list)."""
        out = [_MAGIC, struct.pack(">I", len(self.note)), self.note, struct.pack(">QB", self.edge.size,
                                                                                   len(self.edge.partials))]
        for level, hashes in self.edge.partials:
            out.append(struct.pack(">BH", level, len(hashes)))
            out.extend(hashes)
        bundle = encode_entry_bundle(self.edge.bundle)
        out += [struct.pack(">I", len(bundle)), bundle, struct.pack(">Q", len(self.entries))]
        for entry in self.entries:
            out += [struct.pack(">I", len(entry)), entry]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Staging:
        """Parse a staging object; FormatError (naming the part) for anything malformed."""
        view = memoryview(data)
        pos = 0

        def take(n: int, what: str) -> bytes:
            nonlocal pos
            if n < 0 or pos + n > len(view):
                raise FormatError(f"staging object truncated in {what}", what="staging object", field=what,
                                  found=f"{len(view) - pos} bytes left")
            chunk = bytes(view[pos : pos + n])
            pos += n
            return chunk

        if take(len(_MAGIC), "magic") != _MAGIC:
            raise FormatError("not a kfm staging object", what="staging object", field="magic", found="other bytes")
        (note_len,) = struct.unpack(">I", take(4, "note length"))
        note = take(note_len, "note")
        size, nlevels = struct.unpack(">QB", take(9, "edge"))
        partials = []
        for _ in range(nlevels):
            level, width = struct.unpack(">BH", take(3, "partial tile"))
            if not 0 < width < tiles.TILE_WIDTH:
                raise FormatError(f"partial tile width {width}", what="staging object", field="partial tile",
                                  found=str(width))
            raw = take(width * merkle.HASH_SIZE, "partial tile hashes")
            partials.append((level, tuple(raw[i : i + 32] for i in range(0, len(raw), 32))))
        (bundle_len,) = struct.unpack(">I", take(4, "bundle length"))
        bundle = tuple(iter_entry_bundle(take(bundle_len, "bundle")))
        (count,) = struct.unpack(">Q", take(8, "entry count"))
        if count > len(view):
            raise FormatError(f"{count} entries cannot fit", what="staging object", field="entry count",
                              found=str(count))
        entries = []
        for _ in range(count):
            (n,) = struct.unpack(">I", take(4, "entry length"))
            entries.append(take(n, "entry"))
        if pos != len(view):
            raise FormatError("staging object has trailing bytes", what="staging object", field="end",
                              found=f"{len(view) - pos} bytes")
        edge = TreeEdge(size, tuple(partials), bundle)
        edge.check_shape()
        return cls(note, edge, tuple(entries))
