"""The witness's state: per log origin, the latest checkpoint it cosigned, in SQLite.

c2sp.org/tlog-witness §add-checkpoint: "The witness MUST persist the new checkpoint before
responding", and checking the old size and storing the new checkpoint must be one atomic step
(or a slow request for size N could roll back a faster one for N+K).  Here that step is a
compare-and-swap in one SQLite transaction (``UPDATE ... WHERE size = expected``, or an
``INSERT`` that fails if a row appeared): committed with ``synchronous=FULL`` in WAL mode
before the answer is sent, so a cosignature the witness returned survives a crash or a power
loss, and two processes sharing the file can never move a log backwards.

Crash order: nothing is written before the transaction commits; a crash before the commit
leaves the previous state (the client never got a cosignature for the new one).

Also kept: ``refusals``, requests from a trusted log that failed a consistency check (the
spec's MAY: "as it might be proof of log misbehavior"), capped per origin.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kfm_ledger.errors import StorageError

from .check import LogState

__all__ = ["STATE_FILE", "LogSummary", "WitnessState"]

#: The state database's name inside ``--state DIR``.
STATE_FILE = "witness.sqlite"
#: Refused requests kept per origin (the newest ones).
MAX_REFUSALS_PER_ORIGIN = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    note BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    request BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_by_origin ON refusals (origin, id);
"""


@dataclass(frozen=True)
class LogSummary:
    """One log's state: the latest cosigned size and root, when (POSIX seconds), and how many
    refused requests are kept."""

    origin: str
    size: int
    root: bytes
    updated_at: int
    refusals: int


class WitnessState:
    """The state database in a directory (created, mode 0700, if missing).

    One SQLite connection per thread (connections are not shared between threads); every
    write is its own ``BEGIN IMMEDIATE`` transaction.  Safe across processes.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.directory / STATE_FILE
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            self._connect()
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the witness state {self.path}: {e}", key=STATE_FILE) from None

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsync'd at every commit, so an answered cosignature is durable.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(_SCHEMA)
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def load(self, origin: str) -> LogState | None:
        """The latest checkpoint cosigned for ``origin``, or None if none ever was."""
        row = self._connect().execute("SELECT size, root, note FROM logs WHERE origin = ?", (origin,)).fetchone()
        if row is None:
            return None
        return LogState(origin=origin, size=int(row[0]), root=bytes(row[1]), note=bytes(row[2]))

    def origins(self) -> list[LogState]:
        """Every log the witness has cosigned for."""
        rows = self._connect().execute("SELECT origin, size, root, note FROM logs ORDER BY origin").fetchall()
        return [LogState(origin=r[0], size=int(r[1]), root=bytes(r[2]), note=bytes(r[3])) for r in rows]

    def summary(self) -> list[LogSummary]:
        """What ``kfm witness state`` prints: one :class:`LogSummary` per origin."""
        rows = self._connect().execute(
            "SELECT l.origin, l.size, l.root, l.updated_at, "
            "(SELECT count(*) FROM refusals r WHERE r.origin = l.origin) FROM logs l ORDER BY l.origin"
        ).fetchall()
        return [LogSummary(str(r[0]), int(r[1]), bytes(r[2]), int(r[3]), int(r[4])) for r in rows]

    def compare_and_swap(self, expected_size: int, new: LogState) -> bool:
        """Store ``new`` as the origin's state if its stored size is still ``expected_size``
        (0 and no row also counts as 0), atomically and durably; False if another request
        changed it first (nothing is written then)."""
        conn = self._connect()
        now = int(time.time())
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT size FROM logs WHERE origin = ?", (new.origin,)).fetchone()
            current = int(row[0]) if row is not None else 0
            if current != expected_size:
                conn.execute("ROLLBACK")
                return False
            conn.execute(
                "INSERT INTO logs (origin, size, root, note, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
                "note = excluded.note, updated_at = excluded.updated_at",
                (new.origin, new.size, new.root, new.note, now),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True

    def record_refusal(self, origin: str, status: int, reason: str, request: bytes) -> None:
        """Keep a refused request from a trusted log (possible evidence of misbehaviour)."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO refusals (origin, status, reason, request, at) VALUES (?, ?, ?, ?, ?)",
                (origin, status, reason[:2000], request, int(time.time())),
            )
            conn.execute(
                "DELETE FROM refusals WHERE origin = ? AND id NOT IN "
                "(SELECT id FROM refusals WHERE origin = ? ORDER BY id DESC LIMIT ?)",
                (origin, origin, MAX_REFUSALS_PER_ORIGIN),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def refusals(self, origin: str) -> list[tuple[int, str, bytes]]:
        """The refused requests kept for ``origin``, oldest first: (status, reason, request body)."""
        rows = self._connect().execute(
            "SELECT status, reason, request FROM refusals WHERE origin = ? ORDER BY id", (origin,)
        ).fetchall()
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def close(self) -> None:
        """Close every connection this object opened (on any thread)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.ProgrammingError:  # pragma: no cover - closed already
                pass
        self._local = threading.local()
