"""The commit index is a cache, never evidence (hardening issue, item 1): edits behind the
ledger's back are healed before use or found by `kfm verify`, and never change an answer or
let a repeated commit or a backwards created_at be signed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from kfm_ledger.errors import CorruptLedgerError, InputRejected
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    led = fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 10)
    led.close()
    return tmp_path / "l"


def edit_index(ledger: Path, *statements: str) -> None:
    with sqlite3.connect(ledger / "index.sqlite") as db:
        for sql in statements:
            db.execute(sql)


def test_a_plain_index_in_place_of_the_unique_one_is_rebuilt_before_use(ledger: Path) -> None:
    edit_index(ledger, "DROP INDEX entries_commit", "CREATE INDEX entries_commit ON entries(lakefs_commit)")
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected, match="already"):
        led.append(sample_jsonl(1, start=3), signer=signer_of(led))  # row 3's commit again
    with sqlite3.connect(ledger / "index.sqlite") as db:
        assert [r[2] for r in db.execute("PRAGMA index_list(entries)") if r[1] == "entries_commit"] == [1]
    assert verify_ledger(Ledger.open(ledger)).ok


def test_an_edited_created_at_column_never_lets_time_go_backwards(ledger: Path) -> None:
    edit_index(ledger, "UPDATE entries SET created_at = '1970-01-01T00:00:00Z'")
    led = Ledger.open(ledger)
    old = msgspec.structs.replace(sample_row(100), created_at="2000-01-01T00:00:00Z")  # a new commit, in 2000
    with pytest.raises(InputRejected, match="created_at never goes backwards"):
        led.append(encode_row(old) + b"\n", signer=signer_of(led))
    assert led.size == 10


def test_a_lowered_size_meta_is_caught_up_and_checked_by_verify(ledger: Path) -> None:
    edit_index(ledger, "UPDATE meta SET value = '9' WHERE key = 'size'")
    report = verify_ledger(Ledger.open(ledger))
    assert report.ok, report.failures
    assert any("brought up to date from the signed rows, then checked" in n for n in report.notes), report.notes
    assert not any("not checked" in n for n in report.notes)


def test_swapped_entries_fail_verify_and_never_answer(ledger: Path) -> None:
    led = Ledger.open(ledger)
    a, b = led.entry(2).row.lakefs_commit, led.entry(3).row.lakefs_commit
    led.close()
    edit_index(
        ledger,
        "UPDATE entries SET lakefs_commit = 'x' WHERE leaf = 2",
        f"UPDATE entries SET lakefs_commit = '{a}' WHERE leaf = 3",
        f"UPDATE entries SET lakefs_commit = '{b}' WHERE leaf = 2",
    )
    report = verify_ledger(Ledger.open(ledger))
    assert not report.ok and [f.where for f in report.failures] == ["index"]
    assert "at index 2" in report.failures[0].message
    with pytest.raises(CorruptLedgerError):
        Ledger.open(ledger).get(a)  # the index points at row 3: its commit is not the one asked for


def test_a_deleted_index_is_rebuilt_and_checked(ledger: Path) -> None:
    (ledger / "index.sqlite").unlink()
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected, match="already"):
        led.append(sample_jsonl(1, start=5), signer=signer_of(led))
    assert verify_ledger(Ledger.open(ledger)).ok
