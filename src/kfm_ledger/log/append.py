"""Appending a validated batch: the ledger rules, then steps 1-7 with their crash order.

The steps and the recovery rule are in :mod:`kfm_ledger.log.recovery` (and
docs/operations.md); the comment at each write below says what a crash after it leaves.
The signed tree head is a c2sp.org/tlog-checkpoint over the RFC 9162 §2.1.1 root.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol

from kfm_ledger import schema
from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint, open_checkpoint, sign_checkpoint
from kfm_ledger.errors import MAX_LISTED_PROBLEMS, InputRejected, KfmError, RowProblem, StorageError
from kfm_ledger.index import IndexedEntry
from kfm_ledger.log.checkpoint_chain import previous_size_line
from kfm_ledger.schema.batch import check_batch_counted

from .entries import Piece, encode_pieces, has_entry_bundles
from .index_guard import IndexChanged, SealedIndex, check_seal, reseal, seal_appended, sealed_index
from .layout import CHECKPOINT_KEY, PENDING_KEY, checkpoint_key
from .recovery import PendingAppend, recover_locked, undo_append
from .tile_writer import TilesWritten, delete_replaced_partials, refuse_tiles_in_the_way, write_tiles_and_bundles

if TYPE_CHECKING:
    from .ledger import Ledger

#: From this many rows on, an append writes its tiles while it writes the rows.
OVERLAP_TILES_AT = 65536


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows [first_index, first_index + count) under ``checkpoint``."""

    first_index: int
    count: int
    checkpoint: SignedCheckpoint
    recovered: int = 0  #: rows of an interrupted, already-signed append published first


def stored_commit_problem(line: int, commit: str, leaf: int, *, same_bytes: bool = False) -> RowProblem:
    """The ledger rule "one row per lakeFS commit", broken by a commit already stored at ``leaf``."""
    return RowProblem(
        line,
        "$.lakefs_commit",
        f"commit {commit!r} is already in the ledger at index {leaf}"
        + (" with identical bytes (was this batch appended before?)" if same_bytes else "")
        + "; one row per lakeFS commit",
    )


def before_last_row_problem(line: int, created_at: str, last_created_at: str, last_leaf: int) -> RowProblem:
    """The ledger rule "created_at never goes backwards", broken by a batch's first row."""
    return RowProblem(
        line,
        "$.created_at",
        f"{created_at} is earlier than the last row's created_at {last_created_at} (index {last_leaf}); "
        "created_at never goes backwards",
    )


def ledger_problems(
    led: Ledger, parsed: list[tuple[int, schema.Row, bytes]], sealed: SealedIndex, *, locked: bool = True
) -> list[RowProblem]:
    """The ledger-wide invariants: one row per commit; created_at not before the last row's.

    Which commits are stored comes from the index's buckets after their sums are checked
    against the seal (:mod:`.index_guard`; :class:`IndexChanged` if one disagrees), so an
    edited index can neither hide a stored commit nor invent one.
    """
    old_size = led.size
    problems: list[RowProblem] = []
    # Signed rows only (the seal's buckets are read below the signed size): entries beyond
    # it belong to an append not yet signed.
    existing = sealed.stored(row.lakefs_commit for _, row, _ in parsed)
    for line_no, row, line in parsed:
        if row.lakefs_commit in existing:
            leaf = existing[row.lakefs_commit]
            same = False
            with contextlib.suppress(KfmError):  # a hint only: the row at that leaf, proven
                same = led.entry(leaf).line == line
            problems.append(stored_commit_problem(line_no, row.lakefs_commit, leaf, same_bytes=same))
    if old_size:
        # The last signed row's created_at from the row's own bytes, not from the index's
        # created_at column (derived data).  Under the writer lock, recovery (run before every
        # append) checked that the bytes the index points at hash to the last leaf
        # (recovery.signed_end), which the append then builds on only if the tiles give the
        # signed root; the read-only check of a refused batch proves them (an inclusion proof).
        if locked:
            last_row = led._entry_at(sealed.idx.at(old_size - 1))  # type: ignore[arg-type]
        else:
            last_row = led.entry(old_size - 1, verified=True)
        line_no, row, _ = parsed[0]
        if schema.created_at_datetime(row) < schema.created_at_datetime(last_row.row):
            problems.append(before_last_row_problem(line_no, row.created_at, last_row.row.created_at, old_size - 1))
    problems.sort(key=lambda p: p.line)
    return problems


def refuse(
    led: Ledger,
    parsed: list[tuple[int, schema.Row, bytes]],
    problems: list[RowProblem],
    *,
    signer: Signer,
    total: int,
    exact: bool,
    max_problems: int,
) -> NoReturn:
    """Raise InputRejected for a batch with schema problems, with the ledger's rules for the
    rows that passed too: read-only (nothing will be written, so no lock or recovery) against
    the signed rows, and only from an index whose seal describes the signed tree and whose
    buckets check (else the count is a lower bound)."""
    listed = len(problems)
    if parsed:
        checked = False
        with contextlib.suppress(KfmError, IndexChanged, sqlite3.Error):
            led.refresh()
            idx = led.stored_index()
            sealed = check_seal(led, idx, signer) if idx is not None else None
            if sealed is not None:
                problems += ledger_problems(led, parsed, sealed, locked=False)
                checked = True
        exact = exact and checked
    problems.sort(key=lambda p: p.line)
    raise InputRejected(problems, total=total + len(problems) - listed, limit=max_problems, exact=exact)


def append(
    led: Ledger,
    batch: bytes | Sequence[schema.Row],
    *,
    signer: Signer,
    wait: float,
    max_problems: int = MAX_LISTED_PROBLEMS,
) -> AppendResult:
    """Validate a batch and append it under a new signed checkpoint (see :meth:`Ledger.append`).

    A refusal lists at most ``max_problems`` problems (the first in line order) and counts
    them all: exactly, unless rows past the cap were counted undiagnosed (one problem each)
    or the ledger's rules could not be checked read-only (then ``total_exact`` is False).
    """
    led._check_signer(signer)
    exact = True
    if isinstance(batch, (bytes, bytearray, memoryview)):
        parsed, problems, total, exact = check_batch_counted(bytes(batch), max_problems)
    else:
        parsed, problems = schema.check_rows(batch)
        total = len(problems)
    if problems:
        refuse(led, parsed, problems, signer=signer, total=total, exact=exact, max_problems=max_problems)
    if not parsed:
        raise InputRejected([RowProblem(1, "$", "no rows in the input")])
    with led.writer_lock(wait=wait):
        recovery = recover_locked(led)
        old_size = led.size
        sealed = sealed_index(led, signer)
        try:
            problems = ledger_problems(led, parsed, sealed)
        except (IndexChanged, sqlite3.Error):
            # Edited behind kfm's back: never answer from it; rebuilt from the proven rows.
            sealed = reseal(led, signer)
            problems = ledger_problems(led, parsed, sealed)
        if problems:
            raise InputRejected(problems, limit=max_problems)
        idx = sealed.idx
        new_size = old_size + len(parsed)
        payload = b"".join(line + b"\n" for _, _, line in parsed)

        def index_entries(old_end: int) -> Iterator[IndexedEntry]:
            pos = old_end
            for i, (_, row, line) in enumerate(parsed):
                yield IndexedEntry(old_size + i, row.lakefs_commit, pos, len(line), row.created_at)
                pos += len(line) + 1

        idx.track(sealed.key)  # the new entries' seal terms, sealed once the batch is signed
        try:
            result = commit_batch(
                led,
                new_size=new_size,
                payload_size=len(payload),
                write_rows=lambda: led._jsonl.append(payload),
                write_index=lambda old_end: idx.add(
                    index_entries(old_end), size=new_size, end_offset=old_end + len(payload)
                ),
                leaf_hashes=(merkle.leaf_hash(line) for _, _, line in parsed),
                entries=lambda: encode_pieces(line for _, _, line in parsed),
                signer=signer,
                recovered=recovery.rows_rolled_forward,
            )
            seal_appended(led, sealed, new_size)
        finally:
            idx.delta = None
        return result


class RowsWrittenAhead(Protocol):
    """Rows of a batch already written past the signed ones under a provisional pending-append
    record (a bulk append's: :class:`~kfm_ledger.log.bulk_append._RowsAhead`)."""

    def undo(self) -> None:
        """Remove them and the provisional record."""

    def handed_over(self) -> None:
        """The exact record replaced the provisional one: never undo them from now on."""

    def drain(self) -> None:
        """Wait for every copy still being written; raise the first failure."""


def commit_batch(
    led: Ledger,
    *,
    new_size: int,
    payload_size: int,
    write_rows: Callable[[], None],
    write_index: Callable[[int], None],
    leaf_hashes: bytes | bytearray | Iterable[bytes],
    entries: Callable[[], Iterable[Piece]],
    signer: Signer,
    recovered: int,
    last_checks: Callable[[], None] | None = None,
    bundles_written: Callable[[], tuple[int, ...]] | None = None,
    rows_at: int | None = None,
    ahead: RowsWrittenAhead | None = None,
) -> AppendResult:
    """Write a validated batch: steps 1-7 with their crash order (docs/operations.md).

    Called under the writer lock after recovery and every check (but ``last_checks``).
    ``write_rows`` appends the batch's ``payload_size`` canonical bytes; ``write_index(old_end)``
    records (or commits) the batch's index entries for rows starting at JSONL byte ``old_end``;
    ``entries()`` gives the rows' entry-bundle encoding (step 4, written only by a ledger that
    keeps entry bundles: :func:`~kfm_ledger.log.entries.has_entry_bundles`).

    ``last_checks`` (a large batch only: a bulk append's deferred UNIQUE commit index, which
    takes seconds to build) runs in this thread while steps 2 and 4 run in others; if it
    raises (InputRejected: a repeated commit), the append is undone like any failure before
    signing and the error raised: the rows, index entries, tiles and bundles written meanwhile
    are beyond the signed size and are removed (docs/operations.md, step 1's rule).

    ``bundles_written`` (a bulk append whose bundles another process writes:
    :class:`~kfm_ledger.log.bundle_writer.BundleWriter`) replaces ``entries``: called after the
    tiles, it returns once every bundle is durable (the indexes of those that became full).

    ``rows_at``: the JSONL offset where the batch's rows begin when some of them were written
    ahead already (a bulk append's, under a provisional pending-append record that step 1's
    exact record replaces); ``write_rows`` appends the rest.  ``ahead`` (those rows' writer) is
    told to undo them if this fails before its own record is written, and that this owns them
    once it is (from then on only this undoes, and never once the batch is signed).
    """
    old_size = led.size
    try:
        refuse_tiles_in_the_way(led.storage, old_size, new_size)
        old_end = led._jsonl.size() if rows_at is None else rows_at
        pending = PendingAppend(old_size, old_end, new_size, old_end + payload_size)
        edge = led._right_edge
        pieces = entries if bundles_written is None and has_entry_bundles(led.storage, old_size) else None
        # Step 1: the pending-append record, durable before any row is written.
        # Crash after it: recovery rolls the append back (nothing was signed).
        led.storage.write_atomic(PENDING_KEY, pending.to_json())
    except BaseException:
        if ahead is not None:
            with contextlib.suppress(Exception):  # the next writer's recovery retries
                ahead.undo()
        raise
    if ahead is not None:
        ahead.handed_over()
    tiles_job: Future[TilesWritten] | None = None
    rows_job: Future[None] | None = None
    try:
        if new_size - old_size >= OVERLAP_TILES_AT:
            # A large batch writes its tiles (step 4) in a thread while steps 2-3
            # run: creating thousands of tile files waits on the disk, copying
            # the rows on the CPU.  The crash rule is unchanged: until step 5
            # signs, rows, index entries and tiles beyond the signed size are
            # all rolled back, and step 5 starts only when every one is durable.
            pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="kfm-tiles")
            tiles_job = pool.submit(
                write_tiles_and_bundles, led, old_size, leaf_hashes, led.storage.write_once_many, edge, pieces,
                parallel=True,
            )
            if last_checks is not None:
                rows_job = pool.submit(_write_rows_durably, led, write_rows)
            pool.shutdown(wait=False)  # the jobs run on; their results are awaited below
        if last_checks is not None:
            try:
                last_checks()
            finally:
                if rows_job is not None:
                    concurrent.futures.wait([rows_job])  # no row is written after a failure is handled
        # Step 2: rows to the JSONL, then fsync.  Crash during or after
        # (even a torn last line): rolled back, the record says where it began.
        if rows_job is not None:
            rows_job.result()
        else:
            _write_rows_durably(led, write_rows)
        # Step 3: the commit index.  Rolled back with the rows.
        write_index(old_end)
        # Step 4: tiles, then entry bundles (immutable objects).  Crash after: rolled back (deleted).
        if tiles_job is not None:
            tiled = tiles_job.result()
        else:
            tiled = write_tiles_and_bundles(led, old_size, leaf_hashes, led.storage.write_once_many, edge, pieces)
        if bundles_written is not None:
            tiled = dataclasses.replace(tiled, bundles_completed=bundles_written())
        note = sign_tree_head(led, tiled, signer)
    except BaseException:
        if tiles_job is not None:
            concurrent.futures.wait([tiles_job])  # its tiles exist before any undo deletes them
        if rows_job is not None:  # (awaited already, unless an interrupt cut that wait short)
            concurrent.futures.wait([rows_job])
        if ahead is not None:
            # Rows copied ahead may still be on their way (write_rows never ran when an earlier
            # step failed): none may land after the undo cuts the JSONL.
            with contextlib.suppress(Exception):  # a failed copy: the undo removes what it wrote
                ahead.drain()
        # Not a crash but a failure (I/O error, a tile in the way): the log has not
        # signed the new size, so undo now.
        with contextlib.suppress(Exception):  # the next writer's recovery retries
            undo_append(led, pending)
        raise
    publish(led, pending, note)
    # Kept for the next append, which uses it only if this tree (size and root) is then the signed one.
    led._right_edge = tiled.edge
    # Step 6: the append is complete.  Crash before: recovery sees the new
    # size signed and only removes the record.  Step 7: partial tiles and bundles
    # that a full one now replaces.  Both are clean-up: a failure here does not undo
    # a published append (the next recovery finishes them).
    with contextlib.suppress(Exception):
        led.storage.delete(PENDING_KEY)
        delete_replaced_partials(led.storage, tiled)
    return AppendResult(first_index=old_size, count=new_size - old_size, checkpoint=led.checkpoint, recovered=recovered)


def _write_rows_durably(led: Ledger, write_rows: Callable[[], None]) -> None:
    """Step 2: the batch's rows appended to the JSONL, then fsync'd."""
    write_rows()
    led._jsonl.sync()


def sign_tree_head(led: Ledger, tiled: TilesWritten, signer: Signer) -> bytes:
    """The signed note (c2sp.org/tlog-checkpoint) for the tree that :func:`write_tiles` computed.

    The signed tree head names the one before it (docs/formats.md), so that a kept
    checkpoint that goes missing is noticed by `kfm verify`.
    """
    extensions = (previous_size_line(led.size),)
    head = Checkpoint(origin=led.origin, size=tiled.size, root=tiled.root, extensions=extensions)
    return sign_checkpoint(head, signer)


def publish(led: Ledger, pending: PendingAppend, note: bytes) -> None:
    """Steps 5a and 5b; on failure, undo only if ``checkpoints/<new size>`` was not written.

    Step 5a: keep the signed checkpoint.  This is the point of no return: the
    log has signed this tree, so a crash after it rolls forward, never back.
    Step 5b: publish it.  From here on the rows are in the ledger.  (One storage
    call does both, in that order; the local backend links one file to both names.)
    """
    kept = checkpoint_key(pending.new_size)
    try:
        led.storage.write_once_and_publish(kept, CHECKPOINT_KEY, note)
        led._set_signed(open_checkpoint(note, [led.verifier], origin=led.origin))
    except BaseException as e:
        # Once checkpoints/<new size> exists a failure must not undo the rows
        # (when storage cannot even say, leave it to the next recovery).
        try:
            signed = led.storage.exists(kept)
        except Exception:  # pragma: no cover - exercised by fault injection only
            signed = True
        if not signed:
            with contextlib.suppress(Exception):  # the next writer's recovery retries
                undo_append(led, pending)
            raise
        if isinstance(e, (OSError, KfmError)):
            raise StorageError(
                f"the batch is signed ({kept}) but publishing it failed: {e}; the next "
                "writer or `kfm recover` publishes it — do not append it again",
                key=kept,
            ) from e
        raise
