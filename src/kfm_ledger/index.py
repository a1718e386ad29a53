"""The commit index: lakeFS commit -> leaf index and byte range of its line.

Derived data, rebuildable from the JSONL at any time (``kfm rebuild``).  It
lives in SQLite (WAL, ``synchronous=NORMAL``): after a crash it may miss the
last transactions but is never torn; the ledger's recovery re-indexes every
line after :meth:`CommitIndex.end_offset`.

It answers in O(log n) what a scan would answer in O(n): whether a commit is
already in the ledger (the "one row per lakeFS commit" invariant), where its
line is, which commits start with a prefix, and the last ``created_at``.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

from kfm_ledger.index_seal import add_terms, buckets_of

#: Version 2 made the UNIQUE commit index a named index, so that a bulk load can
#: drop it and build it once at the end.  Version 3 added each entry's seal bucket
#: (:mod:`kfm_ledger.index_seal`) and the ``seal`` table.  Version 4 changed the seal's terms
#: (linear in the leaf).  An index of another version is rebuilt.
SCHEMA_VERSION = "4"

_COMMIT_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS entries_commit ON entries(lakefs_commit)"
# Covering: a one-row append's seal check reads its bucket's ~250 entries (commit, created_at and
# the rowid, their leaf) from the index alone.  A plain index on ``bucket`` builds in half the time
# in a bulk append but turns that read into ~250 scattered row lookups (+0.7 ms an append at 1M rows).
_BUCKET_INDEX = "CREATE INDEX IF NOT EXISTS entries_bucket ON entries(bucket, lakefs_commit, created_at)"
_DDL = f"""
CREATE TABLE IF NOT EXISTS entries (
    leaf INTEGER PRIMARY KEY,
    lakefs_commit TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    bucket INTEGER NOT NULL
);
{_COMMIT_INDEX};
{_BUCKET_INDEX};
CREATE TABLE IF NOT EXISTS seal (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    sums BLOB NOT NULL,
    mac BLOB NOT NULL
);
"""
#: The page cache (KiB) while a bulk append builds its deferred indexes (:meth:`CommitIndex.finish_inserts`).
_SORT_CACHE_KIB = 2048
_INSERT = (
    "INSERT INTO entries(leaf, lakefs_commit, offset, length, created_at, bucket) VALUES (?, ?, ?, ?, ?, ?)"
)


class SealDelta:
    """The seal terms of the entries inserted while it is attached (:meth:`CommitIndex.track`):
    bucket -> sum of the new entries' terms (not reduced)."""

    __slots__ = ("key", "sums")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.sums: dict[int, int] = {}


def _with_buckets(
    entries: Iterable[tuple[int, str, int, int, str]], delta: SealDelta | None
) -> Iterator[tuple[int, str, int, int, str, int]]:
    """(leaf, commit, offset, length, created_at) rows with their seal bucket appended (and
    their terms added to ``delta``), 10,000 rows at a time, hashed with C-level maps."""
    it = iter(entries)
    while chunk := list(itertools.islice(it, 10_000)):
        leaves, commits, offsets, lengths, created = zip(*chunk)
        buckets = buckets_of(commits)
        if delta is not None:
            add_terms(delta.key, delta.sums, leaves, commits, created, buckets)
        yield from zip(leaves, commits, offsets, lengths, created, buckets)


class Seal(NamedTuple):
    """The stored seal: the signed tree it describes, the per-bucket sums, their MAC (unchecked)."""

    size: int
    root: bytes
    sums: bytes
    mac: bytes
_META_DDL = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


class IndexLocation(Protocol):
    """Where the derived commit index lives (not a storage object: SQLite needs a file or memory).

    Contract: :meth:`connect` returns a new connection (autocommit,
    ``isolation_level=None``) to the same database on every call, creating it
    empty if absent (sqlite3.DatabaseError if what is there does not open);
    :meth:`discard` deletes the database so that the next :meth:`connect`
    starts empty.  The ledger calls :meth:`discard` under its writer lock.
    """

    def connect(self) -> sqlite3.Connection: ...

    def discard(self) -> None: ...


_SUFFIXES = ("", "-wal", "-shm", "-journal")

#: How long opening the index waits for another connection's lock (SQLITE_BUSY, SQLITE_LOCKED)
#: before giving up: a lock is a writer at work, not damage (see :func:`open_commit_index`).
OPEN_BUSY_SECONDS = 60.0


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLITE_BUSY or SQLITE_LOCKED (another connection holds a lock)."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def open_commit_index(
    location: IndexLocation,
    prepare: Callable[[sqlite3.Connection], None] | None = None,
    *,
    busy_seconds: float = OPEN_BUSY_SECONDS,
) -> CommitIndex:
    """``CommitIndex(location.connect())`` (after ``prepare(conn)``), tried again while another
    connection holds a lock, for up to ``busy_seconds``.

    Opening may have to write (switching a new file to WAL, creating the tables), which waits
    for any other writer; SQLite's own wait can give up first (a journal-mode switch is refused
    at once when another connection reads).  A lock is never mistaken for damage: only a
    sqlite3.DatabaseError that is not SQLITE_BUSY/LOCKED reaches the caller as one (to discard
    the derived file and start it again); after ``busy_seconds`` of locks,
    :class:`~kfm_ledger.errors.LockedError` (retry later), which is not a DatabaseError.
    """
    deadline = time.monotonic() + busy_seconds
    pause = 0.01
    while True:
        conn = None
        try:
            conn = location.connect()
            if prepare is not None:
                prepare(conn)
            return CommitIndex(conn)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            if not is_busy(e):
                raise
            if time.monotonic() >= deadline:
                from kfm_ledger.errors import LockedError

                path = getattr(location, "path", None)
                raise LockedError(
                    f"the commit index{f' {path}' if path else ''} stayed locked by another connection for "
                    f"{busy_seconds:.0f} s ({e}); retry when the other writer is done",
                    key=os.path.basename(path) if path else None,
                ) from e
        time.sleep(pause)
        pause = min(2 * pause, 0.5)


def _race_hook(stage: str, path: str) -> None:
    """Runs between the checks and the opening of the index's files (tests replace it to
    plant a link in that window); does nothing."""


class SqliteFileIndex:
    """The index in a SQLite file (a local ledger's ``<dir>/index.sqlite``, with its WAL files)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def connect(self) -> sqlite3.Connection:
        """A connection to the file; a symbolic link or non-regular file in its place is refused.

        Python's sqlite3 opens the database (and its -wal, -shm) by path and cannot pass
        SQLITE_OPEN_NOFOLLOW, so each is checked with lstat before, the connection made to
        open all three at once (WAL mode and a read), and then the files it opened are
        checked to be the ones at those paths: on Linux through ``/proc/self/fd`` (each
        descriptor naming one of them must be that very file, and there must be one for
        each), elsewhere by lstat again.  StorageError names the path.
        """
        from kfm_ledger.storage.local import check_regular_path

        for suffix in _SUFFIXES:
            check_regular_path(self.path + suffix, key=os.path.basename(self.path) + suffix)
        _race_hook("before-open", self.path)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            _race_hook("after-open", self.path)
            self._check_opened(wal)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_opened(self, wal: bool) -> None:
        """The files the connection opened are the regular files at our paths (see :meth:`connect`)."""
        from kfm_ledger.errors import StorageError
        from kfm_ledger.storage.local import check_regular_path

        for suffix in _SUFFIXES:  # still no link and nothing but a regular file there
            check_regular_path(self.path + suffix, key=os.path.basename(self.path) + suffix)
        if not os.path.isdir("/proc/self/fd"):
            return  # the lstat checks above are all there is (docs/operations.md)
        real = os.path.join(os.path.realpath(os.path.dirname(self.path) or "."), os.path.basename(self.path))
        wanted = {real + suffix: suffix for suffix in (("", "-wal", "-shm") if wal else ("",))}
        # Other threads open and close descriptors (and the kernel reuses their numbers) while we
        # look: a mismatch seen once may be such a race, so look again before refusing; a file
        # really swapped under the connection fails every look.
        for _ in range(3):
            seen = self._descriptors_matching(wanted)
            if seen == set(wanted):
                return
        if seen != set(wanted):
            missing = sorted(os.path.basename(self.path) + wanted[t] for t in set(wanted) - seen)
            raise StorageError(
                f"refusing {self.path}: the file SQLite opened for {', '.join(missing) or 'the index'} is not the "
                "regular file at that path (a link or another file was put in its place while it was opened); "
                "kfm never follows a link inside a ledger (inspect the directory, then remove what is not kfm's)",
                key=os.path.basename(self.path),
            )

    def _descriptors_matching(self, wanted: dict[str, str]) -> set[str]:
        """The paths of ``wanted`` that an open descriptor of this process names and that still
        hold the file that descriptor has open (the same device and inode)."""
        seen: set[str] = set()
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
                if target not in wanted:
                    continue
                opened = os.stat(f"/proc/self/fd/{name}")
                there = os.lstat(self.path + wanted[target])
            except OSError:
                continue  # a descriptor closed meanwhile (another thread): not one of ours
            if (opened.st_dev, opened.st_ino) != (there.st_dev, there.st_ino):
                return seen - {target}
            seen.add(target)
        return seen

    def discard(self) -> None:
        for suffix in _SUFFIXES:
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass


_MEMORY_NAMES = itertools.count()


class MemoryIndex:
    """The index in a named shared-cache in-memory SQLite database (for in-memory ledgers).

    The database lives while this object keeps its anchor connection open;
    every :meth:`connect` gets a connection of its own.
    """

    def __init__(self) -> None:
        self._name = next(_MEMORY_NAMES)  # unique: id(self) can be reused by a later object
        self._generation = 0
        self._anchor: sqlite3.Connection | None = None

    def _uri(self) -> str:
        return f"file:kfm-memory-{self._name}-{self._generation}?mode=memory&cache=shared"

    def connect(self) -> sqlite3.Connection:
        if self._anchor is None:
            self._anchor = sqlite3.connect(self._uri(), uri=True, isolation_level=None, check_same_thread=False)
        return sqlite3.connect(self._uri(), uri=True, isolation_level=None, check_same_thread=False)

    def discard(self) -> None:
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None
        self._generation += 1


class IndexedEntry(NamedTuple):
    """Where one row is: its leaf index, commit and line's byte range in the JSONL."""

    leaf: int
    lakefs_commit: str
    offset: int
    length: int
    created_at: str


def _is_count(value: str | None) -> bool:
    """Whether a meta value is a high-water mark as written: a non-negative decimal integer (or absent)."""
    return value is None or (value.isascii() and value.isdigit() and len(value) <= 19)


class CommitIndex:
    """Commit -> leaf lookups over a SQLite connection (from an :class:`IndexLocation`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._deferred = False
        self._deferred_buckets = False
        #: While set (:meth:`track`), inserted entries' seal terms are added to it.
        self.delta: SealDelta | None = None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError:  # pragma: no cover - in-memory databases
            pass
        conn.execute(_META_DDL)
        version = self._meta("schema_version")
        if version is not None and version != SCHEMA_VERSION:
            self.reset()  # before the DDL below meets an older layout
            return
        conn.executescript(_DDL)
        if version is None:
            self._set_meta({"schema_version": SCHEMA_VERSION, "size": "0", "end_offset": "0"})
        elif not all(_is_count(self._meta(key)) for key in ("size", "end_offset")):
            self.reset()  # damaged high-water marks: derived data, rebuilt from the JSONL
        elif not self._commit_index_is_unique():
            # Checked, not assumed: `CREATE UNIQUE INDEX IF NOT EXISTS` is skipped when a plain
            # index of the same name was put in its place, which would hide repeated commits.
            # Derived data: start again from the JSONL.
            self.reset()

    @property
    def connection(self) -> sqlite3.Connection:
        """The index's connection (a caller's own tables may live in the same file)."""
        return self._conn

    def _commit_index_is_unique(self) -> bool:
        """Whether ``entries_commit`` is a UNIQUE index on exactly ``entries(lakefs_commit)``."""
        for _seq, name, unique, *_ in self._conn.execute("PRAGMA index_list(entries)"):
            if name == "entries_commit":
                columns = [row[2] for row in self._conn.execute("PRAGMA index_info(entries_commit)")]
                return bool(unique) and columns == ["lakefs_commit"]
        return False

    # -- meta ------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, values: dict[str, str]) -> None:
        self._conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def size(self) -> int:
        """Number of rows indexed (rows 0 .. size-1)."""
        return int(self._meta("size") or 0)

    def end_offset(self) -> int:
        """Byte offset in the JSONL just after the last indexed line."""
        return int(self._meta("end_offset") or 0)

    # -- updates ---------------------------------------------------------
    def add(self, entries: Iterable[IndexedEntry], *, size: int, end_offset: int) -> None:
        """Add rows and move the high-water marks, in one transaction.

        Raises ``sqlite3.IntegrityError`` if a commit is already indexed (the
        caller checked for that; this is the last line of defence).
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, _with_buckets(entries, self.delta))
            self._set_meta({"size": str(size), "end_offset": str(end_offset)})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- a bulk append's transaction ---------------------------------------
    def begin(self, *, defer_unique: bool = False, defer_buckets: bool | None = None) -> None:
        """Open the transaction a bulk append fills with :meth:`insert_new`.

        With ``defer_unique`` the UNIQUE commit index is dropped inside the
        transaction and built once by :meth:`finish_inserts`: one sort instead of
        a random B-tree insert per row, about three times faster when the batch is
        at least as large as the ledger.  A rollback restores the index.
        """
        # A large batch inserts into the B-trees of two indexes at scattered places: a page
        # cache of up to 64 MiB (instead of 2) keeps their pages in memory (about half the CPU).
        self._conn.execute("PRAGMA cache_size = -65536")
        self._conn.execute("BEGIN IMMEDIATE")
        self._deferred = defer_unique
        self._deferred_buckets = defer_unique if defer_buckets is None else defer_buckets
        if defer_unique:
            self._conn.execute("DROP INDEX entries_commit")
        if self._deferred_buckets:
            self._conn.execute("DROP INDEX entries_bucket")

    def insert_new(self, entries: Iterable[tuple[int, str, int, int, str]]) -> int:
        """Insert (leaf, commit, offset, length, created_at) rows inside :meth:`begin`.

        Returns how many were inserted: fewer than given when a commit was
        already indexed (unless the check is deferred to :meth:`finish_inserts`).
        """
        return self._insert(_with_buckets(entries, self.delta))

    def insert_columns(
        self,
        leaves: Iterable[int],
        commits: Iterable[str],
        offsets: Iterable[int],
        lengths: Iterable[int],
        created: Iterable[str],
        buckets: Iterable[int],
    ) -> int:
        """:meth:`insert_new` for rows given column by column with their seal buckets
        (:func:`kfm_ledger.index_seal.bucket_of` of each commit, computed by a bulk worker): no
        Python code runs per row.  Their seal terms are the caller's to add to :attr:`delta`
        (a bulk append's workers sum them per bucket: :func:`kfm_ledger.index_seal.chunk_sums`)."""
        return self._insert(zip(leaves, commits, offsets, lengths, created, buckets))

    def _insert(self, rows: Iterable[tuple[int, str, int, int, str, int]]) -> int:
        """Insert (leaf, commit, offset, length, created_at, bucket) rows; how many were inserted
        (a commit already indexed is skipped unless the UNIQUE check is deferred)."""
        before = self._conn.total_changes
        sql = _INSERT if self._deferred else _INSERT.replace("INSERT", "INSERT OR IGNORE", 1)
        self._conn.executemany(sql, rows)
        return self._conn.total_changes - before

    def finish_inserts(self, *, limit: int) -> list[tuple[str, list[int]]]:
        """Build the deferred UNIQUE index; return the repeats found instead, if any.

        Each repeat is a commit that appears more than once and its sorted
        leaves (at most ``limit`` repeats); ``[]`` means every commit is unique and
        the index is built.  Without a deferred index, returns ``[]``.
        """
        # The sorts run while a bulk append writes its tiles.  SQLite's sorter sorts runs of the
        # page cache's size in memory and merges them: runs of 2 MiB (fitting the CPU's caches)
        # sorted a million entries in 1.5 s of CPU against 2.2 s with 16 MiB, and two helper
        # threads sort runs side by side (0.2 s less of the append's wall time: docs/performance.md).
        self._conn.execute(f"PRAGMA cache_size = -{_SORT_CACHE_KIB}")
        self._conn.execute("PRAGMA threads = 2")
        if self._deferred_buckets:
            self._conn.execute(_BUCKET_INDEX)  # one sort instead of scattered inserts
            self._deferred_buckets = False
        if not self._deferred:
            return []
        try:
            self._conn.execute(_COMMIT_INDEX)
        except sqlite3.IntegrityError:
            rows = self._conn.execute(
                "SELECT lakefs_commit, group_concat(leaf) FROM entries GROUP BY lakefs_commit HAVING count(*) > 1 "
                "ORDER BY min(leaf) LIMIT ?",
                (limit,),
            ).fetchall()
            return [(commit, sorted(int(leaf) for leaf in text.split(","))) for commit, text in rows]
        self._deferred = False
        return []

    def repeated_rows(self) -> int:
        """How many entries repeat a commit held by an earlier one (inside a deferred bulk load)."""
        row = self._conn.execute("SELECT count(*) - count(DISTINCT lakefs_commit) FROM entries").fetchone()
        return int(row[0])

    def commit(self, *, size: int, end_offset: int) -> None:
        """Move the high-water marks and commit the bulk transaction."""
        if self._deferred or self._deferred_buckets:
            raise RuntimeError("finish_inserts() must build the deferred indexes before commit()")
        self._set_meta({"size": str(size), "end_offset": str(end_offset)})
        self._conn.execute("COMMIT")

    def rollback_if_open(self) -> None:
        """Abandon an open transaction (a refused or failed bulk append)."""
        self._deferred = self._deferred_buckets = False  # the rollback restores a dropped index
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def truncate(self, size: int, end_offset: int) -> None:
        """Forget rows ``size`` and later (an interrupted append rolled back)."""
        self.rollback_if_open()
        conn = self._conn
        beyond = conn.execute("SELECT 1 FROM entries WHERE leaf >= ? LIMIT 1", (size,)).fetchone()
        if beyond is None and self.size() <= size and self.end_offset() <= end_offset:
            return  # nothing to forget (every append's recovery asks): no write transaction
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM entries WHERE leaf >= ?", (size,))
            if self.size() > size or self.end_offset() > end_offset:
                self._set_meta({"size": str(size), "end_offset": str(end_offset)})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def reset(self) -> None:
        """Forget everything (the index is rebuilt from the JSONL afterwards)."""
        self._conn.executescript("DROP TABLE IF EXISTS entries; DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS seal;")
        self._conn.execute(_META_DDL)
        self._conn.executescript(_DDL)
        self._set_meta({"schema_version": SCHEMA_VERSION, "size": "0", "end_offset": "0"})

    # -- the seal (kfm_ledger.index_seal) ----------------------------------
    def track(self, key: bytes | None) -> SealDelta | None:
        """Collect the seal terms of the entries inserted from now on (None: stop)."""
        self.delta = SealDelta(key) if key is not None else None
        return self.delta

    def seal(self) -> Seal | None:
        """The stored seal as it is (its MAC is the caller's to check), or None."""
        row = self._conn.execute("SELECT size, root, sums, mac FROM seal WHERE id = 0").fetchone()
        if row is None or not isinstance(row[0], int) or not all(isinstance(v, bytes) for v in row[1:]):
            return None
        return Seal(*row)

    def write_seal(self, seal: Seal) -> None:
        """Store the seal (replacing the one before), in its own transaction."""
        self._conn.execute(
            "INSERT OR REPLACE INTO seal(id, size, root, sums, mac) VALUES (0, ?, ?, ?, ?)", tuple(seal)
        )

    def bucket_entries(self, bucket: int, *, below: int) -> list[tuple[int, str, str]]:
        """(leaf, commit, created_at) of the entries in ``bucket`` with leaf < ``below``."""
        return self._conn.execute(
            "SELECT leaf, lakefs_commit, created_at FROM entries WHERE bucket = ? AND leaf < ?", (bucket, below)
        ).fetchall()

    def bucketed_entries(self, *, below: int) -> Iterator[tuple[int, int, str, str]]:
        """(bucket, leaf, commit, created_at) of every entry with leaf < ``below``."""
        yield from self._conn.execute(
            "SELECT bucket, leaf, lakefs_commit, created_at FROM entries WHERE leaf < ?", (below,)
        )

    def seal_entries(self, *, below: int) -> Iterator[tuple[int, str, str]]:
        """(leaf, commit, created_at) of every entry with leaf < ``below``, in leaf order."""
        yield from self._conn.execute(
            "SELECT leaf, lakefs_commit, created_at FROM entries WHERE leaf < ? ORDER BY leaf", (below,)
        )

    # -- lookups ---------------------------------------------------------
    def lookup(self, lakefs_commit: str) -> IndexedEntry | None:
        row = self._conn.execute(
            "SELECT leaf, lakefs_commit, offset, length, created_at FROM entries "
            "WHERE lakefs_commit = ?",
            (lakefs_commit,),
        ).fetchone()
        return None if row is None else IndexedEntry(*row)

    def lookup_many(self, commits: list[str]) -> dict[str, int]:
        """Commit -> leaf for those of ``commits`` already indexed."""
        return {commit: e.leaf for commit, e in self.lookup_entries(commits).items()}

    def lookup_entries(self, commits: list[str]) -> dict[str, IndexedEntry]:
        """Commit -> indexed entry for those of ``commits`` already indexed."""
        found: dict[str, IndexedEntry] = {}
        for start in range(0, len(commits), 500):
            chunk = commits[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                "SELECT leaf, lakefs_commit, offset, length, created_at FROM entries "
                f"WHERE lakefs_commit IN ({marks})",
                chunk,
            ):
                found[row[1]] = IndexedEntry(*row)
        return found

    def find_prefix(self, prefix: str, *, below: int, limit: int = 20) -> list[IndexedEntry]:
        """Rows with leaf < ``below`` whose commit starts with ``prefix`` (at most ``limit``)."""
        # Commit ids are ASCII letters, digits, '-', '_' and '.', all below 0x7f.
        rows = self._conn.execute(
            "SELECT leaf, lakefs_commit, offset, length, created_at FROM entries "
            "WHERE lakefs_commit >= ? AND lakefs_commit < ? AND leaf < ? "
            "ORDER BY lakefs_commit LIMIT ?",
            (prefix, prefix + "\x7f", below, limit),
        ).fetchall()
        return [IndexedEntry(*r) for r in rows]

    def range(self, start: int, stop: int) -> list[IndexedEntry]:
        """Entries for leaves [start, stop), in leaf order (a primary-key range scan)."""
        rows = self._conn.execute(
            "SELECT leaf, lakefs_commit, offset, length, created_at FROM entries "
            "WHERE leaf >= ? AND leaf < ? ORDER BY leaf",
            (start, stop),
        ).fetchall()
        return [IndexedEntry(*r) for r in rows]

    def range_facts(self, start: int, stop: int) -> list[tuple[str, int, int, int, str, int]]:
        """(commit, leaf, offset, length, created_at, seal bucket) for leaves [start, stop), in
        leaf order, as SQLite returns them: one tuple an entry, no object built per entry (a
        verify compares a chunk's rows with them whole)."""
        return self._conn.execute(
            "SELECT lakefs_commit, leaf, offset, length, created_at, bucket FROM entries "
            "WHERE leaf >= ? AND leaf < ? ORDER BY leaf",
            (start, stop),
        ).fetchall()

    def range_buckets(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(leaf, seal bucket) for leaves [start, stop), in leaf order."""
        return self._conn.execute(
            "SELECT leaf, bucket FROM entries WHERE leaf >= ? AND leaf < ? ORDER BY leaf", (start, stop)
        ).fetchall()

    def at_many(self, leaves: Sequence[int]) -> dict[int, IndexedEntry]:
        """Leaf -> entry for those of ``leaves`` indexed (a few queries however many)."""
        found: dict[int, IndexedEntry] = {}
        for start in range(0, len(leaves), 500):
            chunk = list(leaves[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT leaf, lakefs_commit, offset, length, created_at FROM entries WHERE leaf IN ({marks})",
                chunk,
            ):
                found[row[0]] = IndexedEntry(*row)
        return found

    def at(self, leaf: int) -> IndexedEntry | None:
        row = self._conn.execute(
            "SELECT leaf, lakefs_commit, offset, length, created_at FROM entries WHERE leaf = ?",
            (leaf,),
        ).fetchone()
        return None if row is None else IndexedEntry(*row)

    def close(self) -> None:
        self._conn.close()
