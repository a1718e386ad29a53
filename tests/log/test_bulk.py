"""Bulk appends from files: streamed, validated on both cores, all or nothing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from kfm_ledger.errors import InputRejected
from kfm_ledger.log import bulk
from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    """Take the streamed, parallel path for small test files, in many chunks."""
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)


def files(d: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.name.startswith("index.sqlite")
    }


def test_append_file_matches_append(tmp_path: Path) -> None:
    a = Ledger.init(tmp_path / "a", origin=ORIGIN, signer=None)
    fill(a, 10)
    (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(700, start=10))
    r = a.append_file(tmp_path / "rows.jsonl", signer=signer_of(a), workers=2)
    assert (r.first_index, r.count, a.size) == (10, 700, 710)
    assert list(a.iter_lines()) == [encode_row(sample_row(i)) for i in range(710)]
    assert verify_ledger(a).ok
    assert a.get(sample_row(555).lakefs_commit).index == 555


def test_every_problem_across_chunks_is_reported_and_nothing_written(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    before = files(tmp_path / "l")
    lines = sample_jsonl(600, start=10).splitlines()
    lines[450] = lines[20]  # repeats line 21 (another chunk) and goes back in time
    lines[500] = lines[500].replace(b'"kwh":', b'"kwh":-', 1)
    lines[550] = encode_row(msgspec.structs.replace(sample_row(3), created_at="2030-01-01T00:00:00Z"))
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputRejected) as e:
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2)
    found = [(p.line, p.path) for p in e.value.problems]
    assert found.count((451, "$.lakefs_commit")) == 1  # reported once, not by worker and index both
    repeat = next(p for p in e.value.problems if (p.line, p.path) == (451, "$.lakefs_commit"))
    assert "also on line 21" in repeat.message
    backwards = next(p for p in e.value.problems if (p.line, p.path) == (451, "$.created_at"))
    assert "on line 450" in backwards.message  # the other line's number is absolute too
    assert (451, "$.created_at") in found
    assert (501, "$.energy_carbon.kwh") in found
    assert files(tmp_path / "l") == before


def test_a_batch_repeating_a_ledger_commit_is_refused(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    before = files(tmp_path / "l")
    data = sample_jsonl(300, start=10) + encode_row(
        msgspec.structs.replace(sample_row(4), created_at="2030-01-01T00:00:00Z")
    ) + b"\n"
    (tmp_path / "rows.jsonl").write_bytes(data)
    with pytest.raises(InputRejected) as e:
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2)
    assert [(p.line, p.path) for p in e.value.problems] == [(301, "$.lakefs_commit")]
    assert "already in the ledger at index 4" in e.value.problems[0].message
    assert files(tmp_path / "l") == before


def test_a_json_array_file_goes_through_append(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    rows = b"[" + b",".join(encode_row(sample_row(i)) for i in range(5)) + b"]"
    (tmp_path / "rows.json").write_bytes(rows)
    assert led.append_file(tmp_path / "rows.json", signer=signer_of(led)).count == 5
    assert (tmp_path / "l" / JSONL_KEY).read_bytes().count(b"\n") == 5


def test_a_byte_order_mark_is_ignored_in_a_streamed_file(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    (tmp_path / "rows.jsonl").write_bytes(b"\xef\xbb\xbf" + sample_jsonl(200))
    assert led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2).count == 200
    assert led.entry(0).line == encode_row(sample_row(0))


def test_rebasing_a_chunk_shifts_every_line_number() -> None:
    """ChunkResult.rebase: consecutive rows (the usual chunk, rebuilt as a range) and rows with
    gaps (blank or refused lines between them) both move by the same amount."""
    import array

    from kfm_ledger.errors import RowProblem

    for lines in ([1, 2, 3, 4], [1, 3, 4, 9], [2], []):
        result = bulk.ChunkResult(first_line=1, line_count=10, lines=array.array("q", lines))
        result.problems = [RowProblem(5, "$", "x")]
        result.rebase(101)
        assert list(result.lines) == [n + 100 for n in lines]
        assert result.first_line == 101 and result.problems[0].line == 105


def test_a_failure_in_the_last_checks_waits_for_the_rows_still_being_copied(tmp_path: Path, monkeypatch) -> None:
    """A batch too small to write its rows in a thread of commit_batch's own (below
    OVERLAP_TILES_AT) still has chunks being copied into the JSONL by the rows-ahead thread when
    its last checks fail: the undo waits for them before it cuts, so that no copy lands after
    the cut (the JSONL would keep unsigned bytes no record accounts for)."""
    import sqlite3
    import threading
    import time

    from kfm_ledger import index

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    before = files(tmp_path / "l")
    real_copy = bulk.SpooledInput.copy_by_fd
    copies_started = threading.Event()

    def slow_copy(self, spool, append):  # type: ignore[no-untyped-def]
        copies_started.set()
        time.sleep(0.05)  # the last checks fail meanwhile
        return real_copy(self, spool, append)

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        copies_started.wait(5)
        raise sqlite3.OperationalError("database or disk is full")

    (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(600, start=10))
    with monkeypatch.context() as patched:  # (the small chunks of the autouse fixture stay)
        patched.setattr(bulk.SpooledInput, "copy_by_fd", slow_copy)
        patched.setattr(index.CommitIndex, "finish_inserts", full)
        with pytest.raises(sqlite3.OperationalError):
            led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2)
    assert copies_started.is_set()  # the rows went ahead by the copy this test slows
    time.sleep(0.5)  # any copy still running has landed by now
    assert files(tmp_path / "l") == before
    led.close()
    again = Ledger.open(tmp_path / "l")
    assert again.append_file(tmp_path / "rows.jsonl", signer=signer_of(again), workers=2).count == 600
    assert verify_ledger(again).ok
    again.close()
