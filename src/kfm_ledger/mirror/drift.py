"""Explaining drift: what differs between a stored mirror and a regeneration."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from .layout import _pyarrow
from .metadata import MirrorMetadata


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
