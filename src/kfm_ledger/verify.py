"""Streaming verification of a whole ledger (``kfm verify``).

One pass over the JSONL, with memory that does not grow with it:

* every stored checkpoint (``checkpoints/<size>`` and ``checkpoint``) is a
  signed note that verifies with the ledger's key, for this origin;
* every row follows the schema, is stored canonically, fits the entry limit,
  has a unique lakeFS commit (checked in a temporary on-disk SQLite table, not
  a Python set) and a ``created_at`` that never goes backwards;
* the tree recomputed from the rows has, at every signed size, the signed root
  (RFC 9162 §2.1.1 via a compact range);
* every tile (c2sp.org/tlog-tiles) equals the hashes recomputed from the rows;
* the commit index points each commit at its own row;
* with ``since``: a checkpoint saved earlier is signed by the log and the
  ledger extends it (same root at its size, and an RFC 9162 §2.1.4 consistency
  proof built from the tiles verifies) — the CI append-only rule;
* the Parquet mirror, when one exists, matches a regeneration.

Every failure is collected with where it is (line number, checkpoint size,
tile path); the report is OK only when there is none.
"""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import dataclass, field
from typing import Callable

from . import merkle, schema, tiles
from .checkpoint import open_checkpoint
from .errors import KfmError, SchemaError
from .ledger import (
    CHECKPOINT_KEY,
    CHECKPOINTS_PREFIX,
    JSONL_KEY,
    MIRROR_KEY,
    PENDING_KEY,
    Ledger,
    split_lines,
)
from .note import Verifier

Progress = Callable[[int, int], None]  #: (bytes read, total bytes)


@dataclass(frozen=True)
class Failure:
    """One thing that did not verify, and where."""

    where: str  #: "line 12", "checkpoint 40", "tile tile/0/000", "since", "mirror", "index"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class VerifyReport:
    """What ``verify_ledger`` checked and found."""

    origin: str
    size: int
    root: bytes
    rows_checked: int = 0
    checkpoints_checked: int = 0
    tiles_checked: int = 0
    uncovered_rows: int = 0
    torn_bytes: int = 0
    since_size: int | None = None
    mirror_checked: bool = False
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures_truncated: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, where: str, message: str, limit: int) -> None:
        if len(self.failures) < limit:
            self.failures.append(Failure(where, message))
        else:
            self.failures_truncated += 1

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "rows_checked": self.rows_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "tiles_checked": self.tiles_checked,
            "uncovered_rows": self.uncovered_rows,
            "torn_bytes": self.torn_bytes,
            "since_size": self.since_size,
            "mirror_checked": self.mirror_checked,
            "failures": [{"where": f.where, "message": f.message} for f in self.failures],
            "failures_not_shown": self.failures_truncated,
            "notes": list(self.notes),
        }


class _TileChecker:
    """Compares every stored tile with the hashes recomputed from the rows.

    Every object under ``tile/`` is listed first (a few thousand at 1M rows);
    while the rows stream, a tile-level buffer is compared with each stored
    width of that tile as it reaches it, byte for byte and length for length.
    What is left unchecked at the end lies beyond the signed tree.
    """

    def __init__(self, ledger: Ledger, report: VerifyReport, limit: int) -> None:
        self.ledger = ledger
        self.report = report
        self.limit = limit
        self.buffers: dict[int, list[bytes]] = {}
        self.present: dict[tuple[int, int], dict[int, str]] = {}
        self.checked: set[str] = set()
        self.mismatched_leaves: list[tuple[int, str]] = []  # (leaf, tile key) from level-0 tiles
        self.tile_failures: list[tuple[str, str]] = []
        for key in ledger.storage.list("tile/"):
            if key.startswith("tile/entries/"):
                continue
            try:
                level, index, width = tiles.parse_tile_path(key)
            except KfmError as e:
                report.fail(f"tile {key}", f"not a tile path: {e}", limit)
                continue
            self.present.setdefault((level, index), {})[width] = key

    def _compare(self, level: int, index: int, hashes: list[bytes], key: str) -> None:
        self.checked.add(key)
        self.report.tiles_checked += 1
        try:
            stored = self.ledger.storage.read(key)
        except KfmError as e:
            self.tile_failures.append((f"tile {key}", str(e)))
            return
        want = b"".join(hashes)
        if stored == want:
            return
        if len(stored) != len(want):
            self.tile_failures.append(
                (f"tile {key}", f"{len(stored)} bytes, want {len(want)} ({len(hashes)} hashes of 32 bytes)")
            )
            return
        first = next(k for k in range(len(hashes)) if stored[32 * k : 32 * k + 32] != hashes[k])
        if level == 0:
            for k in range(len(hashes)):
                if stored[32 * k : 32 * k + 32] != hashes[k] and len(self.mismatched_leaves) < self.limit:
                    self.mismatched_leaves.append((index * tiles.TILE_WIDTH + k, key))
        self.tile_failures.append(
            (
                f"tile {key}",
                f"hash {first} (tree level {level * tiles.TILE_HEIGHT}, node "
                f"{index * tiles.TILE_WIDTH + first}) differs from the one recomputed from the rows",
            )
        )

    def add(self, nodes: list[tuple[tuple[int, int], bytes]]) -> None:
        for (level, index), node in nodes:
            if level % tiles.TILE_HEIGHT:
                continue
            tile_level = level // tiles.TILE_HEIGHT
            buf = self.buffers.setdefault(tile_level, [])
            buf.append(node)
            width = len(buf)
            stored = self.present.get((tile_level, index // tiles.TILE_WIDTH))
            if stored is not None and width in stored:
                self._compare(tile_level, index // tiles.TILE_WIDTH, buf, stored[width])
            if width == tiles.TILE_WIDTH:
                if stored is None or width not in stored:
                    key = tiles.tile_path(tile_level, index // tiles.TILE_WIDTH)
                    self.tile_failures.append((f"tile {key}", "missing; run `kfm rebuild`"))
                buf.clear()

    def finish(self, size: int, *, rows_changed: bool, beyond_ok: bool) -> None:
        for level, index, width in tiles.tiles_for_size(size):
            if width < tiles.TILE_WIDTH and width not in self.present.get((level, index), {}):
                key = tiles.tile_path(level, index, width)
                self.tile_failures.append((f"tile {key}", "missing; run `kfm rebuild`"))
        if rows_changed and self.mismatched_leaves:
            # The rows do not give the signed roots: the rows changed, not the tiles.
            for leaf, key in self.mismatched_leaves:
                self.report.fail(
                    f"line {leaf + 1}",
                    f"this row is not the one the log signed: its leaf hash differs from {key}",
                    self.limit,
                )
        else:
            for where, message in self.tile_failures:
                self.report.fail(where, message + ("" if "rebuild" in message else "; run `kfm rebuild`"), self.limit)
        unchecked = sorted(
            key for widths in self.present.values() for key in widths.values() if key not in self.checked
        )
        for key in unchecked:
            if beyond_ok:
                self.report.notes.append(f"tile {key} lies beyond the signed tree: left by the interrupted append")
            else:
                self.report.fail(f"tile {key}", f"lies beyond the signed tree (size {size}); run `kfm rebuild`", self.limit)


def verify_ledger(
    ledger: Ledger,
    *,
    since: bytes | None = None,
    since_verifier: Verifier | None = None,
    check_mirror: bool = True,
    progress: Progress | None = None,
    max_failures: int = 200,
) -> VerifyReport:
    """Verify everything about a ledger in one streaming pass; never raises for what it finds."""
    report = VerifyReport(origin=ledger.origin, size=ledger.size, root=ledger.root)
    limit = max_failures
    storage = ledger.storage
    try:
        pending_append = ledger.pending_append()
    except KfmError as e:
        report.fail(PENDING_KEY, str(e), limit)
        pending_append = None
    if pending_append is not None:
        report.notes.append(
            f"an append of rows {pending_append.old_size}..{pending_append.new_size - 1} was interrupted; "
            "the next writer (or `kfm recover`) "
            + (
                "publishes its signed checkpoint"
                if storage.exists(f"{CHECKPOINTS_PREFIX}{pending_append.new_size}")
                else "removes it (it was never signed or acknowledged)"
            )
        )

    # -- signed checkpoints ------------------------------------------------
    expected_roots: dict[int, bytes] = {}
    sizes: list[int] = []
    for key in storage.list(CHECKPOINTS_PREFIX):
        name = key[len(CHECKPOINTS_PREFIX) :]
        if name.isdigit() and str(int(name)) == name:
            sizes.append(int(name))
        else:
            report.fail(key, "not a checkpoint name (a canonical decimal tree size)", limit)
    for size in sorted(sizes):
        where = f"checkpoint {size}"
        try:
            signed = open_checkpoint(
                storage.read(f"{CHECKPOINTS_PREFIX}{size}"), [ledger.verifier], origin=ledger.origin
            )
        except KfmError as e:
            report.fail(where, str(e), limit)
            continue
        report.checkpoints_checked += 1
        if signed.checkpoint.size != size:
            report.fail(where, f"stored as size {size} but says size {signed.checkpoint.size}", limit)
            continue
        if size > ledger.size:
            if pending_append is None or pending_append.new_size != size:
                report.fail(
                    where,
                    f"the log signed size {size} but the published checkpoint is older (size {ledger.size}): "
                    "`checkpoint` was replaced by an older one",
                    limit,
                )
            continue
        expected_roots[size] = signed.checkpoint.root
    if ledger.size not in expected_roots and ledger.size not in sizes:
        report.fail(
            f"checkpoint {ledger.size}",
            f"the latest checkpoint is not kept as {CHECKPOINTS_PREFIX}{ledger.size}",
            limit,
        )
    elif ledger.size in expected_roots and expected_roots[ledger.size] != ledger.root:
        report.fail(CHECKPOINT_KEY, f"differs from {CHECKPOINTS_PREFIX}{ledger.size}", limit)
    expected_roots[ledger.size] = ledger.root

    since_root: bytes | None = None
    if since is not None:
        try:
            old = open_checkpoint(since, [since_verifier or ledger.verifier], origin=ledger.origin)
        except KfmError as e:
            report.fail("since", f"the saved checkpoint does not verify: {e}", limit)
        else:
            report.since_size = old.checkpoint.size
            since_root = old.checkpoint.root
            if old.checkpoint.size > ledger.size:
                report.fail(
                    "since",
                    f"the saved checkpoint has size {old.checkpoint.size} but the ledger's signed size "
                    f"is {ledger.size}: the ledger lost rows (append-only violated)",
                    limit,
                )
                since_root = None
            elif old.checkpoint.size in expected_roots and expected_roots[old.checkpoint.size] != since_root:
                report.fail(
                    "since",
                    f"the log signed two different roots for size {old.checkpoint.size}: "
                    "a split view (append-only violated)",
                    limit,
                )

    # -- one pass over the rows --------------------------------------------
    log = storage.append_log(JSONL_KEY)
    total = log.size()
    crange = merkle.CompactRange()
    tile_checker = _TileChecker(ledger, report, limit)
    seen = sqlite3.connect("")  # a temporary on-disk database: memory stays bounded
    seen.execute("CREATE TABLE c (commit_id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
    index = ledger.stored_index()
    if index is not None and index.size() < ledger.size:
        report.notes.append(
            f"the commit index covers {index.size()} of {ledger.size} rows (derived data: it is caught up "
            "on the next lookup, or by `kfm rebuild`); not checked"
        )
        index = None
    batch: list[tuple[str, int, int, int]] = []  # (commit, leaf, offset, length)
    last_created = None
    last_created_text = ""
    n = 0
    offset = 0
    signed_end = 0 if ledger.size == 0 else -1
    roots_mismatch = False

    def flush_commits() -> None:
        if not batch:
            return
        before = seen.total_changes
        seen.executemany("INSERT OR IGNORE INTO c VALUES (?, ?)", [(c, leaf) for c, leaf, _, _ in batch])
        if seen.total_changes - before != len(batch):
            # Some commit was seen before: find which, row by row (rare).
            for commit, leaf, _, _ in batch:
                first = seen.execute("SELECT line FROM c WHERE commit_id = ?", (commit,)).fetchone()[0]
                if first != leaf:
                    report.fail(
                        f"line {leaf + 1}",
                        f"$.lakefs_commit: {commit!r} already appears at line {first + 1} (one row per lakeFS commit)",
                        limit,
                    )
        if index is not None:
            found = index.lookup_entries([c for c, _, _, _ in batch])
            for commit, leaf, at, length in batch:
                e = found.get(commit)
                if e is None or (e.leaf, e.offset, e.length) != (leaf, at, length):
                    got = "nothing" if e is None else f"index {e.leaf}, bytes {e.offset}+{e.length}"
                    report.fail(
                        "index",
                        f"the commit index maps {commit!r} to {got}, but its row is index {leaf}, bytes "
                        f"{at}+{length}; run `kfm rebuild`",
                        limit,
                    )
        batch.clear()

    for line, complete in split_lines(log.iter_chunks(0)):
        if not complete:
            report.torn_bytes = len(line)
            break
        if n >= ledger.size:
            # Rows after the signed tree: an interrupted append's, or not kfm's.
            report.uncovered_rows += 1
            n += 1
            offset += len(line) + 1
            continue
        where = f"line {n + 1}"
        try:
            row = schema.decode_canonical_line(line)
        except SchemaError as e:
            report.fail(where, str(e), limit)
        else:
            created = schema.created_at_datetime(row)
            if last_created is not None and created < last_created:
                report.fail(
                    where,
                    f"$.created_at: {row.created_at} is earlier than the previous row's {last_created_text}",
                    limit,
                )
            last_created, last_created_text = created, row.created_at
            batch.append((row.lakefs_commit, n, offset, len(line)))
            if len(batch) >= 2000:
                flush_commits()
        tile_checker.add(crange.append(merkle.leaf_hash(line)))
        if crange.size in expected_roots and crange.root() != expected_roots[crange.size]:
            roots_mismatch = True
            report.fail(
                f"checkpoint {crange.size}",
                f"the tree recomputed from rows 1..{crange.size} has root "
                f"{base64.b64encode(crange.root()).decode()}, the signed root is "
                f"{base64.b64encode(expected_roots[crange.size]).decode()}: rows were changed",
                limit,
            )
        if since_root is not None and crange.size == report.since_size and crange.root() != since_root:
            report.fail(
                "since",
                f"the ledger's first {crange.size} rows do not hash to the saved checkpoint's root: "
                "history was rewritten (append-only violated)",
                limit,
            )
        n += 1
        offset += len(line) + 1
        if n == ledger.size:
            signed_end = offset
        if progress is not None and n % 65536 == 0:
            progress(offset, total)
    flush_commits()
    seen.close()
    log.close()
    if progress is not None:
        progress(total, total)
    report.rows_checked = min(n, ledger.size)

    if signed_end < 0:
        report.fail(
            JSONL_KEY,
            f"holds {n} complete rows but the signed checkpoint covers {ledger.size}: rows were removed",
            limit,
        )
    else:
        tile_checker.finish(ledger.size, rows_changed=roots_mismatch, beyond_ok=pending_append is not None)
        extra = total - signed_end
        if extra and pending_append is None:
            report.fail(
                JSONL_KEY,
                f"{extra} byte(s) after the last signed row (from byte {signed_end}: {report.uncovered_rows} "
                f"complete line(s), {report.torn_bytes} torn byte(s)) that no interrupted append accounts "
                "for; writers refuse to run until they are removed",
                limit,
            )
        elif extra and pending_append is not None and pending_append.old_end != signed_end:
            report.fail(
                PENDING_KEY,
                f"says the interrupted append began at byte {pending_append.old_end}, but the signed rows end "
                f"at byte {signed_end}",
                limit,
            )

    # -- append-only proof against a saved checkpoint ----------------------
    if since_root is not None and report.since_size is not None and not any(
        f.where == "since" for f in report.failures
    ):
        try:
            if 0 < report.since_size <= ledger.size:
                proof = ledger.consistency_proof(report.since_size, ledger.size)
                merkle.verify_consistency(report.since_size, ledger.size, since_root, ledger.root, proof)
            report.notes.append(
                f"the ledger extends the saved checkpoint of size {report.since_size} "
                f"(consistency proof {report.since_size} -> {ledger.size} verified)"
            )
        except KfmError as e:
            report.fail("since", f"consistency proof {report.since_size} -> {ledger.size}: {e}", limit)

    # -- the Parquet mirror -------------------------------------------------
    if check_mirror and storage.exists(MIRROR_KEY):
        from .mirror import verify_mirror

        report.mirror_checked = True
        try:
            problems = verify_mirror(ledger)
        except KfmError as e:
            problems = [str(e)]
        for problem in problems:
            report.fail("mirror", problem, limit)
    return report
