"""The tile pass: every stored tile (c2sp.org/tlog-tiles) against the hashes recomputed from
the rows, and the stored expansion record of each full level-0 tile."""

from __future__ import annotations

from collections.abc import Iterable

from kfm_ledger.core import tiles
from kfm_ledger.log.expansions import expansion_record, levels_from_record
from kfm_ledger.log.layout import EXPANSIONS_KEY
from kfm_ledger.log.ledger import Ledger

from ..errors import KfmError
from . import access
from .report import VerifyReport


class TileChecker:
    """Compares every stored tile with the hashes recomputed from the rows.

    Every object under ``tile/`` is listed first (a few thousand at 1M rows);
    while the rows stream, a tile-level buffer is compared with each stored
    width of that tile as it reaches it, byte for byte and length for length.
    What is left unchecked at the end lies beyond the signed tree.
    """

    def __init__(self, ledger: Ledger, report: VerifyReport, limit: int) -> None:
        self.ledger = ledger
        self.report = report
        self.limit = limit
        self.buffers: dict[int, list[bytes]] = {}
        self.present: dict[tuple[int, int], dict[int, str]] = {}
        self.checked: set[str] = set()
        self.mismatched_leaves: list[tuple[int, str]] = []  # (leaf, tile key) from level-0 tiles
        self.tile_failures: list[tuple[str, str]] = []
        self.expansions_checked = 0
        self.bad_expansions: list[int] = []
        for key in access.list_keys(ledger, "tile/"):
            if key.startswith("tile/entries/"):
                continue
            try:
                level, index, width = tiles.parse_tile_path(key)
            except KfmError as e:
                report.fail(f"tile {key}", f"not a tile path: {e}", limit)
                continue
            self.present.setdefault((level, index), {})[width] = key

    def _compare(self, level: int, index: int, want: bytes, key: str) -> None:
        """Compare stored tile ``key`` with ``want``, the hashes recomputed from the rows, joined."""
        self.checked.add(key)
        self.report.tiles_checked += 1
        try:
            stored = access.read(self.ledger, key)
        except KfmError as e:
            self.tile_failures.append((f"tile {key}", str(e)))
            return
        if stored == want:
            return
        hashes = [want[k : k + 32] for k in range(0, len(want), 32)]
        if len(stored) != len(want):
            self.tile_failures.append(
                (f"tile {key}", f"{len(stored)} bytes, want {len(want)} ({len(hashes)} hashes of 32 bytes)")
            )
            return
        first = next(k for k in range(len(hashes)) if stored[32 * k : 32 * k + 32] != hashes[k])
        if level == 0:
            for k in range(len(hashes)):
                if stored[32 * k : 32 * k + 32] != hashes[k] and len(self.mismatched_leaves) < self.limit:
                    self.mismatched_leaves.append((index * tiles.TILE_WIDTH + k, key))
        self.tile_failures.append(
            (
                f"tile {key}",
                f"hash {first} (tree level {level * tiles.TILE_HEIGHT}, node "
                f"{index * tiles.TILE_WIDTH + first}) differs from the one recomputed from the rows",
            )
        )

    def _check_expansion(self, tile_index: int, tile: bytes, levels: tuple[bytes, ...] | None = None) -> None:
        """The stored expansion record of a full level-0 tile (derived data), if there is one
        (``levels``: the tile's :func:`~kfm_ledger.core.tiles.expand_tile`, when already computed)."""
        record = self.ledger.read_expansion_record(tile_index)
        if record is None:
            return
        self.expansions_checked += 1
        if record == expansion_record(levels if levels is not None else tiles.expand_tile(tile)):
            return
        if levels_from_record(tile, record) is None:
            # Torn or stale (its checksum does not match the tile): never used, so a note.
            # (verify itself never uses records: its consistency proof reads the tiles alone.)
            self.bad_expansions.append(tile_index)
        else:
            # A matching checksum over wrong nodes: proofs would use them.  A failure.
            self.tile_failures.append(
                (
                    f"{EXPANSIONS_KEY} record {tile_index}",
                    f"its checksum matches {tiles.tile_path(0, tile_index)} but its inner nodes differ from the "
                    "ones recomputed from the rows: it was rewritten",
                )
            )

    def add(self, nodes: list[tuple[tuple[int, int], bytes]]) -> None:
        for (level, index), node in nodes:
            if level % tiles.TILE_HEIGHT:
                continue
            tile_level = level // tiles.TILE_HEIGHT
            buf = self.buffers.setdefault(tile_level, [])
            buf.append(node)
            width = len(buf)
            stored = self.present.get((tile_level, index // tiles.TILE_WIDTH))
            if stored is not None and width in stored:
                self._compare(tile_level, index // tiles.TILE_WIDTH, b"".join(buf), stored[width])
            if width == tiles.TILE_WIDTH:
                if stored is None or width not in stored:
                    key = tiles.tile_path(tile_level, index // tiles.TILE_WIDTH)
                    self.tile_failures.append((f"tile {key}", "missing; run `kfm rebuild`"))
                if tile_level == 0:
                    self._check_expansion(index // tiles.TILE_WIDTH, b"".join(buf))
                buf.clear()

    def add_level0_tile(self, index: int, tile: bytes, levels: tuple[bytes, ...]) -> None:
        """:meth:`add` of the 256 leaf hashes of level-0 tile ``index`` at once (``tile``: them
        joined; ``levels``: its :func:`~kfm_ledger.core.tiles.expand_tile`): each stored width of
        the tile compared, in the order :meth:`add` would reach them, then the full tile's presence
        and its expansion record.  The nodes above the tile are the caller's to :meth:`add`."""
        if self.buffers.get(0):
            raise ValueError(f"level-0 tile {index} added whole while {len(self.buffers[0])} leaves are buffered")
        stored = self.present.get((0, index), {})
        for width in sorted(stored):
            self._compare(0, index, tile[: width * 32], stored[width])
        if tiles.TILE_WIDTH not in stored:
            self.tile_failures.append((f"tile {tiles.tile_path(0, index)}", "missing; run `kfm rebuild`"))
        self._check_expansion(index, tile, levels)

    def finish(self, size: int, *, rows_changed: bool, beyond_ok: bool, signed_sizes: Iterable[int] = ()) -> None:
        # Every partial tile a client holding any signed checkpoint may ask for must be
        # there, unless its full tile (the spec's fallback) is.
        for signed in sorted(set(signed_sizes) | {size}):
            for level, index, width in tiles.tiles_for_size(signed):
                widths = self.present.get((level, index), {})
                if width < tiles.TILE_WIDTH and width not in widths and tiles.TILE_WIDTH not in widths:
                    key = tiles.tile_path(level, index, width)
                    self.tile_failures.append(
                        (f"tile {key}", f"missing (a client with the checkpoint of size {signed} needs it)")
                    )
        if rows_changed and self.mismatched_leaves:
            # The rows do not give the signed roots: the rows changed, not the tiles.
            for leaf, key in self.mismatched_leaves:
                self.report.fail(
                    f"line {leaf + 1}",
                    f"this row is not the one the log signed: its leaf hash differs from {key}; restore "
                    "its original bytes from a backup or another copy of the ledger",
                    self.limit,
                )
        else:
            for where, message in self.tile_failures:
                self.report.fail(where, message + ("" if "rebuild" in message else "; run `kfm rebuild`"), self.limit)
        refused = self.ledger.expansion_store_problem()
        if refused is not None:
            self.report.fail(
                EXPANSIONS_KEY,
                f"{refused}; it is never used as it is (proofs read the tiles): remove it, and `kfm rebuild` "
                "recreates it",
                self.limit,
            )
        if self.bad_expansions:
            self.report.notes.append(
                f"{EXPANSIONS_KEY}: {len(self.bad_expansions)} record(s) torn or stale (first: record "
                f"{self.bad_expansions[0]}); their checksums fail, so they are never used: `kfm rebuild` recreates them"
            )
        unchecked = sorted(
            key for widths in self.present.values() for key in widths.values() if key not in self.checked
        )
        if unchecked and beyond_ok:
            self.report.notes.append(
                f"{len(unchecked)} tile(s) beyond the signed tree, left by the interrupted append "
                f"(first: {unchecked[0]})"
            )
        elif unchecked:
            for key in unchecked:
                self.report.fail(
                    f"tile {key}", f"lies beyond the signed tree (size {size}); run `kfm rebuild`", self.limit
                )
