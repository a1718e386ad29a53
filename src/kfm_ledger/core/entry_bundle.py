"""Entry bundles of c2sp.org/tlog-tiles ("Log entries"): the rows of a log, 256 to a bundle.

Pure code: bytes in, bytes out.

Entry bundle ``N`` (path :func:`~kfm_ledger.core.tiles.entries_path`) holds the entries with
indexes ``256N .. 256N + W - 1``, where ``W`` is 256 for a full bundle and the partial width
``size mod 256`` for the rightmost bundle of a tree of ``size`` entries.  Each entry is its
length as a big-endian uint16 followed by its bytes (so an entry is at most 65,535 bytes).

For kfm-ledger an entry is one canonical JSONL row *without* its trailing newline: exactly the
bytes whose RFC 9162 leaf hash (``SHA-256(0x00 || entry)``) is leaf ``i`` of the tree, so a
client that holds a bundle and the hash tiles can check each entry against a signed checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kfm_ledger.core.tiles import TILE_WIDTH
from kfm_ledger.errors import FormatError

__all__ = [
    "MAX_ENTRY_BYTES",
    "bundle_width",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "iter_entry_bundle",
]

#: The largest entry a bundle can hold: the length prefix is a uint16.
MAX_ENTRY_BYTES = 0xFFFF


def bundle_width(index: int, size: int) -> int:
    """How many entries bundle ``index`` holds in a tree of ``size`` entries (0 if none).

    256 for a full bundle, ``size mod 256`` for the rightmost partial one.
    """
    if index < 0 or size < 0:
        raise ValueError(f"bundle index {index} and tree size {size} must be non-negative")
    return max(0, min(TILE_WIDTH, size - index * TILE_WIDTH))


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """The bundle bytes for ``entries`` (at most 256, each at most 65,535 bytes)."""
    parts: list[bytes] = []
    count = 0
    for entry in entries:
        count += 1
        if count > TILE_WIDTH:
            raise ValueError(f"an entry bundle holds at most {TILE_WIDTH} entries")
        n = len(entry)
        if n > MAX_ENTRY_BYTES:
            raise ValueError(f"entry {count - 1} of the bundle is {n} bytes; an entry is at most {MAX_ENTRY_BYTES}")
        parts.append(n.to_bytes(2, "big"))
        parts.append(bytes(entry))
    return b"".join(parts)


def iter_entry_bundle(data: bytes | memoryview) -> Iterator[bytes]:
    """Yield the entries of a bundle in order; :class:`FormatError` on a truncated one.

    The error names the entry (its position in the bundle) and the byte offset where it starts.
    """
    view = memoryview(data)
    pos = 0
    end = len(view)
    position = 0
    while pos < end:
        if position >= TILE_WIDTH:
            raise FormatError(
                f"entry bundle holds more than {TILE_WIDTH} entries (extra bytes from offset {pos})",
                what="entry bundle",
                field="entry count",
                found=f"more than {TILE_WIDTH}",
            )
        if end - pos < 2:
            raise FormatError(
                f"entry bundle is truncated: entry {position} at offset {pos} has a 1-byte length prefix",
                what="entry bundle",
                field=f"entry {position}",
                found="1 byte",
            )
        n = (view[pos] << 8) | view[pos + 1]
        start = pos + 2
        if start + n > end:
            raise FormatError(
                f"entry bundle is truncated: entry {position} at offset {pos} says {n} bytes, "
                f"{end - start} remain",
                what="entry bundle",
                field=f"entry {position}",
                found=f"{end - start} of {n} bytes",
            )
        yield bytes(view[start : start + n])
        pos = start + n
        position += 1


def decode_entry_bundle(data: bytes | memoryview, expected_count: int | None = None) -> list[bytes]:
    """The entries of a bundle; with ``expected_count``, exactly that many or :class:`FormatError`.

    A bundle served for a partial width ``W`` must hold exactly ``W`` entries, a full one 256;
    c2sp.org/tlog-tiles lets a client read a full bundle where it asked for a partial one, so
    callers that accept that pass ``expected_count=None`` and take the first ``W``.
    """
    entries = list(iter_entry_bundle(data))
    if expected_count is not None and len(entries) != expected_count:
        raise FormatError(
            f"entry bundle holds {len(entries)} entries, expected {expected_count}",
            what="entry bundle",
            field="entry count",
            found=str(len(entries)),
        )
    return entries
