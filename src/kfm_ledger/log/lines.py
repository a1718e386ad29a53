"""Splitting the JSONL's byte stream into its lines (for readers that stream it from a storage)."""

from __future__ import annotations

from collections.abc import Iterator


def split_lines(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Split a byte stream into lines; yields (line without '\\n', complete?)."""
    rest = b""
    for chunk in chunks:
        if rest:
            chunk = rest + chunk
        parts = chunk.split(b"\n")
        rest = parts.pop()
        for p in parts:
            yield p, True
    if rest:
        yield rest, False
