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

from kfm_ledger.cli import app
from kfm_ledger.core import merkle
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
    # An existing key is never overwritten: refused with exit 1 (input refused, not a usage error).
    r = kfm("keygen", ORIGIN, "--key-file", str(key), "--vkey-file", str(tmp_path / "new.vkey"))
    assert r.exit_code == 1 and f"{key} exists; refusing to overwrite a key file" in r.stderr
    assert not (tmp_path / "new.vkey").exists()
    # Nor an existing verifier key, and then nothing is written at all.
    vkey_before = vkey.read_bytes()
    r = kfm("keygen", "other.example/log", "--key-file", str(tmp_path / "new.key"), "--vkey-file", str(vkey))
    assert r.exit_code == 1 and f"{vkey} exists; refusing to overwrite a key file" in r.stderr
    assert vkey.read_bytes() == vkey_before and not (tmp_path / "new.key").exists()
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
        "tree_size": 65,
        "size": 65,
        "root": json.loads(kfm("checkpoint", "--ledger", str(ledger), "--json").stdout)["root"],
    }
    # Another entry, a flipped proof hash, another key: all refused with exit 1.
    other = tmp_path / "other"
    other.write_bytes(encode_row(sample_row(31)))
    r = kfm("verify-proof", str(proof), "--vkey", vkey, "--entry", str(other))
    assert r.exit_code == 1 and r.stderr.startswith("kfm: error: root mismatch: expected "), r.stderr
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
    r = kfm("verify-proof", str(proof), "--vkey", str(key2), "--entry", str(entry))
    assert r.exit_code == 1 and "note has no signature from a trusted key" in r.stderr, r.stderr
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
    # Tamper with the first row: verify fails and names the line and the checkpoints it breaks.
    jsonl = ledger / "rollback-index.jsonl"
    data = jsonl.read_bytes()
    jsonl.write_bytes(data.replace(b'"producer":"airflow', b'"producer":"Airflow', 1))
    r = kfm("verify", "--ledger", str(ledger), "--json")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert not out["ok"]
    assert any(f["where"].startswith("checkpoint") for f in out["failures"])
    wheres = {f["where"] for f in out["failures"]}
    assert wheres == {"checkpoint 40", "checkpoint 65", "checkpoint 75", "line 1"}, out["failures"]
    assert all("rows were changed" in f["message"] for f in out["failures"] if f["where"].startswith("checkpoint"))
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 1 and "FAIL" in r.stderr
    assert "FAIL line 1: this row is not the one the log signed" in r.stderr


def test_rebuild_and_recover(ledger: Path) -> None:
    import shutil

    shutil.rmtree(ledger / "tile")
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 1
    assert "FAIL tile tile/0/000.p/65: missing" in r.stderr and "run `kfm rebuild`" in r.stderr
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
    assert r.exit_code == 0 and json.loads(r.stdout)["bytes_rolled_back"] == 0


def test_schema_is_json_schema_with_or_without_json_flag() -> None:
    r = kfm("schema")
    schema = json.loads(r.stdout)
    assert set(schema["required"]) >= {"lakefs_commit", "energy_carbon", "checksums"}
    r2 = kfm("schema", "--json")
    assert r2.exit_code == 0 and r2.stdout == r.stdout


def test_usage_errors_exit_2(ledger: Path) -> None:
    assert kfm("prove", "--ledger", str(ledger)).exit_code == 2
    assert kfm("no-such-command").exit_code == 2
    assert kfm("get", "--index", "x", "--ledger", str(ledger)).exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["prove", "--index", "0", "--size", "-1"],
        ["prove", "--index", "-1"],
        ["prove", "--from", "-1"],
        ["prove", "--from", "1", "--to", "-1"],
        ["get", "--index", "-1"],
        ["checkpoint", "--size", "-1"],
    ],
)
def test_negative_sizes_and_indexes_are_usage_errors(ledger: Path, args: list[str]) -> None:
    r = kfm(*args, "--ledger", str(ledger))
    assert r.exit_code == 2, r.output
    option = args[-2]
    assert f"Invalid value for '{option}'" in r.output
    assert "beyond the signed tree size" not in r.output


def test_consistency_from_the_empty_tree_is_refused(tmp_path: Path, ledger: Path) -> None:
    message = "kfm: error: a consistency proof from the empty tree (--from 0) is not defined; use --from 1 or more\n"
    for args in (["--from", "0"], ["--from", "0", "--to", "0"], ["--from", "0", "--to", "40"]):
        r = kfm("prove", *args, "--ledger", str(ledger))
        assert (r.exit_code, r.stdout, r.stderr) == (1, "", message), args
    r = kfm("prove", "--from", "0", "--json", "--ledger", str(ledger))  # with --json: a JSON error too
    assert (r.exit_code, r.stderr, json.loads(r.stdout)["ok"]) == (1, message, False)
    empty = tmp_path / "empty"
    assert kfm("init", "--origin", ORIGIN, "--ledger", str(empty)).exit_code == 0
    r = kfm("prove", "--from", "0", "--ledger", str(empty))
    assert (r.exit_code, r.stderr) == (1, message)
    # M == N > 0 is fine: an empty proof.
    r = kfm("prove", "--from", "40", "--to", "40", "--ledger", str(ledger))
    assert (r.exit_code, r.stdout) == (0, "")


def test_consistency_json_lists_the_checkpoints_once(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfm_ledger.log.ledger import Ledger

    calls = []
    original = Ledger.checkpoint_sizes

    def counting(self: Ledger) -> list[int]:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(Ledger, "checkpoint_sizes", counting)
    r = kfm("prove", "--from", "40", "--ledger", str(ledger), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["old_size"], out["new_size"]) == (40, 65) and out["old_root"] and out["new_root"]
    assert len(calls) == 1


def _missing_or_dir_cases(tmp_path: Path, ledger: Path) -> list[tuple[list[str], str]]:
    """(arguments, the exact one-line error) for files and directories that cannot be used."""
    nope = tmp_path / "nonexist"
    proof = tmp_path / "p.tlog-proof"
    proof.write_bytes(kfm("prove", "--index", "3", "--ledger", str(ledger)).stdout_bytes)
    entry = tmp_path / "entry.json"
    entry.write_bytes(kfm("get", "--index", "3", "--ledger", str(ledger)).stdout_bytes)
    vkey, d = str(ledger / "log.vkey"), str(tmp_path)
    missing = f"kfm: error: cannot access {nope}: No such file or directory\n"
    a_dir = f"kfm: error: cannot access {tmp_path}: Is a directory\n"
    return [
        (["append", str(nope), "--ledger", str(ledger)], missing),
        (["append", d, "--ledger", str(ledger)], a_dir),
        (["append", "-", "--key", d, "--ledger", str(ledger)], a_dir),
        (["verify", "--since", str(nope), "--ledger", str(ledger)], missing),
        (["verify", "--since", d, "--ledger", str(ledger)], a_dir),
        (["verify", "--vkey", d, "--ledger", str(ledger)], a_dir),
        (["verify-proof", str(nope), "--vkey", vkey, "--entry", str(entry)], missing),
        (["verify-proof", str(proof), "--vkey", d, "--entry", str(entry)], a_dir),
        (["verify-proof", str(proof), "--vkey", vkey, "--entry", d], a_dir),
        (["init", "--origin", ORIGIN, "--key", str(nope), "--ledger", str(tmp_path / "new")], missing),
        (
            ["init", "--origin", ORIGIN, "--ledger", "/proc/kfm-cannot-create"],
            "kfm: error: cannot create the ledger directory /proc/kfm-cannot-create: No such file or directory\n",
        ),
    ]


def test_missing_files_and_directories_are_one_line_errors(tmp_path: Path, ledger: Path) -> None:
    before = tree_bytes(ledger)
    for args, expected in _missing_or_dir_cases(tmp_path, ledger):
        # catch_exceptions=False: a traceback would fail the test here.
        r = kfm(*args, input=sample_jsonl(1, start=65))
        assert (r.exit_code, r.stderr) == (1, expected), args
    assert tree_bytes(ledger) == before
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_a_ledger_file_replaced_by_a_directory(ledger: Path) -> None:
    jsonl = ledger / "rollback-index.jsonl"
    jsonl.unlink()
    jsonl.mkdir()
    r = kfm("verify", "--ledger", str(ledger))
    assert (r.exit_code, r.stderr) == (1, f"kfm: error: cannot access {jsonl}: Is a directory\n")
    r = kfm("verify", "--ledger", str(ledger), "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["failures"] == [{"where": "open", "message": f"cannot access {jsonl}: Is a directory"}]


def test_unexpected_exceptions_still_show_a_traceback(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only KfmError and real OS errors are turned into messages; a bug stays a bug."""
    import io

    from kfm_ledger.log.ledger import Ledger

    def broken(self: Ledger, commit: str) -> None:
        raise io.UnsupportedOperation("fileno")  # an OSError without an errno: a programming error

    monkeypatch.setattr(Ledger, "get", broken)
    with pytest.raises(io.UnsupportedOperation):
        kfm("get", "--commit", "abc", "--ledger", str(ledger))
    monkeypatch.setattr(Ledger, "get", lambda self, commit: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        kfm("get", "--commit", "abc", "--ledger", str(ledger))


@pytest.mark.parametrize("bulk", [False, True])
def test_a_full_disk_under_the_commit_index_is_an_error_message_and_the_ledger_stays(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch, bulk: bool
) -> None:
    """SQLite's storage failing (here SQLITE_FULL while the index is written) is one line and exit 1,
    like an OS error, and the append is undone; another SQLite error is a bug (its traceback)."""
    import sqlite3

    from kfm_ledger import index
    from kfm_ledger.log import bulk as bulk_module

    if bulk:
        monkeypatch.setattr(bulk_module, "PARALLEL_THRESHOLD", 1)
        monkeypatch.setattr(bulk_module, "CHUNK_BYTES", 20_000)

    def failing(code: int, message: str):  # type: ignore[no-untyped-def]
        def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
            error = sqlite3.OperationalError(message)
            error.sqlite_errorcode = code  # type: ignore[attr-defined]
            error.sqlite_errorname = {13: "SQLITE_FULL", 1: "SQLITE_ERROR"}[code]  # type: ignore[attr-defined]
            raise error

        return fail

    rows = tmp_path / "more.jsonl"
    rows.write_bytes(sample_jsonl(300, start=65))
    before = tree_bytes(ledger)
    step = "finish_inserts" if bulk else "add"
    monkeypatch.setattr(index.CommitIndex, step, failing(13, "database or disk is full"))
    r = kfm("append", str(rows), "--ledger", str(ledger))
    assert r.exit_code == 1
    assert r.stderr == (
        "kfm: error: SQLite storage failed: database or disk is full (SQLITE_FULL); "
        "free space or fix the file system, then run the command again\n"
    )
    assert tree_bytes(ledger) == before
    monkeypatch.setattr(index.CommitIndex, step, failing(1, "no such table: entries"))
    with pytest.raises(sqlite3.OperationalError):
        kfm("append", str(rows), "--ledger", str(ledger))
    monkeypatch.undo()
    r = kfm("append", str(rows), "--ledger", str(ledger))
    assert r.exit_code == 0, r.output
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 0, r.output


def _verify_json_open_failure(ledger: Path, *args: str) -> dict:
    r = kfm("verify", "--ledger", str(ledger), "--json", *args)
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["size"] is None and out["root"] is None and out["rows_checked"] == 0
    assert set(out) == {
        "ok", "origin", "tree_size", "size", "root",
        "rows_checked", "checkpoints_checked", "tiles_checked", "uncovered_rows",
        "torn_bytes", "since_size", "mirror_checked", "failures", "failures_not_shown", "notes",
    }
    assert len(out["failures"]) == 1
    assert r.stderr == f"kfm: error: {out['failures'][0]['message']}\n"
    return out["failures"][0]


def test_verify_json_always_prints_a_document(tmp_path: Path, ledger: Path) -> None:
    # Same keys as a report that ran.
    ran = json.loads(kfm("verify", "--ledger", str(ledger), "--json").stdout)
    assert ran["ok"] is True
    # Not a ledger.
    failure = _verify_json_open_failure(tmp_path)
    assert failure["where"] == "open" and "kfm init" in failure["message"]
    # An unreadable --since file.
    failure = _verify_json_open_failure(ledger, "--since", str(tmp_path / "nonexist"))
    assert failure == {"where": "since", "message": f"cannot access {tmp_path / 'nonexist'}: No such file or directory"}
    # A checkpoint whose signature does not verify.
    cp = ledger / "checkpoint"
    good = cp.read_bytes()
    lines = good.split(b"\n")
    name, sig = lines[-2].rsplit(b" ", 1)
    flipped = bytearray(base64.b64decode(sig))
    flipped[-1] ^= 1
    lines[-2] = name + b" " + base64.b64encode(bytes(flipped))
    cp.write_bytes(b"\n".join(lines))
    failure = _verify_json_open_failure(ledger)
    assert failure["where"] == "open" and "does not verify" in failure["message"]
    cp.write_bytes(good)
    # No verifier key.
    (ledger / "log.vkey").unlink()
    failure = _verify_json_open_failure(ledger)
    assert failure["where"] == "open" and "log.vkey" in failure["message"]
    # Without --json the same is a one-line error.
    r = kfm("verify", "--ledger", str(ledger))
    assert r.exit_code == 1 and r.stdout == "" and r.stderr.startswith("kfm: error: ") and "log.vkey" in r.stderr


def _kfm_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run kfm with stdout a pipe whose reader is already gone (`kfm ... | head -0`)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "kfm_ledger", *args], stdout=write_end, stderr=subprocess.PIPE, text=True, env=env
        )
    finally:
        os.close(write_end)


def test_output_cut_short_exits_1_without_noise(ledger: Path) -> None:
    # Each of these exits 0 when its output is read; cut short, 1 and nothing on stderr.
    assert kfm("verify", "--ledger", str(ledger)).exit_code == 0
    for args in (["verify"], ["get", "--index", "3"], ["checkpoint"], ["prove", "--index", "3", "--json"]):
        r = _kfm_into_closed_pipe(*args, "--ledger", str(ledger))
        assert (r.returncode, r.stderr) == (1, ""), args
    # A failing verify with stdout and stderr on the closed pipe (`kfm verify 2>&1 | head -0`): 1, not 0.
    (ledger / "checkpoints" / "40").write_bytes(b"garbage\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "kfm_ledger", "verify", "--ledger", str(ledger)], stdout=write_end, stderr=write_end,
            env=env,
        )
    finally:
        os.close(write_end)
    assert r.returncode == 1
