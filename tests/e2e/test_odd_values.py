"""Numbers that break arithmetic and arguments that are not UTF-8 (hardening issue, item 6):
handled with a clear result or error, never a traceback, and never invalid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_row

HUGE = 1.7976931348623157e308
SUBNORMAL = 5e-324


def strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"invalid JSON constant {name} in output")

    return json.loads(text, parse_constant=refuse)


def kfm(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable.encode(), b"-m", b"kfm_ledger", *(a if isinstance(a, bytes) else a.encode() for a in args)]
    return subprocess.run(argv, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("odd") / "ledger"
    led = Ledger.init(path, origin="odd.example/log")
    rows = []
    for i, kwh in enumerate([HUGE, HUGE, SUBNORMAL, 2.0]):
        row = sample_row(i)
        rows.append(msgspec.structs.replace(row, energy_carbon=msgspec.structs.replace(row.energy_carbon, kwh=kwh)))
    led.append(rows, signer=load_signer((path / "log.key").read_bytes()))
    led.close()
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["report", "energy", "--source", "jsonl"],
        ["report", "energy", "--source", "jsonl", "--json"],
        ["report", "energy", "--source", "jsonl", "--csv"],
    ],
)
def test_an_overflowing_sum_is_reported_not_a_crash(ledger: Path, args: list[str], tmp_path: Path) -> None:
    r = kfm(*args, "--ledger", str(ledger))
    assert r.returncode == 0, r.stderr.decode()
    assert b"Traceback" not in r.stderr
    out = r.stdout.decode()
    if "--json" in args:
        doc = strict_json(out)
        assert isinstance(doc, dict) and doc["ok"] is True
        assert doc["totals"]["kwh"] is None  # the exact sum does not fit a double: null, not Infinity
    else:
        assert "inf" in out


def test_the_energy_chart_draws_with_an_overflowed_month(ledger: Path, tmp_path: Path) -> None:
    png = tmp_path / "chart.png"
    r = kfm("report", "energy", "--source", "jsonl", "--plot", str(png), "--ledger", str(ledger))
    assert r.returncode == 0, r.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("cmd", ["diff", "explain"])
def test_a_subnormal_kwh_gives_no_infinity_in_json(ledger: Path, cmd: str) -> None:
    with Ledger.open(ledger) as led:
        a, b = led.entry(2).row.lakefs_commit, led.entry(3).row.lakefs_commit
    args = ["diff", "--from", a, "--to", b] if cmd == "diff" else ["explain", "--commit", b]
    r = kfm(*args, "--json", "--ledger", str(ledger))
    assert b"Traceback" not in r.stderr
    doc = strict_json(r.stdout.decode())
    assert isinstance(doc, dict)
    assert "Infinity" not in r.stdout.decode()


def test_a_non_utf8_argument_is_a_usage_error(ledger: Path) -> None:
    r = kfm("get", "--ledger", str(ledger), "--commit", b"\xff")
    assert r.returncode == 2
    want = "kfm: error: argument 5 ('\\\\xff') is not valid UTF-8; kfm takes UTF-8 text arguments\n"
    assert r.stderr.decode() == want
