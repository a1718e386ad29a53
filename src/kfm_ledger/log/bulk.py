"""Validating many rows at once, on both cores: for bulk appends and for verify.

Rows are validated in chunks of whole lines.  Small inputs are validated in this
process; large ones are split into chunks of about :data:`CHUNK_BYTES` that a
pool of worker processes validates while this process consumes the results in
order (at most a few chunks in flight, so memory stays bounded).  A chunk's
result carries what the ledger needs and nothing more: canonical bytes, commits,
created_at values, leaf hashes (RFC 9162 §2.1.1) and the problems found.
Checks that span chunks (a commit repeated in another chunk, created_at going
backwards across a chunk boundary) are the caller's.
"""

from __future__ import annotations

import array
import contextlib
import gc
import itertools
import operator
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from kfm_ledger import schema
from kfm_ledger.core import merkle
from kfm_ledger.errors import RowProblem, SchemaError
from kfm_ledger.index_seal import chunk_sums, utf8_buckets_of
from kfm_ledger.schema.codec import check_size, decode_and_encode
from kfm_ledger.schema.fast_path import strict_canonical_rows

from .entries import encode_entries
from .recovery import MIN_ROW_BYTES

#: Size of a chunk handed to a worker.
CHUNK_BYTES = 4 << 20
#: Below this many bytes of input, validate in-process (a pool costs ~50 ms to start).
PARALLEL_THRESHOLD = 16 << 20


@dataclass
class ChunkResult:
    """What validating one chunk of lines found.

    Per-row values travel between processes as a few flat objects (joined text,
    arrays), not as one Python object per row: unpickling them is most of what the
    consuming process would otherwise spend.
    """

    first_line: int  #: 1-based line number of the chunk's first line
    line_count: int  #: lines in the chunk (blank ones included)
    rows: int = 0
    canonical: bytes = b""  #: canonical lines, each followed by "\n" (input mode)
    commit_text: str = ""  #: the valid rows' commits, "\n"-joined
    created_text: str = ""  #: the valid rows' created_at values, "\n"-joined
    lines: array.array[int] = field(default_factory=lambda: array.array("q"))  #: input line of each valid row
    lengths: array.array[int] = field(default_factory=lambda: array.array("q"))  #: canonical length of each valid row
    #: stored mode: every line's length
    line_lengths: array.array[int] = field(default_factory=lambda: array.array("q"))
    leaf_hashes: bytes = b""  #: 32 bytes per row, in order
    #: input mode, read by a worker: each valid row's commit index seal bucket
    #: (:func:`kfm_ledger.index_seal.bucket_of`)
    buckets: array.array[int] = field(default_factory=lambda: array.array("H"))
    #: input mode, read by a worker given the seal key: the rows' seal terms summed per bucket
    #: before their leaves are known (:func:`kfm_ledger.index_seal.chunk_sums`): touched buckets, A, B
    seal_sums: tuple[array.array[int], list[int], list[int]] | None = None
    first_created: tuple[int, str] | None = None  #: (line, created_at) of the first valid row
    last_created: tuple[int, str] | None = None
    problems: list[RowProblem] = field(default_factory=list)  #: per-row problems (input mode: schema only)
    #: input mode: (line, created_at, previous line, previous created_at) where created_at went backwards
    backwards: list[tuple[int, str, int, str]] = field(default_factory=list)
    #: input mode, read by a worker: (spool slot, offset, length) of the canonical lines; the slot
    #: :data:`RING_SLOT` when they are in the row ring, :data:`INPUT_SLOT` when they are the input
    #: file's own bytes (both only with ``results(in_place=True)``)
    spool: tuple[int, int, int] | None = None
    #: input mode: the row ring slot this chunk's job held (-1: none), to be handed back with
    #: :meth:`SpooledInput.release` once its rows are no longer read from there
    ring_slot: int = -1

    def all_problems(self) -> list[RowProblem]:
        """Every problem found, in line order (input mode)."""
        found = self.problems + [schema.backwards_problem(*b) for b in self.backwards]
        found.sort(key=lambda p: p.line)
        return found

    def rebase(self, first_line: int) -> None:
        """Renumber a chunk validated with relative line numbers (from 1) to start at ``first_line``."""
        delta = first_line - self.first_line
        if not delta:
            return
        self.first_line = first_line
        lines = self.lines
        if lines and lines[-1] - lines[0] == len(lines) - 1:  # increasing: consecutive lines, the usual chunk
            self.lines = array.array("q", range(lines[0] + delta, lines[-1] + delta + 1))
        else:
            self.lines = array.array("q", [n + delta for n in lines])
        self.problems = [RowProblem(p.line + delta, p.path, p.message) for p in self.problems]
        self.backwards = [(a + delta, b, c + delta, d) for a, b, c, d in self.backwards]
        if self.first_created is not None:
            self.first_created = (self.first_created[0] + delta, self.first_created[1])
        if self.last_created is not None:
            self.last_created = (self.last_created[0] + delta, self.last_created[1])

    @property
    def commits(self) -> list[str]:
        """The valid rows' commits, in order."""
        return self.commit_text.split("\n") if self.commit_text else []

    @property
    def created_at(self) -> list[str]:
        """The valid rows' created_at values, in order."""
        return self.created_text.split("\n") if self.created_text else []


def validate_input_chunk(first_line: int, data: bytes) -> ChunkResult:
    """Validate JSONL input lines (any key order or spacing): canonicalise, hash, check.

    Each line takes the canonical fast path (:func:`schema.canonical_line_fields`)
    when it can, the general path otherwise; both apply the same rules.  A commit
    repeated within the chunk is the caller's to find (with the rest of the batch).
    """
    return _validate_input(first_line, data)[0]


def _validate_input(first_line: int, data: bytes) -> tuple[ChunkResult, list[bytes], list[bytes], list[bytes]]:
    """:func:`validate_input_chunk`, and the valid rows' commits and created_at values (ASCII)
    and canonical bytes (without their newlines)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # after the last newline (or no data at all): no line
    result = ChunkResult(first_line=first_line, line_count=len(lines))
    # The usual chunk: every line canonical as given, with no Python code run per row.
    whole = _canonical_chunk(data, lines)
    if whole is not None:
        commits, created, in_order = whole
        if not in_order:
            _note_backwards(result, first_line, created)
        result.canonical = data
        result.lines = array.array("q", range(first_line, first_line + len(lines)))
        result.lengths = array.array("q", map(len, lines))
        return _finish_chunk(result, lines, commits, created), commits, created, lines
    fast = schema.canonical_line_bytes
    general = decode_and_encode  # the batch parser's own path
    problems = result.problems
    out: list[bytes] = []
    commits, created = [], []
    numbers = result.lines
    number = first_line - 1
    rewritten = not data.endswith(b"\n")  # whether the canonical lines differ from ``data``
    for line in lines:
        number += 1
        fields = fast(line) if len(line) <= schema.MAX_LINE_BYTES else None
        if fields is None:
            rewritten = True
            if not line.strip(b" \t\r\n"):
                continue  # a blank line
            try:
                row, canonical, _ = general(line)
            except SchemaError as e:
                # Refused rows only: a second pass names every problem of the row.
                problems += [RowProblem(number, p.path, p.message) for p in schema.row_problems(line, e)]
                continue
            line = canonical
            try:
                check_size(line)
            except SchemaError as e:
                problems.append(RowProblem(number, e.path, e.message))
                continue
            fields = row.lakefs_commit.encode(), row.created_at.encode()
        out.append(line)
        commits.append(fields[0])
        created.append(fields[1])
        numbers.append(number)
    _note_backwards(result, numbers, created)
    # Every line canonical as given (the fast path took each one, whole): ``data`` is the output.
    result.canonical = b"\n".join([*out, b""]) if rewritten else data
    result.lengths = array.array("q", map(len, out))
    return _finish_chunk(result, out, commits, created), commits, created, out


def _canonical_chunk(data: bytes, lines: list[bytes]) -> tuple[list[bytes], list[bytes], bool] | None:
    """The valid rows' commits and created_at values (ASCII) of a chunk whose every line (``lines``:
    ``data`` split, without the newlines) is canonical, each matched whole by the strict fast-path
    regex (one findall over the chunk: as many matches as lines, the maps here running in C), and
    whether created_at never goes back in it (compared without the final Z: canonical spellings
    sort as their instants).  None for any other chunk: a line-by-line loop decides and names."""
    found = strict_canonical_rows(data) if data.endswith(b"\n") else []
    if not lines or len(found) != len(lines) or max(map(len, lines)) > schema.MAX_LINE_BYTES:
        return None
    commits, created = map(list, zip(*found))
    keys = list(map(operator.itemgetter(slice(None, -1)), created))
    return commits, created, all(map(operator.le, keys, itertools.islice(keys, 1, None)))


def _note_backwards(result: ChunkResult, numbers: Sequence[int] | int, created: list[bytes]) -> None:
    """Record in ``result.backwards`` each row whose created_at is earlier than the row before
    it (rows numbered by ``numbers``, or from ``numbers`` on).  Canonical spellings (no trailing
    zeros in a fraction) sort as their instants once the final ``Z`` is cut off."""
    if isinstance(numbers, int):
        numbers = range(numbers, numbers + len(created))
    previous = b""
    for k, created_at in enumerate(created):
        key = created_at[:-1]
        if key < previous:
            result.backwards.append(
                (numbers[k], created_at.decode("ascii"), numbers[k - 1], created[k - 1].decode("ascii"))
            )
        previous = key


def _finish_chunk(
    result: ChunkResult, rows: list[bytes], commits: list[bytes], created: list[bytes]
) -> ChunkResult:
    """Fill in the valid rows' leaf hashes (RFC 9162 §2.1.1), commits and created_at values."""
    result.leaf_hashes = merkle.joined_leaf_hashes(rows)
    result.commit_text = b"\n".join(commits).decode("ascii")
    result.created_text = b"\n".join(created).decode("ascii")
    result.rows = len(commits)
    if commits:
        result.first_created = (result.lines[0], created[0].decode("ascii"))
        result.last_created = (result.lines[-1], created[-1].decode("ascii"))
    return result


def validate_stored_chunk(first_line: int, data: bytes) -> ChunkResult:
    """Validate stored ledger lines: schema, canonical form, size; hash every line as stored."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    result = ChunkResult(first_line=first_line, line_count=len(lines))
    result.line_lengths = array.array("q", map(len, lines))
    whole = _canonical_chunk(data, lines)
    if whole is not None and whole[2]:
        # The usual chunk (every line canonical, in created_at order): nothing runs per line.
        result.lines = array.array("q", range(first_line, first_line + len(lines)))
        result.lengths = array.array("q", result.line_lengths)
        return _finish_chunk(result, lines, whole[0], whole[1])
    del whole
    fast = schema.canonical_line_fields
    order_key = schema.created_at_order_key
    commits: list[str] = []
    created: list[str] = []
    previous: tuple[int, str] | None = None
    previous_key = ""
    number = first_line - 1
    for line in lines:
        number += 1
        fields = fast(line) if len(line) <= schema.MAX_LINE_BYTES else None
        if fields is None:
            try:
                row = schema.decode_canonical_line(line)
            except SchemaError as e:
                result.problems.append(RowProblem(number, e.path, e.message))
                continue
            fields = row.lakefs_commit, row.created_at
        commit, created_at = fields
        key = order_key(created_at)
        if key < previous_key:
            result.problems.append(
                RowProblem(
                    number,
                    "$.created_at",
                    f"{created_at} is earlier than the previous row's {previous[1]}",  # type: ignore[index]
                )
            )
        previous, previous_key = (number, created_at), key
        commits.append(commit)
        created.append(created_at)
        result.lines.append(number)
        result.lengths.append(len(line))
    result.leaf_hashes = merkle.joined_leaf_hashes(lines)  # every line as stored, valid or not
    result.commit_text = "\n".join(commits)
    result.created_text = "\n".join(created)
    result.rows = len(lines)
    if commits:
        result.first_created = (result.lines[0], created[0])
        result.last_created = (result.lines[-1], created[-1])
    return result


def iter_line_chunks(chunks: Iterable[bytes], chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Regroup a byte stream into (first line number, whole lines) of about ``chunk_bytes``.

    The last chunk may end without a newline (a torn or unterminated last line).
    """
    buf = bytearray()
    line = 1
    for piece in chunks:
        buf += piece
        while len(buf) >= chunk_bytes:
            cut = buf.rfind(b"\n", 0, chunk_bytes)
            if cut < 0:
                cut = buf.find(b"\n", chunk_bytes)
            if cut < 0:
                break  # one line longer than a chunk: wait for its end
            out = bytes(buf[: cut + 1])
            del buf[: cut + 1]
            yield line, out
            line += out.count(b"\n")
    if buf:
        yield line, bytes(buf)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: be killed when the parent dies (Linux prctl PR_SET_PDEATHSIG).

    Without it, a SIGKILL'd `kfm append` would leave its workers holding the spool
    files and the caller's pipes.  ``parent`` is the parent's pid, taken before the
    fork (comparing with 1 would kill every worker of a kfm that is itself pid 1, as
    in a container).
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _keep_freed_memory() -> None:
    """Worker initializer step: let glibc's malloc keep and reuse freed blocks of up to 64 MiB.

    A worker allocates and frees several buffers of a chunk's size (4 MiB) per chunk; by
    default glibc maps large blocks afresh and returns freed heap tops to the kernel, so every
    chunk pays page faults and zero-filled pages again (a tenth of a worker's time in the
    kernel).  Best effort: nothing happens where mallopt is missing.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD (fixed: no dynamic adjustment)
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def map_ordered(
    fn: Callable[[int, bytes], ChunkResult],
    chunks: Iterable[tuple[int, bytes]],
    *,
    workers: int | None = None,
    parallel: bool = True,
) -> Iterator[ChunkResult]:
    """``fn`` over the chunks, results in input order; in worker processes when ``parallel``."""
    workers = workers or default_workers()
    if not parallel or workers < 2:
        for first_line, data in chunks:
            yield fn(first_line, data)
        return
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        yield from _in_order(pool, fn, chunks, workers * 2)


def default_workers() -> int:
    """Worker processes for validation: two, or one on a one-core machine."""
    return min(2, os.cpu_count() or 1)


def _in_order(
    pool: ProcessPoolExecutor, task: Callable[..., ChunkResult], jobs: Iterable[tuple[object, ...]], in_flight_max: int
) -> Iterator[ChunkResult]:
    """``task(*job)`` for each job on ``pool``, results in job order, at most ``in_flight_max``
    submitted and not yet taken (``jobs`` is read lazily, so memory stays bounded)."""
    pending = iter(jobs)
    in_flight: deque[Future[ChunkResult]] = deque(
        pool.submit(task, *job) for job in itertools.islice(pending, in_flight_max)
    )
    while in_flight:
        result = in_flight.popleft().result()
        in_flight.extend(pool.submit(task, *job) for job in itertools.islice(pending, 1))
        yield result


# ------------------------------------------------------------ bulk-append input
#
# A bulk append's input is read by the workers themselves (each a range of byte
# offsets, extended to whole lines) and each worker writes the canonical lines to a
# spool file of its own.  Only the per-row facts travel back through the pipe: the
# input and the canonical bytes, gigabytes at a million rows, never do.

_WORKER: dict[str, int] = {}  # in a worker: the input fd, its spool fd and slot, in_place, the row ring
#: The "spool slot" of rows that are the input's own bytes (``SpooledInput.results(in_place=True)``).
INPUT_SLOT = -1
#: The "spool slot" of rows in the row ring (:class:`_RowRing`), offset and length within it.
RING_SLOT = -2
#: The most row ring slots (two per worker and four): 16, ~135 MB of memory at most.
_RING_MOST_SLOTS = 16
_WORKER_SEAL_KEY: list[bytes] = []  # in an input worker: the commit index seal key, if given


def _start_input_worker(
    input_fd: int, spool_fds: list[int], slots: object, parent: int, seal_key: bytes | None, in_place: bool,
    ring: tuple[int, int], in_worker: bool,
) -> None:
    if in_worker:
        _die_with_parent(parent)
        # A worker's objects are lists of strings and bytes freed by reference counting (no
        # cycles): the cyclic collector's passes over them are pure cost (~2 % of its CPU).
        gc.disable()
        _keep_freed_memory()
    with slots.get_lock():  # type: ignore[attr-defined]
        slot = slots.value  # type: ignore[attr-defined]
        slots.value += 1  # type: ignore[attr-defined]
    _WORKER.update(
        input=input_fd, spool=spool_fds[slot], slot=slot, in_place=int(in_place), ring=ring[0], ring_slot_bytes=ring[1]
    )
    _WORKER_SEAL_KEY[:] = [] if seal_key is None else [seal_key]


def read_lines_in_range(fd: int, start: int, end: int, file_start: int) -> bytes:
    """The whole lines that begin in byte range [start, end) of a file.

    A line begins at ``file_start`` or just after a newline.  The last line may
    run past ``end``; it is read to its newline (or the end of the file).
    """
    return lines_in_range(fd, start, end, file_start)[1]


def lines_in_range(fd: int, start: int, end: int, file_start: int) -> tuple[int, bytes]:
    """:func:`read_lines_in_range` and the file offset of the first byte read."""
    if start > file_start:
        head = os.pread(fd, end - start + 1, start - 1)
        cut = head.find(b"\n")
        if cut < 0 or start + cut >= end:
            return start, b""  # no line begins in the range
        start += cut
    data = bytearray(os.pread(fd, end - start, start))
    position = start + len(data)
    while data and data[-1:] != b"\n":
        more = os.pread(fd, 1 << 16, position)
        if not more:
            break  # the file's last line has no newline
        cut = more.find(b"\n")
        data += more if cut < 0 else more[: cut + 1]
        position += len(more)
    return start, bytes(data)


def _validate_input_range(start: int, end: int, file_start: int, ring_slot: int = -1) -> ChunkResult:
    """Worker task: validate the lines beginning in [start, end), spool their canonical bytes
    (into row ring slot ``ring_slot`` when they are the input's own and it is given).

    Line numbers in the result count from 1 at the range's first line (the
    caller rebases them: only it knows how many lines came before).
    """
    first, data = lines_in_range(_WORKER["input"], start, end, file_start)
    result, commits, created, rows = _validate_input(1, data)
    # The commit index's per-row work, done here on both cores instead of in the writer: each
    # row's seal bucket and, with the key, the rows' seal terms summed per bucket.
    result.buckets = array.array("H", utf8_buckets_of(commits))
    if _WORKER_SEAL_KEY:
        result.seal_sums = chunk_sums(_WORKER_SEAL_KEY[0], commits, created, result.buckets)
    result.ring_slot = ring_slot
    if _WORKER.get("in_place") and result.canonical is data:
        result.canonical = b""
        fits = ring_slot >= 0 and ring_slot_layout(len(data), len(rows))[2] <= _WORKER["ring_slot_bytes"]
        if not (fits and _to_ring(ring_slot, data, rows, result)):
            # The input's own bytes, copied from the input file (INPUT_SLOT) and checked against
            # these leaf hashes after the copy (the file may have changed meanwhile).
            result.spool = (INPUT_SLOT, first, len(data))
        return result
    spool = _WORKER["spool"]
    offset = os.lseek(spool, 0, os.SEEK_END)
    view = memoryview(result.canonical)
    length = len(view)
    while view:
        view = view[os.write(spool, view) :]
    result.canonical = b""
    result.spool = (_WORKER["slot"], offset, length)
    return result


def _to_ring(ring_slot: int, data: bytes, rows: list[bytes], result: ChunkResult) -> bool:
    """Write a chunk canonical as given to its row ring slot: the very bytes just validated and
    hashed, from where the JSONL and the entry bundles get them (RING_SLOT: nothing to check
    again), then the same rows encoded as in an entry bundle, then their lengths
    (:func:`ring_slot_layout`).  False if the ring refused them (its memory: ENOMEM, ENOSPC under
    a memory limit): the caller copies them from the input file instead."""
    ring, at = _WORKER["ring"], ring_slot * _WORKER["ring_slot_bytes"]
    encoded, lengths, _ = ring_slot_layout(len(data), len(rows))
    try:
        _pwrite_all(ring, data, at)
        _pwrite_all(ring, encode_entries(rows, result.lengths), at + encoded)
        _pwrite_all(ring, array.array("I", result.lengths).tobytes(), at + lengths)
    except OSError:
        return False
    result.spool = (RING_SLOT, at, len(data))
    return True


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _map_ranges(
    task: Callable[..., ChunkResult],
    jobs: Iterable[tuple[int, ...]],
    initializer: Callable[..., None],
    initargs: tuple[object, ...],
    workers: int,
) -> Iterator[ChunkResult]:
    """``task(*job)`` for each job (a byte range), results in order with absolute line numbers.

    In ``workers`` forked processes (each set up by ``initializer(*initargs, True)``), at most
    two jobs each in flight; in this process (``initializer(*initargs, False)``) for one worker
    or one job.  Each result counts its lines from 1; they are rebased here, in order.
    """
    import multiprocessing

    next_line = 1
    jobs = iter(jobs)
    head = list(itertools.islice(jobs, 2))
    jobs = itertools.chain(head, jobs)
    if workers < 2 or len(head) < 2:
        saved, saved_key = dict(_WORKER), list(_WORKER_SEAL_KEY)
        initializer(*initargs, False)
        try:
            for job in jobs:
                result = task(*job)
                result.rebase(next_line)
                next_line += result.line_count
                yield result
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
            _WORKER_SEAL_KEY[:] = saved_key
        return
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=initializer,
        initargs=(*initargs, True),
    ) as pool:
        for result in _in_order(pool, task, jobs, workers * 2):
            result.rebase(next_line)
            next_line += result.line_count
            yield result


def _start_reader_worker(fd: int, parent: int, in_worker: bool) -> None:
    if in_worker:
        _die_with_parent(parent)
        _keep_freed_memory()
    _WORKER.update(input=fd)


def _validate_stored_range(start: int, end: int) -> ChunkResult:
    """Worker task: validate the stored lines that begin in [start, end) (numbered from 1)."""
    return validate_stored_chunk(1, read_lines_in_range(_WORKER["input"], start, end, 0))


def validate_stored_file(
    path: str, end: int, *, parallel: bool = True, workers: int | None = None, chunk_bytes: int | None = None
) -> Iterator[ChunkResult]:
    """:func:`validate_stored_chunk` over the lines of a local file up to byte ``end`` (which
    must follow a newline), in order, with the workers reading their byte ranges themselves:
    no line passes through this process."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    workers = (workers or default_workers()) if parallel else 1
    fd = os.open(path, os.O_RDONLY)
    try:
        jobs: list[tuple[int, ...]] = [(s, min(s + chunk_bytes, end)) for s in range(0, end, chunk_bytes)]
        yield from _map_ranges(_validate_stored_range, jobs, _start_reader_worker, (fd, os.getpid()), workers)
    finally:
        os.close(fd)


def ring_slot_layout(length: int, rows: int) -> tuple[int, int, int]:
    """Where things lie in a row ring slot holding ``rows`` rows of ``length`` bytes (newlines
    included), from the slot's start: the rows at 0; the same rows encoded as in an entry bundle
    (``length + rows`` bytes: a 2-byte length for each newline) from the first offset; each row's
    length (4 bytes, native order: ``array("I")``) from the second; the third is the end."""
    encoded = length
    lengths = encoded + length + rows
    return encoded, lengths, lengths + 4 * rows


class _RowRing:
    """The row ring: an anonymous in-memory file (Linux ``memfd_create(2)``) of ``slots`` slots,
    each holding one chunk's rows that are canonical as given (:data:`RING_SLOT`), the same rows
    encoded for the entry bundles and their lengths (:func:`ring_slot_layout`).

    A worker writes the bytes it has just validated and hashed into its job's slot; the JSONL
    copy (a kernel copy) and the entry bundle writer read them there, so neither reads the
    caller's input file again (it may change meanwhile) nor hashes the rows a second time, and
    the bundle writer neither splits nor encodes them.  The file has no name: it is reached only
    through this append's descriptors, as its memory is (a process that may inspect this one's
    descriptors may change its memory too).  Slots are handed out in turn to the jobs as they are
    submitted (:meth:`acquire` waits while the slot's last chunk is still being read) and given
    back by whoever read them last (:meth:`release`): every result must be released as it is
    taken, or a later job waits for ever.  Pages are allocated as they are first written, then
    written again and again: never fresh memory after the first round.
    """

    def __init__(self, slots: int, slot_bytes: int) -> None:
        import threading

        self.fd = os.memfd_create("kfm-append-rows", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, slots * slot_bytes)
        except BaseException:
            os.close(self.fd)
            raise
        self.slot_bytes = slot_bytes
        self._busy = [False] * slots
        self._next = 0
        self._changed = threading.Condition()

    def acquire(self) -> int:
        """The next slot in turn, once the chunk that last held it is released."""
        with self._changed:
            slot = self._next
            self._next = (slot + 1) % len(self._busy)
            self._changed.wait_for(lambda: not self._busy[slot])
            self._busy[slot] = True
            return slot

    def release(self, slot: int) -> None:
        if slot < 0:
            return
        with self._changed:
            self._busy[slot] = False
            self._changed.notify_all()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SpooledInput:
    """Validate a JSONL input file in worker processes; keep its canonical lines in spool files.

    :meth:`results` yields one :class:`ChunkResult` per range of the input, in
    order, with absolute line numbers (the k-th, from 1, is for the lines that begin in
    bytes ``[start + (k-1) * chunk_bytes, start + k * chunk_bytes)``).  Later, :meth:`copy` replays the canonical
    bytes of chosen chunks.  The spools are anonymous temporary files (gone when
    closed, or when the process dies).  Use as a context manager.
    """

    def __init__(self, path: str, *, start: int = 0, workers: int | None = None, chunk_bytes: int | None = None):
        import tempfile

        self._workers = workers or default_workers()
        self._start = start
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self._input = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._input).st_size
        self._spools = [tempfile.TemporaryFile(prefix="kfm-append-") for _ in range(max(1, self._workers))]
        # The row ring (results(in_place=True)): made now, so that a process forked before the
        # workers (the entry bundle writer) has it too.  A chunk's lines all begin in its range and
        # each ends within MAX_LINE_BYTES; a row takes at least MIN_ROW_BYTES.  Slots: the jobs in
        # flight (two a worker), the chunks the JSONL copy and the bundle writer have not done yet,
        # and one spare (each ~8 MiB written for 4 MiB of rows, in memory for the append's length:
        # so not beyond _RING_MOST_SLOTS, 6 workers).  Without a ring (no memfd_create here, or it
        # is refused: a sandbox's seccomp policy; more workers), canonical rows are copied from the
        # input file and checked (INPUT_SLOT).
        most = self.chunk_bytes + schema.MAX_LINE_BYTES + 1
        self._ring: _RowRing | None = None
        slots = 2 * max(1, self._workers) + 4
        if hasattr(os, "memfd_create") and slots <= _RING_MOST_SLOTS:
            with contextlib.suppress(OSError):
                slot_bytes = -(-ring_slot_layout(most, most // MIN_ROW_BYTES)[2] // 4096) * 4096
                self._ring = _RowRing(slots, slot_bytes)

    @property
    def ring_fd(self) -> int:
        """The row ring's descriptor (-1: no ring on this system): the slot :data:`RING_SLOT`'s file."""
        return self._ring.fd if self._ring is not None else -1

    def release(self, ring_slot: int) -> None:
        """Give a chunk's row ring slot (:attr:`ChunkResult.ring_slot`) back, once nothing will read
        its rows there again (any slot number below 0: nothing to do)."""
        if self._ring is not None:
            self._ring.release(ring_slot)

    @property
    def spool_fds(self) -> list[int]:
        """The spool files' descriptors, by slot (:attr:`ChunkResult.spool`'s first item)."""
        return [spool.fileno() for spool in self._spools]

    def _source_fd(self, slot: int) -> int:
        if slot == RING_SLOT:
            return self.ring_fd
        return self._input if slot == INPUT_SLOT else self._spools[slot].fileno()

    def __enter__(self) -> SpooledInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for spool in self._spools:
            spool.close()
        self._spools = []
        if self._ring is not None:
            self._ring.close()
        if self._input >= 0:
            os.close(self._input)
            self._input = -1

    def results(self, *, seal_key: bytes | None = None, in_place: bool = False) -> Iterator[ChunkResult]:
        """The chunks' results, in order; with ``seal_key`` each carries its rows' seal terms
        summed per bucket (:attr:`ChunkResult.seal_sums`).

        With ``in_place`` a chunk whose lines are canonical as given is not spooled.  Its rows
        are in the row ring (:data:`RING_SLOT`), the bytes validated; the caller must
        :meth:`release` each result's :attr:`~ChunkResult.ring_slot` once it has read them there
        (a later chunk waits for the slot).  Otherwise (no ring here, or a chunk longer than a
        slot) they stay in the input file (:data:`INPUT_SLOT`), and the caller must check the
        bytes it copies from there against the chunk's leaf hashes (the file may change meanwhile).
        """
        import multiprocessing

        step = self.chunk_bytes
        ranges = [(s, min(s + step, self._size)) for s in range(self._start, self._size, step)]
        slots = multiprocessing.get_context("fork").Value("i", 0)
        spool_fds = [spool.fileno() for spool in self._spools]
        ring = self._ring if in_place else None

        def jobs() -> Iterator[tuple[int, int, int, int]]:
            for start, end in ranges:  # a slot is taken as its job is submitted (lazily, in order)
                yield start, end, self._start, ring.acquire() if ring is not None else -1

        return _map_ranges(
            _validate_input_range,
            jobs(),
            _start_input_worker,
            (self._input, spool_fds, slots, os.getpid(), seal_key, in_place,
             (ring.fd, ring.slot_bytes) if ring is not None else (-1, 0)),
            self._workers,
        )

    def copy_by_fd(self, spool: tuple[int, int, int], append_from_fd: Callable[[int, int, int], None]) -> None:
        """Hand a chunk's canonical bytes (its :attr:`ChunkResult.spool`) to ``append_from_fd(fd,
        offset, length)`` as a range of the spool file (a kernel copy: no bytes pass through here)."""
        slot, offset, length = spool
        append_from_fd(self._source_fd(slot), offset, length)

    def copy(self, spool: tuple[int, int, int], append: Callable[[bytes], None], piece: int = 4 << 20) -> None:
        """Pass a chunk's canonical bytes (its :attr:`ChunkResult.spool`) to ``append`` in pieces."""
        slot, offset, length = spool
        fd = self._source_fd(slot)
        end = offset + length
        while offset < end:
            data = os.pread(fd, min(piece, end - offset), offset)
            if not data:
                raise OSError(f"spool file {slot} ends at {offset}, {end - offset} bytes short")
            append(data)
            offset += len(data)
