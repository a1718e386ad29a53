"""The mirror's layout: its Arrow schema, metadata keys, row-group size and the Parquet
writer options that fix its bytes (see the package docstring)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from kfm_ledger.core import merkle

from ..schema import SCHEMA_ID

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

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
