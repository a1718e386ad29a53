"""The row pass: one streaming pass over the signed rows, validated on every core
(:mod:`kfm_ledger.log.bulk`), folded into the Merkle tree, fed to the tile and commit checks."""

from __future__ import annotations

import base64
import bisect
import functools
import itertools
import os
import re
from collections.abc import Iterator

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.log import bulk
from kfm_ledger.log.progress import Progress  # here: (bytes of the JSONL read, its size), per chunk

from ..log.layout import JSONL_KEY
from ..schema.codec import legacy_spelling_of
from ..storage.base import AppendLog
from ..storage.local import open_regular_path
from . import access, since
from .context import Run
from .index_check import CommitChecker, RowFacts
from .tiles import TileChecker


def find_signed_end(log: AppendLog, size: int) -> tuple[int, int]:
    """Byte offset just after line ``size`` of the log, by counting newlines; (-1, lines) if short."""
    if size == 0:
        return 0, 0
    offset = 0
    lines = 0
    for chunk in log.iter_chunks(0):
        count = chunk.count(b"\n")
        if lines + count >= size:
            pos = -1
            for _ in range(size - lines):
                pos = chunk.index(b"\n", pos + 1)
            return offset + pos + 1, size
        lines += count
        offset += len(chunk)
    return -1, lines


def _inside(sizes: list[int], low: int, high: int) -> bool:
    """Whether a size of the sorted ``sizes`` lies strictly between ``low`` and ``high``."""
    k = bisect.bisect_right(sizes, low)
    return k < len(sizes) and sizes[k] < high


#: A created_at whose fraction ends in a zero (an instant's earlier spellings).
_LEGACY_CREATED = re.compile(r"\.[0-9]*0Z")


class RowPass:
    """Streams the rows ``[0, signed_end)`` once; afterwards ``rows`` is how many there were and
    ``roots_mismatch`` whether the tree they give differs from a signed root."""

    def __init__(
        self,
        run: Run,
        log: AppendLog,
        *,
        signed_end: int,
        total: int,
        tile_checker: TileChecker,
        commits: CommitChecker,
        progress: Progress | None,
    ) -> None:
        self.run = run
        self.log = log
        self.signed_end = signed_end
        self.total = total
        self.tile_checker = tile_checker
        self.commits = commits
        self.progress = progress
        self.crange = merkle.CompactRange()
        self.previous: tuple[int, str] | None = None  # (line, created_at) of the last valid row so far
        self.roots_mismatch = False
        self.offset = 0
        self.rows = 0
        self.legacy = 0  #: valid rows with a spelling today's input rules would canonicalize
        self.legacy_first: tuple[int, str] | None = None  #: (line, what) of the first

    def _results(self) -> Iterator[bulk.ChunkResult]:
        parallel = self.signed_end >= bulk.PARALLEL_THRESHOLD
        local = access.jsonl_local_path(self.run.ledger)
        if local is not None and self.signed_end:
            return self._local_results(local, parallel)
        chunks = bulk.iter_line_chunks(self.log.iter_chunks(0, end=self.signed_end), bulk.CHUNK_BYTES)
        return bulk.map_ordered(bulk.validate_stored_chunk, chunks, parallel=parallel)

    def _local_results(self, local: str, parallel: bool) -> Iterator[bulk.ChunkResult]:
        """The workers read their byte ranges of the file themselves.  It is opened here once,
        without following a link and only if a regular file (StorageError naming it); on Linux
        the workers open that descriptor's ``/proc/self/fd/N``, the very file checked, whatever
        is put at the JSONL's path meanwhile."""
        fd = open_regular_path(local, JSONL_KEY)
        try:
            path = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else local
            yield from bulk.validate_stored_file(path, self.signed_end, parallel=parallel)
        finally:
            os.close(fd)

    def run_pass(self) -> None:
        for result in self._results():
            self._check_chunk(result)
            self._find_legacy(result)
            if self.progress is not None:
                self.progress(self.offset, self.total)
        if self.legacy:
            first_line, what = self.legacy_first  # type: ignore[misc]
            self.run.note(
                f"{self.legacy} stored row(s) spell lakefs_commit or created_at as rows appended before today's "
                f"input rules (one case per commit, one spelling per instant) could; first at line {first_line}: "
                f"{what}. They are read and proven as stored; a new row cannot use these spellings "
                "(docs/formats.md)"
            )

    def _find_legacy(self, result: bulk.ChunkResult) -> None:
        """Count the valid rows with a legacy spelling (schema.codec.legacy_spelling): a scan of
        the chunk's joined text first, so a chunk without any costs two C-level searches."""
        commits, created = result.commit_text, result.created_text
        if commits == commits.lower() and _LEGACY_CREATED.search(created) is None:
            return
        for k, (commit, created_at) in enumerate(zip(result.commits, result.created_at)):
            what = legacy_spelling_of(commit, created_at)
            if what is not None:
                self.legacy += 1
                if self.legacy_first is None:
                    self.legacy_first = (result.lines[k], what)

    def _check_chunk(self, result: bulk.ChunkResult) -> None:
        run = self.run
        for p in result.problems:
            run.fail(f"line {p.line}", f"{p.path}: {p.message}")
        previous = self.previous
        if result.first_created is not None and previous is not None:
            if schema.parse_created_at(result.first_created[1]) < schema.parse_created_at(previous[1]):
                run.fail(
                    f"line {result.first_created[0]}",
                    f"$.created_at: {result.first_created[1]} is earlier than the previous row's {previous[1]}",
                )
        if result.last_created is not None:
            self.previous = result.last_created
        # Every line stored (valid or not) is a leaf; offsets come from every line's length.
        self._fold_leaves(result.leaf_hashes, result.rows)
        first, lengths = self.rows, result.line_lengths
        offsets = list(itertools.accumulate(map((1).__add__, lengths), initial=self.offset))
        self.offset = offsets.pop()
        self.rows = first + result.rows
        if len(result.lines) == result.rows:  # every line a valid row (the usual chunk)
            self.commits.check_consecutive(first, result.commits, offsets, lengths, result.created_at)
            return
        # The valid rows' facts for the index check, row by row; the others have no commit to check.
        batch: list[RowFacts] = []
        valid = dict(zip(result.lines, zip(result.commits, result.created_at)))
        for k in range(result.rows):
            fields = valid.get(result.first_line + k)
            if fields is not None:
                batch.append((fields[0], first + k, offsets[k], lengths[k], fields[1]))
            else:
                self.commits.invalid_row(first + k)
        self.commits.check(batch)

    def _fold_leaves(self, leaf_hashes: bytes, count: int) -> None:
        """Fold ``count`` leaf hashes into the tree and the tile checks, checking the root at each
        size that has one to compare with (a signed size, the ``--since`` size).  Each whole
        level-0 tile enters as one subtree (RFC 9162 §2.1.1: the 255 nodes above its leaves hashed
        level by level, c2sp.org/tlog-tiles' tile), unless such a size falls inside it; the other
        leaves one by one."""
        run = self.run
        crange = self.crange
        checker = self.tile_checker
        expected_roots = run.expected_roots
        since_size = run.report.since_size if run.since_root is not None else None
        stops = self._root_sizes
        width, height = tiles.TILE_WIDTH, tiles.TILE_HEIGHT
        k = 0
        while k < count:
            size = crange.size
            if size % width == 0 and count - k >= width and not _inside(stops, size, size + width):
                tile = leaf_hashes[32 * k : 32 * (k + width)]
                levels = tiles.expand_tile(tile)
                checker.add_level0_tile(size // width, tile, levels)
                checker.add(crange.append_subtree(height, levels[height]))
                k += width
            else:
                checker.add(crange.append(leaf_hashes[32 * k : 32 * k + 32]))
                k += 1
            size = crange.size
            if size in expected_roots:
                self._check_signed_root(size)
            if size == since_size:
                since.check_prefix_root(run, size, crange.root())

    @functools.cached_property
    def _root_sizes(self) -> list[int]:
        """The sizes at which the pass checks a root, sorted (for :func:`_inside`)."""
        sizes = set(self.run.expected_roots)
        if self.run.since_root is not None and self.run.report.since_size is not None:
            sizes.add(self.run.report.since_size)
        return sorted(sizes)

    def _check_signed_root(self, size: int) -> None:
        """At a signed size: the tree of the rows so far must have the root the log signed."""
        root = self.crange.root()
        expected = self.run.expected_roots[size]
        if root != expected:
            self.roots_mismatch = True
            self.run.rows_changed = True
            self.run.fail(
                f"checkpoint {size}",
                f"the tree recomputed from rows 1..{size} has root "
                f"{base64.b64encode(root).decode()}, the signed root is "
                f"{base64.b64encode(expected).decode()}: rows were changed; restore the signed rows' original bytes "
                "from a backup or another copy of the ledger (`kfm rebuild` only rebuilds derived data and "
                "cannot repair signed rows)",
            )
