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

from kfm_ledger.log.layout import MIRROR_KEY

from .blocks import LineBlock, iter_line_blocks
from .build import MirrorInfo, build_mirror, write_mirror
from .check import MirrorDriftError, MirrorState, MirrorStatus, check_mirror, mirror_after_append, verify_mirror
from .files import mirror_source
from .layout import (
    BLOCK_BYTES,
    META_FORMAT,
    META_ORIGIN,
    META_ROOT,
    META_ROW_SCHEMA,
    META_TREE_SIZE,
    MIRROR_FORMAT_VERSION,
    # A copy for reading: build_mirror reads layout.ROW_GROUP_BYTES when it runs, so patch
    # kfm_ledger.mirror.layout.ROW_GROUP_BYTES (patching this name changes nothing).
    ROW_GROUP_BYTES,
    WRITER_OPTIONS,
    mirror_schema,
)
from .metadata import MirrorMetadata, read_mirror_metadata

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
    "MirrorState",
    "MirrorStatus",
    "build_mirror",
    "check_mirror",
    "iter_line_blocks",
    "mirror_after_append",
    "mirror_schema",
    "mirror_source",
    "read_mirror_metadata",
    "verify_mirror",
    "write_mirror",
]
