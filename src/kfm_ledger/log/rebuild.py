"""Rebuilding the derived data (commit index, hash tiles, entry bundles, expansion records) from the JSONL.

Signs nothing: the rows must still hash (RFC 9162 §2.1.1) to the signed root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.entry_bundle import encode_entry_bundle
from kfm_ledger.errors import CorruptLedgerError

from .index_sync import catch_up_index
from .layout import INDEX_FILE, JSONL_KEY, TILES_PREFIX
from .lines import split_lines
from .progress import Progress, counted_chunks
from .recovery import read_pending, recover_locked
from .tile_writer import write_tiles

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .ledger import Ledger

    Read = Callable[[Iterator[bytes]], Iterator[bytes]]  # wraps a pass's stream of JSONL chunks


def _lines_from(led: Ledger, start: int, stop: int, read: Read = iter) -> Iterator[bytes]:
    e = led._raw_index().at(start)
    if e is None:
        raise CorruptLedgerError(f"commit index has no entry for leaf {start}", key=INDEX_FILE, index=start)
    n = start
    for line, complete in split_lines(read(led._jsonl.iter_chunks(e.offset))):
        if n >= stop or not complete:
            break
        yield line
        n += 1


def _check_rows(led: Ledger, read: Read = iter) -> None:
    """The rows are hashed first, without writing: they must give the signed root."""
    crange = merkle.CompactRange()
    n = 0
    for line, complete in split_lines(read(led._jsonl.iter_chunks(0))):
        if n >= led.size or not complete:
            break
        crange.append(merkle.leaf_hash(line))
        n += 1
    if n < led.size:
        raise CorruptLedgerError(
            f"{JSONL_KEY} holds {n} complete rows but the signed checkpoint covers {led.size}: "
            "rows were removed; nothing was rebuilt: `kfm rebuild` only rebuilds derived data and cannot "
            "repair signed rows; restore the rows from a backup or another copy of the ledger, then run `kfm verify`",
            key=JSONL_KEY,
            line=n + 1,
            index=n,
        )
    if crange.root() != led.root:
        raise CorruptLedgerError(
            f"the rows of {JSONL_KEY} do not hash to the signed root at size {led.size}: rows were "
            "changed; nothing was rebuilt: `kfm rebuild` only rebuilds derived data and cannot repair signed "
            "rows; run `kfm verify` to find them and restore their original bytes from a backup or another "
            "copy of the ledger",
            key=JSONL_KEY,
        )


def _pass_reader(progress: Progress | None, jsonl_size: int, passes: int = 3) -> Callable[[int], Read]:
    """``reader(k)`` wraps pass k's (0, 1, 2) chunk stream: progress in bytes read, counted over
    the ``passes`` passes (``total`` is ``passes`` times the JSONL's size), once per chunk."""
    total = passes * jsonl_size

    def reader(k: int) -> Read:
        return lambda chunks: counted_chunks(chunks, progress, k * jsonl_size, total)

    return reader


def _bundled(lines: Iterator[bytes], write: Callable[[str, bytes], None]) -> Iterator[bytes]:
    """The leaf hashes of ``lines``, writing their entry bundles (c2sp.org/tlog-tiles) on the way:
    each full bundle as its 256th line passes, the right-edge partial one at the end."""
    bundle: list[bytes] = []
    index = 0
    for line in lines:
        bundle.append(line)
        if len(bundle) == tiles.TILE_WIDTH:
            write(tiles.entries_path(index), encode_entry_bundle(bundle))
            bundle.clear()
            index += 1
        yield merkle.leaf_hash(line)
    if bundle:
        write(tiles.entries_path(index, len(bundle)), encode_entry_bundle(bundle))


def rebuild(led: Ledger, *, wait: float, progress: Progress | None = None) -> int:
    """Recreate the commit index, every tile and every entry bundle from the JSONL (see
    :meth:`Ledger.rebuild`).  A ledger made before entry bundles existed gains them here."""
    with led.writer_lock(wait=wait):
        if read_pending(led) is not None:
            recover_locked(led)  # finish or undo the interrupted append first
        else:
            led.refresh()
        jsonl_size = led._jsonl.size()
        reader = _pass_reader(progress, jsonl_size)
        _check_rows(led, reader(0))
        led._raw_index().reset()
        added, _, _ = catch_up_index(led, limit=led.size, read=reader(1))
        written: set[str] = set()

        def write(key: str, data: bytes) -> None:
            led.storage.write_atomic(key, data)
            written.add(key)

        def write_many(items: list[tuple[str, bytes]]) -> None:
            for key, data in items:
                write(key, data)

        lines = _lines_from(led, 0, led.size, reader(2)) if led.size else iter(())
        write_tiles(led, 0, _bundled(lines, write), write_many, None)
        # Partial tiles and bundles of earlier signed sizes: prefixes of today's partial ones.
        sizes = led.checkpoint_sizes()
        _write_earlier_bundles(led, sizes, written, write)
        for size in sizes:
            for level, index, width in tiles.tiles_for_size(size):
                key = tiles.tile_path(level, index, width)
                if width < tiles.TILE_WIDTH and key not in written:
                    if tiles.tile_width(level, index, led.size) == tiles.TILE_WIDTH:
                        continue  # that tile is full now: clients fall back to it
                    data = led.read_tile(level, index, width)[: width * merkle.HASH_SIZE]
                    write(key, data)
        for key in list(led.storage.list(TILES_PREFIX)):
            if key not in written:  # stale tiles and bundles, and stray names
                led.storage.delete(key)
        led.prover.tile_cache.clear()  # tiles were rewritten
        led._right_edge = None
        if progress is not None:
            progress(3 * jsonl_size, 3 * jsonl_size)
        return added


def _write_earlier_bundles(
    led: Ledger, sizes: list[int], written: set[str], write: Callable[[str, bytes], None]
) -> None:
    """The partial entry bundles a client holding an earlier signed checkpoint may ask for:
    prefixes of today's right-edge partial bundle (a bundle that is full now serves them all,
    the spec's fallback)."""
    edge = led.size // tiles.TILE_WIDTH
    width = led.size % tiles.TILE_WIDTH
    wanted = sorted({s % tiles.TILE_WIDTH for s in sizes if s // tiles.TILE_WIDTH == edge and s % tiles.TILE_WIDTH})
    wanted = [w for w in wanted if w < width]
    if not wanted:
        return
    from .entries import read_bundle

    _, current = read_bundle(led.storage, edge, width)  # written above from the checked rows
    for w in wanted:
        key = tiles.entries_path(edge, w)
        if key not in written:
            write(key, encode_entry_bundle(current[:w]))
