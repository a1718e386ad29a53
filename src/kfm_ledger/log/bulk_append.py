"""Appending a large JSONL file: validated in chunks on worker processes, then written as one batch.

Same steps, crash order and all-or-nothing rule as :mod:`kfm_ledger.log.append`.
"""

from __future__ import annotations

import array
import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import InputRejected, RowProblem
from kfm_ledger.index import CommitIndex, IndexedEntry
from kfm_ledger.index_seal import add_terms, place_chunk_sums

from ..inputs import open_regular
from .append import AppendResult, append, before_last_row_problem, commit_batch, stored_commit_problem
from .bundle_writer import BundleWriter
from .entries import Piece, has_entry_bundles, pieces_from_lines
from .index_guard import IndexChanged, reseal, seal_appended, sealed_index
from .layout import PENDING_KEY
from .progress import Progress
from .recovery import MIN_ROW_BYTES, PendingAppend, recover_locked, undo_append

if TYPE_CHECKING:
    from .bulk import ChunkResult
    from .ledger import Ledger

#: A bulk append whose input has at least one row per this many bytes for every row
#: already in the ledger builds the UNIQUE commit index once, after all its inserts.
DEFER_UNIQUE_BYTES_PER_ROW = 1024


class _RowsAhead:
    """A bulk append's rows copied into the JSONL while the rest of the batch is still validated,
    so that the disk writes them meanwhile (their write-back started chunk by chunk) instead of
    after the last row is checked.  The copies run in a thread of their own, in order.

    The crash rule is step 1's (docs/operations.md): before a byte goes past the signed rows a
    pending-append record covers it, here a *provisional* one (the batch's rows and bytes are
    not known yet) whose ``new_end`` is raised, doubling, before the rows would pass it; its
    ``new_size`` is the most rows those bytes could hold (:data:`MIN_ROW_BYTES` each).  A crash
    then rolls the bytes back like any unsigned append; a refused or failed batch calls
    :meth:`undo`; a valid one is handed to ``commit_batch`` (``rows_at``), whose exact record
    replaces the provisional one.
    """

    #: The first provisional record covers this many bytes; each next one twice as many.
    FIRST_SPAN = 64 << 20

    def __init__(
        self,
        led: Ledger,
        old_size: int,
        old_end: int,
        copy: Callable[[tuple[int, int, int]], None],
        copied: Callable[[int, tuple[int, int, int], bytes], None] | None = None,
    ) -> None:
        """``copy(spool)`` appends a chunk's rows to the JSONL; ``copied(offset, spool, leaf_hashes)``,
        if given, is told of each chunk once it is there (the bundle writer)."""
        import concurrent.futures

        self.led, self.old_size, self.old_end, self._copy, self._copied_hook = led, old_size, old_end, copy, copied
        self._copied = 0  # bytes handed over (each chunk's canonical lines, newlines included)
        self._span = 0
        self._record: PendingAppend | None = None
        # The first record now, before anything of the batch is written anywhere (the bundle
        # writer's temporary files included: a crash then has recovery sweep them too).
        self._write(self._next_record(0), None)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kfm-rows")  # no thread yet
        self._jobs: list[concurrent.futures.Future[None]] = []

    def _next_record(self, length: int) -> PendingAppend:
        self._span = max(2 * self._span, self._copied + length, self.FIRST_SPAN)
        self._record = PendingAppend(
            self.old_size, self.old_end, self.old_size + self._span // MIN_ROW_BYTES, self.old_end + self._span
        )
        return self._record

    def add(
        self, spool: tuple[int, int, int], leaf_hashes: bytes, done: Callable[[], None] | None = None
    ) -> None:
        """Copy the next chunk's canonical lines (its spool range) after those handed over so far;
        then call ``done()`` (whether the copy worked or not)."""
        length = spool[2]
        record = self._next_record(length) if self._copied + length > self._span else None
        self._jobs.append(
            self._pool.submit(self._write, record, spool, self.old_end + self._copied, leaf_hashes, done)
        )
        self._copied += length

    def _write(
        self, record: PendingAppend | None, spool: tuple[int, int, int] | None, at: int = 0, leaf_hashes: bytes = b"",
        done: Callable[[], None] | None = None,
    ) -> None:
        try:
            if record is not None:
                self.led.storage.write_atomic(PENDING_KEY, record.to_json())  # durable before the bytes it covers
            if spool is not None:
                self._copy(spool)
                if self._copied_hook is not None:
                    self._copied_hook(at, spool, leaf_hashes)
        finally:
            if done is not None:
                done()

    def set_copied_hook(self, copied: Callable[[int, tuple[int, int, int], bytes], None]) -> None:
        """Tell ``copied(offset, spool, leaf_hashes)`` of each chunk once it is in the JSONL."""
        self._copied_hook = copied

    def drain(self) -> None:
        """Wait for every copy handed over; raise the first failure."""
        jobs, self._jobs = self._jobs, []
        try:
            for job in jobs:
                job.result()
        finally:
            self._pool.shutdown(wait=True)

    def handed_over(self) -> None:
        """``commit_batch`` now owns the rows (its record replaces the provisional one)."""
        self._record = None

    def undo(self) -> None:
        """Remove the rows copied ahead and the provisional record (a refused or failed batch)."""
        with contextlib.suppress(Exception):
            self.drain()  # nothing is still being written when the undo cuts
        if self._record is not None:
            record, self._record = self._record, None
            undo_append(self.led, record)


class _Problems:
    """At most ``limit`` problems kept (the rest counted), one repeated-commit report per input line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.found: list[RowProblem] = []
        self.more = 0
        self._commit_lines: set[int] = set()  # lines already reported for a repeated commit
        #: (commit, leaf) the index said is already stored: confirmed from the sealed buckets
        self.claims: list[tuple[str, int]] = []

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
    """:meth:`Ledger.append` for an input file, streamed (see :meth:`Ledger.append_file`).

    A commit index found edited behind kfm's back (its seal, :mod:`.index_guard`) is
    rebuilt from the proven rows and the append run again, once.
    """

    name = os.fspath(path)
    # Opened once (a FIFO or device is refused, never read) and read only through this
    # descriptor: on Linux the workers open its /proc/self/fd path, the very file checked.
    with open_regular(name, "input file") as f:
        source = f"/proc/self/fd/{f.fileno()}" if os.path.isdir("/proc/self/fd") else name

        def run() -> AppendResult:
            return _append_file(
                led, f.fileno(), source, signer=signer, wait=wait, workers=workers, max_problems=max_problems,
                progress=progress,
            )

        try:
            return run()
        except IndexChanged:
            with led.writer_lock(wait=wait):
                reseal(led, signer)
        return run()


# Over 80 lines: pass 1 (collect every chunk's facts inside one index transaction)
# and pass 2 (write) share the open transaction, the spools and the collected hashes.
def _append_file(
    led: Ledger,
    fd: int,
    path: str,
    *,
    signer: Signer,
    wait: float,
    workers: int | None,
    max_problems: int,
    progress: Progress | None = None,
) -> AppendResult:
    from . import bulk

    size = os.fstat(fd).st_size
    if _goes_in_memory(fd, size, bulk.PARALLEL_THRESHOLD):
        appended = append(led, _read_all(fd, size), signer=signer, wait=wait, max_problems=max_problems)
        if progress is not None:
            progress(size, size)
        return appended
    led._check_signer(signer)
    problem = _Problems(max_problems)
    hashes = bytearray()
    lines = array.array("q")  # input line of each row, by position in the batch
    spooled_chunks: list[tuple[int, int, int]] = []  # (without rows copied ahead) pass 2 copies them
    bom = 3 if os.pread(fd, 3, 0) == b"\xef\xbb\xbf" else 0  # a UTF-8 byte order mark is ignored
    # The writer lock is held for the whole append: the batch's index entries go
    # into the commit index inside one open transaction while the workers
    # validate (the index's UNIQUE commit column finds repeats, in the batch and
    # against the ledger).  On a local ledger each chunk's rows that passed the schema
    # and order checks go to the JSONL at once, under a provisional pending-append
    # record (_RowsAhead), and a child writes their bundles to temporary files
    # (BundleWriter); a refused batch undoes both, a crash in this pass leaves what
    # recovery rolls back (and anonymous spool files).  A large batch's deferred
    # UNIQUE index (repeated commits) is built while its rows and tiles are written
    # (commit_batch's last_checks): a repeat then undoes those writes before anything
    # is signed, as a failure would.
    with led.writer_lock(wait=wait), bulk.SpooledInput(path, start=bom, workers=workers) as spooled_input:
        recovery = recover_locked(led)
        old_size = led.size
        old_end = led._jsonl.size()
        sealed = sealed_index(led, signer)  # the index's seal checked (or the index rebuilt)
        idx = sealed.idx
        # The last signed row's created_at from its own bytes (checked against the last leaf by
        # recovery), not from the index's derived created_at column.
        last_entry = idx.at(old_size - 1) if old_size else None
        last = (last_entry.leaf, led._entry_at(last_entry).row.created_at) if last_entry is not None else None
        previous: tuple[int, str] | None = None
        seq = 0
        spooled = 0
        # A batch at least as large as the ledger (by a rough 1 KB a row) builds the
        # UNIQUE commit index once at the end instead of row by row.
        # The seal's bucket index (wider, scattered over 4,096 places) already from a quarter.
        rough_rows = size // DEFER_UNIQUE_BYTES_PER_ROW
        # A local ledger's rows go to the JSONL as their chunks pass (under a provisional
        # record), the disk writing them while the rest is validated.
        append_from_fd = getattr(led._jsonl, "append_from_fd", None)
        rows_ahead = (
            _RowsAhead(led, old_size, old_end, lambda spool: spooled_input.copy_by_fd(spool, append_from_fd))
            if append_from_fd is not None
            else None
        )
        # A local ledger's entry bundles are cut and written by a child process from the rows as
        # they reach the JSONL (forked now: before any thread or worker of this append starts).
        # Then canonical input is not spooled: its rows go from the workers to the row ring, from
        # where the JSONL and the child get the bytes validated; or, where there is no ring (no
        # memfd_create, or refused; over 6 workers) or a chunk does not fit or is refused by its
        # slot, they are copied from the input file itself and the child checks what arrives.
        jsonl_fileno = getattr(led._jsonl, "fileno", None)
        bundle_writer = (
            BundleWriter(led, old_size, led._right_edge, jsonl_fileno(), spooled_input.ring_fd)
            if rows_ahead is not None and jsonl_fileno is not None and hasattr(led.storage, "write_once_stream")
            and has_entry_bundles(led.storage, old_size)
            else None
        )
        if rows_ahead is not None and bundle_writer is not None:
            rows_ahead.set_copied_hook(
                lambda at, spool, hashes: bundle_writer.add(
                    at, spool[2], hashes, spool[1] if spool[0] == bulk.RING_SLOT else None
                )
            )
        try:
            idx.begin(defer_unique=rough_rows >= old_size, defer_buckets=4 * rough_rows >= old_size)
        except BaseException:
            if bundle_writer is not None:
                bundle_writer.abort()
            if rows_ahead is not None:
                rows_ahead.undo()
            raise
        delta = idx.track(sealed.key)
        try:
            seal_key = delta.key if delta is not None else None
            in_place = bundle_writer is not None
            for chunk_number, result in enumerate(spooled_input.results(seal_key=seal_key, in_place=in_place), 1):
                # Helpers per chunk of about bulk.CHUNK_BYTES, never per row.
                if progress is not None:  # chunk k is the input's bytes [bom + (k-1)*step, bom + k*step)
                    progress(min(bom + chunk_number * spooled_input.chunk_bytes, size), size)
                for p in result.all_problems():
                    problem(p)
                previous = _check_chunk_order(result, previous, last, problem)
                count = _index_chunk(idx, result, old_size + seq, old_end + spooled, lines, old_size, problem)
                seq += count
                spooled += sum(result.lengths) + count
                if problem.found or result.spool is None:  # nothing of it is copied (nor of a refused batch)
                    spooled_input.release(result.ring_slot)
                    continue
                hashes += result.leaf_hashes
                if rows_ahead is not None:  # to the JSONL now; its row ring slot given back once read there
                    release = functools.partial(spooled_input.release, result.ring_slot)
                    rows_ahead.add(result.spool, result.leaf_hashes, release)
                else:
                    spooled_chunks.append(result.spool)  # to the append log in pass 2 (not in place: no slot)

            def last_checks() -> None:
                # The deferred UNIQUE commit index (repeats in the batch or against the ledger),
                # then the seal of every bucket the batch touched, then every problem found.
                repeats = idx.finish_inserts(limit=max_problems + 1)
                for commit, leaves in repeats:
                    _report_repeated_leaves(commit, leaves, lines, old_size, problem)
                if len(repeats) > max_problems:  # not all named: count the rest (one problem per extra row)
                    problem.more += idx.repeated_rows() - sum(len(leaves) - 1 for _, leaves in repeats)
                if delta is not None:  # every bucket the batch touched holds the sealed entries
                    sealed.check(delta.sums.keys())
                if problem.claims:  # "already stored" only where a checked bucket says so
                    stored = sealed.stored(commit for commit, _ in problem.claims)
                    if any(stored.get(commit) != leaf for commit, leaf in problem.claims):
                        raise IndexChanged("an entry outside its bucket")
                problem.raise_if_any()

            if problem.found or seq == 0:  # refused: every problem named, the rows copied ahead removed
                try:
                    last_checks()  # (inside the index's open transaction, which the undo rolls back)
                    raise InputRejected([RowProblem(1, "$", "no rows in the input")])
                finally:
                    if rows_ahead is not None:
                        rows_ahead.undo()
            new_size = old_size + seq

            rows_copied = threading.Event()

            def write_rows() -> None:
                # A local ledger's JSONL took the spooled bytes by a kernel copy (no user-space
                # buffer) as they passed; any other append log gets them now, in pieces.
                try:
                    if rows_ahead is not None:
                        rows_ahead.drain()  # every chunk went to rows_ahead as it passed
                    else:
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

            appended = commit_batch(
                led,
                new_size=new_size,
                payload_size=spooled,
                write_rows=write_rows,
                write_index=lambda _old_end: idx.commit(size=new_size, end_offset=old_end + spooled),
                leaf_hashes=hashes,
                entries=entry_pieces,
                signer=signer,
                recovered=recovery.rows_rolled_forward,
                # Run while the rows are copied and the tiles written: a repeated commit (rare)
                # undoes those writes, a valid batch (the rule) waits for nothing.
                last_checks=last_checks,
                bundles_written=None if bundle_writer is None else lambda: bundle_writer.finish(seq),
                rows_at=old_end,
                ahead=rows_ahead,
            )
            seal_appended(led, sealed, new_size)
            return appended
        finally:
            if rows_ahead is not None:
                rows_ahead.undo()  # a failure before commit_batch took the rows over; else nothing
            if bundle_writer is not None:
                bundle_writer.abort()  # (after finish: nothing to do) else its temporary files deleted
            idx.delta = None
            idx.rollback_if_open()


def _read_all(fd: int, size: int) -> bytes:
    """The whole input through its descriptor (from byte 0, whatever the file offset)."""
    parts, offset = [], 0
    while chunk := os.pread(fd, max(size - offset, 1 << 20), offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _goes_in_memory(fd: int, size: int, threshold: int) -> bool:
    """Whether the input takes :func:`append`'s in-memory path: a small file, a JSON array or
    an empty input."""
    head = os.pread(fd, 4096, 0).lstrip(b"\xef\xbb\xbf \t\r\n")
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
    problem: _Problems,
) -> int:
    """Insert a chunk's rows (leaf ``first_leaf`` on, JSONL offset ``first_offset`` on) into the
    open commit index, name the rows whose commit it already held, then add the chunk's input
    line numbers to ``lines``.  Returns the chunk's row count."""
    count = len(result.lengths)
    commits, created = result.commits, result.created_at
    leaves = range(first_leaf, first_leaf + count)
    offsets = itertools.accumulate(map((1).__add__, result.lengths), initial=first_offset)
    delta = idx.delta
    if delta is not None:  # the rows' seal terms, summed per bucket by the worker, placed at their leaves
        if result.seal_sums is not None:
            place_chunk_sums(delta.sums, first_leaf, *result.seal_sums)
        else:
            add_terms(delta.key, delta.sums, leaves, commits, created, result.buckets)
    if idx.insert_columns(leaves, commits, offsets, result.lengths, created, result.buckets) != count:
        _report_repeats(
            [IndexedEntry(first_leaf + k, commit, 0, 0, "") for k, commit in enumerate(commits)],
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
    problem: _Problems,
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
    problem: _Problems,
    line_of: Callable[[int], int] | None = None,
) -> None:
    """One problem for each but the first of ``leaves`` (sorted), all rows of one commit."""
    line_of = line_of or (lambda leaf: lines[leaf - old_size])
    first = leaves[0]
    for leaf in leaves[1:]:
        if first < old_size:
            problem.claims.append((commit, first))
            problem(stored_commit_problem(line_of(leaf), commit, first))
        else:
            problem(schema.repeated_commit_problem(line_of(leaf), commit, line_of(first)))
