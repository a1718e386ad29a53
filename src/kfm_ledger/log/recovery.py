"""Crash recovery: the pending-append record and the recovery rule (docs/operations.md).

An append is all or nothing.  Its steps, each with what a crash after it leaves
(the same comments stand at each step in :func:`kfm_ledger.log.append.commit_batch`):

1. the pending-append record (old/new size and JSONL length), written atomically;
2. the rows appended to the JSONL and fsync'd;
3. the commit index updated;
4. the tiles for the new leaves written (immutable objects);
5. the new checkpoint signed and kept as ``checkpoints/<size>`` (5a: the point
   of no return), then ``checkpoint`` replaced atomically (5b): only now does
   append report success;
6. the record removed; 7. partial tiles that full tiles replace deleted.

**Recovery rule** (:func:`recover_locked`, run by every writer before it writes
and by ``kfm recover``; it never signs): with a record that matches the signed
tree, roll forward if ``checkpoints/<new size>`` exists and the written tiles
give its root, else roll back (cut the JSONL to where the batch began, drop its
index entries and tiles).  With no record, the JSONL must end exactly after the
last signed row; otherwise the writer stops and nothing is cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.errors import CorruptLedgerError, KfmError, ObjectNotFoundError

from .index_sync import catch_up_index
from .layout import CHECKPOINT_KEY, CHECKPOINTS_PREFIX, JSONL_KEY, PENDING_KEY, checkpoint_key
from .tile_writer import prune_partials

if TYPE_CHECKING:
    from .ledger import Ledger


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
        obj = json.loads(data)
        values = [obj[k] for k in ("old_size", "old_end", "new_size", "new_end")]
        if not all(type(v) is int and v >= 0 for v in values):
            raise ValueError("sizes and offsets must be non-negative integers")
        p = cls(*values)
        if not (p.old_size < p.new_size and p.old_end < p.new_end):
            raise ValueError("the batch must add rows and bytes")
        return p


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


def discard_temporaries_of(led: Ledger, pending: PendingAppend) -> tuple[str, ...]:
    """Temporary files an interrupted append may have left (in the folders it writes), removed."""
    folders = {"", CHECKPOINTS_PREFIX}
    for level, index, width in tiles.tiles_changed(pending.old_size, pending.new_size):
        folders.add(tiles.tile_path(level, index, width).rsplit("/", 1)[0] + "/")
    try:
        return tuple(sorted(led.storage.discard_stale_temporaries(sorted(folders))))
    except (OSError, KfmError):  # clean-up only
        return ()


def undo_append(led: Ledger, pending: PendingAppend) -> None:
    """Remove every trace of an unsigned append: JSONL tail, index rows, new tiles, the record."""
    if led._jsonl.size() > pending.old_end:
        led._jsonl.truncate(pending.old_end)
    led._raw_index().truncate(pending.old_size, pending.old_end)
    for level, index, width in tiles.tiles_changed(pending.old_size, pending.new_size):
        # Tiles for the new size never exist at the old size (a full tile that
        # became full, the right edge's new width): all of them are the append's.
        led.storage.delete(tiles.tile_path(level, index, width))
    # Their expansion records too (derived; refused on use anyway: their roots differ).
    led.prover.expansions.cut(pending.old_size // tiles.TILE_WIDTH)
    led.storage.delete(PENDING_KEY)
