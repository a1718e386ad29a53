"""With --json, a command that fails prints a JSON document on stdout too (for scripts and CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def kfm(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "kfm_ledger", *args], capture_output=True, text=True, env=env)


def test_failures_are_json_documents_with_json(tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    assert kfm("init", "--origin", "t.example/log", "--ledger", str(ledger)).returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lakefs_repo": "r"}\n{"x": 1}\n')
    r = kfm("append", str(bad), "--ledger", str(ledger), "--json")
    doc = json.loads(r.stdout)
    assert (r.returncode, doc["ok"], doc["error"]["type"]) == (1, False, "InputRejected")
    # Every problem of each row (its missing fields, line 2's unknown one), all at "$".
    assert sorted({(p["line"], p["path"]) for p in doc["problems"]}) == [(1, "$"), (2, "$")]
    assert "line 1" in r.stderr  # the text for people is still on stderr

    r = kfm("get", "--commit", "nope", "--ledger", str(ledger), "--json")
    assert (r.returncode, json.loads(r.stdout)["error"]["type"]) == (1, "CommitNotFoundError")

    r = kfm("prove", "--ledger", str(ledger), "--json")
    assert (r.returncode, json.loads(r.stdout)["error"]["exit_code"]) == (2, 2)

    r = kfm("verify", "--ledger", str(tmp_path / "missing"), "--json")
    doc = json.loads(r.stdout)  # verify's own report shape, printed once
    assert r.returncode == 1 and doc["ok"] is False and "failures" in doc
    assert [f["where"] for f in doc["failures"]] == ["open"]
    assert f"no ledger in local directory {tmp_path / 'missing'}" in doc["failures"][0]["message"]

    r = kfm("get", "--commit", "nope", "--ledger", str(ledger))  # without --json: nothing on stdout
    assert (r.returncode, r.stdout) == (1, "")
