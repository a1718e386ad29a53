"""verify's one-row-per-commit check when the commit index no longer matches the rows."""

from __future__ import annotations

from pathlib import Path

from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill


def ledger_with_rows(tmp_path: Path) -> Path:
    fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 10, 10, 10)
    return tmp_path / "l"


def repeats(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{f.where}: {f.message}" for f in report.failures if "lakefs_commit" in f.message]


def test_a_deleted_row_is_not_reported_as_a_repeated_commit(tmp_path: Path) -> None:
    d = ledger_with_rows(tmp_path)
    lines = (d / JSONL_KEY).read_bytes().splitlines(keepends=True)
    (d / JSONL_KEY).write_bytes(b"".join(lines[:7] + lines[8:]))  # row 8 deleted
    report = verify_ledger(Ledger.open(d))
    assert not report.ok
    wheres = [f.where for f in report.failures]
    assert JSONL_KEY in wheres and "checkpoint 10" in wheres and "index" in wheres
    assert "rows were removed" in str(report.failures[0])
    assert repeats(report) == []  # found by the tree and the index, not as a bogus repeat


def test_an_inserted_copy_is_reported_once_as_a_repeat(tmp_path: Path) -> None:
    d = ledger_with_rows(tmp_path)
    lines = (d / JSONL_KEY).read_bytes().splitlines(keepends=True)
    (d / JSONL_KEY).write_bytes(b"".join(lines[:15] + [lines[3]] + lines[15:]))  # row 4 again as line 16
    report = verify_ledger(Ledger.open(d))
    assert not report.ok
    assert repeats(report) == [
        "line 16: $.lakefs_commit: "
        + repr(report_commit(lines[3]))
        + " already appears at line 4 (one row per lakeFS commit)"
    ]


def report_commit(line: bytes) -> str:
    import json

    return json.loads(line)["lakefs_commit"]


def test_an_inserted_invalid_line_is_not_reported_as_a_repeat(tmp_path: Path) -> None:
    """Found in review: leaves of invalid rows were loaded into the repeat check from the index."""
    d = ledger_with_rows(tmp_path)
    lines = (d / JSONL_KEY).read_bytes().splitlines(keepends=True)
    (d / JSONL_KEY).write_bytes(b"".join(lines[:3] + [b"\n"] + lines[3:]))  # a blank line before row 4
    report = verify_ledger(Ledger.open(d))
    assert not report.ok
    assert str(report.failures[0]).startswith("line 4: $: invalid JSON")
    assert repeats(report) == []
