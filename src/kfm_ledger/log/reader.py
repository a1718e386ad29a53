"""Proven reads: rows are checked against the signed checkpoint before anyone uses them.

* One row (:func:`proven_entry`, behind ``Ledger.get`` / ``Ledger.entry``): the RFC 9162
  leaf hash of the bytes read, with an inclusion proof from the tiles, must give the
  signed root; and the decoded row's ``lakefs_commit`` must be the commit asked for (or
  start with the prefix asked), so a commit index whose entries were swapped or renamed
  cannot make a lookup answer with another commit's row.  About 0.1 ms.
* A scan of leaves ``[start, stop)`` (:func:`verified_lines`, :func:`verified_blocks`,
  behind ``Ledger.iter_lines`` / ``iter_entries`` and ``mirror.iter_line_blocks``): the
  tree is recomputed while the rows stream (:class:`TreeCheck`), and its root compared
  with the signed root *before the last line or block is handed out*, so no caller can
  finish a result computed from rows that were not proven.  The cost is the hashing of
  the rows (what ``kfm verify``'s row pass does), plus O(log n) tile reads.

A mismatch raises :class:`~kfm_ledger.errors.CorruptLedgerError` naming the row (``index``,
``line``) or, when a level-0 tile was edited to match the rows, the tile and its row range.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.errors import CorruptLedgerError, KfmError, ProofError

from .layout import INDEX_FILE, JSONL_KEY, mirror_file_name, mirror_regenerate_command

if TYPE_CHECKING:
    from .ledger import Ledger

W = tiles.TILE_WIDTH
_sha256 = hashlib.sha256
B = TypeVar("B")

_SEE_ALL = "nothing was computed from it; run `kfm verify` to see every problem"
#: For a signed row that changed: only its original bytes repair it.
_RESTORE = (
    "restore the row's original bytes from a backup or another copy of the ledger "
    "(`kfm rebuild` only rebuilds derived data and cannot repair signed rows)"
)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def row_error(ledger: Ledger, index: int, found: bytes | None, expected: bytes | None) -> CorruptLedgerError:
    """The error for row ``index`` whose stored bytes do not match the signed tree."""
    what = (
        f"its bytes hash to leaf {_b64(found)} but the tiles have {_b64(expected)}"
        if found is not None and expected is not None
        else "its bytes do not hash to the signed root"
    )
    return CorruptLedgerError(
        f"row {index} (line {index + 1} of {JSONL_KEY}) does not match the signed checkpoint "
        f"(tree size {ledger.size}): {what}; the row at line {index + 1} no longer matches the signed tree "
        f"(it was changed, moved or removed); {_SEE_ALL}; {_RESTORE}",
        key=JSONL_KEY,
        line=index + 1,
        index=index,
    )


def _whole_line(ledger: Ledger, leaf: int) -> bool:
    """Whether the bytes the commit index gives for ``leaf`` are still one whole line."""
    e = ledger.index.at(leaf)
    if e is None:
        return False
    try:
        before = ledger._jsonl.read(e.offset - 1, 1) if e.offset else b"\n"
        after = ledger._jsonl.read(e.offset + e.length, 1)
    except KfmError:
        return False
    return before == b"\n" and after == b"\n"


def first_moved_row(ledger: Ledger, index: int) -> int | None:
    """When row ``index`` is no longer a whole line where the commit index puts it, the first
    row (<= ``index``) that is not: the one whose length changed (rows after it moved with
    it); None when row ``index`` is in place.  A binary search: O(log n) reads."""
    if _whole_line(ledger, index):
        return None
    lo, hi = 0, index  # rows before lo are in place; hi is not
    while lo < hi:
        mid = (lo + hi) // 2
        if _whole_line(ledger, mid):
            lo = mid + 1
        else:
            hi = mid
    return hi


def moved_row_error(ledger: Ledger, index: int, moved: int) -> CorruptLedgerError:
    """Row ``index`` is not where it was signed because row ``moved`` (before it) changed length."""
    return CorruptLedgerError(
        f"row {index} (line {index + 1} of {JSONL_KEY}) is no longer where the commit index puts it: "
        f"the row at line {moved + 1} (row {moved}) changed length, so it no longer matches the signed tree "
        f"and every later row moved; {_SEE_ALL}; restore row {moved}'s original bytes from a backup or another "
        "copy of the ledger (`kfm rebuild` only rebuilds derived data and cannot repair signed rows)",
        key=JSONL_KEY,
        line=moved + 1,
        index=moved,
    )


# ----------------------------------------------------------------- one row


def proven_entry(ledger: Ledger, index: int, line: bytes, asked: str | None = None) -> schema.Entry:
    """The row at leaf ``index`` from the ``line`` read for it, after proving it.

    Proven before it is decoded: the leaf hash of ``line`` with the inclusion proof for
    ``index`` (built from the tiles) must give the signed root.  ``asked``: the commit or
    commit prefix the caller looked up; the row's commit must be it or start with it.
    """
    size, root = ledger.size, ledger.root
    leaf = merkle.leaf_hash(line)
    reader = ledger.hash_reader(size, stored_expansions=False)  # the tiles alone (as `kfm verify`)
    try:
        merkle.verify_inclusion(leaf, index, size, merkle.inclusion_proof(index, size, reader), root)
    except ProofError:
        stored = reader.read_node_hashes([(0, index)])[0]
        if stored != leaf:
            moved = first_moved_row(ledger, index)
            if moved is not None and moved != index:
                raise moved_row_error(ledger, index, moved) from None
            raise row_error(ledger, index, leaf, stored) from None
        a, b = index - index % W, min(size, index - index % W + W)
        path = tiles.tile_path(0, index // W)
        raise CorruptLedgerError(
            f"row {index} (line {index + 1} of {JSONL_KEY}) cannot be proven against the signed checkpoint "
            f"(tree size {size}): its bytes match its level-0 tile {path}, but that tile (rows {a}..{b - 1}) "
            f"and the tiles above it do not give the signed root: the tile, or rows {a}..{b - 1} together "
            f"with it, were changed; {_SEE_ALL}",
            key=path,
            line=index + 1,
            index=index,
        ) from None
    return asked_row(index, line, asked, key=JSONL_KEY, line=index + 1)


def asked_row(index: int, data: bytes, asked: str | None, *, key: str, line: int | None = None) -> schema.Entry:
    """The proven row ``data`` at ``index``, refused when its commit is not ``asked`` (nor starts with it).

    A commit index (derived data) that points a commit at another commit's row never answers with
    that row; ``key`` (and ``line``) name where the row was read.
    """
    row = schema.decode_row(data)
    if asked is not None and not row.lakefs_commit.startswith(asked):
        raise CorruptLedgerError(
            f"the commit index points {asked!r} at row {index}, whose commit is {row.lakefs_commit!r}: "
            "the index is wrong (derived data); run `kfm rebuild`, then `kfm verify`",
            key=key,
            line=line,
            index=index,
        )
    return schema.Entry(index, data, row)


# ------------------------------------------------------------------ scans


class TreeCheck:
    """Recomputes the signed tree head while the leaf hashes of ``[start, stop)`` stream in.

    The complete subtrees left of ``start`` and right of ``stop`` come from the tiles.
    They are *not* trusted by themselves: only the final comparison of the recomputed root
    with the signed root (:meth:`finish`) makes them, and the streamed rows, trustworthy
    (a wrong tile hash or row would give another root).
    """

    def __init__(self, ledger: Ledger, start: int, stop: int) -> None:
        self._ledger = ledger
        self.start, self.stop, self.size = start, stop, ledger.size
        self._leaf_line = ledger._leaf_line  # the bytes at the index's range (for naming a row)
        self._reader = ledger.hash_reader(self.size, stored_expansions=False)
        seeds = self._reader.read_node_hashes(merkle.subtree_nodes(0, start)) if start else []
        self._crange = merkle.CompactRange(start, seeds)
        self._buf: list[bytes] = []  # leaf hashes since the last tile boundary
        self._tile_roots: list[tuple[int, bytes]] = []  # full level-0 tiles hashed here
        self._loose: list[tuple[int, bytes]] = []  # leaves outside a full tile (<= 255 each end)
        self._confirmed = (0, 0)  # how many of _tile_roots and _loose confirm() compared

    @property
    def fed(self) -> int:
        """The absolute index of the next leaf expected."""
        return self._crange.size + len(self._buf)

    def feed(self, hashes: Sequence[bytes]) -> None:
        i, n = 0, len(hashes)
        buf = self._buf
        while i < n:
            room = W - self.fed % W
            take = hashes[i : i + room]
            buf.extend(take)
            i += len(take)
            if self.fed % W == 0:
                self._flush()

    def _flush(self) -> None:
        buf, crange = self._buf, self._crange
        if len(buf) == W and crange.size % W == 0:
            # One full tile: its 255 inner nodes hashed level by level, appended as a subtree.
            root = tiles.expand_tile(b"".join(buf))[tiles.TILE_HEIGHT]
            self._tile_roots.append((crange.size // W, root))
            crange.append_subtree(tiles.TILE_HEIGHT, root)
        else:
            self._loose.extend(zip(range(crange.size, crange.size + len(buf)), buf))
            crange.extend(buf)
        buf.clear()

    def confirm(self) -> None:
        """Compare what was hashed since the last call with the tiles (a full tile's root with
        the level-1 tile, a loose leaf with the level-0 tile), so that an edited row is named
        before it is handed out.  Only :meth:`finish` proves anything; this names rows early."""
        t, lo = self._confirmed
        roots, loose = self._tile_roots[t:], self._loose[lo:]
        self._confirmed = (len(self._tile_roots), len(self._loose))
        if roots:
            stored = self._reader.read_node_hashes([(tiles.TILE_HEIGHT, k) for k, _ in roots])
            if any(r != s for (_, r), s in zip(roots, stored)):
                raise self.diagnose(None)
        if loose:
            stored = self._reader.read_node_hashes([(0, i) for i, _ in loose])
            if any(h != s for (_, h), s in zip(loose, stored)):
                raise self.diagnose(None)

    def finish(self) -> None:
        """Compare the recomputed root with the signed root; raise naming the row if they differ."""
        if self._buf:
            self._flush()
        if self._crange.size != self.stop:
            raise self.diagnose(None)
        self.confirm()
        right = merkle.subtree_nodes(self.stop, self.size)
        for (level, _), h in zip(right, self._reader.read_node_hashes(right)):
            self._crange.append_subtree(level, h)
        if self._crange.root() != self._ledger.root:
            raise self.diagnose(None)

    # -------------------------------------------------------- naming the row
    def diagnose(self, cause: CorruptLedgerError | None) -> CorruptLedgerError:
        """The error naming the first row (or tile) found wrong; ``cause`` when none is found."""
        reader = self._reader
        if self._tile_roots:
            stored = reader.read_node_hashes([(tiles.TILE_HEIGHT, k) for k, _ in self._tile_roots])
            for (k, root), level1 in zip(self._tile_roots, stored):
                if root != level1:
                    return self._in_range(k * W, (k + 1) * W, tile=k) or self._tile_error(k * W, (k + 1) * W)
        if self._loose:
            level0 = reader.read_node_hashes([(0, i) for i, _ in self._loose])
            for (i, h), t in zip(self._loose, level0):
                if h != t:
                    return row_error(self._ledger, i, h, t)
        # The stream stopped early or broke (a removed row, a changed length): look from where it stopped.
        found = self._in_range(self.fed - self.fed % W, self.stop) if self.fed < self.stop else None
        if found is not None:
            return found
        if cause is not None:
            return cause
        tail = self.stop - self.stop % W
        if self._loose and self._loose[-1][0] >= tail:
            return self._tile_error(max(tail, self.start), self.stop)
        return CorruptLedgerError(
            f"rows {self.start}..{self.stop - 1} of {JSONL_KEY} and the tiles do not give the signed root "
            f"(tree size {self.size}); {_SEE_ALL}",
            key=JSONL_KEY,
            line=self.start + 1,
            index=self.start,
        )

    def _in_range(self, a: int, b: int, tile: int | None = None) -> CorruptLedgerError | None:
        """The first row of ``[a, b)`` whose stored bytes differ from its level-0 tile hash."""
        a, b = max(a, self.start), min(b, self.stop)
        for c in range(a, b, W):
            d = min(b, c - c % W + W)
            expected = self._reader.read_node_hashes([(0, i) for i in range(c, d)])
            for i, t in zip(range(c, d), expected):
                try:
                    h = merkle.leaf_hash(self._leaf_line(i))
                except KfmError:  # no index entry, a short read: the row is not where it was signed
                    return row_error(self._ledger, i, None, None)
                if h != t:
                    return row_error(self._ledger, i, h, t)
        return None

    def _tile_error(self, a: int, b: int) -> CorruptLedgerError:
        k = a // W
        return CorruptLedgerError(
            f"rows {a}..{b - 1} (lines {a + 1}..{b} of {JSONL_KEY}) do not match the signed checkpoint "
            f"(tree size {self.size}): they agree with level-0 tile {tiles.tile_path(0, k)}, which disagrees "
            f"with the signed tree (a row and the tile were changed); {_SEE_ALL}",
            key=tiles.tile_path(0, k),
            line=a + 1,
            index=a,
        )


def verified_lines(ledger: Ledger, start: int, stop: int, lines: Iterable[bytes]) -> Iterator[bytes]:
    """``lines`` (the stored lines of leaves ``[start, stop)``), each handed out only after the
    next one was read, and the last only after the recomputed root equals the signed root."""
    check = TreeCheck(ledger, start, stop)
    sha = _sha256
    held: bytes | None = None
    try:
        for line in lines:
            check.feed((sha(b"\x00" + line).digest(),))
            if check.fed % W == 0:
                check.confirm()
            if held is not None:
                yield held
            held = line
    except CorruptLedgerError as e:
        raise check.diagnose(e) from None
    check.finish()
    if held is not None:
        yield held


def verified_blocks(ledger: Ledger, blocks: Iterable[B], data_of: Callable[[B], bytes]) -> Iterator[tuple[B, bytes]]:
    """Blocks of complete lines (each ending with ``\\n``) of leaves ``[0, size)``, with their
    leaf hashes joined; the last block only after the recomputed root equals the signed root."""
    check = TreeCheck(ledger, 0, ledger.size)
    sha = _sha256
    held: tuple[B, bytes] | None = None
    try:
        for block in blocks:
            lines = data_of(block).split(b"\n")
            lines.pop()  # the empty string after the last newline
            hashes = [sha(b"\x00" + line).digest() for line in lines]  # RFC 9162 §2.1.1
            del lines
            check.feed(hashes)
            check.confirm()
            if held is not None:
                yield held
            held = (block, b"".join(hashes))
    except CorruptLedgerError as e:
        raise check.diagnose(e) from None
    check.finish()
    if held is not None:
        yield held


# ------------------------------------------------------- rows a mirror named


def lines_checked_against(ledger: Ledger, leaves: Sequence[int], leaf_hashes: Sequence[bytes] | None) -> list[bytes]:
    """The stored lines of ``leaves`` (ascending), located by the commit index and read in a
    few large reads; each line's leaf hash must equal ``leaf_hashes[k]``, the hash a source
    bound to the signed checkpoint gives for that leaf (the current mirror's ``leaf_hash``
    column); ``leaf_hashes`` None skips the check (``--unverified``).

    A line that does not match is proven against the tiles (:func:`proven_entry`), so the
    error names the row when the row was changed and the mirror when the row is the signed one.
    """
    located = ledger.index.at_many(leaves)
    out: list[bytes] = []
    k = 0
    n = len(leaves)
    while k < n:
        first = located.get(leaves[k])
        if first is None:
            raise CorruptLedgerError(
                f"commit index has no entry for leaf {leaves[k]}; run `kfm rebuild`", key=INDEX_FILE, index=leaves[k]
            )
        # One read for a run of rows close together in the file (at most 8 MiB, gaps under 64 KiB).
        j, end = k + 1, first.offset + first.length
        while j < n:
            e = located.get(leaves[j])
            if e is None or not end <= e.offset <= end + (64 << 10) or e.offset + e.length - first.offset > (8 << 20):
                break
            end = e.offset + e.length
            j += 1
        span = ledger._jsonl.read(first.offset, end - first.offset)
        for leaf in leaves[k:j]:
            e = located[leaf]
            out.append(span[e.offset - first.offset : e.offset - first.offset + e.length])
        k = j
    if leaf_hashes is not None:
        sha = _sha256
        for leaf, line, expected in zip(leaves, out, leaf_hashes):
            if sha(b"\x00" + line).digest() != expected:
                proven_entry(ledger, leaf, line)  # raises naming the row when the row was changed
                raise CorruptLedgerError(
                    f"the mirror's leaf hash for row {leaf} is not the signed row's, though its metadata names "
                    f"the current checkpoint: the mirror was modified; run "
                    f"`{mirror_regenerate_command(ledger.mirror_file)}` to regenerate it (or use --source jsonl)",
                    key=mirror_file_name(ledger.mirror_file),  # the file read: --mirror-file's, else the own
                    index=leaf,
                )
    return out
