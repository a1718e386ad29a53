"""``kfm monitor``: tail a log over HTTP and report what is wrong with it (docs/network.md, "Monitor").

Each poll:

1. fetch ``/checkpoint`` and verify the log's signature; check its consistency with the last
   verified checkpoint from the tiles (:func:`.consistency.reconcile`): a fork is reported with
   its evidence file and stops the monitor; a rollback is reported and the state kept;
2. download the entry bundles of the new rows (c2sp.org/tlog-tiles "Log entries") and hash them
   onto the compact range of every row checked before (RFC 9162 §2.1; transparency-dev compact
   ranges): the root must equal the signed root, else the entries served are wrong and nothing
   of them is kept (no row is judged before it is proven);
3. check every new row as the ledger would: the row schema and canonical form
   (:func:`kfm_ledger.schema.codec.decode_canonical_line`), one row per lakeFS commit, and
   ``created_at`` never going backwards; each broken rule is one ``bad_row`` event;
4. report a checkpoint older than ``max_age``: the age is the time since this monitor first saw
   the current tree (a log that stops signing, or a server that stops showing new
   checkpoints, looks the same from outside).

Progress lives in ``<state>/<origin>/monitor.sqlite`` (rows checked, the compact range, the last
``created_at`` and every commit seen), updated in one transaction per poll.
"""

from __future__ import annotations

import base64
import datetime
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint
from kfm_ledger.errors import (
    ForkError,
    FormatError,
    KfmError,
    NetworkError,
    RemoteDataError,
    RollbackError,
    VerificationError,
)

from .consistency import reconcile
from .http_client import DEFAULT_TIMEOUT, Fetcher
from .remote import RemoteLog, WitnessPolicy
from .state import OriginState, default_state_dir

__all__ = ["MAX_ROW_EVENTS", "Event", "Monitor", "MonitorOptions"]

#: At most this many ``bad_row`` events per poll; a ``bad_rows_truncated`` event counts the rest.
MAX_ROW_EVENTS = 1000
#: Events that make ``--once`` exit 1.
PROBLEMS = frozenset({"fork", "rollback", "bad_data", "bad_row", "bad_rows_truncated", "stale", "error"})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One thing the monitor reports: ``kind`` and its fields (JSON line: ``{"event", "time", ...}``)."""

    kind: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=_now)

    @property
    def problem(self) -> bool:
        return self.kind in PROBLEMS

    def to_json(self) -> str:
        doc = {"event": self.kind, "time": self.time, "message": self.message, **self.fields}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    def to_text(self) -> str:
        return f"{self.time} {self.kind}: {self.message}"


@dataclass(frozen=True)
class MonitorOptions:
    url: str
    vkey: Verifier
    state_dir: Path | None = None
    max_age: float | None = None
    interval: float = 60.0
    timeout: float = DEFAULT_TIMEOUT
    #: Witness cosignatures required on every checkpoint (as ``kfm client``): ``quorum`` None
    #: means every witness key given.
    witnesses: tuple[Verifier, ...] = ()
    quorum: int | None = None

    def policy(self) -> WitnessPolicy:
        return WitnessPolicy(self.witnesses, len(self.witnesses) if self.quorum is None else self.quorum)


class _Progress:
    """``monitor.sqlite``: rows checked and what the invariants need to remember."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS commits (lakefs_commit TEXT PRIMARY KEY, leaf INTEGER NOT NULL)")

    def get(self, key: str, default: str = "") -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def set(self, **values: str) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    def compact_range(self) -> merkle.CompactRange:
        size = int(self.get("checked_size", "0"))
        peaks = [base64.b64decode(p) for p in self.get("peaks").split()]
        return merkle.CompactRange(size, peaks)

    def first_leaf_of(self, commit: str) -> int | None:
        row = self.conn.execute("SELECT leaf FROM commits WHERE lakefs_commit = ?", (commit,)).fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        self.conn.close()


class Monitor:
    """Polls one log; ``emit`` receives every event as it happens."""

    def __init__(self, options: MonitorOptions, emit: Callable[[Event], None]) -> None:
        self.options = options
        self.emit = emit
        self.state = OriginState(options.state_dir or default_state_dir(), options.vkey.name)
        self.fatal = False  # a fork was seen: stop

    def run(self, *, once: bool, sleep: Callable[[float], None] = time.sleep) -> int:
        """Poll once (exit code 1 if any problem was reported) or forever (until a fork: 1)."""
        while True:
            problems = self.poll()
            if once:
                return 1 if problems else 0
            if self.fatal:
                return 1
            sleep(self.options.interval)

    def poll(self) -> int:
        """One poll; returns how many problem events it reported."""
        events: list[Event] = []

        def report(event: Event) -> None:
            events.append(event)
            self.emit(event)

        with Fetcher(self.options.url, timeout=self.options.timeout) as fetcher:
            remote = RemoteLog(fetcher, self.options.vkey, self.options.policy())
            try:
                self._poll(remote, report)
            except ForkError as err:
                self.fatal = True
                report(Event("fork", str(err), {"evidence": err.evidence_path, "old_size": err.old_size,
                                                 "new_size": err.new_size}))
            except RollbackError as err:
                report(Event("rollback", str(err), {"stored_size": err.stored_size, "served_size": err.served_size}))
            except VerificationError as err:
                report(Event("bad_data", str(err), {"type": type(err).__name__}))
            except (NetworkError, FormatError) as err:
                report(Event("error", str(err), {"type": type(err).__name__}))
        return sum(e.problem for e in events)

    def _poll(self, remote: RemoteLog, report: Callable[[Event], None]) -> None:
        with self.state.locked():
            served, _ = remote.checkpoint()
            reconciled = reconcile(remote, self.state, served)
            progress = _Progress(self.state.dir / "monitor.sqlite")
            try:
                cp = served.checkpoint
                tree = f"{cp.size} {base64.b64encode(cp.root).decode()}"
                if progress.get("tree") != tree:
                    progress.set(tree=tree, tree_first_seen=str(time.time()))
                    report(Event("checkpoint", f"size {cp.size} verified (previous {reconciled.previous_size})",
                                 {"size": cp.size, "root": base64.b64encode(cp.root).decode(),
                                  "previous_size": reconciled.previous_size}))
                self._check_rows(remote, served, progress, report)
                self._check_age(progress, report)
            finally:
                progress.close()

    def _check_age(self, progress: _Progress, report: Callable[[Event], None]) -> None:
        if self.options.max_age is None:
            return
        age = time.time() - float(progress.get("tree_first_seen", str(time.time())))
        if age > self.options.max_age:
            limit = self.options.max_age
            message = f"the log's checkpoint has not changed for {age:.0f} s (more than --max-age {limit:g} s)"
            report(Event("stale", message, {"age_seconds": round(age, 3), "max_age": self.options.max_age}))

    def _check_rows(
        self, remote: RemoteLog, served: SignedCheckpoint, progress: _Progress, report: Callable[[Event], None]
    ) -> None:
        cp = served.checkpoint
        compact = progress.compact_range()
        start = compact.size
        if start >= cp.size:
            return
        checker = _RowChecker(progress)
        progress.conn.execute("BEGIN")
        try:
            for index, line in self._new_entries(remote, start, cp.size):
                compact.append(merkle.leaf_hash(line))
                checker.check(index, line)
            if compact.root() != cp.root:
                raise RemoteDataError(
                    f"the entry bundles served for rows {start}..{cp.size - 1} do not hash to the signed root of "
                    f"tree size {cp.size}: the server sent wrong entries; nothing of them was kept",
                    url=remote.fetcher.base_url,
                    what="entry bundle",
                )
            progress.set(
                checked_size=str(cp.size),
                peaks=" ".join(base64.b64encode(p).decode() for p in compact.peaks),
                last_created_at=checker.last_created_at,
            )
            progress.conn.execute("COMMIT")
        except BaseException:
            progress.conn.execute("ROLLBACK")
            raise
        # Proven: only now are the rows judged in public.
        for event in checker.events:
            report(event)
        if checker.not_listed:
            report(Event("bad_rows_truncated", f"{checker.not_listed} more bad rows not listed",
                         {"count": checker.not_listed}))
        bad = len(checker.events) + checker.not_listed
        report(Event("rows", f"rows {start}..{cp.size - 1} checked ({cp.size - start} rows, {bad} bad)",
                     {"start": start, "stop": cp.size, "bad": bad}))

    @staticmethod
    def _new_entries(remote: RemoteLog, start: int, size: int) -> Iterator[tuple[int, bytes]]:
        for bundle in range(start // tiles.TILE_WIDTH, (size - 1) // tiles.TILE_WIDTH + 1):
            entries = remote.bundle(bundle, size)
            first = bundle * tiles.TILE_WIDTH
            for offset in range(max(start - first, 0), len(entries)):
                yield first + offset, entries[offset]


class _RowChecker:
    """The ledger's row rules over the new rows, in order (schema, canonical form, one row per
    commit, ``created_at`` not going backwards); collects ``bad_row`` events."""

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress
        self.last_created_at = progress.get("last_created_at")
        self._last_dt = self._parse(self.last_created_at)
        self.events: list[Event] = []
        self.not_listed = 0

    @staticmethod
    def _parse(text: str) -> datetime.datetime | None:
        from kfm_ledger.schema.timestamps import parse_created_at

        try:
            return parse_created_at(text) if text else None
        except (KfmError, ValueError):
            return None

    def _bad(self, index: int, rule: str, message: str, **more: Any) -> None:
        if len(self.events) >= MAX_ROW_EVENTS:  # counted, not kept: memory stays bounded
            self.not_listed += 1
            return
        self.events.append(Event("bad_row", f"row {index}: {message}", {"index": index, "rule": rule, **more}))

    def check(self, index: int, line: bytes) -> None:
        from kfm_ledger.schema.codec import decode_canonical_line
        from kfm_ledger.schema.timestamps import created_at_datetime

        try:
            row = decode_canonical_line(line)
        except KfmError as err:
            self._bad(index, "schema", str(err))
            return
        commit = row.lakefs_commit
        try:
            self.progress.conn.execute("INSERT INTO commits VALUES (?, ?)", (commit, index))
        except sqlite3.IntegrityError:
            first = self.progress.first_leaf_of(commit)
            self._bad(index, "one_row_per_commit", f"lakeFS commit {commit!r} already has row {first}",
                      lakefs_commit=commit, first_index=first)
        created = created_at_datetime(row)
        if self._last_dt is not None and created < self._last_dt:
            self._bad(index, "created_at_order", f"created_at {row.created_at} is earlier than the previous "
                      f"row's {self.last_created_at}", created_at=row.created_at, previous=self.last_created_at)
        else:
            self._last_dt, self.last_created_at = created, row.created_at
