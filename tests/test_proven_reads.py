"""Proven reads: every reading command checks the rows it uses against the signed checkpoint.

A 300-row ledger on disk; row 150 is tampered with in four ways (a same-length edit of its
kwh, an edit that changes its length, the row removed, the row edited together with its
level-0 tile hash); each reading library call and CLI command must fail (exit 1) naming the
row (index 150 / line 151) or, for the tile case, the tile's row range (rows 0..255).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kfm_ledger.cli import app
from kfm_ledger.core import merkle, tiles
from kfm_ledger.errors import CorruptLedgerError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.mirror import build_mirror, iter_line_blocks
from kfm_ledger.ops.diff import diff_entries
from kfm_ledger.ops.energy import energy_report
from kfm_ledger.ops.impact import impact_of_entry
from kfm_ledger.ops.lineage import explain_entry
from kfm_ledger.ops.rollback import plan_rollback

from conftest import ORIGIN, copy_ledger, fill

ROWS = 300
BAD = 150
JSONL = "rollback-index.jsonl"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("proven") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    fill(led, ROWS)
    led.close()
    return d


def _lines(d: Path) -> list[bytes]:
    return (d / JSONL).read_bytes().split(b"\n")[:-1]


def _write(d: Path, lines: list[bytes]) -> None:
    (d / JSONL).write_bytes(b"".join(line + b"\n" for line in lines))


def _kwh(line: bytes, new: bytes) -> bytes:
    edited = re.sub(rb'"kwh":[0-9.eE+-]+', b'"kwh":' + new, line, count=1)
    assert edited != line
    return edited


def tamper_same_length(d: Path) -> None:
    lines = _lines(d)
    old = re.search(rb'"kwh":([0-9.eE+-]+)', lines[BAD]).group(1)  # type: ignore[union-attr]
    new = (b"9" * len(old)) if old != b"9" * len(old) else (b"8" * len(old))
    lines[BAD] = _kwh(lines[BAD], new)
    _write(d, lines)


def tamper_length(d: Path) -> None:
    lines = _lines(d)
    lines[BAD] = _kwh(lines[BAD], b"12345.678901")
    _write(d, lines)


def tamper_delete(d: Path) -> None:
    lines = _lines(d)
    del lines[BAD]
    _write(d, lines)


def tamper_tile(d: Path) -> None:
    """Same-length edit, and the row's hash in the level-0 tile edited to match."""
    tamper_same_length(d)
    line = _lines(d)[BAD]
    tile = d / tiles.tile_path(0, 0)
    data = bytearray(tile.read_bytes())
    data[BAD * 32 : BAD * 32 + 32] = merkle.leaf_hash(line)
    tile.write_bytes(bytes(data))
    exp = d / "tile-expansions.bin"
    if exp.exists():
        exp.unlink()  # derived; the edited tile would not match it anyway


TAMPERS: dict[str, Callable[[Path], None]] = {
    "same-length": tamper_same_length,
    "length": tamper_length,
    "deleted": tamper_delete,
    "tile": tamper_tile,
}


@pytest.fixture(params=list(TAMPERS))
def tampered(request: pytest.FixtureRequest, template: Path, tmp_path: Path) -> tuple[str, Path]:
    d = copy_ledger(template, tmp_path)
    TAMPERS[request.param](d)
    return request.param, d


def _named(kind: str, text: str) -> bool:
    """Does an error message name the row (or, for the tile case, the tile's row range)?"""
    if kind == "tile":
        spans = [(int(a), int(b)) for a, b in re.findall(r"rows (\d+)\.\.(\d+)", text)]
        return "row 150 " in text or any(a <= BAD <= b for a, b in spans)
    return "row 150 " in text and "line 151 " in text


def _check_error(kind: str, e: CorruptLedgerError) -> None:
    assert _named(kind, str(e)), str(e)
    if kind != "tile":
        assert e.index == BAD and e.line == BAD + 1


def _commits(template: Path) -> list[str]:
    return [json.loads(line)["lakefs_commit"] for line in _lines(template)]


# -------------------------------------------------------------- library calls


def _library_calls(commits: list[str]) -> dict[str, Callable[[Ledger], Any]]:
    c = commits[BAD]
    return {
        "get": lambda led: led.get(c),
        "get-prefix": lambda led: led.get(c[:10]),
        "entry": lambda led: led.entry(BAD),
        "iter_lines": lambda led: list(led.iter_lines()),
        "iter_lines-range": lambda led: list(led.iter_lines(100, 200)),
        "iter_entries": lambda led: list(led.iter_entries()),
        "blocks": lambda led: list(iter_line_blocks(led, max_bytes=20_000)),
        "diff": lambda led: diff_entries(led.get(commits[0]), led.get(c)),
        "rollback": lambda led: plan_rollback(led, c),
        "impact": lambda led: impact_of_entry(led, led.get(commits[0])),
        "energy-jsonl": lambda led: energy_report(led, source="jsonl"),
        "explain": lambda led: explain_entry(led, led.get(c), scan_limit=1000),
        "explain-scan": lambda led: explain_entry(led, led.get(commits[BAD + 5]), scan_limit=1000),
        "mirror": lambda led: build_mirror(led),
    }


@pytest.mark.parametrize(
    "call",
    ["get", "get-prefix", "entry", "iter_lines", "iter_lines-range", "iter_entries", "blocks", "diff",
     "rollback", "impact", "energy-jsonl", "explain", "explain-scan", "mirror"],
)
def test_library_reads_name_the_row(call: str, tampered: tuple[str, Path], template: Path) -> None:
    kind, d = tampered
    fn = _library_calls(_commits(template))[call]
    with Ledger.open(d) as led:
        if call == "explain-scan" and kind in ("length", "deleted"):
            # Row 155 itself is no longer at the byte range the index gives: named as such.
            with pytest.raises(CorruptLedgerError, match=r"row 155 \(line 156 "):
                fn(led)
            return
        with pytest.raises(CorruptLedgerError) as info:
            fn(led)
    _check_error(kind, info.value)


def test_unverified_library_reads_skip_the_check(template: Path, tmp_path: Path) -> None:
    d = copy_ledger(template, tmp_path)
    tamper_same_length(d)
    c = _commits(template)[BAD]
    with Ledger.open(d) as led:
        assert led.get(c, verified=False).index == BAD
        assert len(list(led.iter_lines(verified=False))) == ROWS
        led.verify_reads = False
        assert energy_report(led, source="jsonl").source == "jsonl"


def test_untampered_reads_pass(template: Path) -> None:
    commits = _commits(template)
    with Ledger.open(template) as led:
        for fn in _library_calls(commits).values():
            fn(led)
        assert [e.row.lakefs_commit for e in led.iter_entries(17, 290)] == commits[17:290]


def test_swapped_index_never_answers_with_another_row(template: Path, tmp_path: Path) -> None:
    import sqlite3

    d = copy_ledger(template, tmp_path)
    commits = _commits(template)
    con = sqlite3.connect(d / "index.sqlite")
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    table = next(t for t in tables if t != "meta")
    cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    commit_col = next(c for c in cols if "commit" in c)
    # Swap the commits of rows 10 and 11: each commit now points at the other's row.
    con.execute(f"UPDATE {table} SET {commit_col} = 'tmp' WHERE {commit_col} = ?", (commits[10],))
    con.execute(f"UPDATE {table} SET {commit_col} = ? WHERE {commit_col} = ?", (commits[10], commits[11]))
    con.execute(f"UPDATE {table} SET {commit_col} = ? WHERE {commit_col} = 'tmp'", (commits[11],))
    con.commit()
    con.close()
    with Ledger.open(d) as led, pytest.raises(CorruptLedgerError) as info:
        led.get(commits[10])
    assert "kfm rebuild" in str(info.value)


# ---------------------------------------------------------------------- CLI


def _cli_commands(commits: list[str]) -> dict[str, list[str]]:
    c = commits[BAD]
    return {
        "get": ["get", "--commit", c],
        "diff": ["diff", commits[0], c],
        "rollback": ["rollback", "--commit", c],
        "lineage": ["lineage", "--commit", c],
        "explain": ["explain", "--commit", c],
        "impact": ["impact", "--commit", commits[0]],
        "energy": ["report", "energy", "--source", "jsonl"],
        "mirror": ["mirror"],
    }


@pytest.mark.parametrize("command", ["get", "diff", "rollback", "lineage", "explain", "impact", "energy", "mirror"])
def test_cli_reads_exit_1_naming_the_row(command: str, tampered: tuple[str, Path], template: Path) -> None:
    kind, d = tampered
    args = _cli_commands(_commits(template))[command]
    result = CliRunner().invoke(app, [*args, "--ledger", str(d)])
    assert result.exit_code == 1, result.output
    assert _named(kind, result.stderr), result.stderr


@pytest.mark.parametrize("command", ["get", "diff", "explain", "impact", "energy"])
def test_cli_unverified_says_so(command: str, template: Path, tmp_path: Path) -> None:
    d = copy_ledger(template, tmp_path)
    tamper_same_length(d)
    commits = _commits(template)
    # explain proves its own entry whatever is asked: ask about a later one (the scan reads row 150).
    args = ["explain", "--commit", commits[BAD + 5]] if command == "explain" else _cli_commands(commits)[command]
    result = CliRunner().invoke(app, [*args, "--ledger", str(d), "--unverified"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "unverified" in result.stderr
    json_args = [*args, "--ledger", str(d), "--unverified", "--json"]
    result = CliRunner().invoke(app, json_args)
    if result.exit_code == 2:  # a command without --json
        return
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["verified"] is False
