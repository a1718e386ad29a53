"""Building the Parquet file from the signed rows and writing it (see the package docstring)."""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kfm_ledger.core import merkle
from kfm_ledger.log.layout import JSONL_KEY, MIRROR_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.progress import Progress

from ..errors import CorruptLedgerError
from . import files, layout
from .blocks import iter_hashed_blocks
from .layout import _pyarrow, _row_fields, mirror_schema


def _parse_group(data: bytes, first: int, count: int) -> Any:
    """Parse one row group's JSONL with the explicit schema (runs in the parse thread)."""
    pa, pa_json, _ = _pyarrow()
    schema = pa.schema(_row_fields(pa))
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(data), 1 << 20)),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        )
        table = table.combine_chunks().cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise CorruptLedgerError(
            f"{JSONL_KEY} rows {first}..{first + count - 1}: pyarrow cannot read them with the row schema: {e}",
            key=JSONL_KEY,
            line=first + 1,
            index=first,
        ) from None
    if table.num_rows != count:
        raise CorruptLedgerError(
            f"{JSONL_KEY} rows {first}..{first + count - 1}: pyarrow read {table.num_rows} rows, expected {count}",
            key=JSONL_KEY,
            line=first + 1,
            index=first,
        )
    return table


def _write_group(writer: Any, schema: Any, parsed: Future[Any], first: int, hashes: bytes) -> None:
    """Append leaf_index and leaf_hash to a parsed row group and write it (write thread)."""
    pa, _, _ = _pyarrow()
    table = parsed.result()
    count = table.num_rows
    leaf_index = pa.array(range(first, first + count), type=pa.int64())
    leaf_hash = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(merkle.HASH_SIZE), count, [None, pa.py_buffer(hashes)]
    )
    columns = table.columns + [leaf_index, leaf_hash]
    writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=count)


def _build(ledger: Ledger, progress: Progress | None = None) -> tuple[Any, int]:
    """Write the mirror into an Arrow buffer; return (buffer, rows).

    ``progress(rows, tree size)`` is called once per row group read (never per row),
    and once more, ``(tree size, tree size)``, when the last group is written.

    Three stages run at once, one row group each: this thread reads and hashes group
    k+2 (Python, holds the GIL), a parse thread turns group k+1 into Arrow, a write
    thread encodes group k (pyarrow releases the GIL in both).  Each stage keeps its
    order, so the output does not depend on the scheduling; at most three groups are in
    flight, so memory stays bounded whatever the ledger size.
    """
    pa, _, pq = _pyarrow()
    signed = ledger.checkpoint.checkpoint
    schema = mirror_schema(origin=signed.origin, tree_size=signed.size, root=signed.root)
    sink = pa.BufferOutputStream()
    rows = 0
    writes: deque[Future[None]] = deque()
    parse_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfm-mirror-parse")
    write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfm-mirror-write")
    writer = pq.ParquetWriter(sink, schema, **layout.WRITER_OPTIONS)
    try:
        # Proven as it streams (the rows' tree is recomputed and compared with the tiles and, before
        # the last group is handed out, with the signed root), so a mirror never vouches for rows
        # the log did not sign; the error names the changed row.
        for block, hashes in iter_hashed_blocks(ledger, max_bytes=layout.ROW_GROUP_BYTES):
            parsed = parse_pool.submit(_parse_group, block.data, block.first_index, block.count)
            writes.append(
                write_pool.submit(_write_group, writer, schema, parsed, block.first_index, hashes)
            )
            rows += block.count
            if progress is not None:
                progress(rows, signed.size)
            while len(writes) > 2:
                writes.popleft().result()
        while writes:
            writes.popleft().result()
        if progress is not None:
            progress(signed.size, signed.size)
    finally:
        for pending in writes:
            pending.cancel()
        parse_pool.shutdown(wait=True, cancel_futures=True)
        write_pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
    return sink.getvalue(), rows


def build_mirror(ledger: Ledger, *, progress: Progress | None = None) -> bytes:
    """The Parquet mirror of ``ledger``'s signed rows, as file bytes (deterministic).

    Raises :class:`CorruptLedgerError` if the lines do not hash to the signed root or
    cannot be read with the row schema.  ``progress(done, total)``, if given, is called
    in rows, once per row group (~32 MiB), ending with ``(tree size, tree size)``.
    """
    buffer, _ = _build(ledger, progress)
    return buffer.to_pybytes()


@dataclass(frozen=True)
class MirrorInfo:
    """What :func:`write_mirror` wrote."""

    key: str  #: storage key (``rollback-index.parquet``)
    path: str | None  #: local file path when the storage has one
    rows: int
    file_size: int  #: bytes
    origin: str
    tree_size: int
    root: bytes
    sha256: bytes  #: SHA-256 of the file

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.path,
            "rows": self.rows,
            "bytes": self.file_size,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode(),
            "sha256": self.sha256.hex(),
        }

    def render_text(self) -> str:
        return "\n".join(
            [
                f"wrote {self.path or self.key}",
                f"  rows       {self.rows}",
                f"  bytes      {self.file_size}",
                f"  origin     {self.origin}",
                f"  tree size  {self.tree_size}",
                f"  root       {base64.b64encode(self.root).decode()}",
                f"  sha256     {self.sha256.hex()}",
            ]
        )


def write_mirror(ledger: Ledger, *, progress: Progress | None = None) -> MirrorInfo:
    """Regenerate the mirror and store it atomically under :data:`MIRROR_KEY`.

    ``progress``: as for :func:`build_mirror` (rows, once per row group)."""
    buffer, rows = _build(ledger, progress)
    view = memoryview(buffer)  # no copy: the storage writes any bytes-like object
    digest = hashlib.sha256(view).digest()
    files.write_mirror_file(ledger, view)
    signed = ledger.checkpoint.checkpoint
    return MirrorInfo(
        key=MIRROR_KEY,
        path=files.mirror_local_path(ledger),
        rows=rows,
        file_size=len(view),
        origin=signed.origin,
        tree_size=signed.size,
        root=signed.root,
        sha256=digest,
    )
