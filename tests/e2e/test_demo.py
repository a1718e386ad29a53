"""End to end: `kfm demo` as a newcomer would run it, then `kfm verify` on what it made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_kfm(*args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "kfm_ledger", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_demo_in_a_directory_says_verify_ok_and_the_ledger_verifies(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    r = run_kfm("demo", str(d), "--rows", "30")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^6\. kfm verify: OK \(30 rows, \d+ signed checkpoints, \d+ tiles\)$", out, re.M), out
    assert "FAILED" not in out
    assert f"created ledger {d} " in out
    assert "appended 15 rows" in out and "appended 15 more rows" in out
    assert "consistency proof 15 -> 30 verified" in out
    # The files it names exist.
    for name in ("checkpoint", "log.vkey", "log.key", "rollback-index.jsonl", "proof.tlog-proof", "entry.json"):
        assert (d / name).is_file(), name
    assert len((d / "rollback-index.jsonl").read_bytes().splitlines()) == 30

    v = run_kfm("verify", "--ledger", str(d), "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    report = json.loads(v.stdout)
    assert report["ok"] is True and report["size"] == 30 and report["rows_checked"] == 30
    assert report["origin"] == "demo.kfm.example/rollback-index"

    # The proof it saved verifies with the command it suggests.
    suggested = re.search(r"kfm verify-proof (\S+) --vkey (\S+) --entry (\S+)", out)
    assert suggested, out
    proof, vkey, entry = suggested.groups()
    p = run_kfm("verify-proof", proof, "--vkey", vkey, "--entry", entry)
    assert p.returncode == 0, p.stdout + p.stderr


def test_demo_json_reports_its_directory_and_verify_agrees(tmp_path: Path) -> None:
    d = tmp_path / "demo-json"
    r = run_kfm("demo", str(d), "--rows", "9", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ledger"] == str(d)
    assert out["size"] == 9
    assert out["consistency"] == {"old_size": 4, "new_size": 9, "verified": True}
    assert out["verify"]["ok"] is True and out["verify"]["failures"] == []
    assert len(out["steps"]) == 6 and out["steps"][-1].startswith("6. kfm verify: OK")
    v = run_kfm("verify", "--ledger", out["ledger"], "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["root"] == out["root"]


def test_demo_without_a_directory_uses_a_new_temporary_one(tmp_path: Path) -> None:
    r = run_kfm("demo", "--rows", "4", tmpdir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "kfm verify: OK (4 rows" in r.stdout
    m = re.search(r"^1\. created ledger (\S+) \(origin", r.stdout, re.M)
    assert m, r.stdout
    d = Path(m.group(1))
    assert d.parent == tmp_path and d.name.startswith("kfm-demo-")
    v = run_kfm("verify", "--ledger", str(d))
    assert v.returncode == 0, v.stdout + v.stderr


def test_demo_refuses_an_existing_ledger_and_too_few_rows(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    assert run_kfm("demo", str(d), "--rows", "2").returncode == 0
    before = (d / "rollback-index.jsonl").read_bytes()
    again = run_kfm("demo", str(d), "--rows", "2")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert (d / "rollback-index.jsonl").read_bytes() == before
    few = run_kfm("demo", str(tmp_path / "other"), "--rows", "1")
    assert few.returncode == 2  # a usage error
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("rows", ["2", "3"])
def test_the_smallest_demos_verify(tmp_path: Path, rows: str) -> None:
    d = tmp_path / "demo"
    r = run_kfm("demo", str(d), "--rows", rows)
    assert r.returncode == 0, r.stderr
    assert f"kfm verify: OK ({rows} rows" in r.stdout
    assert run_kfm("verify", "--ledger", str(d)).returncode == 0
