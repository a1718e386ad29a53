"""The metadata binding a mirror file to the checkpoint it mirrors (read from its footer)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from kfm_ledger.core import merkle

from .layout import META_FORMAT, META_ORIGIN, META_ROOT, META_TREE_SIZE, _pyarrow


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
