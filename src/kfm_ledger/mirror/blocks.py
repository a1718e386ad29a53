"""Streaming the signed lines in blocks (the mirror's row groups, and the analytics' readers)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import NamedTuple

from kfm_ledger.log.layout import INDEX_FILE, JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.progress import Progress

from ..errors import CorruptLedgerError
from . import files
from .layout import BLOCK_BYTES


class LineBlock(NamedTuple):
    """Complete ledger lines ``[first_index, first_index + count)``, each followed by ``\\n``."""

    first_index: int
    count: int  # type: ignore[assignment]  # (shadows tuple.count; the public field name)
    data: bytes


def iter_line_blocks(
    ledger: Ledger,
    *,
    max_bytes: int = BLOCK_BYTES,
    verified: bool | None = None,
    progress: Progress | None = None,
) -> Iterator[LineBlock]:
    """Stream the signed lines (leaves ``0 .. ledger.size - 1``) in blocks, proven.

    Proven unless ``verified`` is False (default: ``ledger.verify_reads``): see
    :func:`iter_hashed_blocks`.  ``progress(rows done, rows)`` is called once per block.
    """
    proven = ledger.verify_reads if verified is None else verified
    if getattr(ledger, "is_remote", False):
        # An S3 ledger (docs/s3.md): the rows of the entry bundles, proven by
        # :meth:`RemoteLedger.iter_lines` (the last row only after the root checks).
        blocks: Iterator[LineBlock] = _blocks_from_lines(ledger, max_bytes, verified=proven)
    elif not proven:
        blocks = _raw_line_blocks(ledger, max_bytes)
    else:
        blocks = (block for block, _ in iter_hashed_blocks(ledger, max_bytes=max_bytes))
    total = ledger.size
    for block in blocks:
        yield block
        if progress is not None:
            progress(block.first_index + block.count, total)


def iter_hashed_blocks(ledger: Ledger, *, max_bytes: int = BLOCK_BYTES) -> Iterator[tuple[LineBlock, bytes]]:
    """The blocks of :func:`iter_line_blocks` with their RFC 9162 leaf hashes joined, proven as
    they stream (:func:`kfm_ledger.log.reader.verified_blocks`): each block's rows are compared
    with the tiles before it is handed out, and the last block only after the recomputed root
    equals the signed root.  A mismatch raises CorruptLedgerError naming the row (or tile)."""
    from kfm_ledger.log.reader import verified_blocks

    if getattr(ledger, "is_remote", False):  # an S3 ledger: the proven rows of its entry bundles
        sha = hashlib.sha256
        for block in _blocks_from_lines(ledger, max_bytes, verified=True):
            lines = block.data.split(b"\n")
            lines.pop()  # the empty string after the last newline
            yield block, b"".join(sha(b"\x00" + line).digest() for line in lines)  # RFC 9162 §2.1.1
        return
    yield from verified_blocks(ledger, _raw_line_blocks(ledger, max_bytes), lambda b: b.data)


def _raw_line_blocks(ledger: Ledger, max_bytes: int) -> Iterator[LineBlock]:
    """The blocks, as stored (not proven).

    Each block is the longest run of the following complete lines whose bytes (newlines
    included) fit in ``max_bytes``; a single longer line is a block of its own.  The cut is
    a function of the line sequence alone, the same for every storage backend (the mirror's
    row groups are these blocks).  Rows after the signed size (an interrupted append) are
    never read.

    With a local JSONL file the cut is found in the commit index (the byte range of
    every line, :class:`~kfm_ledger.index.CommitIndex`) and each block is one exact read:
    no per-line Python work and no copy.  Otherwise :meth:`Ledger.iter_lines` is grouped.
    Raises :class:`CorruptLedgerError` when the JSONL is shorter than the index says or a
    block does not end at a line end.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
    size = ledger.size
    if size == 0:
        return
    jsonl = files.open_local_jsonl(ledger)
    if jsonl is None:
        yield from _blocks_from_lines(ledger, max_bytes)
        return
    index = ledger.index

    def start_of(leaf: int) -> int:
        e = index.at(leaf)
        if e is None:
            raise CorruptLedgerError(
                f"the commit index has no entry for leaf {leaf}; run `kfm rebuild`", key=INDEX_FILE, index=leaf
            )
        return e.offset

    def end_of(leaf: int) -> int:  # the byte after line ``leaf``'s newline
        e = index.at(leaf)
        if e is None:
            raise CorruptLedgerError(
                f"the commit index has no entry for leaf {leaf}; run `kfm rebuild`", key=INDEX_FILE, index=leaf
            )
        return e.offset + e.length + 1

    first, start = 0, 0
    with jsonl as f:
        while first < size:
            if start_of(first) != start:
                raise CorruptLedgerError(
                    f"the commit index puts leaf {first} at byte {start_of(first)}, but the previous "
                    f"line ends at byte {start}; run `kfm rebuild`",
                    key=INDEX_FILE,
                    index=first,
                )
            # The largest stop in (first, size] whose lines fit (each line is >= 2 bytes).
            lo, hi = first + 1, min(size, first + max_bytes)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if end_of(mid - 1) - start <= max_bytes:
                    lo = mid
                else:
                    hi = mid - 1
            end = end_of(lo - 1)
            f.seek(start)
            data = f.read(end - start)
            if len(data) != end - start or not data.endswith(b"\n"):
                raise CorruptLedgerError(
                    f"{JSONL_KEY} does not hold complete lines for leaves {first}..{lo - 1} at bytes "
                    f"{start}..{end} (read {len(data)} bytes); run `kfm verify`",
                    key=JSONL_KEY,
                    line=first + 1,
                    index=first,
                )
            yield LineBlock(first, lo - first, data)
            first, start = lo, end


def _blocks_from_lines(ledger: Ledger, max_bytes: int, *, verified: bool = False) -> Iterator[LineBlock]:
    """:meth:`Ledger.iter_lines` grouped into blocks cut as :func:`_raw_line_blocks` cuts them."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
    lines: list[bytes] = []
    held = 0
    first = 0
    for line in ledger.iter_lines(verified=verified):
        cost = len(line) + 1
        if lines and held + cost > max_bytes:
            yield LineBlock(first, len(lines), b"\n".join(lines) + b"\n")
            first += len(lines)
            lines, held = [], 0
        lines.append(line)
        held += cost
    if lines:
        yield LineBlock(first, len(lines), b"\n".join(lines) + b"\n")
