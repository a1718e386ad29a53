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
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.note import Verifier
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.log.checkpoint_chain import previous_signed_size
from kfm_ledger.log.expansions import expansion_record, levels_from_record

from .errors import KfmError, LockedError
from .log import bulk
from .log.layout import CHECKPOINT_KEY, CHECKPOINTS_PREFIX, EXPANSIONS_KEY, JSONL_KEY, MIRROR_KEY, PENDING_KEY
from .log.ledger import Ledger
from .storage import local_path_of

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
        self.expansions_checked = 0
        self.bad_expansions: list[int] = []
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

    def _check_expansion(self, tile_index: int, hashes: list[bytes]) -> None:
        """The stored expansion record of a full level-0 tile (derived data), if there is one."""
        record = self.ledger.read_expansion_record(tile_index)
        if record is None:
            return
        self.expansions_checked += 1
        tile = b"".join(hashes)
        if record == expansion_record(tiles.expand_tile(tile)):
            return
        if levels_from_record(tile, record) is None:
            # Torn or stale (its checksum does not match the tile): never used, so a note.
            # (verify itself never uses records: its consistency proof reads the tiles alone.)
            self.bad_expansions.append(tile_index)
        else:
            # A matching checksum over wrong nodes: proofs would use them.  A failure.
            self.tile_failures.append(
                (
                    f"{EXPANSIONS_KEY} record {tile_index}",
                    f"its checksum matches {tiles.tile_path(0, tile_index)} but its inner nodes differ from the "
                    "ones recomputed from the rows: it was rewritten",
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
                if tile_level == 0:
                    self._check_expansion(index // tiles.TILE_WIDTH, buf)
                buf.clear()

    def finish(self, size: int, *, rows_changed: bool, beyond_ok: bool, signed_sizes: Iterable[int] = ()) -> None:
        # Every partial tile a client holding any signed checkpoint may ask for must be
        # there, unless its full tile (the spec's fallback) is.
        for signed in sorted(set(signed_sizes) | {size}):
            for level, index, width in tiles.tiles_for_size(signed):
                widths = self.present.get((level, index), {})
                if width < tiles.TILE_WIDTH and width not in widths and tiles.TILE_WIDTH not in widths:
                    key = tiles.tile_path(level, index, width)
                    self.tile_failures.append(
                        (f"tile {key}", f"missing (a client with the checkpoint of size {signed} needs it)")
                    )
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
        if self.bad_expansions:
            self.report.notes.append(
                f"{EXPANSIONS_KEY}: {len(self.bad_expansions)} record(s) torn or stale (first: record "
                f"{self.bad_expansions[0]}); their checksums fail, so they are never used: `kfm rebuild` recreates them"
            )
        unchecked = sorted(
            key for widths in self.present.values() for key in widths.values() if key not in self.checked
        )
        if unchecked and beyond_ok:
            self.report.notes.append(
                f"{len(unchecked)} tile(s) beyond the signed tree, left by the interrupted append "
                f"(first: {unchecked[0]})"
            )
        elif unchecked:
            for key in unchecked:
                self.report.fail(f"tile {key}", f"lies beyond the signed tree (size {size}); run `kfm rebuild`", self.limit)


def _find_signed_end(log, size: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
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


def verify_ledger(
    ledger: Ledger,
    *,
    since: bytes | None = None,
    since_verifier: Verifier | None = None,
    check_mirror: bool = True,
    progress: Progress | None = None,
    max_failures: int = 200,
    lock_wait: float = 60.0,
) -> VerifyReport:
    """Verify everything about a ledger in one streaming pass; never raises for what it finds.

    Holds the writer lock while it reads (waiting up to ``lock_wait`` seconds), so
    an append running at the same time cannot make a healthy ledger look broken;
    it verifies the latest signed checkpoint as of when it got the lock.  Where
    the lock cannot be taken at all (a read-only copy), it verifies without it.
    """
    note = None
    try:
        held = ledger.writer_lock(wait=lock_wait)
        held.__enter__()
    except LockedError:
        held, note = None, f"verified without the writer lock: a writer held it for more than {lock_wait:g} s"
    except OSError as e:
        held = None  # a read-only copy: no lock file can be made
        note = f"verified without the writer lock: it cannot be taken here ({e.strerror or e})"
    try:
        if held is not None:
            ledger.refresh()
        report = _verify(
            ledger, since=since, since_verifier=since_verifier, check_mirror=check_mirror,
            progress=progress, max_failures=max_failures,
        )
        if note:
            report.notes.append(note)
        return report
    finally:
        if held is not None:
            held.__exit__(None, None, None)


def _verify(
    ledger: Ledger,
    *,
    since: bytes | None,
    since_verifier: Verifier | None,
    check_mirror: bool,
    progress: Progress | None,
    max_failures: int,
) -> VerifyReport:
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
    named_before: dict[int, int] = {}  # previous size -> the signed size that names it
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
        try:
            previous = previous_signed_size(signed.checkpoint)
        except KfmError as e:
            report.fail(where, str(e), limit)
            previous = None
        if previous is not None:
            named_before[previous] = size
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
    # Every signed tree head names the one before it (kfm-previous-size): each named size
    # must be kept, or an auditor can no longer check consistency with that tree head.
    with contextlib.suppress(KfmError):
        latest_previous = previous_signed_size(ledger.checkpoint.checkpoint)
        if latest_previous is not None:
            named_before.setdefault(latest_previous, ledger.size)
    present = set(sizes)
    for previous, by in sorted(named_before.items()):
        if previous not in present:
            report.fail(
                f"checkpoint {previous}",
                f"{CHECKPOINTS_PREFIX}{previous} is missing: the checkpoint of size {by} says the log signed "
                f"size {previous} just before it; every signed checkpoint must be kept",
                limit,
            )

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

    # -- where the signed rows end (a fast newline count) -------------------
    log = storage.append_log(JSONL_KEY)
    total = log.size()
    signed_end, counted = _find_signed_end(log, ledger.size)
    if signed_end < 0:
        report.fail(
            JSONL_KEY,
            f"holds {counted} complete rows but the signed checkpoint covers {ledger.size}: rows were removed",
            limit,
        )
        signed_end = total  # still check what is there

    # -- one pass over the signed rows, validated on every core ---------------
    crange = merkle.CompactRange()
    tile_checker = _TileChecker(ledger, report, limit)
    seen = sqlite3.connect("")  # a temporary on-disk database: memory stays bounded
    seen.execute("CREATE TABLE c (commit_id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
    index = ledger.stored_index()
    if index is None:
        report.notes.append(
            "the commit index does not open (derived data: it is rebuilt on the next lookup, or by `kfm rebuild`)"
        )
    elif index.size() > ledger.size and pending_append is None:
        report.notes.append(
            f"the commit index lists {index.size()} rows, more than the {ledger.size} signed: the extra entries "
            "are dropped by the next writer or `kfm rebuild`"
        )
    if index is not None and index.size() < ledger.size:
        report.notes.append(
            f"the commit index covers {index.size()} of {ledger.size} rows (derived data: it is caught up "
            "on the next lookup, or by `kfm rebuild`); not checked"
        )
        index = None
    previous: tuple[int, str] | None = None
    index_mismatches: list = [0, ""]  # count, first message
    roots_mismatch = False
    offset = 0
    n = 0

    unique_by_index = [index is not None]  # False once the index is found not to match the rows
    invalid_leaves: set[int] = set()  # rows that failed validation (not compared with the index)

    def check_commits(batch: list[tuple[str, int, int, int]]) -> None:
        """One row per commit, and the index pointing at each row.

        While the index matches every row, uniqueness is one range scan of it by
        leaf: its commit column is UNIQUE, so rows that each match their own index
        entry have distinct commits.  From the first row that does not match (a row
        deleted, inserted or changed; a stale index), the index says nothing about
        repeats: the rows before it (which matched) are loaded into a temporary
        table, which finds repeats from then on.
        """
        if not batch:
            return
        rest = batch
        if index is not None:
            entries = {e.leaf: e for e in index.range(batch[0][1], batch[-1][1] + 1)}
            for k, (commit, leaf, at, length) in enumerate(batch):
                e = entries.get(leaf)
                if e is not None and (e.lakefs_commit, e.offset, e.length) == (commit, at, length):
                    continue
                index_mismatches[0] += 1
                if index_mismatches[0] == 1:  # the first one, with the evidence; then a count
                    got = "nothing" if e is None else f"{e.lakefs_commit!r}, bytes {e.offset}+{e.length}"
                    index_mismatches[1] = (
                        f"the commit index has {got} at index {leaf}, but the row there is {commit!r}, "
                        f"bytes {at}+{length}"
                    )
                if unique_by_index[0]:
                    unique_by_index[0] = False
                    # The valid rows of [0, leaf) all matched the index: their commits are its
                    # entries (an invalid row was never compared, so its entry is left out).
                    for start in range(0, leaf, 65536):
                        seen.executemany(
                            "INSERT OR IGNORE INTO c VALUES (?, ?)",
                            [
                                (x.lakefs_commit, x.leaf)
                                for x in index.range(start, min(leaf, start + 65536))
                                if x.leaf not in invalid_leaves
                            ],
                        )
                    rest = batch[k:]
            if unique_by_index[0]:
                return
        before = seen.total_changes
        seen.executemany("INSERT OR IGNORE INTO c VALUES (?, ?)", [(c, leaf) for c, leaf, _, _ in rest])
        if seen.total_changes - before != len(rest):
            # Some commit was seen before: find which, row by row (rare).
            for commit, leaf, _, _ in rest:
                first = seen.execute("SELECT line FROM c WHERE commit_id = ?", (commit,)).fetchone()[0]
                if first != leaf:
                    report.fail(
                        f"line {leaf + 1}",
                        f"$.lakefs_commit: {commit!r} already appears at line {first + 1} (one row per lakeFS commit)",
                        limit,
                    )

    parallel = signed_end >= bulk.PARALLEL_THRESHOLD
    local = local_path_of(storage, JSONL_KEY)
    if local is not None and signed_end:
        # The workers read their byte ranges of the file themselves.
        results = bulk.validate_stored_file(local, signed_end, parallel=parallel)
    else:
        chunks = bulk.iter_line_chunks(log.iter_chunks(0, end=signed_end), bulk.CHUNK_BYTES)
        results = bulk.map_ordered(bulk.validate_stored_chunk, chunks, parallel=parallel)
    for result in results:
        for p in result.problems:
            report.fail(f"line {p.line}", f"{p.path}: {p.message}", limit)
        if result.first_created is not None and previous is not None:
            if schema.parse_created_at(result.first_created[1]) < schema.parse_created_at(previous[1]):
                report.fail(
                    f"line {result.first_created[0]}",
                    f"$.created_at: {result.first_created[1]} is earlier than the previous row's {previous[1]}",
                    limit,
                )
        if result.last_created is not None:
            previous = result.last_created
        # Offsets of the valid rows, for the index check: recomputed from every line's length.
        batch = []
        valid = dict(zip(result.lines, result.commits))
        leaf_hashes = result.leaf_hashes
        for k in range(result.rows):
            commit = valid.get(result.first_line + k)
            length = result.line_lengths[k]
            leaf = leaf_hashes[32 * k : 32 * k + 32]
            tile_checker.add(crange.append(leaf))
            size = crange.size
            if size in expected_roots and crange.root() != expected_roots[size]:
                roots_mismatch = True
                report.fail(
                    f"checkpoint {size}",
                    f"the tree recomputed from rows 1..{size} has root "
                    f"{base64.b64encode(crange.root()).decode()}, the signed root is "
                    f"{base64.b64encode(expected_roots[size]).decode()}: rows were changed",
                    limit,
                )
            if since_root is not None and size == report.since_size and crange.root() != since_root:
                report.fail(
                    "since",
                    f"the ledger's first {size} rows do not hash to the saved checkpoint's root: "
                    "history was rewritten (append-only violated)",
                    limit,
                )
            if commit is not None:
                batch.append((commit, n, offset, length))
            elif unique_by_index[0]:
                invalid_leaves.add(n)
            n += 1
            offset += length + 1
        check_commits(batch)
        if progress is not None:
            progress(offset, total)
    seen.close()
    report.rows_checked = n
    if index_mismatches[0]:
        more = f" (and {index_mismatches[0] - 1} more row(s))" if index_mismatches[0] > 1 else ""
        report.fail("index", f"{index_mismatches[1]}{more}; run `kfm rebuild`", limit)

    # -- after the signed rows ------------------------------------------------
    tail = total - signed_end
    if tail:
        last_newline, pos = -1, signed_end
        for chunk in log.iter_chunks(signed_end):
            report.uncovered_rows += chunk.count(b"\n")
            k = chunk.rfind(b"\n")
            if k >= 0:
                last_newline = pos + k
            pos += len(chunk)
        report.torn_bytes = total - (last_newline + 1) if last_newline >= 0 else tail
    log.close()
    if progress is not None:
        progress(total, total)
    if n == ledger.size:
        tile_checker.finish(
            ledger.size,
            rows_changed=roots_mismatch,
            beyond_ok=pending_append is not None,
            signed_sizes=[k for k in expected_roots if k <= ledger.size],
        )
        if tail and pending_append is None:
            report.fail(
                JSONL_KEY,
                f"{tail} byte(s) after the last signed row (from byte {signed_end}: {report.uncovered_rows} "
                f"complete line(s), {report.torn_bytes} torn byte(s)) that no interrupted append accounts "
                "for; writers refuse to run until they are removed",
                limit,
            )
    if pending_append is not None and pending_append.new_size != ledger.size and (
        pending_append.old_size != ledger.size or pending_append.old_end != signed_end
    ):
        report.fail(
            PENDING_KEY,
            f"describes an append from size {pending_append.old_size} (byte {pending_append.old_end}), but the "
            f"signed tree has size {ledger.size} ending at byte {signed_end}: it does not belong to this ledger "
            "and writers refuse to run until it is removed",
            limit,
        )

    # -- append-only proof against a saved checkpoint ----------------------
    if since_root is not None and report.since_size is not None and not any(
        f.where == "since" for f in report.failures
    ):
        try:
            if 0 < report.since_size <= ledger.size:
                proof = ledger.consistency_proof(report.since_size, ledger.size, stored_expansions=False)
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
