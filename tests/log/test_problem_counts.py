"""Refusals count every problem, exactly or saying "at least", and list them under one cap on
every path (hardening issue, item 4: the small-batch total was a silent lower bound)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_ledger.errors import InputRejected
from kfm_ledger.log import bulk
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row

from conftest import ORIGIN, fill, signer_of


def two_problems(i: int) -> bytes:
    """A row with two problems: a negative kwh and a negative gCO2e/kWh intensity."""
    line = encode_row(sample_row(i)).replace(b'"kwh":', b'"kwh":-', 1)
    return line.replace(b'"co2e_kg":', b'"co2e_kg":-', 1)


def refused(led: Ledger, data: bytes, **kw) -> InputRejected:
    with pytest.raises(InputRejected) as e:
        led.append(data, signer=signer_of(led), **kw)
    return e.value


def test_under_the_cap_the_count_is_exact(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    e = refused(led, b"\n".join(two_problems(i) for i in range(4)) + b"\n")
    assert (e.total, len(e.problems), e.total_exact) == (8, 8, True)
    assert "8 problem(s)" in str(e) and "at least" not in str(e)


def test_past_the_cap_an_undiagnosed_count_says_at_least(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    e = refused(led, b"\n".join(two_problems(i) for i in range(10)) + b"\n", max_problems=6)
    assert len(e.problems) == 6 and e.total_exact is False
    assert e.total >= 10  # 3 rows diagnosed (6 problems), 7 counted as one each: at least 13
    assert f"showing 6 of at least {e.total:,} problems" in str(e)
    assert "at least" in e.diagnostics().splitlines()[-1]


def test_stored_commits_are_counted_past_the_cap(tmp_path: Path) -> None:
    led = fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 5)
    bad = b"\n".join(encode_row(sample_row(100 + i)).replace(b'"kwh":', b'"kwh":-', 1) for i in range(4))
    # 4 one-problem rows (diagnosed up to the cap of 4), then 5 rows already stored (the first
    # of them also goes back in time after row 103): 4 + 1 + 5, all counted past the cap.
    e = refused(led, bad + b"\n" + sample_jsonl(5, start=0), max_problems=4)
    assert len(e.problems) == 4
    assert (e.total, e.total_exact) == (10, True)


def test_an_unchecked_ledger_rule_makes_the_count_a_lower_bound(tmp_path: Path) -> None:
    import sqlite3

    led = fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 3)
    led.close()
    with sqlite3.connect(tmp_path / "l" / "index.sqlite") as db:
        db.execute("DELETE FROM seal")  # read-only, the stored commits cannot be checked
    led = Ledger.open(tmp_path / "l")
    bad = encode_row(sample_row(50)).replace(b'"kwh":', b'"kwh":-', 1)
    e = refused(led, bad + b"\n" + sample_jsonl(1, start=60))
    assert (e.total, e.total_exact) == (1, False)
    assert "at least 1 problem(s)" in str(e)


@pytest.fixture
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)


def test_the_bulk_path_counts_every_problem_exactly(tmp_path: Path, small_chunks) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(two_problems(i) for i in range(30)) + b"\n")
    with pytest.raises(InputRejected) as e:
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2, max_problems=10)
    assert (len(e.value.problems), e.value.total, e.value.total_exact) == (10, 60, True)


def test_the_bulk_path_counts_repeated_commits_past_the_cap(tmp_path: Path, small_chunks) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    rows = sample_jsonl(20, start=0)
    lines = rows.splitlines()
    # Each row twice, in order (created_at does not go backwards): 20 repeated commits.
    doubled = b"".join(line + b"\n" + line + b"\n" for line in lines)
    (tmp_path / "rows.jsonl").write_bytes(doubled)
    with pytest.raises(InputRejected) as e:
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2, max_problems=5)
    assert (len(e.value.problems), e.value.total, e.value.total_exact) == (5, 20, True)


def test_a_small_file_is_capped_like_a_large_one(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(two_problems(i) for i in range(4)) + b"\n")
    with pytest.raises(InputRejected) as e:  # under the bulk threshold: the in-memory path
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), max_problems=3)
    assert len(e.value.problems) == 3 and e.value.total >= 4


def test_the_cli_json_carries_the_total_and_whether_it_is_exact(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from kfm_ledger.cli import app

    Ledger.init(tmp_path / "l", origin=ORIGIN).close()
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(two_problems(i) for i in range(3)) + b"\n")
    result = CliRunner().invoke(app, ["append", str(tmp_path / "bad.jsonl"), "--ledger", str(tmp_path / "l"), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert (doc["total"], doc["total_exact"], len(doc["problems"])) == (6, True, 6)
