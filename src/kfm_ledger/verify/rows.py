"""The row pass: one streaming pass over the signed rows, validated on every core
(:mod:`kfm_ledger.log.bulk`), folded into the Merkle tree, fed to the tile and commit checks."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

from kfm_ledger import schema
from kfm_ledger.core import merkle
from kfm_ledger.log import bulk

from ..storage.base import AppendLog
from . import access, since
from .context import Run
from .index_check import CommitChecker, RowFacts
from .tiles import TileChecker

Progress = Callable[[int, int], None]  #: (bytes read, total bytes)


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

    def _results(self) -> Iterator[bulk.ChunkResult]:
        parallel = self.signed_end >= bulk.PARALLEL_THRESHOLD
        local = access.jsonl_local_path(self.run.ledger)
        if local is not None and self.signed_end:
            # The workers read their byte ranges of the file themselves.
            return bulk.validate_stored_file(local, self.signed_end, parallel=parallel)
        chunks = bulk.iter_line_chunks(self.log.iter_chunks(0, end=self.signed_end), bulk.CHUNK_BYTES)
        return bulk.map_ordered(bulk.validate_stored_chunk, chunks, parallel=parallel)

    def run_pass(self) -> None:
        for result in self._results():
            self._check_chunk(result)
            if self.progress is not None:
                self.progress(self.offset, self.total)

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
        # Offsets of the valid rows, for the index check: recomputed from every line's length.
        batch: list[RowFacts] = []
        valid = dict(zip(result.lines, result.commits))
        leaf_hashes = result.leaf_hashes
        for k in range(result.rows):
            commit = valid.get(result.first_line + k)
            length = result.line_lengths[k]
            self._add_leaf(leaf_hashes[32 * k : 32 * k + 32])
            if commit is not None:
                batch.append((commit, self.rows, self.offset, length))
            else:
                self.commits.invalid_row(self.rows)
            self.rows += 1
            self.offset += length + 1
        self.commits.check(batch)

    def _add_leaf(self, leaf: bytes) -> None:
        """Fold one leaf hash into the tree; compare the root at every signed size."""
        crange = self.crange
        self.tile_checker.add(crange.append(leaf))
        size = crange.size
        expected = self.run.expected_roots
        if size in expected and crange.root() != expected[size]:
            self.roots_mismatch = True
            self.run.fail(
                f"checkpoint {size}",
                f"the tree recomputed from rows 1..{size} has root "
                f"{base64.b64encode(crange.root()).decode()}, the signed root is "
                f"{base64.b64encode(expected[size]).decode()}: rows were changed",
            )
        since.check_prefix_root(self.run, size, crange.root())
