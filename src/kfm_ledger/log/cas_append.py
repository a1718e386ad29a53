"""Appending to an S3 ledger without a lock: stage, compare-and-swap ``checkpoint``, then complete.

The protocol (docs/s3.md, "The write protocol", with its crash table):

1. Read ``checkpoint`` and its ETag; check the signature.  If ``checkpoints/<size>`` is
   missing, a writer won the swap for that tree but has not finished its objects: wait a
   moment for it, then complete them from its staging object (:func:`complete`).
2. Load the right edge of the tree (its partial tiles and partial entry bundle, checked
   against the signed root) and bring the local commit index up to the tree.
3. Check the batch against the tree: one row per lakeFS commit, ``created_at`` not before
   the last row's.
4. Compute every object the append creates (:func:`kfm_ledger.log.staging.extend`) and sign
   the new checkpoint (it names the previous size).
5. Write the staging object ``staging/<new size>-<new root>``: the edge and the new entries.
   Nothing public has changed.
6. Swap ``checkpoint`` with ``If-Match: <etag>``.  This is the commit point: from here the
   rows are in the ledger.  Lost (412, or 404): delete the staging object, go back to 1
   against the new tree (the checks of 3 run again), at most :data:`MAX_ATTEMPTS` times
   and for ``wait`` seconds, then :class:`~kfm_ledger.errors.ContentionError`.
7. Create the tiles and bundles with ``If-None-Match: *`` (identical existing bytes are
   fine), then ``checkpoints/<new size>`` (the mark of a complete tree), then delete the
   staging object.

Objects are never overwritten and are a function of the staging object alone, so a writer
delayed anywhere (Sunlight's delayed-writer bug) can only write bytes that are already
there; a staging object whose swap lost is never completed by anyone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.signed_checkpoint import open_checkpoint, sign_checkpoint
from kfm_ledger.errors import (
    ContentionError,
    CorruptLedgerError,
    FormatError,
    ImmutableObjectError,
    InputRejected,
    KfmError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RowProblem,
    StorageError,
)
from kfm_ledger.schema.batch import MAX_LISTED_PROBLEMS, check_batch_counted

from .append import AppendResult, before_last_row_problem, stored_commit_problem
from .checkpoint_chain import previous_size_line
from .layout import CHECKPOINT_KEY, checkpoint_key
from .staging import STAGING_PREFIX, Extension, Staging, TreeEdge, extend, staging_key

if TYPE_CHECKING:
    from .progress import Progress
    from .remote import RemoteLedger

__all__ = ["MAX_ATTEMPTS", "MAX_BATCH_BYTES", "WriterState", "append", "append_file", "complete", "sweep_staging"]

#: Compare-and-swap attempts of one append before it gives up (ContentionError).
MAX_ATTEMPTS = 64
#: The largest input an S3 append reads (the batch is held in memory and staged whole).
MAX_BATCH_BYTES = 1 << 30
#: How long a writer that finds a signed tree incomplete waits for its writer to finish
#: (seconds, doubling) before completing it itself.
HELP_DELAYS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
#: From this many rows on, an append indexes its rows while its objects upload.
OVERLAP_INDEX_AT = 1024
#: The largest staging object read.
MAX_STAGING_BYTES = 2 * MAX_BATCH_BYTES


@dataclass(frozen=True)
class WriterState:
    """What the next append builds on: the tree at ``checkpoint``'s version ``etag``."""

    etag: str
    size: int
    root: bytes
    edge: TreeEdge
    last_entry: bytes | None


# -- completion ----------------------------------------------------------------------------
def complete(led: RemoteLedger, *, wait: bool = True) -> int:
    """Make sure the signed tree's objects exist; returns the rows completed here (0: nothing to do).

    ``checkpoints/<size>`` marks a complete tree.  Without it, after waiting
    :data:`HELP_DELAYS` for the writer that won the swap, the objects are rebuilt from
    ``staging/<size>-<root>`` and checked: they must give the signed root and the staged
    note must be the signed one.  CorruptLedgerError when neither the mark nor the staging
    object exists, or they disagree with the signed checkpoint.
    """
    storage = led.storage
    if led.completed_etag == led.etag:
        return 0  # this process saw the mark for exactly this checkpoint already
    mark = checkpoint_key(led.size)
    etag = led.etag
    if storage.exists(mark):
        led.completed_etag = etag
        return 0
    for delay in HELP_DELAYS if wait else ():
        time.sleep(delay)
        if storage.exists(mark):
            led.completed_etag = etag
            return 0
    key = staging_key(led.size, led.root)
    try:
        data = storage.read_capped(key, MAX_STAGING_BYTES)
    except ObjectNotFoundError:
        if storage.exists(mark):  # completed (and its staging removed) meanwhile
            led.completed_etag = etag
            return 0
        raise CorruptLedgerError(
            f"{led.describe()}: the signed checkpoint at tree size {led.size} has neither its objects "
            f"({mark}) nor its staging object ({key}): they were deleted; run `kfm verify`",
            key=key,
            index=led.size,
        ) from None
    try:
        staged = Staging.decode(data)
    except FormatError as exc:
        raise CorruptLedgerError(f"{key}: {exc}", key=key) from None
    if staged.note != led.checkpoint.note:
        raise CorruptLedgerError(
            f"{key} does not hold the signed checkpoint of tree size {led.size}", key=key, index=led.size
        )
    ext = extend(staged.edge, staged.entries)
    if ext.edge.size != led.size or ext.root != led.root:
        raise CorruptLedgerError(
            f"{key}: its entries and edge give a tree of size {ext.edge.size} that is not the signed one "
            f"(size {led.size}); nothing was written",
            key=key,
            index=led.size,
        )
    finish(led, ext.objects, led.checkpoint.note, key)
    led.completed_etag = etag
    return len(staged.entries)


def finish(led: RemoteLedger, objects: Sequence[tuple[str, bytes]], note: bytes, key: str) -> None:
    """Step 7: the tiles and bundles, then ``checkpoints/<size>``, then the staging object goes."""
    storage = led.storage
    try:
        storage.write_once_many(list(objects))
        storage.write_once(checkpoint_key(led.size), note)
    except ImmutableObjectError as exc:
        raise CorruptLedgerError(
            f"{led.describe()}: {exc.key} already exists with other bytes than the signed tree of size "
            f"{led.size} gives: it was changed behind the ledger's back; run `kfm verify`",
            key=exc.key,
            index=led.size,
        ) from None
    with contextlib.suppress(StorageError):  # a later `kfm recover` sweeps it
        storage.delete(key)


def sweep_staging(led: RemoteLedger) -> list[str]:
    """Delete staging objects of trees at or below the signed size (completed, or lost their swap)."""
    removed = []
    for key in list(led.storage.list(STAGING_PREFIX)):
        name = key[len(STAGING_PREFIX) :]
        size_text, _, _root = name.partition("-")
        if not size_text.isdigit() or int(size_text) > led.size:
            continue  # a writer may be about to swap it in
        if int(size_text) == led.size and not led.storage.exists(checkpoint_key(led.size)):
            continue  # the current tree's, still needed
        led.storage.delete(key)
        removed.append(key)
    return removed


# -- the writer's state ----------------------------------------------------------------------
def load_state(led: RemoteLedger) -> WriterState:
    """The right edge of the signed tree from its partial tiles and bundle, checked against its root."""
    size = led.size
    shape = TreeEdge(size, (), ())
    widths = shape.widths()
    keys = [tiles.tile_path(level, (size >> (tiles.TILE_HEIGHT * level)) // tiles.TILE_WIDTH, w)
            for level, w in sorted(widths.items())]
    found = led.storage.read_many(keys)
    partials = []
    for (level, width), key, data in zip(sorted(widths.items()), keys, found):
        if data is None:  # not the exact partial: a full or wider one starts with the same hashes
            data = led.read_tile(level, (size >> (tiles.TILE_HEIGHT * level)) // tiles.TILE_WIDTH, width)
        try:
            hashes = tiles.hashes_of_tile(data[: width * merkle.HASH_SIZE])
        except FormatError as exc:
            raise CorruptLedgerError(f"{key}: {exc}", key=key) from None
        if len(hashes) != width:
            raise CorruptLedgerError(f"{key} is shorter than its width {width}", key=key)
        partials.append((level, tuple(hashes)))
    bundle: tuple[bytes, ...] = ()
    if size % tiles.TILE_WIDTH:
        bundle = tuple(led.read_bundle(size // tiles.TILE_WIDTH, size % tiles.TILE_WIDTH))
    edge = TreeEdge(size, tuple(partials), bundle)
    try:
        edge.check_shape()
    except FormatError as exc:
        raise CorruptLedgerError(
            f"{led.describe()}: the partial entry bundle or tiles at tree size {size} disagree: {exc}; "
            "run `kfm verify`",
            key=tiles.entries_path(size // tiles.TILE_WIDTH, size % tiles.TILE_WIDTH or None),
            index=size,
        ) from None
    if edge.root() != led.root:
        raise CorruptLedgerError(
            f"{led.describe()}: the tiles at the right edge do not give the signed root at tree size {size}: "
            "a tile was changed; nothing was written; run `kfm verify`",
            key="tile/",
            index=size - 1,
        )
    last = bundle[-1] if bundle else (led.entry(size - 1).line if size else None)
    return WriterState(led.etag, size, led.root, edge, last)


def _state(led: RemoteLedger, fresh: bool) -> WriterState:
    """The writer's state for this attempt: re-read ``checkpoint`` unless this process just swapped it."""
    state = led.writer_state
    if fresh or not isinstance(state, WriterState) or state.etag != led.etag:
        if fresh:
            led.refresh()
        complete(led)
        state = load_state(led)
        led.writer_state = state
    return state


class _Stale(Exception):
    """The tree moved while the batch was being checked against it."""


# -- the append ---------------------------------------------------------------------------
def _ledger_problems(
    led: RemoteLedger, state: WriterState, parsed: list[tuple[int, schema.Row, bytes]]
) -> list[RowProblem]:
    """One row per commit and created_at order, against the tree of ``state``."""
    idx = led.index  # caught up to the signed tree (checked against its root)
    if led.etag != state.etag:
        raise _Stale  # catching up read a newer checkpoint: check against that tree instead
    found = idx.lookup_many([row.lakefs_commit for _, row, _ in parsed])
    problems: list[RowProblem] = []
    for line_no, row, line in parsed:
        leaf = found.get(row.lakefs_commit)
        if leaf is not None and leaf < state.size:
            same = len(problems) < 10 and led.entry_bytes(leaf) == line
            problems.append(stored_commit_problem(line_no, row.lakefs_commit, leaf, same_bytes=same))
    if state.last_entry is not None:
        last_row = schema.decode_row(state.last_entry)
        line_no, row, _ = parsed[0]
        if schema.created_at_datetime(row) < schema.created_at_datetime(last_row):
            problems.append(before_last_row_problem(line_no, row.created_at, last_row.created_at, state.size - 1))
    problems.sort(key=lambda p: p.line)
    return problems


def append(
    led: RemoteLedger,
    batch: bytes | Sequence[schema.Row],
    *,
    signer: Signer,
    wait: float,
    max_problems: int = MAX_LISTED_PROBLEMS,
) -> AppendResult:
    """Validate a batch and append it by the protocol of this module (see :meth:`RemoteLedger.append`)."""
    led._check_signer(signer)
    exact = True
    if isinstance(batch, (bytes, bytearray, memoryview)):
        parsed, problems, total, exact = check_batch_counted(bytes(batch), max_problems)
    else:
        parsed, problems = schema.check_rows(batch)
        total = len(problems)
    if problems:
        raise InputRejected(problems, total=total, limit=max_problems, exact=exact)
    if not parsed:
        raise InputRejected([RowProblem(1, "$", "no rows in the input")])
    entries = tuple(line for _, _, line in parsed)
    deadline = time.monotonic() + max(wait, 0.0)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        state = _state(led, fresh=attempt > 1)
        try:
            problems = _ledger_problems(led, state, parsed)
        except _Stale:
            continue
        if problems:
            raise InputRejected(problems, limit=max_problems)
        ext, note, key = _stage(led, state, entries, signer)  # steps 4 and 5
        etag = _swap(led, note, state, key)  # step 6
        if etag == SUPERSEDED:  # won, and others have completed our tree and built on it since
            led.writer_state = None
            led.refresh()
            signed = open_checkpoint(note, [led.verifier], origin=led.origin)
            return AppendResult(first_index=state.size, count=len(entries), checkpoint=signed)
        if etag is None:
            if time.monotonic() >= deadline and attempt > 1:
                break
            time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))
            continue
        led._adopt(open_checkpoint(note, [led.verifier], origin=led.origin), etag)
        led.writer_state = None
        # Step 7; a large batch indexes its rows (derived data, local) while its objects upload.
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kfm-finish")
        job = pool.submit(finish, led, ext.objects, note, key)
        pool.shutdown(wait=False)
        if len(entries) < OVERLAP_INDEX_AT:
            concurrent.futures.wait([job])
        with contextlib.suppress(KfmError, sqlite3.Error):  # a later catch-up adds them instead
            led.remote_index().add_rows(state.size, entries, [row for _, row, _ in parsed], ext.edge.compact_range())
        try:
            job.result()
        except KfmError as exc:
            raise StorageError(
                f"the batch is appended (signed tree size {led.size}) but creating its tiles failed: {exc}; "
                "the next writer, reader or `kfm recover` completes them — do not append it again",
                key=key,
            ) from exc
        led.writer_state = WriterState(etag, ext.edge.size, ext.root, ext.edge, entries[-1])
        led.completed_etag = etag
        return AppendResult(first_index=state.size, count=len(entries), checkpoint=led.checkpoint)
    raise ContentionError(
        f"gave up after losing the compare-and-swap of checkpoint in {led.describe()} {attempt} time(s) to other "
        f"writers (waited {wait:g} s); nothing of the batch was appended: run the append again",
        key=CHECKPOINT_KEY,
        attempts=attempt,
    )


def _stage(
    led: RemoteLedger, state: WriterState, entries: tuple[bytes, ...], signer: Signer
) -> tuple[Extension, bytes, str]:
    """Steps 4 and 5: the new objects, the signed checkpoint and the staging object (written).

    The root comes first (leaf hashes into the compact range); a large batch then computes
    its tiles and bundles while its staging object uploads.
    """
    crange = state.edge.compact_range()
    crange.extend(merkle.leaf_hash(e) for e in entries)
    size, root = crange.size, crange.root()
    head = Checkpoint(origin=led.origin, size=size, root=root, extensions=(previous_size_line(state.size),))
    note = sign_checkpoint(head, signer)
    key = staging_key(size, root)
    staged = Staging(note, state.edge, entries).encode()
    if len(entries) < OVERLAP_INDEX_AT:
        led.storage.write_atomic(key, staged)
        ext = extend(state.edge, entries)
    else:
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kfm-stage")
        upload = pool.submit(led.storage.write_atomic, key, staged)
        pool.shutdown(wait=False)
        try:
            ext = extend(state.edge, entries)
        finally:
            concurrent.futures.wait([upload])
        upload.result()
    if (ext.edge.size, ext.root) != (size, root):  # pragma: no cover - two computations of one tree
        raise AssertionError("the tiles computed do not give the root signed")
    return ext, note, key


#: What :func:`_swap` returns when this writer won but others have appended on top since.
SUPERSEDED = ""


def _swap(led: RemoteLedger, note: bytes, state: WriterState, key: str) -> str | None:
    """Step 6: the compare-and-swap; the new ETag when this writer won, None when it lost.

    :data:`SUPERSEDED` when it won but the tree has grown past its own since.  A lost answer
    is told apart by reading ``checkpoint`` back (our note there: we won) and
    ``checkpoints/<our size>`` (our note kept: we won and others built on our tree).  When the
    checkpoint has moved past the version we swapped against, our swap can never land any
    more: lost.  An error that leaves it unknown (the old checkpoint still there) keeps the
    staging object (it may still be needed) and raises.
    """
    storage = led.storage
    try:
        etag = storage.compare_and_swap(CHECKPOINT_KEY, note, state.etag)
        if etag:
            return etag
        return storage.read_versioned(CHECKPOINT_KEY)[1]
    except PreconditionFailedError:
        return _after_lost_answer(led, note, state, key, None)
    except StorageError as exc:
        return _after_lost_answer(led, note, state, key, exc)


def _after_lost_answer(
    led: RemoteLedger, note: bytes, state: WriterState, key: str, error: StorageError | None
) -> str | None:
    storage = led.storage
    try:
        current, etag = storage.read_versioned(CHECKPOINT_KEY)
        if current == note:
            return etag  # our first attempt landed; its answer (or the retry's) said otherwise
        if _kept_as(led, note):
            return SUPERSEDED
    except StorageError:
        if error is None:
            raise
        etag = state.etag
    if error is not None and etag == state.etag:
        raise StorageError(
            f"the compare-and-swap of checkpoint failed ({error}) and it is unknown whether it landed: check with "
            "`kfm get --commit ...` before appending the batch again (it is never appended twice)",
            key=CHECKPOINT_KEY,
        ) from error
    led.writer_state = None
    with contextlib.suppress(StorageError):
        storage.delete(key)  # never completed: the checkpoint has moved past the version it built on
    return None


def _kept_as(led: RemoteLedger, note: bytes) -> bool:
    """Whether ``checkpoints/<size>`` of ``note``'s tree holds exactly ``note`` (the log signed and kept it)."""
    from kfm_ledger.core.signed_checkpoint import parse_unverified

    try:
        return led.storage.read_capped(checkpoint_key(parse_unverified(note).size), len(note)) == note
    except KfmError:
        return False


def append_file(
    led: RemoteLedger,
    path: str | os.PathLike[str],
    *,
    signer: Signer,
    wait: float,
    max_problems: int = MAX_LISTED_PROBLEMS,
    progress: Progress | None = None,
) -> AppendResult:
    """:func:`append` for a file the user named (refused past :data:`MAX_BATCH_BYTES`)."""
    from kfm_ledger.inputs import read_bounded

    data = read_bounded(path, MAX_BATCH_BYTES, "input file")
    result = append(led, data, signer=signer, wait=wait, max_problems=max_problems)
    if progress is not None:
        progress(len(data), len(data))
    return result
