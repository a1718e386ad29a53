"""Files opened by path by a library (SQLite, pyarrow/DuckDB, the bulk workers) are the
files that were checked (hardening issue, item 2): a link swapped in between the check and
the open is refused (the index) or never opened (mirror, JSONL, append input)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from kfm_ledger import index as index_module
from kfm_ledger.errors import StorageError
from kfm_ledger.index import SqliteFileIndex
from kfm_ledger.log import bulk
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 6).close()
    return tmp_path / "l"


def outside_db(tmp_path: Path) -> Path:
    other = tmp_path / "outside.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE secret (x)")
    return other


# -- the commit index (SQLite) ----------------------------------------------------------


def test_a_link_swapped_in_before_sqlite_opens_the_index_is_refused(ledger: Path, tmp_path: Path, monkeypatch) -> None:
    other = outside_db(tmp_path)
    path = ledger / "index.sqlite"

    def plant(stage: str, _path: str) -> None:
        if stage == "before-open":
            path.unlink()
            path.symlink_to(other)

    monkeypatch.setattr(index_module, "_race_hook", plant)
    with pytest.raises(StorageError, match=r"index\.sqlite"):
        SqliteFileIndex(path).connect()


@linux_only
def test_a_link_swapped_in_and_back_is_refused_by_what_sqlite_opened(ledger: Path, tmp_path: Path, monkeypatch) -> None:
    other = outside_db(tmp_path)
    path = ledger / "index.sqlite"
    aside = tmp_path / "aside.sqlite"

    def plant(stage: str, _path: str) -> None:
        if stage == "before-open":
            path.rename(aside)
            path.symlink_to(other)
        else:  # after SQLite opened it: the real file back, so a second lstat sees nothing wrong
            path.unlink()
            aside.rename(path)

    monkeypatch.setattr(index_module, "_race_hook", plant)
    with pytest.raises(StorageError, match="not the regular file at that path"):
        SqliteFileIndex(path).connect()


def test_the_index_opens_normally_and_twice_in_one_process(ledger: Path) -> None:
    a = SqliteFileIndex(ledger / "index.sqlite").connect()
    b = SqliteFileIndex(ledger / "index.sqlite").connect()  # the -shm is shared within the process
    assert a.execute("SELECT count(*) FROM entries").fetchone() == (6,)
    assert b.execute("SELECT count(*) FROM entries").fetchone() == (6,)
    a.close()
    b.close()


def test_a_ledger_whose_index_is_swapped_during_the_open_refuses(ledger: Path, tmp_path: Path, monkeypatch) -> None:
    other = outside_db(tmp_path)
    path = ledger / "index.sqlite"

    def plant(stage: str, _path: str) -> None:
        if stage == "before-open" and not path.is_symlink():
            path.unlink()
            path.symlink_to(other)

    led = Ledger.open(ledger)
    monkeypatch.setattr(index_module, "_race_hook", plant)
    with pytest.raises(StorageError):
        _ = led.index
    with sqlite3.connect(other) as db:  # the outside file was never made an index
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["secret"]


# -- the mirror (pyarrow, DuckDB) ---------------------------------------------------------


@linux_only
def test_the_mirror_handed_to_readers_is_the_file_checked(ledger: Path, tmp_path: Path) -> None:
    from kfm_ledger.mirror import mirror_source, write_mirror

    led = Ledger.open(ledger)
    write_mirror(led)
    source = mirror_source(led)
    assert isinstance(source, str) and source.startswith("/proc/self/fd/")
    mirror = ledger / "rollback-index.parquet"
    original = mirror.read_bytes()
    decoy = tmp_path / "decoy.parquet"
    decoy.write_bytes(b"PAR1 not this one")
    mirror.unlink()
    mirror.symlink_to(decoy)  # swapped after the check: the readers still get the checked file
    assert Path(source).read_bytes() == original


def test_a_link_at_the_mirror_is_refused(ledger: Path, tmp_path: Path) -> None:
    from kfm_ledger.mirror import mirror_source, write_mirror

    led = Ledger.open(ledger)
    write_mirror(led)
    mirror = ledger / "rollback-index.parquet"
    moved = tmp_path / "moved.parquet"
    shutil.move(mirror, moved)
    mirror.symlink_to(moved)
    with pytest.raises(StorageError, match=r"rollback-index\.parquet"):
        mirror_source(led)


# -- the JSONL read by verify's workers ----------------------------------------------------


@linux_only
def test_verify_workers_read_the_jsonl_that_was_checked(ledger: Path, tmp_path: Path, monkeypatch) -> None:
    jsonl = ledger / "rollback-index.jsonl"
    checked = os.stat(jsonl)
    seen: list[tuple[str, int]] = []
    real = bulk.validate_stored_file

    def spy(path: str, end: int, **kw):
        seen.append((path, os.stat(path).st_ino))
        return real(path, end, **kw)

    monkeypatch.setattr(bulk, "validate_stored_file", spy)
    assert verify_ledger(Ledger.open(ledger), check_mirror=False).ok
    assert seen and all(p.startswith("/proc/self/fd/") and ino == checked.st_ino for p, ino in seen)


# -- append's input file -------------------------------------------------------------------


@linux_only
def test_append_file_reads_only_the_input_it_checked(ledger: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(sample_jsonl(30, start=6))
    decoy = tmp_path / "decoy.jsonl"
    decoy.write_bytes(sample_jsonl(5, start=100))
    real = bulk.SpooledInput

    def swap_then_spool(path: str, **kw):
        rows.unlink()
        rows.symlink_to(decoy)  # swapped after the check, before the workers open the input
        return real(path, **kw)

    monkeypatch.setattr(bulk, "SpooledInput", swap_then_spool)
    led = Ledger.open(ledger)
    result = led.append_file(rows, signer=signer_of(led), workers=2)
    assert result.count == 30  # the checked file's rows, not the decoy's 5
    assert led.entry(6).line == sample_jsonl(1, start=6).rstrip(b"\n")
