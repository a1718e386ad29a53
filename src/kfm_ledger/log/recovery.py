"""Crash recovery: the pending-append record and the recovery rule (docs/operations.md).

An append is all or nothing.  Its steps, each with what a crash after it leaves
(the same comments stand at each step in :func:`kfm_ledger.log.append.commit_batch`):

1. the pending-append record (old/new size and JSONL length), written atomically;
2. the rows appended to the JSONL and fsync'd;
3. the commit index updated;
4. the tiles for the new leaves written, then their entry bundles (immutable objects);
5. the new checkpoint signed and kept as ``checkpoints/<size>`` (5a: the point
   of no return), then ``checkpoint`` replaced atomically (5b): only now does
   append report success;
6. the record removed; 7. partial tiles and bundles that full ones replace deleted.

**Recovery rule** (:func:`recover_locked`, run by every writer before it writes
and by ``kfm recover``; it never signs): with a record that matches the signed
tree, roll forward if ``checkpoints/<new size>`` exists and the written tiles
give its root, else roll back (cut the JSONL to where the batch began, drop its
index entries, tiles and entry bundles).  With no record, the JSONL must end exactly after the
last signed row; otherwise the writer stops and nothing is cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.errors import CorruptLedgerError, KfmError, ObjectNotFoundError

from .entries import bundles_changed, stored_bundles_beyond
from .index_sync import catch_up_index
from .layout import CHECKPOINT_KEY, CHECKPOINTS_PREFIX, JSONL_KEY, PENDING_KEY, checkpoint_key
from .tile_writer import prune_partials

if TYPE_CHECKING:
    from .ledger import Ledger

#: The fewest bytes a row takes in the JSONL (``{}`` and its newline): a record claiming
#: more rows than its byte span can hold is corrupt.
MIN_ROW_BYTES = 3
#: A pending-append record is one short JSON line; anything longer is not one.
MAX_PENDING_BYTES = 4096
_MAX_OFFSET = 1 << 63
_PENDING_FIELDS = ("old_size", "old_end", "new_size", "new_end")


@dataclass(frozen=True)
class PendingAppend:
    """The record an append writes before its first row: where its batch begins and ends."""

    old_size: int
    old_end: int  #: JSONL byte length before the batch (the signed end)
    new_size: int
    new_end: int  #: JSONL byte length after the batch

    def to_json(self) -> bytes:
        return json.dumps(
            {"old_size": self.old_size, "old_end": self.old_end, "new_size": self.new_size, "new_end": self.new_end}
        ).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> PendingAppend:
        """Parse a record strictly: exactly the four keys, integers in ``[0, 2**63)``, a batch
        that adds rows and bytes, and no more rows than its bytes can hold
        (:data:`MIN_ROW_BYTES` each).  ValueError otherwise: nothing is ever allocated or
        looped over from numbers that fail these bounds."""
        if len(data) > MAX_PENDING_BYTES:
            raise ValueError(f"{len(data)} bytes, more than the {MAX_PENDING_BYTES} a record takes")
        try:
            obj = json.loads(data)
        except RecursionError:  # "[[[[..." within the size bound: not a record
            raise ValueError("nested too deeply to be a record") from None
        if type(obj) is not dict or sorted(obj) != sorted(_PENDING_FIELDS):
            raise ValueError(f"want exactly the keys {', '.join(_PENDING_FIELDS)}")
        values = [obj[k] for k in _PENDING_FIELDS]
        if not all(type(v) is int and 0 <= v < _MAX_OFFSET for v in values):
            raise ValueError("sizes and offsets must be integers from 0 to 2**63 - 1")
        p = cls(*values)
        if not (p.old_size < p.new_size and p.old_end < p.new_end):
            raise ValueError("the batch must add rows and bytes")
        if (p.new_size - p.old_size) * MIN_ROW_BYTES > p.new_end - p.old_end:
            raise ValueError(
                f"{p.new_size - p.old_size} rows cannot fit in the batch's {p.new_end - p.old_end} bytes "
                f"(each row takes at least {MIN_ROW_BYTES})"
            )
        return p

    @property
    def rows(self) -> int:
        return self.new_size - self.old_size


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery found and did."""

    bytes_rolled_back: int  #: bytes of an unsigned append removed from the JSONL
    rows_rolled_forward: int  #: rows of an already-signed append whose checkpoint was published
    size: int
    #: temporary files that interrupted writes left behind, removed
    temporaries_removed: tuple[str, ...] = ()


def read_pending(led: Ledger) -> PendingAppend | None:
    """The pending-append record, if there is one."""
    try:
        data = led.storage.read(PENDING_KEY)
    except ObjectNotFoundError:
        return None
    try:
        return PendingAppend.from_json(data)
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptLedgerError(
            f"{PENDING_KEY} is unreadable ({e}); inspect it before writing", key=PENDING_KEY
        ) from None


def signed_end(led: Ledger) -> int:
    """Byte offset in the JSONL just after the last signed row.

    Found through the commit index, and checked: the line there must end in
    a newline and hash to the signed tree's last leaf (from the tiles), so a
    stale or edited index can never make recovery cut the wrong bytes.
    """
    if led.size == 0:
        return 0
    idx = led._raw_index()
    if idx.size() < led.size:
        catch_up_index(led, limit=led.size)
    e = idx.at(led.size - 1)
    total = led._jsonl.size()
    if e is None or e.offset + e.length + 1 > total:
        raise CorruptLedgerError(
            f"{JSONL_KEY} ({total} bytes) is shorter than the signed rows (size {led.size}): rows were "
            "removed; restore the file from a copy",
            key=JSONL_KEY,
            line=led.size,
            index=led.size - 1,
        )
    line = led._jsonl.read(e.offset, e.length + 1)
    (last_leaf,) = led.hash_reader().read_node_hashes([(0, led.size - 1)])
    if line[-1:] != b"\n" or merkle.leaf_hash(line[:-1]) != last_leaf:
        raise CorruptLedgerError(
            f"the commit index's position for row {led.size - 1} does not match {JSONL_KEY} or the tiles; "
            "run `kfm verify`, then `kfm rebuild`",
            key=JSONL_KEY,
            line=led.size,
            index=led.size - 1,
        )
    return e.offset + e.length + 1


def recover_locked(led: Ledger) -> RecoveryReport:
    """The recovery rule (docs/operations.md), run under the writer lock; it never signs.

    With a pending-append record that matches the signed tree: if the log
    already signed the new size (``checkpoints/<new size>``, whose root the
    rows' tiles must give), roll forward and publish it; else roll back: cut
    the JSONL to where the batch began, forget its index entries and delete
    the tiles it may have written.  Without one, the JSONL must end exactly
    after the last signed row; anything else was not written by kfm and
    stops the writer (nothing is cut).
    """
    led.refresh()
    pending = read_pending(led)
    swept: tuple[str, ...] = ()
    if pending is not None and led.size == pending.new_size:
        # Step 6 was interrupted: the append had finished.
        swept = discard_temporaries_of(led, pending)
        led.storage.delete(PENDING_KEY)
        pending = None
    end = signed_end(led)
    total = led._jsonl.size()
    if pending is None:
        if total != end:
            raise CorruptLedgerError(
                f"{JSONL_KEY} has {total - end} byte(s) after the last signed row (index {led.size - 1}, "
                f"ending at byte {end}) that no interrupted kfm append accounts for: inspect and remove "
                f"them by hand (`truncate -s {end} {JSONL_KEY}`), then retry",
                key=JSONL_KEY,
                line=led.size + 1,
            )
        led._raw_index().truncate(led.size, end)  # entries of rows that are not signed
        prune_partials(led.storage, led.size)
        return RecoveryReport(bytes_rolled_back=0, rows_rolled_forward=0, size=led.size, temporaries_removed=swept)
    if pending.old_size != led.size or pending.old_end != end:
        raise CorruptLedgerError(
            f"{PENDING_KEY} describes an append from size {pending.old_size} (byte {pending.old_end}) to "
            f"{pending.new_size}, but the signed tree has size {led.size} ending at byte {end}: it does not "
            "belong to this ledger; nothing was changed — inspect it and remove it by hand",
            key=PENDING_KEY,
        )
    if total > pending.new_end:
        raise CorruptLedgerError(
            f"{JSONL_KEY} holds {total} bytes, {total - pending.new_end} more than the interrupted append "
            f"in {PENDING_KEY} wrote (it ends at byte {pending.new_end}): bytes no kfm append accounts for; "
            "nothing was changed — inspect them and remove them by hand",
            key=JSONL_KEY,
            line=led.size + 1,
        )
    signed_note = None
    try:
        signed_note = led.storage.read(checkpoint_key(pending.new_size))
    except ObjectNotFoundError:
        pass
    if signed_note is not None:
        return _roll_forward(led, pending, signed_note, total)
    # Roll back: the append never reported success and the log never signed it.
    cut = max(0, total - pending.old_end)
    undo_append(led, pending)
    return RecoveryReport(
        bytes_rolled_back=cut, rows_rolled_forward=0, size=led.size,
        temporaries_removed=discard_temporaries_of(led, pending),
    )


def _roll_forward(led: Ledger, pending: PendingAppend, signed_note: bytes, total: int) -> RecoveryReport:
    """The log signed the new tree head (step 5a): never sign another tree of that size.

    Its rows were fsync'd and tiled before; check, then publish.
    """
    new = open_checkpoint(signed_note, [led.verifier], origin=led.origin)
    if new.checkpoint.size != pending.new_size or total != pending.new_end:
        raise CorruptLedgerError(
            f"{CHECKPOINTS_PREFIX}{pending.new_size} is signed but {JSONL_KEY} holds {total} bytes, not the "
            f"{pending.new_end} the interrupted append wrote: inspect the ledger before writing",
            key=checkpoint_key(pending.new_size),
        )
    try:
        root = merkle.tree_root(pending.new_size, led.hash_reader(pending.new_size))
    except KfmError:
        root = b""
    if root != new.checkpoint.root:
        raise CorruptLedgerError(
            f"{CHECKPOINTS_PREFIX}{pending.new_size} is signed but the tiles written for it do not give "
            "its root: inspect the ledger before writing",
            key=checkpoint_key(pending.new_size),
        )
    led.storage.write_atomic(CHECKPOINT_KEY, signed_note)
    led._set_signed(new)
    catch_up_index(led, limit=led.size)
    led.storage.delete(PENDING_KEY)
    prune_partials(led.storage, led.size)
    return RecoveryReport(
        bytes_rolled_back=0,
        rows_rolled_forward=pending.new_size - pending.old_size,
        size=led.size,
        temporaries_removed=discard_temporaries_of(led, pending),
    )


def rows_are_present(led: Ledger, pending: PendingAppend) -> bool:
    """Whether the JSONL holds every byte the record names, so that its row count is bounded
    by real data (:data:`MIN_ROW_BYTES` a row) and work done per row or per tile is too."""
    return pending.new_end <= led._jsonl.size()


def discard_temporaries_of(led: Ledger, pending: PendingAppend) -> tuple[str, ...]:
    """Temporary files an interrupted append may have left (in the folders it writes), removed."""
    try:
        if not rows_are_present(led, pending):
            # The record's row count is not backed by bytes: sweep the tile tree instead
            # of computing folders from it (work bounded by what storage holds).
            swept = led.storage.discard_stale_temporaries(["", CHECKPOINTS_PREFIX])
            swept += led.storage.discard_stale_temporaries(["tile/"], recursive=True)
            return tuple(sorted(swept))
        folders = {"", CHECKPOINTS_PREFIX}
        for level, index, width in tiles.tiles_changed(pending.old_size, pending.new_size):
            folders.add(tiles.tile_path(level, index, width).rsplit("/", 1)[0] + "/")
        for index, width in bundles_changed(pending.old_size, pending.new_size):
            folders.add(tiles.entries_path(index, width).rsplit("/", 1)[0] + "/")
        return tuple(sorted(led.storage.discard_stale_temporaries(sorted(folders))))
    except (OSError, KfmError):  # clean-up only
        return ()


def _stored_tiles_beyond(led: Ledger, old_size: int) -> list[str]:
    """Hash tiles in storage that hold any hash beyond the tree of ``old_size`` (listed, so
    bounded by what storage holds, not by a record's numbers)."""
    found = []
    for key in led.storage.list("tile/"):
        try:
            level, index, width = tiles.parse_tile_path(key)
        except KfmError:
            continue  # entry bundles, stray names: not this append's
        count = old_size >> (tiles.TILE_HEIGHT * level)
        if index * tiles.TILE_WIDTH + width > count:
            found.append(key)
    return found


def undo_append(led: Ledger, pending: PendingAppend) -> None:
    """Remove every trace of an unsigned append: JSONL tail, index rows, new tiles and entry
    bundles, the record."""
    if rows_are_present(led, pending):
        # Tiles and bundles for the new size never exist at the old size (one that
        # became full, the right edge's new width): all of them are the append's.
        doomed = [tiles.tile_path(*t) for t in tiles.tiles_changed(pending.old_size, pending.new_size)]
        doomed += [tiles.entries_path(*b) for b in bundles_changed(pending.old_size, pending.new_size)]
    else:
        # Rows not all written (or a record whose numbers no bytes back): tiles may still
        # have been written ahead of the rows; remove every one beyond the old tree.
        doomed = _stored_tiles_beyond(led, pending.old_size)
        doomed += stored_bundles_beyond(led.storage, pending.old_size)
    if led._jsonl.size() > pending.old_end:
        led._jsonl.truncate(pending.old_end)
    led._raw_index().truncate(pending.old_size, pending.old_end)
    for key in doomed:
        led.storage.delete(key)
    # Their expansion records too (derived; refused on use anyway: their roots differ).
    led.prover.expansions.cut(pending.old_size // tiles.TILE_WIDTH)
    led.storage.delete(PENDING_KEY)
