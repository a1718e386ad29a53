"""``kfm verify`` for an S3 ledger: every object checked against the signed checkpoints, bounded memory.

One streaming pass over the rows (entry bundles fetched in parallel windows,
:data:`~kfm_ledger.log.remote.STREAM_WINDOW` at a time), checking:

* every kept checkpoint (``checkpoints/<size>``): its signature, that none is beyond the
  latest ``checkpoint`` (a rolled-back checkpoint), that the previous size each one names
  is kept, and that the tree of that many rows has the root it signed (RFC 9162 §2.1.1);
* that ``checkpoints/<latest>`` is the latest ``checkpoint`` (the tree is complete);
* every row: a valid row of the schema, ``created_at`` never going backwards, one row per
  lakeFS commit (a temporary on-disk SQLite set, so memory does not grow with the rows);
* every object each append created, recomputed from the rows between two signed sizes
  (:func:`kfm_ledger.log.staging.extend`): full and partial hash tiles and entry bundles
  must exist with exactly those bytes (a tile or bundle overwritten behind the ledger's
  back is named);
* ``--since``: the saved checkpoint's tree is a prefix of this one (same root at its size).

Leftover staging objects are reported as notes (``kfm recover`` removes them).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from kfm_ledger import schema
from kfm_ledger.core import merkle
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.errors import KfmError
from kfm_ledger.verify.report import VerifyReport

from .checkpoint_chain import previous_signed_size
from .layout import CHECKPOINT_KEY, CHECKPOINTS_PREFIX, checkpoint_key, checkpoint_size_of
from .staging import STAGING_PREFIX, TreeEdge, extend

if TYPE_CHECKING:
    from .progress import Progress
    from .remote import RemoteLedger

__all__ = ["verify_remote"]

#: Reports one failure: where, what.
Fail = Callable[[str, str], None]
#: Rows held at once between two signed sizes (a larger append is checked in pieces of this many).
SEGMENT_ROWS = 4096


def verify_remote(
    led: RemoteLedger,
    *,
    since: bytes | None = None,
    since_verifier: Verifier | None = None,
    progress: Progress | None = None,
    max_failures: int = 200,
) -> VerifyReport:
    """Verify an S3 ledger in one streaming pass; never raises for what it finds (see the module docstring)."""
    try:
        led.refresh()
    except KfmError as exc:
        report = VerifyReport(origin=led.origin, size=led.size, root=led.root)
        report.fail(CHECKPOINT_KEY, str(exc), max_failures)
        return report
    report = VerifyReport(origin=led.origin, size=led.size, root=led.root)

    def fail(where: str, message: str) -> None:
        report.fail(where, message, max_failures)

    roots = _checkpoints(led, report, fail)
    since_tree = _open_since(led, since, since_verifier, report, fail) if since is not None else None
    since_size = since_tree[0] if since_tree is not None else None
    sizes = sorted(s for s in set(roots) | ({since_size} if since_size is not None else set()) if s <= led.size)
    if not sizes or sizes[-1] != led.size:
        sizes.append(led.size)
    try:
        _rows_and_objects(led, report, fail, roots, sizes, since_tree, progress)
    except KfmError as exc:
        fail("tile/entries/", f"the rows could not be read to the end: {exc}")
    staging = [k for k in _safe_list(led, STAGING_PREFIX)]
    if staging:
        report.notes.append(
            f"{len(staging)} staging object(s) left by interrupted or losing writers; `kfm recover` removes them"
        )
    return report


def _safe_list(led: RemoteLedger, prefix: str) -> list[str]:
    try:
        return list(led.storage.list(prefix))
    except KfmError:
        return []


def _checkpoints(led: RemoteLedger, report: VerifyReport, fail: Fail) -> dict[int, bytes]:
    """Signed roots by tree size, from every kept checkpoint that verifies."""
    roots: dict[int, bytes] = {led.size: led.root}
    keys = _safe_list(led, CHECKPOINTS_PREFIX)
    sizes = sorted(s for s in (checkpoint_size_of(k) for k in keys) if s is not None)
    notes = led.storage.read_many([checkpoint_key(s) for s in sizes])
    named: dict[int, int | None] = {}
    for size, note in zip(sizes, notes):
        where = checkpoint_key(size)
        if note is None:
            continue
        try:
            signed = open_checkpoint(note, [led.verifier], origin=led.origin)
        except KfmError as exc:
            fail(where, f"does not verify: {exc}")
            continue
        report.checkpoints_checked += 1
        if signed.checkpoint.size != size:
            fail(where, f"holds a checkpoint for tree size {signed.checkpoint.size}")
            continue
        if size > led.size:
            fail(where, f"the log signed tree size {size}, but `checkpoint` is at {led.size}: the checkpoint was "
                        "rolled back")
            continue
        roots[size] = signed.checkpoint.root
        named[size] = previous_signed_size(signed.checkpoint)
    if led.size not in named:
        fail(checkpoint_key(led.size), "missing: the latest tree is not complete (run `kfm recover`)")
    elif notes[sizes.index(led.size)] != led.checkpoint.note:
        fail(checkpoint_key(led.size), "differs from `checkpoint` for the same tree size")
    for size, previous in named.items():
        if previous is not None and previous not in roots:
            fail(checkpoint_key(previous), f"missing: the checkpoint for size {size} names it as the one before")
    return roots


def _open_since(led: RemoteLedger, note: bytes, verifier: Verifier | None, report: VerifyReport,
                fail: Fail) -> tuple[int, bytes] | None:
    try:
        signed = open_checkpoint(note, [verifier or led.verifier], origin=led.origin)
    except KfmError as exc:
        fail("since", f"the saved checkpoint does not verify: {exc}")
        return None
    report.since_size = signed.checkpoint.size
    if signed.checkpoint.size > led.size:
        fail("since", f"the saved checkpoint is at tree size {signed.checkpoint.size}, beyond the ledger's "
                      f"{led.size}: the ledger was rolled back")
        return None
    return signed.checkpoint.size, signed.checkpoint.root


class _Commits:
    """One row per lakeFS commit, checked in a temporary SQLite file (memory does not grow with the rows)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kfm-verify-")
        self._db = sqlite3.connect(f"{self._dir.name}/commits.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE c (commit_id TEXT PRIMARY KEY, leaf INTEGER NOT NULL) WITHOUT ROWID")
        self._db.execute("BEGIN")

    def add(self, commit: str, leaf: int) -> int | None:
        """The leaf that already holds ``commit``, else None (and ``commit`` is recorded at ``leaf``)."""
        try:
            self._db.execute("INSERT INTO c VALUES (?, ?)", (commit, leaf))
        except sqlite3.IntegrityError:
            row = self._db.execute("SELECT leaf FROM c WHERE commit_id = ?", (commit,)).fetchone()
            return int(row[0])
        return None

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


def _segments(sizes: list[int]) -> Iterator[tuple[int, int, bool]]:
    """(start, stop, ends at a signed size) pieces of at most SEGMENT_ROWS rows between the signed sizes."""
    start = 0
    for size in sizes:
        while size - start > SEGMENT_ROWS:
            yield start, start + SEGMENT_ROWS, False
            start += SEGMENT_ROWS
        if size > start:
            yield start, size, True
        start = size


def _rows_and_objects(
    led: RemoteLedger,
    report: VerifyReport,
    fail: Fail,
    roots: dict[int, bytes],
    sizes: list[int],
    since_tree: tuple[int, bytes] | None,
    progress: Progress | None,
) -> None:
    commits = _Commits()
    stream = led.raw_entries(0, led.size)
    edge = TreeEdge.empty()
    previous: tuple[schema.Row, datetime] | None = None  # the last valid row and its created_at as a datetime
    try:
        for start, stop, signed_stop in _segments(sizes):
            entries = [next(stream) for _ in range(stop - start)]
            for i, entry in enumerate(entries, start):
                previous = _check_row(i, entry, previous, commits, fail)
            report.rows_checked = stop
            ext = extend(edge, entries)  # the tiles, bundles and root (RFC 9162 §2.1.1) of the rows so far
            edge = ext.edge
            wanted = [(k, v) for k, v in ext.objects if signed_stop or ".p/" not in k]
            rows_ok = None if stop not in roots else ext.root == roots[stop]
            if rows_ok is False:
                where = CHECKPOINT_KEY if stop == led.size else checkpoint_key(stop)
                fail(where, f"the {stop} rows in the bundles do not give the root this checkpoint signed: rows "
                            "were changed")
            _check_objects(led, report, fail, wanted, stop, rows_ok)
            if since_tree is not None and stop == since_tree[0]:
                _check_since(fail, ext.root, since_tree)
            if progress is not None:
                progress(stop, led.size)
        if since_tree is not None and since_tree[0] == 0:
            _check_since(fail, merkle.EMPTY_ROOT, since_tree)
    finally:
        commits.close()


def _check_row(i: int, entry: bytes, previous: tuple[schema.Row, datetime] | None, commits: _Commits,
               fail: Fail) -> tuple[schema.Row, datetime] | None:
    try:
        row = schema.decode_row(entry)
    except KfmError as exc:
        fail(f"row {i}", f"not a valid row: {exc}")
        return previous
    at = schema.created_at_datetime(row)
    if previous is not None and at < previous[1]:
        fail(f"row {i}", f"$.created_at: {row.created_at} is earlier than the previous row's {previous[0].created_at}")
    earlier = commits.add(row.lakefs_commit, i)
    if earlier is not None:
        fail(f"row {i}", f"commit {row.lakefs_commit!r} is already at index {earlier}; one row per lakeFS commit")
    return row, at


def _check_objects(led: RemoteLedger, report: VerifyReport, fail: Fail, wanted: list[tuple[str, bytes]],
                   size: int, rows_ok: bool | None) -> None:
    """Compare the objects the rows give with the stored ones.

    ``rows_ok`` False (the rows do not give the signed root): a level-0 tile that differs
    names its entry bundle (the rows were changed, not the tile) and the other tiles that
    differ are the consequence, not reported; True or None (not a signed size): every
    difference is reported where it is.
    """
    found = led.storage.read_many([k for k, _ in wanted])
    for (key, data), stored in zip(wanted, found):
        bundle = key.startswith("tile/entries/")
        if not bundle:
            report.tiles_checked += 1
        if stored is None:
            fail(key, f"missing (the rows up to tree size {size} give it)")
        elif stored != data:
            if rows_ok is False and key.startswith("tile/0/"):
                fail("tile/entries/" + key[len("tile/0/"):], f"its rows do not hash to the leaves of {key} and do "
                     f"not give the signed root at tree size {size}: a row was changed behind the ledger's back")
            elif rows_ok is False and not bundle:
                continue  # a consequence of the changed rows
            else:
                fail(key, f"differs from what the signed rows give (tree size {size}): changed behind the ledger's "
                          "back")


def _check_since(fail: Fail, root: bytes, since_tree: tuple[int, bytes]) -> None:
    """The saved checkpoint's tree must be this ledger's first rows (RFC 9162 §2.1.4: same root at its size)."""
    size, signed_root = since_tree
    if root != signed_root:
        fail("since", f"the ledger's first {size} rows do not give the saved checkpoint's root: the ledger does not "
                      "extend it (rows were changed or the log forked)")
