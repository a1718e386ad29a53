"""Entry bundles of the ledger (c2sp.org/tlog-tiles, "Log entries"): reading and writing them.

Every append writes, beside the hash tiles, the entry bundles its rows fill or extend:
``tile/entries/<N>`` for 256 rows, ``tile/entries/<N>.p/<W>`` for the rightmost ``W``
(the codec is :mod:`kfm_ledger.core.entry_bundle`).  An entry is one canonical JSONL row
without its newline, exactly the bytes whose RFC 9162 §2.1.1 leaf hash is in the tree.  They
are derived data like the tiles: immutable objects written before the checkpoint that covers
them is signed, rolled back with an unsigned append, recreated by ``kfm rebuild`` and checked
by ``kfm verify`` (:mod:`kfm_ledger.verify.entries`).

The API (also used by the network server and other storage backends):

* :func:`read_entries` - entries ``[start, stop)`` of the signed tree, from the bundles, each
  proven against the signed checkpoint (a missing partial bundle falls back to the full one);
* :func:`read_bundle` - one bundle's entries as stored (unchecked), with the same fallback;
* :func:`batch_bundles` - the ``(key, bytes)`` objects a batch of entries appended after
  ``old_size`` creates; :func:`encode_pieces` and :func:`pieces_from_lines` make its input;
* :func:`has_entry_bundles` - whether a ledger keeps bundles (a ledger made by a version
  before them has none until ``kfm rebuild`` adds them; appends then write none either);
* :func:`bundles_changed`, :func:`delete_partial_bundles`, :func:`prune_partial_bundles`,
  :func:`stored_bundles_beyond` - the keys an append creates and the clean-up of partial bundles
  that a full one replaces, as for the hash tiles.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.entry_bundle import bundle_width, decode_entry_bundle
from kfm_ledger.errors import CorruptLedgerError, FormatError, KfmError, ObjectNotFoundError, StorageError

from .layout import ENTRIES_PREFIX, JSONL_KEY

if TYPE_CHECKING:
    from kfm_ledger.storage import Storage

    from .ledger import Ledger

__all__ = [
    "batch_bundles",
    "bundles_changed",
    "delete_partial_bundles",
    "edge_bundle_key",
    "encode_pieces",
    "has_entry_bundles",
    "pieces_from_lines",
    "pieces_from_rows",
    "prune_partial_bundles",
    "read_bundle",
    "read_entries",
    "stored_bundles_beyond",
]

W = tiles.TILE_WIDTH
#: One piece of a batch: entries already encoded as in a bundle (uint16 length, bytes, ...)
#: and the entries' lengths, in order.
Piece = tuple[bytes, Sequence[int]]


def bundles_changed(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """``(index, width)`` of every bundle a tree growing from ``old_size`` to ``new_size`` gains
    (full ones width 256, the new right edge its partial width)."""
    out = []
    for index in range(old_size // W, -(-new_size // W)):
        width = bundle_width(index, new_size)
        if width and width != bundle_width(index, old_size):
            out.append((index, width))
    return out


def edge_bundle_key(size: int) -> str | None:
    """The key of the bundle holding the last entry of a tree of ``size`` (None when empty)."""
    if size == 0:
        return None
    width = size % W
    return tiles.entries_path(size // W, width) if width else tiles.entries_path(size // W - 1)


def has_entry_bundles(storage: Storage, size: int) -> bool:
    """Whether the ledger of signed ``size`` keeps entry bundles: an empty one always does
    (its first append writes them); otherwise the bundle of its last entry must exist.

    A ledger made before entry bundles existed has none: its appends write none either
    (a bundle of later rows alone would leave the earlier ones missing) until ``kfm rebuild``
    adds them all.
    """
    key = edge_bundle_key(size)
    return key is None or storage.exists(key)


def encode_entries(entries: list[bytes], lengths: Iterable[int]) -> bytes:
    """``entries`` (with their ``lengths``) encoded as in a bundle: uint16 big-endian length,
    bytes, ... (OverflowError for an entry over 65,535 bytes).  No per-entry Python loop."""
    parts: list[bytes] = [b""] * (2 * len(entries))
    big: itertools.repeat[Literal["big"]] = itertools.repeat("big")
    parts[0::2] = map(int.to_bytes, lengths, itertools.repeat(2), big)
    parts[1::2] = entries
    return b"".join(parts)


def encode_pieces(entries: Iterable[bytes]) -> list[Piece]:
    """``entries`` as one :data:`Piece` for :func:`batch_bundles`."""
    listed = list(entries)
    lengths = list(map(len, listed))
    return [(encode_entries(listed, lengths), lengths)]


def pieces_from_lines(chunks: Iterable[bytes], count: int | Callable[[], int]) -> Iterator[Piece]:
    """:data:`Piece` values for the ``count`` newline-terminated rows in a byte stream (the JSONL
    bytes a batch appended), one per chunk of the stream.  StorageError when the stream does
    not hold exactly ``count`` whole rows (the rows were not all written).  ``count`` may be a
    function, asked when the stream ends (a stream whose length is known only then)."""
    rest = [b""]

    def row_lists() -> Iterator[list[bytes]]:
        for chunk in chunks:
            lines = (rest[0] + chunk).split(b"\n") if rest[0] else chunk.split(b"\n")
            rest[0] = lines.pop()
            yield lines

    return pieces_from_rows(row_lists(), count, lambda: bool(rest[0]))


def pieces_from_rows(
    row_lists: Iterable[list[bytes]], count: int | Callable[[], int], partial: Callable[[], bool] = lambda: False
) -> Iterator[Piece]:
    """:func:`pieces_from_lines` for rows already cut apart (lists of rows without their
    newlines); ``partial()`` says, once they end, whether a partial row followed the last."""
    seen = 0
    for rows in row_lists:
        if rows:
            seen += len(rows)
            lengths = list(map(len, rows))
            yield encode_entries(rows, lengths), lengths
    check_whole_rows(seen, count if isinstance(count, int) else count(), partial=partial())


def check_whole_rows(seen: int, count: int, *, partial: bool = False) -> None:
    """StorageError unless the batch's rows handed on (to its bundles) are exactly the ``count``
    appended, whole: ``seen`` of them, and ``partial`` if a partial row followed the last."""
    if partial or seen != count:
        raise StorageError(
            f"the batch's rows in {JSONL_KEY} are {seen} whole rows{' and a partial one' if partial else ''}, "
            f"not the {count} appended: nothing was signed",
            key=JSONL_KEY,
        )


def batch_bundles(old_size: int, head: bytes, pieces: Iterable[Piece]) -> Iterator[tuple[str, bytes]]:
    """The bundles a batch appended after ``old_size`` creates, as ``(key, bytes)``, in order.

    ``head`` is the encoded bundle of the ``old_size mod 256`` entries already in the right-edge
    partial bundle (``b""`` when the tree ends on a bundle boundary); ``pieces`` the batch's
    entries, encoded, in order (:func:`encode_pieces`, or a bulk append's worker output).
    Bundles are slices of the encoded stream: no entry is decoded or copied one by one.
    """
    count = old_size % W
    index = old_size // W
    buf = bytearray(head)
    for data, lengths in pieces:
        offsets = list(itertools.accumulate((n + 2 for n in lengths), initial=0))
        if offsets[-1] != len(data):
            raise ValueError(f"an encoded piece is {len(data)} bytes, its lengths say {offsets[-1]}")
        pos, n = 0, len(lengths)
        while pos < n:
            if count == 0 and n - pos >= W:  # a whole bundle inside the piece: one slice, one copy
                yield tiles.entries_path(index), data[offsets[pos] : offsets[pos + W]]
                index += 1
                pos += W
                continue
            take = min(W - count, n - pos)
            buf += data[offsets[pos] : offsets[pos + take]]
            pos += take
            count += take
            if count == W:
                yield tiles.entries_path(index), bytes(buf)
                index, count = index + 1, 0
                buf = bytearray()
    if count and (index, count) != (old_size // W, old_size % W):  # a partial bundle with new entries
        yield tiles.entries_path(index, count), bytes(buf)


def edge_head(led: Ledger, old_size: int, leaf_hashes: Sequence[bytes]) -> bytes:
    """The stored right-edge partial bundle of the signed tree of ``old_size``, checked entry
    by entry against ``leaf_hashes`` (the tree's leaves in that bundle); ``b""`` on a boundary.

    An append builds the next bundle on it, so a changed or missing one stops the append
    (CorruptLedgerError, nothing written) as a changed tile does.
    """
    width = old_size % W
    if not width:
        return b""
    key = tiles.entries_path(old_size // W, width)
    try:
        data = led.storage.read(key)
        entries = decode_entry_bundle(data, width)
    except (ObjectNotFoundError, FormatError) as e:
        raise CorruptLedgerError(
            f"entry bundle {key} is missing or malformed ({e}); nothing was written: run `kfm verify`, then "
            "`kfm rebuild` to recreate the entry bundles",
            key=key,
            index=old_size // W,
        ) from None
    for k, (entry, want) in enumerate(zip(entries, leaf_hashes, strict=True)):
        if merkle.leaf_hash(entry) != want:
            raise CorruptLedgerError(
                f"entry {k} of entry bundle {key} (row {old_size - width + k}) is not the signed row; nothing "
                "was written: run `kfm verify`, then `kfm rebuild` to recreate the entry bundles",
                key=key,
                index=old_size - width + k,
            )
    return data


def delete_partial_bundles(storage: Storage, index: int) -> None:
    """Delete the partial bundles of bundle ``index``, which is full now."""
    for key in list(storage.list(tiles.entries_path(index) + ".p/")):
        storage.delete(key)


def prune_partial_bundles(storage: Storage, size: int) -> None:
    """Delete leftover partials of the last full bundle (an interrupted clean-up step)."""
    if size >= W:
        delete_partial_bundles(storage, size // W - 1)


def stored_bundles_beyond(storage: Storage, size: int) -> list[str]:
    """Stored bundles holding any entry beyond the tree of ``size`` (listed: bounded by what
    storage holds, not by a record's numbers)."""
    found = []
    for key in storage.list(ENTRIES_PREFIX):
        try:
            index, width = tiles.parse_entries_path(key)
        except KfmError:
            continue
        if index * W + width > size:
            found.append(key)
    return found


def read_bundle(storage: Storage, index: int, width: int) -> tuple[str, list[bytes]]:
    """The first ``width`` entries of bundle ``index`` as stored, and the key they came from.

    Tries ``tile/entries/<N>.p/<W>``, then the full bundle (c2sp.org/tlog-tiles lets a reader
    use a full bundle where it wanted a partial one: its first ``W`` entries are the same).
    Nothing is checked against the tree: see :func:`read_entries`.  CorruptLedgerError if
    neither exists or the bundle is malformed or too short.
    """
    keys = [tiles.entries_path(index, width)] if width < W else []
    keys.append(tiles.entries_path(index))
    for key in keys:
        try:
            data = storage.read(key)
        except ObjectNotFoundError:
            continue
        try:
            entries = decode_entry_bundle(data, width if key == keys[0] else W)
        except FormatError as e:
            raise CorruptLedgerError(
                f"entry bundle {key} is malformed: {e}; run `kfm rebuild`", key=key, index=index
            ) from None
        if len(entries) < width:
            raise CorruptLedgerError(
                f"entry bundle {key} holds {len(entries)} entries, fewer than {width}; run `kfm rebuild`",
                key=key,
                index=index,
            )
        return key, entries[:width]
    raise CorruptLedgerError(
        f"missing entry bundle {keys[0]}; run `kfm rebuild` to recreate the entry bundles",
        key=keys[0],
        index=index,
    )


def read_entries(led: Ledger, start: int, stop: int) -> list[bytes]:
    """Entries ``[start, stop)`` of the signed tree, read from the entry bundles and proven.

    Each entry's leaf hash (RFC 9162 §2.1.1) is checked against the level-0 tiles, and the
    tree is recomputed from them and the tiles around them to the signed root
    (:class:`~kfm_ledger.log.reader.TreeCheck`), so nothing is handed out unless it is the
    signed row.  CorruptLedgerError names the bundle (or the tile) that is wrong.
    """
    from .reader import TreeCheck

    size = led.size
    if not 0 <= start <= stop <= size:
        raise ValueError(f"entries {start}..{stop} are not within the signed tree of size {size}")
    if start == stop:
        return []
    out: list[bytes] = []
    sources: list[tuple[str, int]] = []  # (bundle key, first entry) per bundle read
    for index in range(start // W, -(-stop // W)):
        key, entries = read_bundle(led.storage, index, bundle_width(index, size))
        lo, hi = max(start, index * W), min(stop, index * W + len(entries))
        sources.append((key, lo))
        out += entries[lo - index * W : hi - index * W]
    sha = hashlib.sha256
    hashes = [sha(b"\x00" + e).digest() for e in out]
    reader = led.hash_reader(size, stored_expansions=False)
    # Name a wrong entry first (its leaf in the level-0 tiles), then prove the whole range.
    stored = reader.read_node_hashes([(0, i) for i in range(start, stop)])
    for i, (h, t) in enumerate(zip(hashes, stored), start):
        if h != t:
            key = next(k for k, first in reversed(sources) if first <= i)
            raise CorruptLedgerError(
                f"entry {i % W} of entry bundle {key} (row {i}) is not the signed row: its leaf hash differs "
                f"from {tiles.tile_path(0, i // W)}; run `kfm verify`, then `kfm rebuild`",
                key=key,
                index=i,
            )
    check = TreeCheck(led, start, stop)
    check.feed(hashes)
    check.finish()
    return out
