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
from .ledger import CHECKPOINT_KEY, CHECKPOINTS_PREFIX, JSONL_KEY, MIRROR_KEY, Ledger, _chunked_lines
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
    """Compares the tile hashes recomputed from the rows with the stored tiles."""

    def __init__(self, ledger: Ledger, report: VerifyReport, limit: int) -> None:
        self.ledger = ledger
        self.report = report
        self.limit = limit
        self.buffers: dict[int, list[bytes]] = {}

    def _compare(self, level: int, index: int, hashes: list[bytes]) -> None:
        width = len(hashes)
        path = tiles.tile_path(level, index, width)
        self.report.tiles_checked += 1
        try:
            stored = self.ledger.read_tile(level, index, width)
        except KfmError as e:
            self.report.fail(f"tile {path}", str(e), self.limit)
            return
        want = b"".join(hashes)
        if stored[: len(want)] != want:
            first = next(
                k for k in range(width) if stored[32 * k : 32 * k + 32] != hashes[k]
            )
            self.report.fail(
                f"tile {path}",
                f"hash {first} (tree level {level * tiles.TILE_HEIGHT}, node "
                f"{index * tiles.TILE_WIDTH + first}) differs from the one recomputed from the rows; "
                "run `kfm rebuild` to recreate tiles",
                self.limit,
            )

    def add(self, nodes: list[tuple[tuple[int, int], bytes]]) -> None:
        for (level, index), node in nodes:
            if level % tiles.TILE_HEIGHT:
                continue
            tile_level = level // tiles.TILE_HEIGHT
            buf = self.buffers.setdefault(tile_level, [])
            buf.append(node)
            if len(buf) == tiles.TILE_WIDTH:
                self._compare(tile_level, index // tiles.TILE_WIDTH, buf)
                buf.clear()

    def finish(self, size: int) -> None:
        for tile_level, buf in sorted(self.buffers.items()):
            if buf:
                index = (size >> (tiles.TILE_HEIGHT * tile_level)) // tiles.TILE_WIDTH
                self._compare(tile_level, index, buf)


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
            report.notes.append(
                f"checkpoints/{size} is newer than `checkpoint` (size {ledger.size}): an append was "
                "interrupted after signing; the next writer republishes it"
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
    index = ledger.index if ledger.size else None
    pending: list[tuple[str, int]] = []
    last_created = None
    last_created_text = ""
    n = 0
    read = 0

    def flush_commits() -> None:
        if not pending:
            return
        before = seen.total_changes
        seen.executemany("INSERT OR IGNORE INTO c VALUES (?, ?)", pending)
        if seen.total_changes - before != len(pending):
            # Some commit was seen before: find which, row by row (rare).
            for commit, leaf in pending:
                first = seen.execute("SELECT line FROM c WHERE commit_id = ?", (commit,)).fetchone()[0]
                if first != leaf:
                    report.fail(
                        f"line {leaf + 1}",
                        f"$.lakefs_commit: {commit!r} already appears at line {first + 1} (one row per lakeFS commit)",
                        limit,
                    )
        if index is not None:
            signed = [(c, leaf) for c, leaf in pending if leaf < ledger.size]
            found = index.lookup_many([c for c, _ in signed])
            for commit, leaf in signed:
                if found.get(commit) != leaf:
                    report.fail(
                        "index",
                        f"the commit index maps {commit!r} to {found.get(commit)} but its row is at index {leaf}; "
                        "run `kfm rebuild`",
                        limit,
                    )
        pending.clear()

    for line, complete in _chunked_lines(log.iter_chunks(0)):
        read += len(line) + 1
        if not complete:
            report.torn_bytes = len(line)
            break
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
            pending.append((row.lakefs_commit, n))
            if len(pending) >= 5000:
                flush_commits()
        if n < ledger.size:
            tile_checker.add(crange.append(merkle.leaf_hash(line)))
            if crange.size in expected_roots and crange.root() != expected_roots[crange.size]:
                report.fail(
                    f"checkpoint {crange.size}",
                    "the tree recomputed from rows 1.."
                    f"{crange.size} has root {base64.b64encode(crange.root()).decode()}, the signed root is "
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
        if progress is not None and n % 65536 == 0:
            progress(read, total)
    flush_commits()
    seen.close()
    log.close()
    if progress is not None:
        progress(total, total)
    report.rows_checked = n

    if n < ledger.size:
        report.fail(
            JSONL_KEY,
            f"holds {n} complete rows but the signed checkpoint covers {ledger.size}: rows were removed",
            limit,
        )
    else:
        tile_checker.finish(ledger.size)
        if ledger.size == 0 and expected_roots.get(0, merkle.EMPTY_ROOT) != merkle.EMPTY_ROOT:
            report.fail("checkpoint 0", "the empty tree's root must be SHA-256 of nothing", limit)
        report.uncovered_rows = n - ledger.size
        if report.uncovered_rows:
            report.notes.append(
                f"{report.uncovered_rows} complete row(s) after the signed size {ledger.size}: an append was "
                "interrupted after writing them; `kfm recover` or the next `kfm append` integrates them"
            )
    if report.torn_bytes:
        report.notes.append(
            f"a torn last line ({report.torn_bytes} bytes without a newline) from an interrupted append; "
            "the next writer cuts it off"
        )
    if index is not None:
        indexed = index.size()
        if indexed < ledger.size:
            report.fail("index", f"the commit index has {indexed} rows, the ledger {ledger.size}; run `kfm rebuild`", limit)

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
        try:
            from .mirror import verify_mirror
        except ImportError as e:  # pragma: no cover - pyarrow is a dependency
            report.notes.append(f"mirror not checked: {e}")
        else:
            report.mirror_checked = True
            for problem in verify_mirror(ledger):
                report.fail("mirror", problem, limit)
    return report
