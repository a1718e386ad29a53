"""The commit checks of the row pass: one row per lakeFS commit, and the commit index
pointing each commit at its own row."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..errors import KfmError
from ..index import CommitIndex
from ..index_seal import buckets_of
from .context import Run

#: (lakeFS commit, leaf, byte offset, line length, created_at) of one valid row
RowFacts = tuple[str, int, int, int, str]


def open_index(run: Run) -> CommitIndex | None:
    """The commit index to check every row against, brought up to date first when it is behind
    or does not open (derived data: rebuilt from the signed rows); None, with a failure saying
    why, when it cannot be checked (hardening issue: verify fails, not notes, then)."""
    ledger = run.ledger
    index = ledger.stored_index()
    if index is not None and index.size() > ledger.size and run.pending_append is None:
        run.note(
            f"the commit index lists {index.size()} rows, more than the {ledger.size} signed: the extra entries "
            "are dropped by the next writer or `kfm rebuild`, and no answer uses them"
        )
    if index is not None and index.size() >= ledger.size:
        return index
    why = "does not open" if index is None else f"covers {index.size()} of {ledger.size} rows"
    try:
        # Re-entrant when verify holds the writer lock; never waits for another writer.
        with ledger.writer_lock(wait=0):
            index = ledger.index
    except (KfmError, OSError, sqlite3.Error) as e:
        run.fail("index", f"the commit index {why} and could not be brought up to date to be checked: {e}")
        return None
    run.note(f"the commit index {why}: it was brought up to date from the signed rows, then checked")
    return index


class CommitChecker:
    """One row per commit, and the index pointing at each row.

    While the index matches every row, uniqueness is one range scan of it by
    leaf: its commit column is UNIQUE, so rows that each match their own index
    entry have distinct commits.  From the first row that does not match (a row
    deleted, inserted or changed; a stale index), the index says nothing about
    repeats: the rows before it (which matched) are loaded into a temporary
    table, which finds repeats from then on.
    """

    def __init__(self, run: Run, index: CommitIndex | None) -> None:
        self.run = run
        self.index = index
        self.seen = sqlite3.connect("")  # a temporary on-disk database: memory stays bounded
        self.seen.execute("CREATE TABLE c (commit_id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        self.mismatches = 0
        self.first_mismatch = ""
        self.unique_by_index = index is not None  # False once the index is found not to match the rows
        self.invalid_leaves: set[int] = set()  # rows that failed validation (not compared with the index)

    def invalid_row(self, leaf: int) -> None:
        """Row ``leaf`` failed validation: it has no commit to check."""
        if self.unique_by_index:
            self.invalid_leaves.add(leaf)

    def check(self, batch: list[RowFacts]) -> None:
        if not batch:
            return
        rest = batch
        if self.index is not None:
            rest = self._compare_with_index(self.index, batch)
            if self.unique_by_index:
                return
        self._find_repeats(rest)

    def check_consecutive(
        self, first: int, commits: list[str], offsets: list[int], lengths: Sequence[int], created: list[str]
    ) -> None:
        """:meth:`check` of the valid rows at leaves ``first``, ``first + 1``, ... given column by
        column (the usual chunk: every row valid).  While the index matches every row, its entries
        for those leaves are compared with them whole, column by column (list equality, in C);
        otherwise, or at any difference, the rows go through :meth:`check`, which finds the first
        mismatch and names it."""
        count = len(commits)
        if not count:
            return
        if self.index is not None and self.unique_by_index:
            stored = self.index.range_facts(first, first + count)
            if len(stored) == count:
                columns = list(map(list, zip(*stored)))
                if (
                    columns[0] == commits
                    and columns[1] == list(range(first, first + count))
                    and columns[2] == offsets
                    and columns[3] == list(lengths)
                    and columns[4] == created
                    and columns[5] == buckets_of(commits)
                ):
                    return
        self.check(list(zip(commits, range(first, first + count), offsets, lengths, created)))

    def _compare_with_index(self, index: CommitIndex, batch: list[RowFacts]) -> list[RowFacts]:
        """Compare the batch with the index; return the rows still to check for repeats."""
        rest = batch
        first, stop = batch[0][1], batch[-1][1] + 1
        entries = {e.leaf: e for e in index.range(first, stop)}
        # Each entry's seal bucket (index_seal.bucket_of of its commit) is checked too.
        buckets = dict(index.range_buckets(first, stop))
        expected = dict(zip((f[1] for f in batch), buckets_of(f[0] for f in batch)))
        for k, (commit, leaf, at, length, created_at) in enumerate(batch):
            e = entries.get(leaf)
            if (
                e is not None
                and (e.lakefs_commit, e.offset, e.length, e.created_at) == (commit, at, length, created_at)
                and buckets.get(leaf) == expected[leaf]
            ):
                continue
            self.mismatches += 1
            if self.mismatches == 1:  # the first one, with the evidence; then a count
                got = (
                    "nothing" if e is None
                    else f"{e.lakefs_commit!r}, bytes {e.offset}+{e.length}, created_at {e.created_at!r}, "
                    f"bucket {buckets.get(leaf)!r}"
                )
                self.first_mismatch = (
                    f"the commit index has {got} at index {leaf}, but the row there is {commit!r}, "
                    f"bytes {at}+{length}, created_at {created_at!r} (bucket {expected[leaf]})"
                )
            if self.unique_by_index:
                self.unique_by_index = False
                self._load_matched(index, leaf)
                rest = batch[k:]
        return rest

    def _load_matched(self, index: CommitIndex, leaf: int) -> None:
        """The valid rows of [0, leaf) all matched the index: their commits are its entries
        (an invalid row was never compared, so its entry is left out)."""
        for start in range(0, leaf, 65536):
            self.seen.executemany(
                "INSERT OR IGNORE INTO c VALUES (?, ?)",
                [
                    (x.lakefs_commit, x.leaf)
                    for x in index.range(start, min(leaf, start + 65536))
                    if x.leaf not in self.invalid_leaves
                ],
            )

    def _find_repeats(self, rest: list[RowFacts]) -> None:
        seen = self.seen
        before = seen.total_changes
        seen.executemany("INSERT OR IGNORE INTO c VALUES (?, ?)", [(c, leaf) for c, leaf, _, _, _ in rest])
        if seen.total_changes - before != len(rest):
            # Some commit was seen before: find which, row by row (rare).
            for commit, leaf, _, _, _ in rest:
                first = seen.execute("SELECT line FROM c WHERE commit_id = ?", (commit,)).fetchone()[0]
                if first != leaf:
                    self.run.fail(
                        f"line {leaf + 1}",
                        f"$.lakefs_commit: {commit!r} already appears at line {first + 1} (one row per lakeFS commit)",
                    )

    def close(self) -> None:
        self.seen.close()

    def finish(self) -> None:
        """Report the index mismatches (the first with its evidence, then a count)."""
        if self.mismatches:
            more = f" (and {self.mismatches - 1} more row(s))" if self.mismatches > 1 else ""
            if self.run.rows_changed:
                # The index was built from the signed rows; the rows moved or changed since.
                advice = "; the rows changed, not the index: once the signed rows are restored it matches again"
            else:
                advice = "; run `kfm rebuild`"
            self.run.fail("index", f"{self.first_mismatch}{more}{advice}")
