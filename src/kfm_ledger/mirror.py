"""The Parquet mirror of the ledger: ``rollback-index.parquet`` (KFM v11.2.2, "Directory Layout").

The JSONL is authoritative; the mirror is derived data for analytics, "generated via CI and
must not be manually edited", and CI checks "Parquet regeneration correctness" (spec, "CI/CD
Validation").  So the mirror is a pure function of the signed rows and their checkpoint:
the same ledger always gives the same bytes, and :func:`check_mirror` compares a stored
mirror against a regeneration.

**Contents.**  One Parquet row per signed ledger row, in leaf order.  Columns: the fourteen
row fields in the schema's order (see :func:`mirror_schema`): strings, ``created_at`` as
``timestamp[us, tz=UTC]`` (the schema allows at most six fractional digits, so microseconds
hold every accepted value exactly), ``data_snapshot`` / ``models`` / ``configs`` as lists
of structs, ``checksums`` / ``signatures`` / ``energy_carbon`` as structs; then
``leaf_index`` (int64, 0-based) and ``leaf_hash`` (``fixed_size_binary(32)``,
``SHA-256(0x00 || line)``, RFC 9162 §2.1.1).  Every column is REQUIRED (no nulls).  The
file's key-value metadata holds :data:`META_FORMAT` (:data:`MIRROR_FORMAT_VERSION`),
:data:`META_ORIGIN`, :data:`META_TREE_SIZE` and :data:`META_ROOT` (base64, as in a
c2sp.org/tlog-checkpoint body) of the checkpoint it mirrors, and :data:`META_ROW_SCHEMA`.

**How it is built.**  The signed lines are read in blocks (never row by row through
Python dicts): ``pyarrow.json.read_json`` parses each block with the explicit schema (the
lines are canonical, so field order is fixed); the leaf hashes are computed with hashlib
over the same lines and folded into a compact range whose root must equal the signed root
(a mirror never vouches for rows the log did not sign).  Parsing and Parquet encoding run
in two worker threads (pyarrow releases the GIL) while the main thread hashes the next
block.

**Determinism.**  A row group is the longest run of lines whose JSONL bytes fit in
:data:`ROW_GROUP_BYTES` (:func:`iter_line_blocks`): a rule over the line sequence alone,
so the layout does not depend on the storage backend or on read sizes.
Each row group is written from one contiguous Arrow chunk with the fixed writer options
in :data:`WRITER_OPTIONS` (zstd level 1, dictionary on, statistics on, data page v1,
format 2.6, no page index, no checksums, no bloom filters).  The writer stamps
``created_by`` ("parquet-cpp-arrow version X") into the footer, so byte identity holds
within one pyarrow release line: pyproject pins ``pyarrow>=26,<27``.  A different
pyarrow release reads the mirror fine but :func:`check_mirror` reports it as modified
("same rows, different bytes": regenerate it).
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from kfm_ledger.core import merkle

from .errors import CorruptLedgerError, VerificationError
from .log.layout import JSONL_KEY, MIRROR_KEY
from .log.ledger import Ledger
from .schema import SCHEMA_ID
from .storage import local_path_of

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = [
    "BLOCK_BYTES",
    "META_FORMAT",
    "META_ORIGIN",
    "META_ROOT",
    "META_ROW_SCHEMA",
    "META_TREE_SIZE",
    "MIRROR_FORMAT_VERSION",
    "MIRROR_KEY",
    "ROW_GROUP_BYTES",
    "WRITER_OPTIONS",
    "LineBlock",
    "MirrorDriftError",
    "MirrorInfo",
    "MirrorMetadata",
    "MirrorStatus",
    "build_mirror",
    "check_mirror",
    "iter_line_blocks",
    "mirror_schema",
    "read_mirror_metadata",
    "verify_mirror",
    "write_mirror",
]

#: Version of the mirror's layout (columns, types, metadata keys).  Bump it on any change;
#: :func:`check_mirror` reports a mirror of another version as stale.
MIRROR_FORMAT_VERSION = "1"

META_FORMAT = "kfm.mirror.format"
META_ORIGIN = "kfm.origin"
META_TREE_SIZE = "kfm.tree_size"
META_ROOT = "kfm.root_hash"
META_ROW_SCHEMA = "kfm.row_schema"

#: A row group is the longest run of lines whose JSONL bytes fit in this (see
#: :func:`iter_line_blocks`): about 50,000 typical rows.
ROW_GROUP_BYTES = 64 << 20
#: Default block size for streaming readers (:func:`iter_line_blocks`).
BLOCK_BYTES = 8 << 20

#: Every Parquet writer option that can change the bytes, fixed (pyarrow 26).
WRITER_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "data_page_version": "1.0",
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": True,
    "dictionary_pagesize_limit": 1 << 20,
    "data_page_size": 1 << 20,
    "write_batch_size": 1024,
    "write_statistics": True,
    "use_byte_stream_split": False,
    "use_compliant_nested_type": True,
    "store_schema": True,
    "write_page_index": False,
    "write_page_checksum": False,
    "use_content_defined_chunking": False,
    "max_rows_per_page": 20_000,
}


# ------------------------------------------------------------------ pyarrow


def _pyarrow() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.json, pyarrow.parquet (imported lazily: ``import kfm_ledger`` stays fast)."""
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    return pa, pa_json, pq


def _row_fields(pa: Any) -> list[Any]:
    s = pa.string()

    def f(name: str, typ: Any) -> Any:
        return pa.field(name, typ, nullable=False)

    def list_of(*fields: Any) -> Any:
        return pa.list_(pa.field("element", pa.struct(list(fields)), nullable=False))

    return [
        f("lakefs_repo", s),
        f("lakefs_branch", s),
        f("lakefs_commit", s),
        f("created_at", pa.timestamp("us", tz="UTC")),
        f("producer", s),
        f("openlineage_run_id", s),
        f("otel_trace_id", s),
        f("artifact_uri", s),
        f("data_snapshot", list_of(f("stac", s), f("lakefs_ref", s))),
        f("models", list_of(f("name", s), f("version", s), f("uri", s))),
        f("configs", list_of(f("path", s), f("sha256", s))),
        f("checksums", pa.struct([f("artifact_sha256", s)])),
        f("signatures", pa.struct([f("in_toto", s)])),
        f("energy_carbon", pa.struct([f("kwh", pa.float64()), f("co2e_kg", pa.float64())])),
    ]


def mirror_schema(
    *, origin: str | None = None, tree_size: int | None = None, root: bytes | None = None
) -> pa.Schema:
    """The mirror's Arrow schema; with ``origin``/``tree_size``/``root``, its metadata too."""
    pa, _, _ = _pyarrow()
    fields = _row_fields(pa) + [
        pa.field("leaf_index", pa.int64(), nullable=False),
        pa.field("leaf_hash", pa.binary(merkle.HASH_SIZE), nullable=False),
    ]
    metadata = None
    if origin is not None and tree_size is not None and root is not None:
        metadata = {
            META_FORMAT: MIRROR_FORMAT_VERSION,
            META_ORIGIN: origin,
            META_TREE_SIZE: str(tree_size),
            META_ROOT: base64.b64encode(root).decode("ascii"),
            META_ROW_SCHEMA: SCHEMA_ID,
        }
    return pa.schema(fields, metadata=metadata)


# --------------------------------------------------------------- line blocks


class LineBlock(NamedTuple):
    """Complete ledger lines ``[first_index, first_index + count)``, each followed by ``\\n``."""

    first_index: int
    count: int
    data: bytes


def iter_line_blocks(ledger: Ledger, *, max_bytes: int = BLOCK_BYTES) -> Iterator[LineBlock]:
    """Stream the signed lines (leaves ``0 .. ledger.size - 1``) in blocks.

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
    path = ledger.jsonl_path
    if path is None:
        yield from _blocks_from_lines(ledger, max_bytes)
        return
    index = ledger.index

    def start_of(leaf: int) -> int:
        e = index.at(leaf)
        if e is None:
            raise CorruptLedgerError(f"the commit index has no entry for leaf {leaf}; run `kfm rebuild`")
        return e.offset

    def end_of(leaf: int) -> int:  # the byte after line ``leaf``'s newline
        e = index.at(leaf)
        if e is None:
            raise CorruptLedgerError(f"the commit index has no entry for leaf {leaf}; run `kfm rebuild`")
        return e.offset + e.length + 1

    first, start = 0, 0
    with open(path, "rb", buffering=0) as f:
        while first < size:
            if start_of(first) != start:
                raise CorruptLedgerError(
                    f"the commit index puts leaf {first} at byte {start_of(first)}, but the previous "
                    f"line ends at byte {start}; run `kfm rebuild`"
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
                    f"{start}..{end} (read {len(data)} bytes); run `kfm verify`"
                )
            yield LineBlock(first, lo - first, data)
            first, start = lo, end


def _blocks_from_lines(ledger: Ledger, max_bytes: int) -> Iterator[LineBlock]:
    lines: list[bytes] = []
    held = 0
    first = 0
    for line in ledger.iter_lines():
        cost = len(line) + 1
        if lines and held + cost > max_bytes:
            yield LineBlock(first, len(lines), b"\n".join(lines) + b"\n")
            first += len(lines)
            lines, held = [], 0
        lines.append(line)
        held += cost
    if lines:
        yield LineBlock(first, len(lines), b"\n".join(lines) + b"\n")


# ------------------------------------------------------------------ building


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
            f"{JSONL_KEY} rows {first}..{first + count - 1}: pyarrow cannot read them with the row schema: {e}"
        ) from None
    if table.num_rows != count:
        raise CorruptLedgerError(
            f"{JSONL_KEY} rows {first}..{first + count - 1}: pyarrow read {table.num_rows} rows, expected {count}"
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


def _build(ledger: Ledger) -> tuple[Any, int]:
    """Write the mirror into an Arrow buffer; return (buffer, rows).

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
    crange = merkle.CompactRange()
    sha256 = hashlib.sha256
    rows = 0
    writes: deque[Future[None]] = deque()
    parse_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfm-mirror-parse")
    write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfm-mirror-write")
    writer = pq.ParquetWriter(sink, schema, **WRITER_OPTIONS)
    try:
        for block in iter_line_blocks(ledger, max_bytes=ROW_GROUP_BYTES):
            parsed = parse_pool.submit(_parse_group, block.data, block.first_index, block.count)
            lines = block.data.split(b"\n")
            lines.pop()  # the empty string after the last newline
            hashes = [sha256(b"\x00" + line).digest() for line in lines]  # RFC 9162 §2.1.1
            del lines
            crange.extend(hashes)
            writes.append(
                write_pool.submit(_write_group, writer, schema, parsed, block.first_index, b"".join(hashes))
            )
            rows += block.count
            while len(writes) > 2:
                writes.popleft().result()
        while writes:
            writes.popleft().result()
    finally:
        for pending in writes:
            pending.cancel()
        parse_pool.shutdown(wait=True, cancel_futures=True)
        write_pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
    if crange.root() != signed.root:
        raise CorruptLedgerError(
            f"the first {signed.size} lines of {JSONL_KEY} hash to root "
            f"{base64.b64encode(crange.root()).decode()}, but the signed checkpoint says "
            f"{base64.b64encode(signed.root).decode()}: the rows were changed; run `kfm verify`"
        )
    return sink.getvalue(), rows


def build_mirror(ledger: Ledger) -> bytes:
    """The Parquet mirror of ``ledger``'s signed rows, as file bytes (deterministic).

    Raises :class:`CorruptLedgerError` if the lines do not hash to the signed root or
    cannot be read with the row schema.
    """
    buffer, _ = _build(ledger)
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


def write_mirror(ledger: Ledger) -> MirrorInfo:
    """Regenerate the mirror and store it atomically under :data:`MIRROR_KEY`."""
    buffer, rows = _build(ledger)
    view = memoryview(buffer)  # no copy: the storage writes any bytes-like object
    digest = hashlib.sha256(view).digest()
    ledger.storage.write_atomic(MIRROR_KEY, view)  # type: ignore[arg-type]
    signed = ledger.checkpoint.checkpoint
    return MirrorInfo(
        key=MIRROR_KEY,
        path=local_path_of(ledger.storage, MIRROR_KEY),
        rows=rows,
        file_size=len(view),
        origin=signed.origin,
        tree_size=signed.size,
        root=signed.root,
        sha256=digest,
    )


# ------------------------------------------------------------------ checking


@dataclass(frozen=True)
class MirrorMetadata:
    """The kfm key-value metadata of a mirror file (values as found; None when absent)."""

    format: str | None
    origin: str | None
    tree_size: int | None
    root: bytes | None
    created_by: str | None
    num_rows: int
    problems: tuple[str, ...]  #: malformed or missing values


def read_mirror_metadata(data: bytes | memoryview | str) -> MirrorMetadata:
    """Parse a mirror file's footer (not its rows), from its bytes or a local path.

    Raises ``ValueError`` when the file is not a readable Parquet file; malformed or
    missing kfm values are listed in :attr:`MirrorMetadata.problems`.
    """
    pa, _, pq = _pyarrow()
    try:
        meta = pq.read_metadata(data if isinstance(data, str) else pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"not a readable Parquet file ({e})") from None
    kv = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in (meta.metadata or {}).items()}
    problems: list[str] = []
    size: int | None = None
    root: bytes | None = None
    text = kv.get(META_TREE_SIZE)
    if text is None:
        problems.append(f"metadata key {META_TREE_SIZE!r} is missing")
    elif not text.isdigit() or text != str(int(text)):
        problems.append(f"metadata {META_TREE_SIZE} {text!r} is not a canonical decimal tree size")
    else:
        size = int(text)
    text = kv.get(META_ROOT)
    if text is None:
        problems.append(f"metadata key {META_ROOT!r} is missing")
    else:
        try:
            root = base64.b64decode(text, validate=True)
        except ValueError:
            root = None
        if root is None or len(root) != merkle.HASH_SIZE:
            problems.append(f"metadata {META_ROOT} {text[:60]!r} is not the base64 of a 32-byte hash")
            root = None
    if META_ORIGIN not in kv:
        problems.append(f"metadata key {META_ORIGIN!r} is missing")
    if META_FORMAT not in kv:
        problems.append(f"metadata key {META_FORMAT!r} is missing")
    return MirrorMetadata(
        format=kv.get(META_FORMAT),
        origin=kv.get(META_ORIGIN),
        tree_size=size,
        root=root,
        created_by=meta.created_by,
        num_rows=meta.num_rows,
        problems=tuple(problems),
    )


MirrorState = Literal["ok", "missing", "stale", "modified"]


@dataclass(frozen=True)
class MirrorStatus:
    """How the stored mirror compares with the ledger.

    ``state``: ``ok`` (byte-identical to a regeneration, or, when checked with
    ``regenerate=False``, its metadata names the current checkpoint); ``missing``;
    ``stale`` (it mirrors an older checkpoint of this log, or an older mirror format);
    ``modified`` (it differs from what kfm writes for the tree it claims: hand-edited,
    another log's, or written by another pyarrow release).  ``problems`` says what
    differs, most useful first; empty when ok.
    """

    state: MirrorState
    key: str
    path: str | None
    ledger_size: int
    ledger_root: bytes
    mirror_size: int | None = None
    mirror_root: bytes | None = None
    regenerated: bool = False  #: whether the bytes were compared with a regeneration
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def to_json(self) -> dict[str, Any]:
        b64 = lambda h: None if h is None else base64.b64encode(h).decode()  # noqa: E731
        return {
            "state": self.state,
            "ok": self.ok,
            "key": self.key,
            "path": self.path,
            "ledger_size": self.ledger_size,
            "ledger_root": b64(self.ledger_root),
            "mirror_size": self.mirror_size,
            "mirror_root": b64(self.mirror_root),
            "regenerated": self.regenerated,
            "problems": list(self.problems),
        }

    def render_text(self) -> str:
        where = self.path or self.key
        if self.ok:
            how = "byte-identical to a regeneration" if self.regenerated else "metadata names the current checkpoint"
            return f"mirror OK: {where} mirrors tree size {self.ledger_size} ({how})"
        lines = [f"mirror {self.state.upper()}: {where}"]
        lines += [f"  {p}" for p in self.problems]
        lines.append("  run `kfm mirror` to " + ("create it" if self.state == "missing" else "regenerate it"))
        return "\n".join(lines)

    def raise_for_status(self) -> None:
        """Raise :class:`MirrorDriftError` unless the mirror is ok."""
        if not self.ok:
            raise MirrorDriftError(self)


class MirrorDriftError(VerificationError):
    """The Parquet mirror is missing, stale or modified; ``status`` says which and why."""

    def __init__(self, status: MirrorStatus) -> None:
        self.status = status
        head = status.problems[0] if status.problems else status.state
        super().__init__(f"mirror {status.state}: {head}")

    def diagnostics(self) -> str:
        return self.status.render_text()


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def check_mirror(ledger: Ledger, *, regenerate: bool = True) -> MirrorStatus:
    """Compare the stored mirror with the ledger (the spec's "Parquet regeneration correctness").

    Cheap checks first, from the file's footer: readable, the kfm metadata present and
    well-formed, this mirror format, this log's origin, the tree size and root (an older
    size whose root the log's tree confirms is *stale*; a root the log never had is
    *modified*).  Then, with ``regenerate`` (the default), the file must be
    byte-identical to :func:`build_mirror`; if not, the footers and then the rows are
    compared column by column to name the first difference.  Never raises for drift:
    see :meth:`MirrorStatus.raise_for_status`.
    """
    signed = ledger.checkpoint.checkpoint
    base = {
        "key": MIRROR_KEY,
        "path": local_path_of(ledger.storage, MIRROR_KEY),
        "ledger_size": signed.size,
        "ledger_root": signed.root,
    }
    if not ledger.storage.exists(MIRROR_KEY):
        return MirrorStatus(
            state="missing", problems=(f"{MIRROR_KEY} does not exist",), **base  # type: ignore[arg-type]
        )
    # The footer check alone reads only the footer of a local file; a full check needs the bytes.
    local = local_path_of(ledger.storage, MIRROR_KEY)
    stored = ledger.storage.read(MIRROR_KEY) if regenerate or local is None else None

    def status(state: MirrorState, *problems: str, **extra: Any) -> MirrorStatus:
        return MirrorStatus(state=state, problems=tuple(problems), **base, **extra)  # type: ignore[arg-type]

    try:
        meta = read_mirror_metadata(stored if stored is not None else local)  # type: ignore[arg-type]
    except ValueError as e:
        return status("modified", f"{MIRROR_KEY} is {e}")
    found = {"mirror_size": meta.tree_size, "mirror_root": meta.root}
    if meta.format is None and meta.origin is None and meta.tree_size is None:
        return status("modified", f"{MIRROR_KEY} has no kfm mirror metadata (was it written by kfm?)", **found)
    if meta.format != MIRROR_FORMAT_VERSION:
        return status(
            "stale",
            f"written in mirror format {meta.format!r}; this kfm writes format {MIRROR_FORMAT_VERSION!r}",
            **found,
        )
    if meta.problems:
        return status("modified", *meta.problems, **found)
    assert meta.tree_size is not None and meta.root is not None
    if meta.origin != signed.origin:
        return status(
            "modified", f"it mirrors the log {meta.origin!r}, not this ledger's {signed.origin!r}", **found
        )
    if meta.tree_size > signed.size:
        return status(
            "modified",
            f"its metadata claims tree size {meta.tree_size}, beyond the ledger's signed size {signed.size}",
            **found,
        )
    if meta.tree_size < signed.size:
        old_root = merkle.tree_root(meta.tree_size, ledger.hash_reader(signed.size))
        if old_root != meta.root:
            return status(
                "modified",
                f"its metadata root {_b64(meta.root)} for tree size {meta.tree_size} is not the log's "
                f"root at that size ({_b64(old_root)})",
                **found,
            )
        return status(
            "stale",
            f"it mirrors tree size {meta.tree_size} (root {_b64(meta.root)}); the ledger is at tree size "
            f"{signed.size} (root {_b64(signed.root)}): {signed.size - meta.tree_size} signed row(s) are "
            "not in the mirror",
            **found,
        )
    if meta.root != signed.root:
        return status(
            "modified",
            f"its metadata root {_b64(meta.root)} differs from the signed root {_b64(signed.root)} "
            f"at tree size {signed.size}",
            **found,
        )
    if not regenerate:
        return status("ok", **found)
    assert stored is not None
    fresh = build_mirror(ledger)
    if fresh == stored:
        return status("ok", regenerated=True, **found)
    return status("modified", *_explain_difference(stored, fresh, meta), regenerated=True, **found)


def verify_mirror(ledger: Ledger) -> list[str]:
    """Problems with the stored mirror (empty when it is byte-identical to a regeneration).

    For ``kfm verify``: each string names the state and what differs.
    """
    result = check_mirror(ledger)
    if result.ok:
        return []
    return [f"{MIRROR_KEY} {result.state}: {p}" for p in result.problems]


# ------------------------------------------------------------ explaining drift


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, (bytes, bytearray)):
        text = base64.b64encode(value).decode()
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain_difference(stored: bytes, fresh: bytes, meta: MirrorMetadata) -> list[str]:
    """Name what differs between a stored mirror and a regeneration, cheapest evidence first."""
    pa, _, pq = _pyarrow()
    problems: list[str] = []
    sha_s, sha_f = hashlib.sha256(stored).hexdigest(), hashlib.sha256(fresh).hexdigest()
    problems.append(
        f"its bytes differ from a regeneration ({len(stored)} bytes, sha256 {sha_s[:16]}...; "
        f"regenerated: {len(fresh)} bytes, sha256 {sha_f[:16]}...)"
    )
    try:
        file_s = pq.ParquetFile(pa.BufferReader(stored))
        file_f = pq.ParquetFile(pa.BufferReader(fresh))
    except (pa.ArrowException, OSError) as e:  # pragma: no cover - the footer was read above
        problems.append(f"cannot open it as Parquet: {e}")
        return problems
    md_s, md_f = file_s.metadata, file_f.metadata
    kv_s, kv_f = dict(md_s.metadata or {}), dict(md_f.metadata or {})
    for key in sorted(set(kv_s) | set(kv_f)):
        if kv_s.get(key) != kv_f.get(key):
            name = key.decode("utf-8", "replace")
            if key == b"ARROW:schema":
                problems.append("metadata 'ARROW:schema' (the stored Arrow schema) differs")
            else:
                problems.append(
                    f"metadata {name!r}: found {_short(kv_s.get(key))}, expected {_short(kv_f.get(key))}"
                )
    if md_s.created_by != md_f.created_by:
        problems.append(
            f"written by {md_s.created_by!r}, this kfm writes with {md_f.created_by!r} "
            "(byte identity needs the same pyarrow release line)"
        )
    schema_s, schema_f = file_s.schema_arrow, file_f.schema_arrow
    if not schema_s.equals(schema_f, check_metadata=False):
        names_s, names_f = schema_s.names, schema_f.names
        for name in names_f:
            if name not in names_s:
                problems.append(f"column {name!r} is missing")
            elif schema_s.field(name).type != schema_f.field(name).type:
                problems.append(
                    f"column {name!r} has type {schema_s.field(name).type}, expected {schema_f.field(name).type}"
                )
        for name in names_s:
            if name not in names_f:
                problems.append(f"unexpected column {name!r}")
        if names_s != names_f and set(names_s) == set(names_f):
            problems.append("columns are in another order")
        return problems
    if md_s.num_rows != md_f.num_rows:
        problems.append(f"it has {md_s.num_rows} rows, the ledger {md_f.num_rows}")
        return problems
    layout_s = [md_s.row_group(i).num_rows for i in range(md_s.num_row_groups)]
    layout_f = [md_f.row_group(i).num_rows for i in range(md_f.num_row_groups)]
    if layout_s != layout_f:
        problems.append(f"row groups of {_short(layout_s)} rows, expected {_short(layout_f)}")
    first = _first_differing_cell(file_s, file_f, schema_f.names)
    if first is not None:
        problems.append(first)
    elif len(problems) == 1:
        problems.append("the rows are equal; only the encoding differs (written with other writer options?)")
    return problems


def _first_differing_cell(file_s: Any, file_f: Any, names: list[str]) -> str | None:
    """The first (row, column) whose value differs, reading one column at a time."""
    best: tuple[int, str, Any, Any] | None = None
    commits = None
    for name in names:
        try:
            col_s = file_s.read(columns=[name]).column(0).combine_chunks()
        except Exception as e:
            return f"column {name!r} cannot be decoded: {e}"
        col_f = file_f.read(columns=[name]).column(0).combine_chunks()
        if col_s.equals(col_f):
            continue
        row = _first_unequal_row(col_s, col_f)
        if best is None or row < best[0]:
            best = (row, name, col_s[row].as_py(), col_f[row].as_py())
            if commits is None:
                commits = file_f.read(columns=["lakefs_commit"]).column(0)
        if best[0] == 0:
            break
    if best is None:
        return None
    row, name, found, expected = best
    commit = commits[row].as_py() if commits is not None else "?"
    return (
        f"first difference at row {row} (leaf index {row}, lakefs_commit {commit!r}), column {name!r}: "
        f"found {_short(found)}, expected {_short(expected)}"
    )


def _first_unequal_row(a: Any, b: Any) -> int:
    """Smallest i with a[i] != b[i] (a and b have the same length and differ somewhere)."""
    lo, n = 0, len(a)
    step = 4096
    while lo < n:
        hi = min(n, lo + step)
        if not a.slice(lo, hi - lo).equals(b.slice(lo, hi - lo)):
            for i in range(lo, hi):
                if not a.slice(i, 1).equals(b.slice(i, 1)):
                    return i
        lo = hi
    return n - 1  # pragma: no cover - only when equal, which the caller excluded

