"""Rebuilding the derived data (commit index, hash tiles, expansion records) from the JSONL.

Signs nothing: the rows must still hash (RFC 9162 §2.1.1) to the signed root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfm_ledger.core import merkle, tiles
from kfm_ledger.errors import CorruptLedgerError

from .index_sync import catch_up_index
from .layout import ENTRIES_PREFIX, INDEX_FILE, JSONL_KEY, TILES_PREFIX
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


def rebuild(led: Ledger, *, wait: float, progress: Progress | None = None) -> int:
    """Recreate the commit index and every tile from the JSONL (see :meth:`Ledger.rebuild`)."""
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
        write_tiles(led, 0, (merkle.leaf_hash(line) for line in lines), write_many, None)
        # Partial tiles of earlier signed sizes: prefixes of today's partial tiles.
        for size in led.checkpoint_sizes():
            for level, index, width in tiles.tiles_for_size(size):
                key = tiles.tile_path(level, index, width)
                if width < tiles.TILE_WIDTH and key not in written:
                    if tiles.tile_width(level, index, led.size) == tiles.TILE_WIDTH:
                        continue  # that tile is full now: clients fall back to it
                    data = led.read_tile(level, index, width)[: width * merkle.HASH_SIZE]
                    write(key, data)
        for key in list(led.storage.list(TILES_PREFIX)):
            if not key.startswith(ENTRIES_PREFIX) and key not in written:
                led.storage.delete(key)
        led.prover.tile_cache.clear()  # tiles were rewritten
        led._right_edge = None
        if progress is not None:
            progress(3 * jsonl_size, 3 * jsonl_size)
        return added
