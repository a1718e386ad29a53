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

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator

from . import schema
from .errors import RowProblem, SchemaError

#: Size of a chunk handed to a worker.
CHUNK_BYTES = 4 << 20
#: Below this many bytes of input, validate in-process (a pool costs ~50 ms to start).
PARALLEL_THRESHOLD = 16 << 20


@dataclass
class ChunkResult:
    """What validating one chunk of lines found."""

    first_line: int  #: 1-based line number of the chunk's first line
    line_count: int  #: lines in the chunk (blank ones included)
    rows: int = 0
    canonical: bytes = b""  #: canonical lines, each followed by "\n" (input mode)
    commits: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  #: input line of each row
    lengths: list[int] = field(default_factory=list)  #: canonical length of each row
    line_lengths: list[int] = field(default_factory=list)  #: stored mode: length of every line
    created_at: list[str] = field(default_factory=list)
    leaf_hashes: bytes = b""  #: 32 bytes per row, in order
    first_created: tuple[int, str] | None = None  #: (line, created_at) of the first valid row
    last_created: tuple[int, str] | None = None
    problems: list[RowProblem] = field(default_factory=list)


def validate_input_chunk(first_line: int, data: bytes) -> ChunkResult:
    """Validate JSONL input lines (any key order or spacing): canonicalise, hash, check."""
    from .schema import _jsonl_items, _validate_items  # the batch parser's own pieces

    result = ChunkResult(first_line=first_line, line_count=data.count(b"\n") + (0 if data.endswith(b"\n") else 1))
    problems: list[RowProblem] = []
    offset = first_line - 1
    # Line numbers are made absolute before validation, so that messages naming another
    # line ("also on line N") are right too.
    items = [(line + offset, item) for line, item in _jsonl_items(data, 0)]
    rows = _validate_items(items, problems)
    result.problems = problems
    out = []
    hashes = []
    sha = hashlib.sha256
    for line, row, canonical in rows:
        out.append(canonical)
        hashes.append(sha(b"\x00" + canonical).digest())
        result.commits.append(row.lakefs_commit)
        result.lines.append(line)
        result.lengths.append(len(canonical))
        result.created_at.append(row.created_at)
    out.append(b"")
    result.canonical = b"\n".join(out)
    result.leaf_hashes = b"".join(hashes)
    result.rows = len(rows)
    if rows:
        result.first_created = (result.lines[0], result.created_at[0])
        result.last_created = (result.lines[-1], result.created_at[-1])
    return result


def validate_stored_chunk(first_line: int, data: bytes) -> ChunkResult:
    """Validate stored ledger lines: schema, canonical form, size; hash every line as stored."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    result = ChunkResult(first_line=first_line, line_count=len(lines))
    result.line_lengths = [len(line) for line in lines]
    sha = hashlib.sha256
    hashes = []
    previous: tuple[int, object, str] | None = None
    for k, line in enumerate(lines):
        number = first_line + k
        hashes.append(sha(b"\x00" + line).digest())
        try:
            row = schema.decode_canonical_line(line)
        except SchemaError as e:
            result.problems.append(RowProblem(number, e.path, e.message))
            continue
        created = schema.created_at_datetime(row)
        if previous is not None and created < previous[1]:  # type: ignore[operator]
            result.problems.append(
                RowProblem(number, "$.created_at", f"{row.created_at} is earlier than the previous row's {previous[2]}")
            )
        previous = (number, created, row.created_at)
        result.commits.append(row.lakefs_commit)
        result.lines.append(number)
        result.lengths.append(len(line))
        result.created_at.append(row.created_at)
    result.leaf_hashes = b"".join(hashes)
    result.rows = len(lines)
    if result.created_at:
        result.first_created = (result.lines[0], result.created_at[0])
        result.last_created = (result.lines[-1], result.created_at[-1])
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


def read_in_pieces(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        piece = stream.read(size)
        if not piece:
            return
        yield piece


def _die_with_parent() -> None:
    """Worker initializer: be killed when the parent dies (Linux prctl PR_SET_PDEATHSIG).

    Without it, a SIGKILL'd `kfm append` would leave its workers holding the spool
    file and the caller's pipes.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def map_ordered(
    fn: Callable[[int, bytes], ChunkResult],
    chunks: Iterable[tuple[int, bytes]],
    *,
    workers: int | None = None,
    parallel: bool = True,
) -> Iterator[ChunkResult]:
    """``fn`` over the chunks, results in input order; in worker processes when ``parallel``."""
    workers = workers or min(2, os.cpu_count() or 1)
    if not parallel or workers < 2:
        for first_line, data in chunks:
            yield fn(first_line, data)
        return
    import multiprocessing

    context = multiprocessing.get_context("fork")
    in_flight: deque[Future[ChunkResult]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_die_with_parent) as pool:
        for first_line, data in chunks:
            in_flight.append(pool.submit(fn, first_line, data))
            if len(in_flight) >= workers * 2:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
