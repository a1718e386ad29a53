"""Tampering with the JSONL of a signed ledger is found by `kfm verify` and by verify_ledger.

Each case edits a fresh copy of one ledger (40 rows appended in four signed
batches: checkpoints at sizes 12, 22, 31 and 40) and checks both the real CLI
(a subprocess, `python -m kfm_ledger verify --json`) and the library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.verify import VerifyReport, verify_ledger

from conftest import ORIGIN, copy_ledger, signer_of

BATCHES = (12, 10, 9, 9)
SIGNED_SIZES = (12, 22, 31, 40)
JSONL = "rollback-index.jsonl"


@pytest.fixture(scope="module")
def base_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tamper") / "base"
    led = Ledger.init(d, origin=ORIGIN)
    try:
        signer = signer_of(led)
        start = 0
        for n in BATCHES:
            led.append(sample_jsonl(n, start=start), signer=signer)
            start += n
        assert led.size == sum(BATCHES) == 40
    finally:
        led.close()
    return d


@pytest.fixture
def copy(base_ledger: Path, tmp_path: Path) -> Path:
    return copy_ledger(base_ledger, tmp_path)


def kfm_verify_json(ledger: Path) -> tuple[int, dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "verify", "--ledger", str(ledger), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    try:
        out = json.loads(r.stdout)
    except json.JSONDecodeError:  # pragma: no cover - shown in the assertion below
        pytest.fail(f"verify --json printed no JSON (exit {r.returncode}): {r.stdout!r} {r.stderr!r}")
    return r.returncode, out


def library_verify(ledger: Path) -> VerifyReport:
    with Ledger.open(ledger) as led:
        return verify_ledger(led)


def lines_of(ledger: Path) -> list[bytes]:
    data = (ledger / JSONL).read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def write_lines(ledger: Path, lines: list[bytes]) -> None:
    (ledger / JSONL).write_bytes(b"".join(line + b"\n" for line in lines))


def offset_of_line(ledger: Path, number: int) -> int:
    """Byte offset where 1-based line ``number`` starts."""
    return sum(len(line) + 1 for line in lines_of(ledger)[: number - 1])


# -- the tampering -------------------------------------------------------------
def insert_row(d: Path) -> None:
    lines = lines_of(d)
    new = encode_row(sample_row(1000))  # valid and canonical, a commit never appended
    assert new not in lines
    lines.insert(20, new)  # becomes line 21, between two rows of the second batch
    write_lines(d, lines)


def swap_5_and_6(d: Path) -> None:
    lines = lines_of(d)
    lines[4], lines[5] = lines[5], lines[4]
    write_lines(d, lines)


def cut_inside_line_20(d: Path) -> None:
    lines = lines_of(d)
    start = offset_of_line(d, 20)
    data = (d / JSONL).read_bytes()
    (d / JSONL).write_bytes(data[: start + len(lines[19]) // 2])


def cut_last_newline(d: Path) -> None:
    data = (d / JSONL).read_bytes()
    (d / JSONL).write_bytes(data[:-1])


def delete_line_21(d: Path) -> None:
    lines = lines_of(d)
    del lines[20]
    write_lines(d, lines)


def duplicate_line_21(d: Path) -> None:
    lines = lines_of(d)
    lines.insert(21, lines[20])
    write_lines(d, lines)


#: Each case, and the locations a failure may plausibly be reported at.
CASES: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "insert": (insert_row, {"line 21", "line 22", "checkpoint 22", "checkpoint 31", "checkpoint 40"}),
    "reorder": (swap_5_and_6, {"line 5", "line 6", "checkpoint 12"}),
    "cut-inside-line-20": (cut_inside_line_20, {"line 20", "checkpoint 22", "checkpoint 40"}),
    "cut-last-newline": (cut_last_newline, {"line 40", "checkpoint 40"}),
    "delete": (delete_line_21, {"line 21", "line 22", "checkpoint 22", "checkpoint 40"}),
    "duplicate": (duplicate_line_21, {"line 21", "line 22", "checkpoint 22", "checkpoint 40"}),
}


def names_a_plausible_location(failures: list[tuple[str, str]], plausible: set[str]) -> bool:
    for where, message in failures:
        if where in plausible:
            return True
        # A whole-file failure: "rollback-index.jsonl: holds 39 complete rows but the signed checkpoint covers 40"
        if where == JSONL and "checkpoint" in message:
            return True
    return False


def test_the_untampered_copy_verifies(copy: Path) -> None:
    code, out = kfm_verify_json(copy)
    assert code == 0, out
    assert out["ok"] is True and out["failures"] == []
    assert out["size"] == 40 and out["rows_checked"] == 40
    report = library_verify(copy)
    assert report.ok, report.failures
    assert report.checkpoints_checked >= len(SIGNED_SIZES)


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_found_by_cli_and_library(copy: Path, case: str) -> None:
    tamper, plausible = CASES[case]
    before = (copy / JSONL).read_bytes()
    tamper(copy)
    assert (copy / JSONL).read_bytes() != before

    code, out = kfm_verify_json(copy)
    assert code == 1, out
    assert out["ok"] is False
    cli_failures = [(f["where"], f["message"]) for f in out["failures"]]
    assert cli_failures, out
    assert names_a_plausible_location(cli_failures, plausible), cli_failures

    report = library_verify(copy)
    assert not report.ok
    lib_failures = [(f.where, f.message) for f in report.failures]
    assert names_a_plausible_location(lib_failures, plausible), lib_failures
    # The CLI only reports what the library found.
    assert {w for w, _ in cli_failures} == {w for w, _ in lib_failures}


def test_verify_does_not_repair_a_tampered_copy(copy: Path) -> None:
    # Verifying is read-only: a second run finds the same problem (nothing was "recovered").
    cut_inside_line_20(copy)
    tampered = (copy / JSONL).read_bytes()
    assert kfm_verify_json(copy)[0] == 1
    assert not library_verify(copy).ok
    assert (copy / JSONL).read_bytes() == tampered
    assert kfm_verify_json(copy)[0] == 1


def test_a_missing_row_is_counted(copy: Path) -> None:
    delete_line_21(copy)
    code, out = kfm_verify_json(copy)
    assert code == 1 and out["ok"] is False
    # 39 complete rows are left of the 40 signed ones: no signed size above 12 can verify.
    failing = {f["where"] for f in out["failures"]}
    assert "checkpoint 12" not in failing
    assert failing & {"checkpoint 22", "checkpoint 31", "checkpoint 40", JSONL}
