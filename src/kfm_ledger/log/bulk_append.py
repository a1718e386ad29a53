"""Appending a large JSONL file: validated in chunks on worker processes, then written as one batch.

Same steps, crash order and all-or-nothing rule as :mod:`kfm_ledger.log.append`.
"""

from __future__ import annotations

import array
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import InputRejected, RowProblem
from kfm_ledger.index import CommitIndex, IndexedEntry

from ..inputs import open_regular
from .append import AppendResult, append, before_last_row_problem, commit_batch, stored_commit_problem
from .entries import Piece, pieces_from_lines
from .progress import Progress
from .recovery import recover_locked

if TYPE_CHECKING:
    from .bulk import ChunkResult
    from .ledger import Ledger

#: A bulk append whose input has at least one row per this many bytes for every row
#: already in the ledger builds the UNIQUE commit index once, after all its inserts.
DEFER_UNIQUE_BYTES_PER_ROW = 1024


class _Problems:
    """At most ``limit`` problems kept (the rest counted), one repeated-commit report per input line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.found: list[RowProblem] = []
        self.more = 0
        self._commit_lines: set[int] = set()  # lines already reported for a repeated commit

    def __call__(self, p: RowProblem) -> None:
        if p.path == "$.lakefs_commit":
            if p.line in self._commit_lines:
                return  # one report per line
            self._commit_lines.add(p.line)
        if len(self.found) < self.limit:
            self.found.append(p)
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.found:
            self.found.sort(key=lambda p: p.line)
            # The true total, and only problems in the list: the count of the ones not
            # listed is InputRejected.not_listed, never an entry.
            raise InputRejected(self.found, total=len(self.found) + self.more, limit=self.limit)


# Over 80 lines: pass 1 (collect every chunk's facts inside one index transaction)
# and pass 2 (write) share the open transaction, the spools and the collected hashes.
def append_file(
    led: Ledger,
    path: str | os.PathLike[str],
    *,
    signer: Signer,
    wait: float,
    workers: int | None,
    max_problems: int,
    progress: Progress | None = None,
) -> AppendResult:
    """:meth:`Ledger.append` for an input file, streamed (see :meth:`Ledger.append_file`)."""
    from . import bulk

    path = os.fspath(path)
    with open_regular(path, "input file") as f:  # a FIFO or device is refused, never read
        size = os.fstat(f.fileno()).st_size
    if _goes_in_memory(path, size, bulk.PARALLEL_THRESHOLD):
        with open(path, "rb") as f:
            appended = append(led, f.read(), signer=signer, wait=wait)
        if progress is not None:
            progress(size, size)
        return appended
    led._check_signer(signer)
    problem = _Problems(max_problems)
    hashes = bytearray()
    lines = array.array("q")  # input line of each row, by position in the batch
    spooled_chunks: list[tuple[int, int, int]] = []
    with open(path, "rb") as f:
        bom = 3 if f.read(3) == b"\xef\xbb\xbf" else 0  # a UTF-8 byte order mark is ignored
    # The writer lock is held for the whole append: the batch's index entries go
    # into the commit index inside one open transaction while the workers
    # validate (the index's UNIQUE commit column finds repeats, in the batch and
    # against the ledger).  Nothing is committed or written to the ledger before
    # every row has passed; a crash in this pass leaves only a rolled-back
    # transaction and anonymous spool files.
    with led.writer_lock(wait=wait), bulk.SpooledInput(path, start=bom, workers=workers) as spooled_input:
        recovery = recover_locked(led)
        old_size = led.size
        old_end = led._jsonl.size()
        idx = led._raw_index()
        # The last signed row's created_at from its own bytes (checked against the last leaf by
        # recovery), not from the index's derived created_at column.
        last_entry = idx.at(old_size - 1) if old_size else None
        last = (last_entry.leaf, led._entry_at(last_entry).row.created_at) if last_entry is not None else None
        previous: tuple[int, str] | None = None
        seq = 0
        spooled = 0
        # A batch at least as large as the ledger (by a rough 1 KB a row) builds the
        # UNIQUE commit index once at the end instead of row by row.
        idx.begin(defer_unique=size // DEFER_UNIQUE_BYTES_PER_ROW >= old_size)
        try:
            for chunk_number, result in enumerate(spooled_input.results(), 1):
                # Helpers per chunk of about bulk.CHUNK_BYTES, never per row.
                if progress is not None:  # chunk k is the input's bytes [bom + (k-1)*step, bom + k*step)
                    progress(min(bom + chunk_number * spooled_input.chunk_bytes, size), size)
                for p in result.all_problems():
                    problem(p)
                previous = _check_chunk_order(result, previous, last, problem)
                count = _index_chunk(idx, result, old_size + seq, old_end + spooled, lines, old_size, problem)
                seq += count
                spooled += sum(result.lengths) + count
                if not problem.found and result.spool is not None:
                    spooled_chunks.append(result.spool)
                    hashes += result.leaf_hashes
            for commit, leaves in idx.finish_inserts(limit=max_problems + 1):
                _report_repeated_leaves(commit, leaves, lines, old_size, problem)
            problem.raise_if_any()
            if seq == 0:
                raise InputRejected([RowProblem(1, "$", "no rows in the input")])
            new_size = old_size + seq

            rows_copied = threading.Event()

            def write_rows() -> None:
                try:
                    for chunk in spooled_chunks:
                        spooled_input.copy(chunk, led._jsonl.append)
                    # Dropping the spools now spares the disk their write-back (and every
                    # later fsync the wait for it).
                    spooled_input.close()
                finally:
                    rows_copied.set()  # (a failed copy: the bundle writer then finds rows missing)

            def entry_pieces() -> Iterator[Piece]:
                # The entry bundles are cut from the canonical rows just copied to the JSONL (read
                # back from the page cache by the tile thread while the rows are synced and indexed):
                # spooling a second copy of the rows cost more in disk write-back (docs/entry-bundles.md).
                rows_copied.wait()
                return pieces_from_lines(led._jsonl.iter_chunks(old_end, end=old_end + spooled), seq)

            return commit_batch(
                led,
                new_size=new_size,
                payload_size=spooled,
                write_rows=write_rows,
                write_index=lambda _old_end: idx.commit(size=new_size, end_offset=old_end + spooled),
                leaf_hashes=hashes,
                entries=entry_pieces,
                signer=signer,
                recovered=recovery.rows_rolled_forward,
            )
        finally:
            idx.rollback_if_open()


def _goes_in_memory(path: str, size: int, threshold: int) -> bool:
    """Whether the input takes :func:`append`'s in-memory path: a small file, a JSON array or
    an empty input."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return size < threshold or head[:1] == b"[" or not head


def _check_chunk_order(
    result: ChunkResult,
    previous: tuple[int, str] | None,
    last: tuple[int, str] | None,
    problem: Callable[[RowProblem], None],
) -> tuple[int, str] | None:
    """created_at never goes backwards across chunks (a worker checked within its chunk):
    compare this chunk's first row with the previous chunk's last row, or with the ledger's
    last row ``(leaf, created_at)`` for the first chunk.  Returns the new ``previous``."""
    if result.first_created is not None:
        first_line, first_text = result.first_created
        first_key = schema.created_at_order_key(first_text)
        if previous is not None and first_key < schema.created_at_order_key(previous[1]):
            problem(schema.backwards_problem(first_line, first_text, *previous))
        elif previous is None and last is not None:
            last_leaf, last_created = last
            if first_key < schema.created_at_order_key(last_created):
                problem(before_last_row_problem(first_line, first_text, last_created, last_leaf))
        previous = result.last_created
    return previous


def _index_chunk(
    idx: CommitIndex,
    result: ChunkResult,
    first_leaf: int,
    first_offset: int,
    lines: array.array[int],
    old_size: int,
    problem: Callable[[RowProblem], None],
) -> int:
    """Insert a chunk's rows (leaf ``first_leaf`` on, JSONL offset ``first_offset`` on) into the
    open commit index, name the rows whose commit it already held, then add the chunk's input
    line numbers to ``lines``.  Returns the chunk's row count."""
    count = len(result.lengths)
    offsets = itertools.accumulate(map((1).__add__, result.lengths), initial=first_offset)
    rows = zip(
        range(first_leaf, first_leaf + count), result.commits, offsets, result.lengths,
        result.created_at,
    )
    if idx.insert_new(rows) != count:
        _report_repeats(
            [IndexedEntry(first_leaf + k, commit, 0, 0, "") for k, commit in enumerate(result.commits)],
            lines, result.lines, old_size, idx, problem,
        )
    lines.extend(result.lines)
    return count


def _report_repeats(
    rows: list[IndexedEntry],
    lines: array.array[int],
    chunk_lines: array.array[int],
    old_size: int,
    idx: CommitIndex,
    problem: Callable[[RowProblem], None],
) -> None:
    """Name the rows of a chunk whose commit the index already held (rare path).

    ``lines`` maps the batch's earlier rows to input lines, ``chunk_lines`` this chunk's.
    """
    first_leaf = rows[0].leaf if rows else 0

    def line_of(leaf: int) -> int:
        k = leaf - old_size
        return lines[k] if k < len(lines) else chunk_lines[leaf - first_leaf]

    for e in rows:
        found = idx.lookup(e.lakefs_commit)
        if found is None or found.leaf == e.leaf:
            continue
        _report_repeated_leaves(e.lakefs_commit, [found.leaf, e.leaf], lines, old_size, problem, line_of)


def _report_repeated_leaves(
    commit: str,
    leaves: list[int],
    lines: array.array[int],
    old_size: int,
    problem: Callable[[RowProblem], None],
    line_of: Callable[[int], int] | None = None,
) -> None:
    """One problem for each but the first of ``leaves`` (sorted), all rows of one commit."""
    line_of = line_of or (lambda leaf: lines[leaf - old_size])
    first = leaves[0]
    for leaf in leaves[1:]:
        if first < old_size:
            problem(stored_commit_problem(line_of(leaf), commit, first))
        else:
            problem(schema.repeated_commit_problem(line_of(leaf), commit, line_of(first)))
