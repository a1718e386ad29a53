"""A pending-append record is trusted only for the bytes it accounts for, within bounds
derived from its byte lengths; verify fails on rows past the signed size unless they are
exactly a recoverable, schema-valid interrupted append (issue parts 3 and 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfm_ledger.errors import CorruptLedgerError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.recovery import PendingAppend
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage import local_dir_of
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of

JSONL = "rollback-index.jsonl"


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    ledger = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    fill(ledger, 3)
    yield ledger
    ledger.close()


def _plant(led: Ledger, tail: bytes, *, new_size: int | None = None, new_end: int | None = None) -> dict:
    d = Path(str(local_dir_of(led.storage)))
    jsonl = d / JSONL
    old_end = jsonl.stat().st_size
    with jsonl.open("ab") as f:
        f.write(tail)
    record = {
        "old_size": led.size,
        "old_end": old_end,
        "new_size": led.size + tail.count(b"\n") if new_size is None else new_size,
        "new_end": old_end + len(tail) if new_end is None else new_end,
    }
    (d / "pending-append").write_bytes(json.dumps(record).encode() + b"\n")
    return record


def _cli(led: Ledger, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "kfm_ledger", *args, "--ledger", str(local_dir_of(led.storage))],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_planted_record_over_invalid_lines_fails_verify(led: Ledger) -> None:
    _plant(led, b'{"not": "a row"}\nnonsense\n')
    report = verify_ledger(led)
    assert not report.ok
    assert any("is not a valid row" in f.message for f in report.failures)
    r = _cli(led, "verify")
    assert r.returncode != 0, r.stdout + r.stderr


def test_planted_record_over_invalid_lines_fails_verify_since(led: Ledger, tmp_path: Path) -> None:
    accepted = tmp_path / "accepted.cp"
    accepted.write_bytes(Path(led.storage.local_path("checkpoint")).read_bytes())
    _plant(led, b"x\n")
    vkey = led.storage.local_path("log.vkey")
    r = _cli(led, "verify", "--since", str(accepted), "--vkey", vkey)
    assert r.returncode != 0, r.stdout + r.stderr


def test_a_recoverable_interrupted_append_is_a_note_naming_recover(led: Ledger) -> None:
    _plant(led, sample_jsonl(2, start=3))
    report = verify_ledger(led)
    assert report.ok, report.failures
    assert any("2 unsigned row(s) of an interrupted append (rows 3..4)" in n and "kfm recover" in n
               for n in report.notes)
    assert led.recover().bytes_rolled_back > 0
    assert led.size == 3 and verify_ledger(led).ok


def test_a_torn_prefix_of_an_interrupted_append_is_recoverable(led: Ledger) -> None:
    rows = sample_jsonl(2, start=3)
    _plant(led, rows[: len(rows) - 5], new_size=5, new_end=None)
    # The record names the whole batch; only part of it was written.
    record = json.loads(Path(led.storage.local_path("pending-append")).read_bytes())
    record["new_end"] += 5
    Path(led.storage.local_path("pending-append")).write_text(json.dumps(record))
    report = verify_ledger(led)
    assert report.ok, report.failures
    assert any("torn byte(s)" in n for n in report.notes)


def test_rows_past_the_recorded_end_fail(led: Ledger) -> None:
    rows = sample_jsonl(2, start=3)
    record = _plant(led, rows)
    record["new_size"], record["new_end"] = 4, record["old_end"] + rows.index(b"\n") + 1
    Path(led.storage.local_path("pending-append")).write_text(json.dumps(record))
    report = verify_ledger(led)
    assert not report.ok
    with pytest.raises(CorruptLedgerError, match="more than the interrupted append"):
        led.recover()


def test_more_rows_than_recorded_or_fewer_fail(led: Ledger) -> None:
    rows = sample_jsonl(3, start=3)
    record = _plant(led, rows, new_size=led.size + 2)
    assert record["new_size"] == 5
    assert not verify_ledger(led).ok


def test_a_finished_record_does_not_cover_later_bytes(led: Ledger) -> None:
    d = Path(str(local_dir_of(led.storage)))
    end = (d / JSONL).stat().st_size
    with (d / JSONL).open("ab") as f:
        f.write(sample_jsonl(1, start=3))
    (d / "pending-append").write_text(json.dumps({"old_size": 2, "old_end": 1, "new_size": 3, "new_end": end}))
    report = verify_ledger(led)
    assert not report.ok
    assert any("does not account for" in f.message for f in report.failures)


@pytest.mark.parametrize("record", [
    {"old_size": 3, "old_end": 0, "new_size": 10**15, "new_end": 10},
    {"old_size": 3, "old_end": 0, "new_size": 4, "new_end": 10, "extra": 1},
    {"old_size": 3, "old_end": 0, "new_size": 4, "new_end": 2**63},
    {"old_size": 3, "old_end": 0, "new_size": 4.0, "new_end": 10},
    {"old_size": True, "old_end": 0, "new_size": 4, "new_end": 10},
    [3, 0, 4, 10],
])
def test_records_whose_numbers_do_not_fit_are_refused(record: object) -> None:
    with pytest.raises(ValueError):
        PendingAppend.from_json(json.dumps(record).encode())


def test_a_record_claiming_10_to_the_15_rows_is_a_clear_error(led: Ledger) -> None:
    record = _plant(led, sample_jsonl(1, start=3), new_size=10**15)
    assert record["new_size"] == 10**15
    start = time.monotonic()
    report = verify_ledger(led)
    assert not report.ok and any("pending-append" in f.where for f in report.failures)
    with pytest.raises(CorruptLedgerError, match="cannot fit"):
        led.recover()
    with pytest.raises(CorruptLedgerError, match="cannot fit"):
        led.append(sample_jsonl(1, start=3), signer=signer_of(led))
    assert time.monotonic() - start < 30


def test_a_record_with_huge_byte_counts_rolls_back_without_looping(led: Ledger) -> None:
    # Its numbers fit each other but no bytes back them: recovery does work bounded by
    # what storage holds (it lists the tiles), never by the record.
    rows = sample_jsonl(1, start=3)
    _plant(led, rows, new_size=10**15, new_end=10**17)
    start = time.monotonic()
    report = led.recover()
    assert time.monotonic() - start < 30
    assert report.bytes_rolled_back == len(rows) and led.size == 3
    assert verify_ledger(led).ok
    led.append(sample_jsonl(1, start=3), signer=signer_of(led))
    assert led.size == 4 and verify_ledger(led).ok
