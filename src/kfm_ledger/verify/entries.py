"""The entry-bundle pass: every stored bundle (c2sp.org/tlog-tiles "Log entries") against the
signed rows of the JSONL, byte for byte, and against the leaf hashes where they disagree.

A bundle must hold exactly its width's entries, each the canonical row without its newline
(:mod:`kfm_ledger.core.entry_bundle`).  Failures follow :mod:`.tiles`: ``where`` is
``entry bundle <key>``, the message says what differs and that ``kfm rebuild`` recreates it.
A ledger with no bundles at all (made before kfm wrote them) gets a note, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.entry_bundle import decode_entry_bundle
from kfm_ledger.log.entries import encode_entries
from kfm_ledger.log.layout import ENTRIES_PREFIX, JSONL_KEY

from ..errors import FormatError, KfmError
from ..storage.base import AppendLog
from . import access
from .context import Run

W = tiles.TILE_WIDTH
_REBUILD = "; run `kfm rebuild` to recreate the entry bundles"


def check_entries(run: Run, log: AppendLog, signed_sizes: Iterable[int] = ()) -> None:
    """Check every stored entry bundle of the ledger (see the module docstring).

    Streams the JSONL's signed rows once more (256 at a time); a bundle is compared as one
    byte string with the encoding of its rows, and decoded only when it differs.
    """
    ledger = run.ledger
    size = ledger.size
    present: dict[int, dict[int, str]] = {}
    for key in access.list_keys(ledger, ENTRIES_PREFIX):
        try:
            index, width = tiles.parse_entries_path(key)
        except KfmError as e:
            run.fail(f"entry bundle {key}", f"not an entry bundle path: {e}")
            continue
        present.setdefault(index, {})[width] = key
    if not present:
        if size:
            run.note(
                "no entry bundles (tile/entries/): this ledger was made before kfm wrote them, so its "
                "appends write none either; `kfm rebuild` adds them"
            )
        return
    checked: set[str] = set()
    for index, rows in enumerate(_bundles_of_rows(log, size)):
        for width, key in sorted(present.get(index, {}).items()):
            if width <= len(rows):
                checked.add(key)
                _compare(run, key, rows[:width], index)
    _missing(run, present, size, signed_sizes)
    beyond = sorted(key for widths in present.values() for key in widths.values() if key not in checked)
    if beyond and run.pending_append is not None:
        run.note(
            f"{len(beyond)} entry bundle(s) beyond the signed tree, left by the interrupted append (first: {beyond[0]})"
        )
    else:
        for key in beyond:
            run.fail(f"entry bundle {key}", f"lies beyond the signed tree (size {size}){_REBUILD}")


def _bundles_of_rows(log: AppendLog, size: int) -> Iterator[list[bytes]]:
    """The signed rows (without newlines), 256 at a time (the last group may be shorter)."""
    rest = b""
    rows: list[bytes] = []
    n = 0
    for chunk in log.iter_chunks(0, 1 << 20):
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()
        rows += lines[: size - n]
        n += len(lines)
        start = 0
        while len(rows) - start >= W:
            yield rows[start : start + W]
            start += W
        del rows[:start]
        if n >= size:
            break
    if rows:
        yield rows


def _encoded(rows: list[bytes]) -> bytes:
    """The bundle of ``rows`` (:func:`~kfm_ledger.core.entry_bundle.encode_entry_bundle` without its
    per-entry checks; OverflowError for a row over 65,535 bytes)."""
    return encode_entries(rows, list(map(len, rows)))


def _compare(run: Run, key: str, rows: list[bytes], index: int) -> None:
    """One stored bundle against the rows it must hold."""
    try:
        stored = access.read(run.ledger, key)
    except KfmError as e:
        run.fail(f"entry bundle {key}", f"{e}{_REBUILD}")
        return
    try:
        if stored == _encoded(rows):
            if run.rows_changed:  # the rows are not all the signed ones: is this bundle?
                _check_leaves(run, key, rows, index)
            return
    except OverflowError:  # a JSONL line longer than any entry (an edited row): compared below
        pass
    try:
        found = decode_entry_bundle(stored)
    except FormatError as e:
        run.fail(f"entry bundle {key}", f"malformed: {e}{_REBUILD}")
        return
    if len(found) != len(rows):
        run.fail(
            f"entry bundle {key}",
            f"holds {len(found)} entries, but its width is {len(rows)}{_REBUILD}",
        )
        return
    first = index * W
    leaves = run.ledger.hash_reader(run.ledger.size, stored_expansions=False)
    for k, (entry, row) in enumerate(zip(found, rows)):
        if entry == row:
            continue
        i = first + k
        try:
            (signed,) = leaves.read_node_hashes([(0, i)])
        except KfmError:
            signed = b""
        if signed and merkle.leaf_hash(entry) == signed and merkle.leaf_hash(row) != signed:
            # The bundle holds the signed row; the JSONL's row was changed (the row pass names it).
            continue
        run.fail(
            f"entry bundle {key}",
            f"entry {k} (row {i}) differs from line {i + 1} of {JSONL_KEY} and is not the signed row"
            f"{_REBUILD}",
        )
        return


def _check_leaves(run: Run, key: str, found: list[bytes], index: int) -> None:
    """A bundle equal to its JSONL rows, when signed rows were changed: each entry's leaf hash
    against the level-0 tile (so a bundle edited like its row is caught too)."""
    first = index * W
    try:
        signed = run.ledger.hash_reader(run.ledger.size, stored_expansions=False).read_node_hashes(
            [(0, i) for i in range(first, first + len(found))]
        )
    except KfmError:
        return  # the tile pass reports the tile
    for k, (entry, leaf) in enumerate(zip(found, signed)):
        if merkle.leaf_hash(entry) != leaf:
            run.fail(
                f"entry bundle {key}",
                f"entry {k} (row {first + k}) is not the signed row: its leaf hash differs from "
                f"{tiles.tile_path(0, index)} (line {first + k + 1} of {JSONL_KEY} was changed the same way); "
                "restore that row's original bytes, then run `kfm rebuild`",
            )
            return


def _missing(run: Run, present: dict[int, dict[int, str]], size: int, signed_sizes: Iterable[int]) -> None:
    """Every full bundle of the signed tree, and the partial one a client holding any signed
    checkpoint may ask for (unless its full bundle, the spec's fallback, is there)."""
    for index in range(size // W):
        if W not in present.get(index, {}):
            run.fail(f"entry bundle {tiles.entries_path(index)}", f"missing{_REBUILD}")
    for signed in sorted(set(signed_sizes) | {size}):
        index, width = divmod(signed, W)
        widths = present.get(index, {})
        if width and width not in widths and W not in widths:
            run.fail(
                f"entry bundle {tiles.entries_path(index, width)}",
                f"missing (a client with the checkpoint of size {signed} needs it){_REBUILD}",
            )
