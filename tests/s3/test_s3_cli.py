"""End to end on a real S3 server: `kfm` processes on an s3:// ledger, Go's checker on its tiles,
concurrent and SIGKILLed writer processes, and a bucket edited behind the ledger's back."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kfm_ledger.s3 import parse_s3_url
from kfm_ledger.sample import sample_jsonl

from conftest import gocheck_path

ORIGIN = "test.kfm.example/s3-cli"
WRITER = str(Path(__file__).with_name("writer.py"))


def same_time(line: bytes) -> bytes:
    at = line.index(b'"created_at":"') + len(b'"created_at":"')
    return line[:at] + b"2025-01-01T00:00:00Z" + line[line.index(b'"', at):]


@pytest.fixture
def env(s3_server, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KFM_"))}
    e.update(s3_server.env())
    e["KFM_CACHE_DIR"] = str(tmp_path / "cache")
    return e


def kfm(env: dict[str, str], *args: str, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "kfm_ledger", *args], env=env, capture_output=True, text=True,
                         timeout=300, cwd=cwd)
    if check and res.returncode != 0:
        raise AssertionError(f"kfm {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def commit_of(line: bytes) -> str:
    return json.loads(line)["lakefs_commit"]


@pytest.fixture
def rows(tmp_path: Path) -> tuple[Path, list[bytes]]:
    data = sample_jsonl(1400)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)
    return path, data.splitlines()


def test_end_to_end_byte_identical_to_a_local_ledger_and_checked_by_go(
    env: dict[str, str], s3_location: str, s3_server, tmp_path: Path, rows: tuple[Path, list[bytes]]
) -> None:
    path, lines = rows
    key = tmp_path / "keys" / "log.key"
    key.parent.mkdir()
    init = kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, "--key-out", str(key), "--json")
    assert json.loads(init.stdout)["checkpoint"]["tree_size"] == 0
    assert key.stat().st_mode & 0o777 == 0o600
    client = s3_server.client(parse_s3_url(s3_location).prefix)
    assert not any("key" in i.key and i.key != "log.vkey" for i in client.list())
    local = tmp_path / "local"
    kfm(env, "init", "--origin", ORIGIN, "--ledger", str(local), "--key", str(key))
    pieces = [(0, 1), (1, 3), (3, 303), (303, 310), (310, 1310), (1310, 1400)]  # small and bulk
    for a, b in pieces:
        (tmp_path / "batch.jsonl").write_bytes(b"".join(x + b"\n" for x in lines[a:b]))
        env_s3 = {**env, "KFM_LEDGER": s3_location, "KFM_KEY": str(key)}
        kfm(env_s3, "append", str(tmp_path / "batch.jsonl"))
        kfm(env, "append", str(tmp_path / "batch.jsonl"), "--ledger", str(local), "--key", str(key))
    out = tmp_path / "export.jsonl"
    kfm(env, "export", "--ledger", s3_location, "--to", str(out))
    assert out.read_bytes() == (local / "rollback-index.jsonl").read_bytes() == path.read_bytes()
    assert kfm(env, "export", "--ledger", s3_location).stdout.encode() == path.read_bytes()
    local_tiles = sorted(p.relative_to(local).as_posix() for p in (local / "tile").rglob("*") if p.is_file())
    assert local_tiles
    for name in local_tiles + ["checkpoint", "log.vkey"]:
        assert client.get(name) == (local / name).read_bytes(), name
    # lookups and proofs
    got = kfm(env, "get", "--ledger", s3_location, "--commit", commit_of(lines[700]), "--json")
    assert json.loads(got.stdout)["index"] == 700
    assert kfm(env, "get", "--ledger", s3_location, "--index", "5").stdout.encode() == lines[5] + b"\n"
    plan = json.loads(kfm(env, "rollback", "--ledger", s3_location, "--commit", commit_of(lines[700]),
                          "--json").stdout)
    assert plan["ok"] and plan["lakefs_commit"] == commit_of(lines[700])
    diff = json.loads(kfm(env, "diff", "--ledger", s3_location, "--from-index", "3", "--to-index", "700",
                          "--json").stdout)
    assert diff["ok"]
    assert json.loads(kfm(env, "lineage", "--ledger", s3_location, "--index", "700").stdout)
    explained = json.loads(kfm(env, "explain", "--ledger", s3_location, "--index", "1390", "--json").stdout)
    assert explained["ok"] and explained["entry"]["index"] == 1390
    proof = kfm(env, "prove", "--ledger", s3_location, "--commit", commit_of(lines[700])).stdout
    assert proof.startswith("c2sp.org/tlog-proof@v1\nindex 700\n")
    report = json.loads(kfm(env, "verify", "--ledger", s3_location, "--json").stdout)
    assert report["ok"] and report["rows_checked"] == 1400 and report["checkpoints_checked"] == len(pieces) + 1
    # Go's checker on what the bucket serves: the checkpoint and every tile
    go = gocheck_path()
    served = tmp_path / "served"
    for info in client.list():
        target = served / info.key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get(info.key))
    note = subprocess.run([go, "note", str(served / "checkpoint"), str(served / "log.vkey")], capture_output=True,
                          text=True)
    assert note.returncode == 0 and "size 1400" in note.stdout, note.stderr
    root = next(line.split()[1] for line in note.stdout.splitlines() if line.startswith("root "))
    tiles = subprocess.run([go, "tiles", str(served), "1400", root], capture_output=True, text=True)
    assert tiles.returncode == 0 and "ok tiles" in tiles.stdout, tiles.stderr
    for size in (3, 310):  # the kept partial tiles of earlier sizes too
        cp = subprocess.run([go, "note", str(served / "checkpoints" / str(size)), str(served / "log.vkey")],
                            capture_output=True, text=True)
        old_root = next(line.split()[1] for line in cp.stdout.splitlines() if line.startswith("root "))
        old = subprocess.run([go, "tiles", str(served), str(size), old_root], capture_output=True, text=True)
        assert old.returncode == 0, old.stderr


def test_usage_errors(env: dict[str, str], s3_location: str, tmp_path: Path) -> None:
    res = kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, check=False)
    assert res.returncode == 2 and "--key-out" in res.stderr
    key = tmp_path / "k"
    kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, "--key-out", str(key))
    res = kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, "--key-out", str(tmp_path / "k2"), check=False)
    assert res.returncode == 1 and "already" in res.stderr and not (tmp_path / "k2").exists()
    res = kfm(env, "witness-push", "--ledger", s3_location, check=False)
    assert res.returncode == 2 and "kfm export" in res.stderr
    res = kfm(env, "query", "SELECT 1", "--ledger", s3_location, check=False)
    assert res.returncode == 2 and "kfm mirror --out FILE" in res.stderr
    res = kfm(env, "mirror", "--ledger", s3_location, check=False)
    assert res.returncode == 2 and "--out FILE" in res.stderr
    res = kfm(env, "append", "-", "--ledger", s3_location, check=False)
    assert res.returncode == 1 and "--key" in res.stderr
    (tmp_path / "one.jsonl").write_bytes(sample_jsonl(1))
    res = kfm(env, "append", str(tmp_path / "one.jsonl"), "--mirror", "--key", str(key), "--ledger", s3_location,
              check=False)
    assert res.returncode == 2 and "Parquet mirror" in res.stderr
    assert json.loads(kfm(env, "checkpoint", "--ledger", s3_location, "--json").stdout)["tree_size"] == 0
    res = kfm({**env, "AWS_ALLOW_HTTP": "false"}, "get", "--ledger", s3_location, "--index", "0", check=False)
    assert res.returncode == 2 and "AWS_ALLOW_HTTP" in res.stderr
    assert "Traceback" not in res.stderr


def _launch(env: dict[str, str], url: str, key: Path, rows_file: Path, first: int, count: int,
            size: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, WRITER, url, str(key), str(rows_file), str(first), str(count),
                             str(size)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_exactly_once(env: dict[str, str], url: str, lines: list[bytes], acked: list[tuple[int, int]],
                        batches: list[tuple[int, int]], tmp_path: Path) -> None:
    out = tmp_path / "final.jsonl"
    kfm(env, "recover", "--ledger", url)
    kfm(env, "export", "--ledger", url, "--to", str(out))
    stored = Counter(out.read_bytes().splitlines())
    assert all(n == 1 for n in stored.values()), "a row appears twice"
    for start, n in acked:
        assert all(stored[lines[i]] == 1 for i in range(start, start + n)), f"acknowledged batch {start} lost"
    for start, n in batches:  # all or nothing, acknowledged or not
        present = {stored[lines[i]] for i in range(start, start + n)}
        assert len(present) == 1, f"batch {start} is partly in the ledger"
    report = json.loads(kfm(env, "verify", "--ledger", url, "--json").stdout)
    assert report["ok"], report["failures"]
    assert report["rows_checked"] == sum(stored.values())


@pytest.mark.parametrize("writers", [2, 8])
def test_concurrent_writer_processes_append_every_acknowledged_row_once(
    env: dict[str, str], s3_location: str, tmp_path: Path, writers: int
) -> None:
    lines = [same_time(x) for x in sample_jsonl(writers * 40).splitlines()]
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_bytes(b"".join(x + b"\n" for x in lines))
    key = tmp_path / "k"
    kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, "--key-out", str(key))
    procs = [_launch(env, s3_location, key, rows_file, w * 40, 40, 4) for w in range(writers)]
    acked: list[tuple[int, int]] = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        for line in stdout.splitlines():
            kind, start, rest = line.split(" ", 2)
            assert kind == "ACK", line
            acked.append((int(start), int(rest)))
    assert len(acked) == writers * 10
    batches = [(s, 4) for s in range(0, writers * 40, 4)]
    _check_exactly_once(env, s3_location, lines, acked, batches, tmp_path)


def test_writers_killed_with_sigkill_at_random_points(env: dict[str, str], s3_location: str, tmp_path: Path) -> None:
    lines = [same_time(x) for x in sample_jsonl(4 * 60).splitlines()]
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_bytes(b"".join(x + b"\n" for x in lines))
    key = tmp_path / "k"
    kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, "--key-out", str(key))
    rng = random.Random(11)
    acked: list[tuple[int, int]] = []
    for rnd in range(3):
        procs = [_launch(env, s3_location, key, rows_file, rnd * 80 + w * 20, 20, 2) for w in range(4)]
        time.sleep(rng.uniform(0.8, 2.0))
        for p in procs[:2]:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            stdout, _ = p.communicate(timeout=600)
            acked += [(int(a), int(b)) for kind, a, b in (line.split(" ", 2) for line in stdout.splitlines())
                      if kind == "ACK"]
    batches = [(s, 2) for s in range(0, 240, 2)]
    _check_exactly_once(env, s3_location, lines, acked, batches, tmp_path)


def test_a_bucket_edited_behind_the_ledgers_back(env: dict[str, str], s3_location: str, s3_server, tmp_path: Path,
                                                 rows: tuple[Path, list[bytes]]) -> None:
    _, lines = rows
    key = tmp_path / "k"
    kfm(env, "init", "--origin", ORIGIN, "--ledger", s3_location, "--key-out", str(key))
    for a, b in ((0, 300), (300, 310)):
        (tmp_path / "b.jsonl").write_bytes(b"".join(x + b"\n" for x in lines[a:b]))
        kfm(env, "append", str(tmp_path / "b.jsonl"), "--ledger", s3_location, "--key", str(key))
    kfm(env, "get", "--ledger", s3_location, "--commit", commit_of(lines[309]))  # this machine saw 310 rows
    client = s3_server.client(parse_s3_url(s3_location).prefix)
    good = {k: client.get(k) for k in ("tile/0/000", "tile/entries/000", "checkpoint")}

    def verify_fails(where: str) -> None:
        res = kfm(env, "verify", "--ledger", s3_location, "--json", check=False)
        assert res.returncode == 1
        assert any(f["where"] == where for f in json.loads(res.stdout)["failures"]), res.stdout

    client.put("tile/0/000", b"\x01" * 8192)  # a tile overwritten
    verify_fails("tile/0/000")
    client.put("tile/0/000", good["tile/0/000"])
    from kfm_ledger.core.entry_bundle import encode_entry_bundle

    client.put("tile/entries/000", encode_entry_bundle([lines[1]] + lines[1:256]))  # a bundle overwritten
    verify_fails("tile/entries/000")
    res = kfm({**env, "KFM_CACHE_DIR": str(tmp_path / "other-cache")}, "get", "--ledger", s3_location, "--index",
              "0", check=False)
    assert res.returncode == 1 and "signed checkpoint" in res.stderr
    client.put("tile/entries/000", good["tile/entries/000"])
    client.put("checkpoint", client.get("checkpoints/300"))  # the checkpoint rolled back
    verify_fails("checkpoints/310")
    res = kfm(env, "get", "--ledger", s3_location, "--commit", commit_of(lines[5]), check=False)
    assert res.returncode == 1 and "rolled back" in res.stderr
    client.put("checkpoint", good["checkpoint"])
    assert kfm(env, "verify", "--ledger", s3_location).returncode == 0


def test_export_of_a_local_ledger(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KFM_"))}
    led = tmp_path / "led"
    kfm(env, "init", "--origin", ORIGIN, "--ledger", str(led))
    (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(300))
    kfm(env, "append", str(tmp_path / "rows.jsonl"), "--ledger", str(led))
    out = tmp_path / "out.jsonl"
    doc = json.loads(kfm(env, "export", "--ledger", str(led), "--to", str(out), "--json").stdout)
    assert doc["rows"] == 300 and doc["tree_size"] == 300 and doc["ok"]
    assert out.read_bytes() == (led / "rollback-index.jsonl").read_bytes()
    assert kfm(env, "export", "--ledger", str(led)).stdout.encode() == out.read_bytes()
    assert kfm(env, "export", "--ledger", str(led), "--json", check=False).returncode == 2
    data = bytearray((led / "rollback-index.jsonl").read_bytes())
    data[data.index(b'"prod"')+1] ^= 0x01  # a changed signed row
    (led / "rollback-index.jsonl").write_bytes(bytes(data))
    res = kfm(env, "export", "--ledger", str(led), "--to", str(tmp_path / "bad.jsonl"), check=False)
    assert res.returncode == 1 and not (tmp_path / "bad.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bad")] == []
