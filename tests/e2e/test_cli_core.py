"""End to end: the core `kfm` commands on real files, as a script would use them."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfm_ledger import merkle
from kfm_ledger.cli import app
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row

ORIGIN = "e2e.kfm.example/rollback-index"
runner = CliRunner()


def kfm(*args: str, input: bytes | None = None, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "index.sqlite" and not p.name.startswith("index.sqlite")
    }


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    d = tmp_path / "ledger"
    r = kfm("init", "--origin", ORIGIN, "--ledger", str(d))
    assert r.exit_code == 0, r.output
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(sample_jsonl(40))
    r = kfm("append", str(rows), "--ledger", str(d))
    assert r.exit_code == 0, r.output
    rows.write_bytes(sample_jsonl(25, start=40))
    r = kfm("append", str(rows), "--ledger", str(d))
    assert r.exit_code == 0, r.output
    return d


def test_init_creates_the_documented_files(tmp_path: Path) -> None:
    d = tmp_path / "l"
    r = kfm("init", "--origin", ORIGIN, "--ledger", str(d), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["checkpoint"]["size"] == 0
    assert out["checkpoint"]["root"] == base64.b64encode(merkle.EMPTY_ROOT).decode()
    assert {p.name for p in d.iterdir()} >= {"rollback-index.jsonl", "checkpoint", "checkpoints", "log.vkey", "log.key"}
    assert stat.S_IMODE((d / "log.key").stat().st_mode) == 0o600
    assert "PRIVATE" not in r.stdout
    again = kfm("init", "--origin", ORIGIN, "--ledger", str(d))
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_keygen_writes_go_format_keys_and_never_prints_the_private_key(tmp_path: Path) -> None:
    key, vkey = tmp_path / "k.key", tmp_path / "k.vkey"
    r = kfm("keygen", ORIGIN, "--key-file", str(key), "--vkey-file", str(vkey))
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith(f"PRIVATE+KEY+{ORIGIN}+")
    assert key.read_text().strip() not in r.output and "PRIVATE" not in r.output
    assert vkey.read_text().startswith(f"{ORIGIN}+")
    # An existing key is never overwritten.
    assert kfm("keygen", ORIGIN, "--key-file", str(key), "--vkey-file", str(vkey)).exit_code == 2
    # init with that key: log.key is not written, append needs --key.
    d = tmp_path / "l"
    assert kfm("init", "--origin", ORIGIN, "--ledger", str(d), "--key", str(key)).exit_code == 0
    assert not (d / "log.key").exists()
    rows = tmp_path / "r.jsonl"
    rows.write_bytes(sample_jsonl(2))
    r = kfm("append", str(rows), "--ledger", str(d))
    assert r.exit_code == 1 and "--key" in r.stderr
    assert kfm("append", str(rows), "--ledger", str(d), "--key", str(key)).exit_code == 0


def test_append_from_stdin_array_and_env_ledger(tmp_path: Path, ledger: Path) -> None:
    array = "[" + ",".join(encode_row(r).decode() for r in map(sample_row, (65, 66))) + "]"
    r = kfm("append", "-", "--json", input=array.encode(), env={"KFM_LEDGER": str(ledger)})
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["appended"], out["first_index"], out["checkpoint"]["size"]) == (2, 65, 67)


def test_bad_input_is_refused_with_line_and_field_and_nothing_changes(tmp_path: Path, ledger: Path) -> None:
    before = tree_bytes(ledger)
    lines = sample_jsonl(3, start=65).splitlines()
    lines[2] = lines[2].replace(b'"kwh":', b'"kwh":-')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    r = kfm("append", str(bad), "--ledger", str(ledger))
    assert r.exit_code == 1
    assert "line 3: $.energy_carbon.kwh" in r.stderr
    assert "nothing was written" in r.stderr
    bad.write_bytes(b'{"lakefs_repo": "x"\n')
    r = kfm("append", str(bad), "--ledger", str(ledger))
    assert r.exit_code == 1 and "line 1" in r.stderr
    assert tree_bytes(ledger) == before


def test_get_by_prefix_json_unknown_and_ambiguous(ledger: Path) -> None:
    commit = sample_row(12).lakefs_commit
    r = kfm("get", "--commit", commit[:10], "--ledger", str(ledger))
    assert r.exit_code == 0
    assert r.stdout_bytes == encode_row(sample_row(12)) + b"\n"
    r = kfm("get", "--commit", commit, "--ledger", str(ledger), "--json")
    out = json.loads(r.stdout)
    assert out["index"] == 12
    assert out["leaf_hash"] == base64.b64encode(merkle.leaf_hash(encode_row(sample_row(12)))).decode()
    assert out["row"]["lakefs_commit"] == commit
    r = kfm("get", "--commit", "nope", "--ledger", str(ledger))
    assert r.exit_code == 1 and "no row for lakeFS commit 'nope'" in r.stderr
    r = kfm("get", "--commit", commit[0], "--ledger", str(ledger))
    assert r.exit_code == 1 and "ambiguous" in r.stderr and commit[0] in r.stderr
    assert kfm("get", "--ledger", str(ledger)).exit_code == 2


def test_prove_then_verify_proof_offline(tmp_path: Path, ledger: Path) -> None:
    commit = sample_row(30).lakefs_commit
    r = kfm("prove", "--commit", commit, "--ledger", str(ledger))
    assert r.exit_code == 0
    proof = tmp_path / "p.tlog"
    proof.write_bytes(r.stdout_bytes)
    assert r.stdout.startswith("c2sp.org/tlog-proof@v1\nindex 30\n")
    entry = tmp_path / "entry"
    entry.write_bytes(kfm("get", "--commit", commit, "--ledger", str(ledger)).stdout_bytes)
    vkey = str(ledger / "log.vkey")
    r = kfm("verify-proof", str(proof), "--vkey", vkey, "--entry", str(entry), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "ok": True,
        "origin": ORIGIN,
        "index": 30,
        "size": 65,
        "root": json.loads(kfm("checkpoint", "--ledger", str(ledger), "--json").stdout)["root"],
    }
    # Another entry, a flipped proof hash, another key: all refused with exit 1.
    other = tmp_path / "other"
    other.write_bytes(encode_row(sample_row(31)))
    assert kfm("verify-proof", str(proof), "--vkey", vkey, "--entry", str(other)).exit_code == 1
    lines = proof.read_text().split("\n")
    h = bytearray(base64.b64decode(lines[2]))
    h[0] ^= 1
    lines[2] = base64.b64encode(bytes(h)).decode()
    bad = tmp_path / "bad.tlog"
    bad.write_text("\n".join(lines))
    r = kfm("verify-proof", str(bad), "--vkey", vkey, "--entry", str(entry))
    assert r.exit_code == 1 and "mismatch" in r.stderr
    key2 = tmp_path / "o.vkey"
    kfm("keygen", ORIGIN, "--key-file", str(tmp_path / "o.key"), "--vkey-file", str(key2))
    assert kfm("verify-proof", str(proof), "--vkey", str(key2), "--entry", str(entry)).exit_code == 1
    # A proof at an older signed size.
    r = kfm("prove", "--index", "30", "--size", "40", "--ledger", str(ledger), "--json")
    out = json.loads(r.stdout)
    assert (out["index"], out["size"], len(out["proof"])) == (30, 40, 6)


def test_consistency_proof_lines(ledger: Path) -> None:
    r = kfm("prove", "--from", "40", "--ledger", str(ledger))
    assert r.exit_code == 0
    hashes = [base64.b64decode(x) for x in r.stdout.split()]
    cp = json.loads(kfm("checkpoint", "--ledger", str(ledger), "--json").stdout)
    old = json.loads(kfm("checkpoint", "--size", "40", "--ledger", str(ledger), "--json").stdout)
    merkle.verify_consistency(40, 65, base64.b64decode(old["root"]), base64.b64decode(cp["root"]), hashes)
    out = json.loads(kfm("prove", "--from", "40", "--to", "65", "--ledger", str(ledger), "--json").stdout)
    assert out["old_root"] == old["root"] and out["new_root"] == cp["root"]
    assert [base64.b64decode(x) for x in out["proof"]] == hashes
    r = kfm("prove", "--from", "70", "--ledger", str(ledger))
    assert r.exit_code == 1 and "70" in r.stderr


def test_verify_json_since_and_tamper(tmp_path: Path, ledger: Path) -> None:
    saved = tmp_path / "saved.checkpoint"
    saved.write_bytes(kfm("checkpoint", "--ledger", str(ledger)).stdout_bytes)
    rows = tmp_path / "more.jsonl"
    rows.write_bytes(sample_jsonl(10, start=65))
    assert kfm("append", str(rows), "--ledger", str(ledger)).exit_code == 0
    r = kfm("verify", "--ledger", str(ledger), "--since", str(saved), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["size"] == 75 and out["since_size"] == 65 and out["failures"] == []
    # Tamper with row 5: verify fails and names the line.
    jsonl = ledger / "rollback-index.jsonl"
    data = jsonl.read_bytes()
    jsonl.write_bytes(data.replace(b'"producer":"airflow', b'"producer":"Airflow', 1))
    r = kfm("verify", "--ledger", str(ledger), "--json")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert not out["ok"]
    assert any(f["where"].startswith("checkpoint") for f in out["failures"])
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 1 and "FAIL" in r.stderr


def test_rebuild_and_recover(ledger: Path) -> None:
    import shutil

    shutil.rmtree(ledger / "tile")
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 1
    assert kfm("rebuild", "--ledger", str(ledger)).exit_code == 0
    assert kfm("verify", "--ledger", str(ledger)).exit_code == 0
    jsonl = ledger / "rollback-index.jsonl"
    good = jsonl.read_bytes()
    # Bytes after the signed rows that no interrupted append accounts for: kfm
    # never wrote them, so verify fails and writers refuse, cutting nothing.
    jsonl.write_bytes(good + b'{"lakefs_repo":"torn')
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 1 and "no interrupted append accounts" in r.stderr
    r = kfm("recover", "--ledger", str(ledger))
    assert r.exit_code == 1 and f"truncate -s {len(good)}" in r.stderr
    assert jsonl.read_bytes() == good + b'{"lakefs_repo":"torn'
    jsonl.write_bytes(good)
    r = kfm("recover", "--ledger", str(ledger), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["torn_bytes_cut"] == 0


def test_schema_is_json_schema() -> None:
    r = kfm("schema")
    schema = json.loads(r.stdout)
    assert set(schema["required"]) >= {"lakefs_commit", "energy_carbon", "checksums"}


def test_usage_errors_exit_2(ledger: Path) -> None:
    assert kfm("prove", "--ledger", str(ledger)).exit_code == 2
    assert kfm("no-such-command").exit_code == 2
    assert kfm("get", "--index", "x", "--ledger", str(ledger)).exit_code == 2


def test_not_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    r = kfm("get", "--commit", "abc", "--ledger", str(tmp_path))
    assert r.exit_code == 1 and "kfm init" in r.stderr


def test_real_process_demo_and_help(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "kfm_ledger", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "append" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "demo", str(tmp_path / "demo"), "--rows", "30"],
        capture_output=True, text=True, env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "kfm verify: OK (30 rows" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "verify-proof", str(tmp_path / "demo" / "proof.tlog"),
         "--vkey", str(tmp_path / "demo" / "log.vkey"), "--entry", str(tmp_path / "demo" / "entry.json")],
        capture_output=True, text=True, env=env,
    )
    assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stderr


def test_demo_json_reports_every_step(tmp_path: Path) -> None:
    r = kfm("demo", str(tmp_path / "d"), "--rows", "9", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["size"], out["consistency"]) == (9, {"old_size": 4, "new_size": 9, "verified": True})
    assert out["verify"]["ok"] and out["verify"]["rows_checked"] == 9
    assert len(out["steps"]) == 6 and out["proven_index"] == 4
    assert Path(out["proof_file"]).read_bytes().startswith(b"c2sp.org/tlog-proof@v1\nindex 4\n")
    again = kfm("demo", str(tmp_path / "d"))
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert kfm("demo", "--rows", "1").exit_code == 2


def test_append_says_whether_the_mirror_is_stale(tmp_path: Path, ledger: Path) -> None:
    rows = tmp_path / "r.jsonl"
    rows.write_bytes(sample_jsonl(1, start=65))
    out = json.loads(kfm("append", str(rows), "--ledger", str(ledger), "--json").stdout)
    assert out["mirror"] == "absent"
    assert kfm("mirror", "--ledger", str(ledger)).exit_code == 0
    rows.write_bytes(sample_jsonl(1, start=66))
    r = kfm("append", str(rows), "--ledger", str(ledger))
    assert r.exit_code == 0 and "run `kfm mirror`" in r.stdout
    assert kfm("verify", "--ledger", str(ledger)).exit_code == 1
    rows.write_bytes(sample_jsonl(1, start=67))
    out = json.loads(kfm("append", str(rows), "--ledger", str(ledger), "--mirror", "--json").stdout)
    assert out["mirror"] == "regenerated"
    assert kfm("verify", "--ledger", str(ledger)).exit_code == 0
