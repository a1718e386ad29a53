"""Unit tests of the SQLite commit index (kfm_ledger.index.CommitIndex)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kfm_ledger.index import SCHEMA_VERSION, CommitIndex, IndexedEntry


def commit_id(i: int) -> str:
    return f"{i:04x}" + "ab" * 30  # 64 hex digits, distinct prefixes


def entry(i: int, *, length: int = 100) -> IndexedEntry:
    return IndexedEntry(i, commit_id(i), i * length, length, f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z")


def entries(start: int, stop: int) -> list[IndexedEntry]:
    return [entry(i) for i in range(start, stop)]


@pytest.fixture(params=["memory", "file"])
def conn_factory(request, tmp_path: Path):
    """Make connections to one database: in memory (one connection only) or a file (reopenable)."""
    made: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        if request.param == "memory":
            assert not made, "an in-memory database cannot be reopened"
            c = sqlite3.connect(":memory:", isolation_level=None)
        else:
            c = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
        made.append(c)
        return c

    connect.kind = request.param  # type: ignore[attr-defined]
    yield connect
    for c in made:
        try:
            c.close()
        except sqlite3.ProgrammingError:  # pragma: no cover
            pass


@pytest.fixture
def index(conn_factory) -> CommitIndex:
    return CommitIndex(conn_factory())


def filled(index: CommitIndex, n: int) -> CommitIndex:
    index.add(entries(0, n), size=n, end_offset=n * 100)
    return index


# -- a new index -----------------------------------------------------------------
def test_a_new_index_is_empty_and_records_its_schema(index: CommitIndex) -> None:
    assert index.size() == 0 and index.end_offset() == 0
    assert index.lookup(commit_id(0)) is None
    assert index.at(0) is None
    assert index.range(0, 10) == []
    assert index.lookup_many([commit_id(0)]) == {}
    assert index._meta("schema_version") == SCHEMA_VERSION == "4"


# -- add and the lookups -----------------------------------------------------------
def test_add_then_lookup_at_range(index: CommitIndex) -> None:
    filled(index, 30)
    assert index.size() == 30 and index.end_offset() == 3000
    assert index.lookup(commit_id(7)) == entry(7)
    assert index.lookup("f" * 64) is None
    assert index.at(29) == entry(29)
    assert index.at(30) is None and index.at(-1) is None
    assert index.range(5, 9) == entries(5, 9)
    assert index.range(25, 100) == entries(25, 30)
    assert index.range(9, 5) == []
    assert index.range(0, 30) == entries(0, 30)


def test_add_is_all_or_nothing_on_a_repeated_commit(index: CommitIndex) -> None:
    filled(index, 5)
    dup = IndexedEntry(5, commit_id(2), 500, 100, "2025-01-02T00:00:00Z")
    with pytest.raises(sqlite3.IntegrityError):
        index.add([entry(5), entry(6), dup], size=8, end_offset=800)
    # Nothing of the batch stayed, and the marks did not move.
    assert index.size() == 5 and index.end_offset() == 500
    assert index.at(5) is None and index.at(6) is None
    assert index.lookup(commit_id(2)) == entry(2)
    # The index is still writable afterwards.
    index.add([entry(5)], size=6, end_offset=600)
    assert index.size() == 6 and index.at(5) == entry(5)


def test_lookup_many_returns_only_indexed_commits_across_chunks(index: CommitIndex) -> None:
    filled(index, 1200)
    wanted = [commit_id(i) for i in range(0, 1300, 3)]  # more than one 500-commit chunk, some unknown
    got = index.lookup_many(wanted)
    assert got == {commit_id(i): i for i in range(0, 1200, 3)}
    assert index.lookup_many([]) == {}
    assert index.lookup_entries([commit_id(4), "nope"]) == {commit_id(4): entry(4)}


def test_find_prefix_honours_below_and_limit(index: CommitIndex) -> None:
    rows = [
        IndexedEntry(0, "abc111", 0, 10, "t0"),
        IndexedEntry(1, "abd222", 10, 10, "t1"),
        IndexedEntry(2, "abc333", 20, 10, "t2"),
        IndexedEntry(3, "abc000", 30, 10, "t3"),
        IndexedEntry(4, "zzz", 40, 10, "t4"),
        IndexedEntry(5, "ab", 50, 10, "t5"),
    ]
    index.add(rows, size=6, end_offset=60)
    # Sorted by commit; only leaves below `below`.
    assert [e.lakefs_commit for e in index.find_prefix("abc", below=6)] == ["abc000", "abc111", "abc333"]
    assert [e.leaf for e in index.find_prefix("abc", below=3)] == [0, 2]
    assert index.find_prefix("abc", below=0) == []
    assert [e.lakefs_commit for e in index.find_prefix("ab", below=6)] == ["ab", "abc000", "abc111", "abc333", "abd222"]
    assert [e.lakefs_commit for e in index.find_prefix("ab", below=6, limit=2)] == ["ab", "abc000"]
    assert index.find_prefix("abc333", below=6) == [rows[2]]
    assert index.find_prefix("abe", below=6) == []
    assert index.find_prefix("z", below=6) == [rows[4]]


# -- truncate and reset --------------------------------------------------------------
def test_truncate_forgets_later_rows(index: CommitIndex) -> None:
    filled(index, 20)
    index.truncate(12, 1200)
    assert index.size() == 12 and index.end_offset() == 1200
    assert index.at(11) == entry(11) and index.at(12) is None
    assert index.lookup(commit_id(15)) is None
    assert index.range(0, 100) == entries(0, 12)
    # The forgotten commits can be indexed again.
    index.add(entries(12, 14), size=14, end_offset=1400)
    assert index.lookup(commit_id(13)) == entry(13)


def test_truncate_beyond_the_end_changes_nothing(index: CommitIndex) -> None:
    filled(index, 10)
    index.truncate(50, 5000)
    assert index.size() == 10 and index.end_offset() == 1000
    assert index.range(0, 100) == entries(0, 10)


def test_truncate_removes_stray_rows_beyond_the_marks(index: CommitIndex) -> None:
    # Rows beyond `size` are forgotten even when the marks are already low enough.
    index.add(entries(0, 8), size=5, end_offset=500)
    index.truncate(5, 500)
    assert index.range(0, 100) == entries(0, 5)
    assert index.size() == 5 and index.end_offset() == 500


def test_reset_forgets_everything_and_keeps_working(index: CommitIndex) -> None:
    filled(index, 10)
    index.reset()
    assert index.size() == 0 and index.end_offset() == 0
    assert index.range(0, 100) == [] and index.lookup(commit_id(3)) is None
    assert index._meta("schema_version") == SCHEMA_VERSION
    filled(index, 3)
    assert index.size() == 3
    # The UNIQUE commit index is back after a reset.
    with pytest.raises(sqlite3.IntegrityError):
        index.add([IndexedEntry(3, commit_id(0), 300, 1, "t")], size=4, end_offset=301)
    # ... as a named index a bulk append can defer.
    index.begin(defer_unique=True)
    index.rollback_if_open()


# -- the bulk transaction ----------------------------------------------------------
def test_bulk_insert_with_deferred_unique_index_commits(index: CommitIndex) -> None:
    filled(index, 10)
    index.begin(defer_unique=True)
    assert index.insert_new(entries(10, 50)) == 40
    assert index.finish_inserts(limit=10) == []
    index.commit(size=50, end_offset=5000)
    assert index.size() == 50 and index.end_offset() == 5000
    assert index.lookup(commit_id(42)) == entry(42)
    # The UNIQUE index was rebuilt.
    with pytest.raises(sqlite3.IntegrityError):
        index.add([IndexedEntry(50, commit_id(3), 5000, 1, "t")], size=51, end_offset=5001)


def test_deferred_repeats_are_reported_with_sorted_leaves_and_rollback_restores(index: CommitIndex) -> None:
    filled(index, 10)
    index.begin(defer_unique=True)
    batch = [
        IndexedEntry(10, commit_id(3), 1000, 100, "t10"),  # repeats leaf 3
        IndexedEntry(11, "new-a", 1100, 100, "t11"),
        IndexedEntry(12, "new-b", 1200, 100, "t12"),
        IndexedEntry(13, "new-a", 1300, 100, "t13"),  # repeats leaf 11
        IndexedEntry(14, commit_id(3), 1400, 100, "t14"),  # leaf 3 again
        IndexedEntry(15, commit_id(1), 1500, 100, "t15"),  # repeats leaf 1
    ]
    assert index.insert_new(batch) == 6  # nothing refused while the check is deferred
    repeats = index.finish_inserts(limit=10)
    # Ordered by first leaf; each with its leaves sorted.
    assert repeats == [(commit_id(1), [1, 15]), (commit_id(3), [3, 10, 14]), ("new-a", [11, 13])]
    assert index.finish_inserts(limit=1) == [(commit_id(1), [1, 15])]
    # Still deferred: commit() must refuse.
    with pytest.raises(RuntimeError):
        index.commit(size=16, end_offset=1600)
    index.rollback_if_open()
    # Back to the ten rows, with the UNIQUE index in place.
    assert index.size() == 10 and index.end_offset() == 1000
    assert index.range(0, 100) == entries(0, 10)
    assert index.lookup("new-a") is None
    assert index.lookup(commit_id(3)) == entry(3)
    with pytest.raises(sqlite3.IntegrityError):
        index.add([IndexedEntry(10, commit_id(3), 1000, 1, "t")], size=11, end_offset=1001)
    # And a new bulk transaction works.
    index.begin(defer_unique=True)
    assert index.insert_new(entries(10, 12)) == 2
    assert index.finish_inserts(limit=5) == []
    index.commit(size=12, end_offset=1200)
    assert index.size() == 12 and index.at(11) == entry(11)


def test_commit_refuses_while_the_unique_index_is_deferred(index: CommitIndex) -> None:
    index.begin(defer_unique=True)
    index.insert_new(entries(0, 3))
    with pytest.raises(RuntimeError, match="finish_inserts"):
        index.commit(size=3, end_offset=300)
    assert index.finish_inserts(limit=5) == []
    index.commit(size=3, end_offset=300)
    assert index.size() == 3 and index.range(0, 10) == entries(0, 3)


def test_insert_new_without_deferral_skips_repeats(index: CommitIndex) -> None:
    filled(index, 5)
    index.begin(defer_unique=False)
    batch = [entry(5), IndexedEntry(6, commit_id(2), 600, 100, "t"), entry(7)]
    assert index.insert_new(batch) == 2  # the repeat of leaf 2's commit is ignored
    assert index.insert_new([IndexedEntry(8, commit_id(5), 800, 100, "t")]) == 0  # repeats this batch's leaf 5
    assert index.finish_inserts(limit=10) == []  # nothing deferred: nothing to report
    index.commit(size=8, end_offset=800)
    assert index.lookup(commit_id(2)) == entry(2)
    assert index.at(6) is None and index.at(7) == entry(7)
    assert index.size() == 8


def test_rollback_if_open_without_a_transaction_is_harmless(index: CommitIndex) -> None:
    filled(index, 3)
    index.rollback_if_open()
    index.begin()
    index.insert_new(entries(3, 5))
    index.rollback_if_open()
    index.rollback_if_open()
    assert index.size() == 3 and index.at(3) is None


def test_truncate_abandons_an_open_bulk_transaction(index: CommitIndex) -> None:
    filled(index, 6)
    index.begin(defer_unique=True)
    index.insert_new(entries(6, 9))
    index.truncate(4, 400)
    assert index.size() == 4 and index.range(0, 100) == entries(0, 4)
    with pytest.raises(sqlite3.IntegrityError):  # the dropped index came back
        index.add([IndexedEntry(4, commit_id(0), 400, 1, "t")], size=5, end_offset=401)


# -- on a file: persistence and schema versions -------------------------------------------
def test_a_file_index_persists_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    idx = CommitIndex(sqlite3.connect(path, isolation_level=None))
    idx.add(entries(0, 7), size=7, end_offset=700)
    idx.close()
    again = CommitIndex(sqlite3.connect(path, isolation_level=None))
    try:
        assert again.size() == 7 and again.end_offset() == 700
        assert again.lookup(commit_id(6)) == entry(6)
        assert again.range(0, 100) == entries(0, 7)
    finally:
        again.close()


def test_a_file_index_uses_wal(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    idx = CommitIndex(conn)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        idx.close()


def test_an_index_of_schema_version_1_is_reset_on_open(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    # The version-1 layout: the commit's uniqueness was an unnamed table constraint.
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE entries (
            leaf INTEGER PRIMARY KEY,
            lakefs_commit TEXT NOT NULL UNIQUE,
            offset INTEGER NOT NULL,
            length INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        INSERT INTO meta VALUES ('schema_version', '1'), ('size', '3'), ('end_offset', '300');
        INSERT INTO entries VALUES (0, 'a', 0, 100, 't'), (1, 'b', 100, 100, 't'), (2, 'c', 200, 100, 't');
        """
    )
    old.close()
    idx = CommitIndex(sqlite3.connect(path, isolation_level=None))
    try:
        assert idx._meta("schema_version") == SCHEMA_VERSION
        assert idx.size() == 0 and idx.end_offset() == 0
        assert idx.range(0, 100) == [] and idx.lookup("a") is None
        # The new layout works, deferred index included.
        idx.begin(defer_unique=True)
        assert idx.insert_new(entries(0, 4)) == 4
        assert idx.finish_inserts(limit=3) == []
        idx.commit(size=4, end_offset=400)
        assert idx.range(0, 100) == entries(0, 4)
    finally:
        idx.close()


def test_an_index_of_another_version_is_reset_too(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    idx = CommitIndex(sqlite3.connect(path, isolation_level=None))
    idx.add(entries(0, 2), size=2, end_offset=200)
    idx.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.close()
    # Any other version (newer too) is reset rather than trusted.
    idx = CommitIndex(sqlite3.connect(path, isolation_level=None))
    try:
        assert idx.size() == 0 and idx.range(0, 10) == []
        assert idx._meta("schema_version") == SCHEMA_VERSION
    finally:
        idx.close()


def test_an_in_memory_index_via_the_fixture_kind(conn_factory) -> None:
    # Both parametrisations build a working index from a fresh connection.
    idx = CommitIndex(conn_factory())
    idx.add(entries(0, 1), size=1, end_offset=100)
    assert idx.at(0) == entry(0)
    if conn_factory.kind == "file":
        idx.close()
        reopened = CommitIndex(conn_factory())
        assert reopened.at(0) == entry(0)


class BusyFirst:
    """An index location whose first ``busy`` connections fail as if another writer held a lock."""

    def __init__(self, path: Path, busy: int) -> None:
        from kfm_ledger.index import SqliteFileIndex

        self.inner = SqliteFileIndex(path)
        self.busy = busy
        self.connects = 0
        self.discards = 0

    def connect(self) -> sqlite3.Connection:
        self.connects += 1
        if self.connects <= self.busy:
            # The error SQLite gives a switch to WAL while another connection reads the file.
            blocker = sqlite3.connect(self.inner.path, isolation_level=None, timeout=0)
            blocker.execute("PRAGMA journal_mode=DELETE")
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                conn = sqlite3.connect(self.inner.path, isolation_level=None, timeout=0)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                finally:
                    conn.close()
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            raise AssertionError("the blocker did not block")
        return self.inner.connect()

    def discard(self) -> None:
        self.discards += 1
        self.inner.discard()


def test_an_index_locked_by_another_writer_is_waited_for_never_discarded(tmp_path: Path) -> None:
    from kfm_ledger.errors import LockedError
    from kfm_ledger.index import is_busy, open_commit_index

    location = BusyFirst(tmp_path / "index.sqlite", busy=3)
    idx = open_commit_index(location)
    idx.add(entries(0, 3), size=3, end_offset=300)
    assert (location.connects, location.discards) == (4, 0)
    idx.close()
    # Locked for longer than the wait: the lock's own error, still nothing discarded.
    location = BusyFirst(tmp_path / "index.sqlite", busy=10**6)
    with pytest.raises(LockedError, match="stayed locked by another connection") as e:
        open_commit_index(location, busy_seconds=0.2)
    assert not isinstance(e.value, sqlite3.DatabaseError)  # no caller can take it for damage
    assert is_busy(e.value.__cause__) and location.discards == 0
    assert open_commit_index(BusyFirst(tmp_path / "index.sqlite", busy=0)).size() == 3


def test_the_index_of_an_s3_ledger_is_not_discarded_for_a_lock(tmp_path: Path) -> None:
    """A lock (another writer on this machine) once made the S3 ledger's index cache be deleted under
    the writers using it (their next statement: "disk I/O error")."""
    from kfm_ledger.log.remote_index import RemoteIndex

    location = BusyFirst(tmp_path / "index.sqlite", busy=2)
    remote = RemoteIndex(location)  # type: ignore[arg-type]
    assert location.discards == 0 and remote.index.size() == 0
    remote.close()


def test_a_local_ledgers_index_is_not_discarded_for_a_lock(tmp_path: Path) -> None:
    from kfm_ledger.log.ledger import Ledger

    from conftest import ORIGIN, fill

    Ledger.init(tmp_path / "led", origin=ORIGIN).close()
    led = Ledger.open(tmp_path / "led")
    fill(led, 5)
    led.close()
    location = BusyFirst(tmp_path / "led" / "index.sqlite", busy=2)
    led = Ledger.open(tmp_path / "led", index=location)  # type: ignore[arg-type]
    try:
        assert led.index.lookup(led.entry(3).row.lakefs_commit).leaf == 3
        assert location.discards == 0
    finally:
        led.close()
