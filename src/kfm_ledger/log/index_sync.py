"""Bringing the derived commit index up to date with the JSONL (every line checked as new input is)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.errors import CorruptLedgerError, SchemaError
from kfm_ledger.index import IndexedEntry

from .layout import JSONL_KEY
from .lines import split_lines

if TYPE_CHECKING:
    from .ledger import Ledger


def catch_up_index(
    led: Ledger, *, limit: int | None, read: Callable[[Iterator[bytes]], Iterator[bytes]] | None = None
) -> tuple[int, int, int]:
    """Index the complete lines after the index's high-water mark.

    Returns (rows indexed, byte offset after the last complete line, torn bytes after it).
    Stops after ``limit`` rows in total when given (readers index only signed rows).
    Every line is validated as new input is (schema, canonical bytes, one row per
    commit, created_at monotonic); a failure raises :class:`CorruptLedgerError`.
    """
    idx = led._raw_index()
    if idx.end_offset() > led._jsonl.size():
        # The JSONL is shorter than what was indexed: not ours to guess why.
        idx.reset()
    size, offset = idx.size(), idx.end_offset()
    prev = idx.at(size - 1) if size else None
    if size and (prev is None or prev.offset + prev.length + 1 != offset):
        # The high-water marks disagree with the entries (an edited meta, deleted entries):
        # derived data, started again from the JSONL rather than caught up from a wrong place.
        idx.reset()
        size, offset, prev = 0, 0, None
    last_created = schema.parse_created_at(prev.created_at) if prev is not None else None
    batch: list[IndexedEntry] = []
    seen: dict[str, int] = {}
    added = 0
    torn = 0

    def flush() -> None:
        nonlocal batch
        if batch:
            found = idx.lookup_many([e.lakefs_commit for e in batch])
            if found:
                commit, leaf = next(iter(found.items()))
                line_no = seen[commit] + 1
                raise CorruptLedgerError(
                    f"{JSONL_KEY} line {line_no}: lakefs_commit {commit!r} already appears "
                    f"at line {leaf + 1} (one row per lakeFS commit)",
                    key=JSONL_KEY,
                    line=line_no,
                    index=seen[commit],
                )
            idx.add(batch, size=batch[-1].leaf + 1, end_offset=batch[-1].offset + batch[-1].length + 1)
            batch = []
            seen.clear()

    chunks = led._jsonl.iter_chunks(offset)
    for line, complete in split_lines(read(chunks) if read is not None else chunks):
        if not complete:
            torn = len(line)
            break
        if limit is not None and size >= limit:
            break
        try:
            row = schema.decode_canonical_line(line)
        except SchemaError as e:
            raise CorruptLedgerError(
                f"{JSONL_KEY} line {size + 1}: {e}", key=JSONL_KEY, line=size + 1, index=size
            ) from None
        created = schema.created_at_datetime(row)
        if last_created is not None and created < last_created:
            raise CorruptLedgerError(
                f"{JSONL_KEY} line {size + 1}: created_at {row.created_at} is earlier than the previous row's",
                key=JSONL_KEY,
                line=size + 1,
                index=size,
            )
        if row.lakefs_commit in seen:
            raise CorruptLedgerError(
                f"{JSONL_KEY} line {size + 1}: lakefs_commit {row.lakefs_commit!r} already appears "
                f"at line {seen[row.lakefs_commit] + 1}",
                key=JSONL_KEY,
                line=size + 1,
                index=size,
            )
        last_created = created
        seen[row.lakefs_commit] = size
        batch.append(IndexedEntry(size, row.lakefs_commit, offset, len(line), row.created_at))
        offset += len(line) + 1
        size += 1
        added += 1
        if len(batch) >= 10_000:
            flush()
    flush()
    return added, offset, torn
