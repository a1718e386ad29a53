"""End to end: ``kfm serve --workers 2`` in its own process, ``kfm client prove|check`` and
``kfm monitor`` as a user runs them, their output, exit codes and state files; Go's gocheck
verifying the tiles downloaded from ``kfm serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import ORIGIN, ServerThread, StaticLog, sample_lines

from kfm_ledger.core import tiles
from kfm_ledger.core.keys import Signer
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.net.http_client import Fetcher
from kfm_ledger.sample import sample_commit, sample_jsonl

from conftest import gocheck_path


def kfm(*args: object, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "kfm_ledger", *map(str, args)], capture_output=True, text=True,
                         timeout=120, check=False)
    if check is not None:
        assert res.returncode == check, f"kfm {args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    signer = load_signer((d / "log.key").read_bytes())
    led.append(sample_jsonl(300), signer=signer)
    led.append(sample_jsonl(70, start=300), signer=signer)
    led.close()
    return d


@pytest.fixture(scope="module")
def served(ledger: Path) -> Iterator[str]:
    """``kfm serve --workers 2`` on a free port, stopped (SIGINT, then SIGKILL) after the module."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfm_ledger", "serve", "--ledger", str(ledger), "--listen", f"127.0.0.1:{port}",
         "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Fetcher(url, timeout=2) as f:
                    f.get("checkpoint", 65536)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"kfm serve did not start: {why}") from None
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)
        if proc.stderr:
            proc.stderr.close()


def test_client_prove_and_check(served: str, ledger: Path, tmp_path: Path) -> None:
    vkey = ledger / "log.vkey"
    commit = sample_commit(42)[:12]
    res = kfm("client", "prove", "--url", served, "--vkey", vkey, "--commit", commit, "--state", tmp_path)
    row_line, _, proof = res.stdout.partition("\n\n")
    assert json.loads(row_line)["lakefs_commit"] == sample_commit(42)
    assert proof.startswith("c2sp.org/tlog-proof@v1\nindex 42\n")
    assert "verified" in res.stderr and "entry 42" in res.stderr
    (tmp_path / "p").write_text(proof)
    (tmp_path / "e").write_text(row_line)
    kfm("verify-proof", tmp_path / "p", "--vkey", vkey, "--entry", tmp_path / "e")
    doc = json.loads(kfm("client", "check", "--url", served, "--vkey", vkey, "--state", tmp_path, "--json").stdout)
    assert doc["ok"] is True and doc["tree_size"] == 370 and doc["previous_size"] == 370
    assert Path(doc["state_file"]).is_file()
    doc = json.loads(kfm("client", "prove", "--url", served, "--vkey", vkey, "--commit", sample_commit(369),
                         "--state", tmp_path, "--json").stdout)
    assert doc["index"] == 369 and doc["row"]["lakefs_commit"] == sample_commit(369) and "tlog_proof" in doc
    by_index = kfm("client", "prove", "--url", served, "--vkey", vkey, "--index", "369", "--state", tmp_path)
    assert by_index.stdout.partition("\n\n")[2] == doc["tlog_proof"]


def test_client_failures_exit_1(served: str, ledger: Path, tmp_path: Path) -> None:
    vkey = ledger / "log.vkey"
    res = kfm("client", "prove", "--url", served, "--vkey", vkey, "--commit", "nosuchcommit", "--state", tmp_path,
              check=1)
    assert "HTTP 404" in res.stderr and "Traceback" not in res.stderr
    other = tmp_path / "other.vkey"
    other.write_text(Signer.generate(ORIGIN).verifier().vkey_text() + "\n")
    res = kfm("client", "check", "--url", served, "--vkey", other, "--state", tmp_path / "s2", "--json", check=1)
    assert json.loads(res.stdout)["error"]["type"] == "UnknownKeyError"
    res = kfm("client", "check", "--url", "http://127.0.0.1:1", "--vkey", vkey, "--state", tmp_path, check=1)
    assert "kfm: error: GET http://127.0.0.1:1/checkpoint" in res.stderr


def test_client_usage_errors_exit_2(ledger: Path, tmp_path: Path) -> None:
    vkey = ledger / "log.vkey"
    res = kfm("client", "check", "--url", "http://127.0.0.1:1", "--vkey", vkey, "--quorum", "1", check=2)
    assert "--quorum 1 needs at least 1 --witness-vkey" in res.stderr
    kfm("client", "prove", "--url", "http://127.0.0.1:1", "--vkey", vkey, check=2)  # no --commit
    res = kfm("client", "prove", "--url", "http://127.0.0.1:1", "--vkey", vkey, "--commit", "ab", "--index", "1",
              check=2)
    assert "exactly one of --commit or --index" in res.stderr
    res = kfm("serve", "--ledger", ledger, "--listen", "nonsense", check=None)
    assert res.returncode != 0 and "HOST:PORT" in res.stderr


def test_fork_through_the_cli(ledger: Path, tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(signer.verifier().vkey_text() + "\n")
    lines = sample_lines(40)
    with ServerThread(StaticLog(lines, signer).app()) as server:
        kfm("client", "check", "--url", server.url, "--vkey", vkey, "--state", tmp_path)
    lines[2] = sample_lines(1, start=2, seed=5)[0]
    with ServerThread(StaticLog(lines + sample_lines(3, start=40), signer).app()) as server:
        res = kfm("client", "check", "--url", server.url, "--vkey", vkey, "--state", tmp_path, check=1)
        assert "fork:" in res.stderr and "evidence written to" in res.stderr
        mon = kfm("monitor", "--url", server.url, "--vkey", vkey, "--state", tmp_path, "--once", "--json", check=1)
    events = [json.loads(line) for line in mon.stdout.splitlines()]
    assert [e["event"] for e in events] == ["fork"] and Path(events[0]["evidence"]).is_file()
    assert len(list((tmp_path / "net.kfm.test%2Flog" / "evidence").iterdir())) == 2


def test_monitor_once(served: str, ledger: Path, tmp_path: Path) -> None:
    vkey = ledger / "log.vkey"
    res = kfm("monitor", "--url", served, "--vkey", vkey, "--state", tmp_path, "--once")
    assert "checkpoint: size 370 verified" in res.stdout and "rows 0..369 checked (370 rows, 0 bad)" in res.stdout
    res = kfm("monitor", "--url", served, "--vkey", vkey, "--state", tmp_path, "--once", "--json", "--max-age", "0",
              check=1)
    assert [json.loads(line)["event"] for line in res.stdout.splitlines()] == ["stale"]


@pytest.mark.interop
def test_gocheck_verifies_tiles_downloaded_from_kfm_serve(served: str, ledger: Path, tmp_path: Path) -> None:
    go = gocheck_path()
    with Fetcher(served) as f:
        note = f.get("checkpoint", 65536).body
        for size in (300, 370):
            root = note.split(b"\n")[2].decode() if size == 370 else None
            out = tmp_path / f"tiles{size}"
            for level, index, width in tiles.tiles_for_size(size):
                path = tiles.tile_path(level, index, width)
                (out / path).parent.mkdir(parents=True, exist_ok=True)
                (out / path).write_bytes(f.get(path, 8192).body)
            if root is None:
                kept = f.get(f"checkpoints/{size}", 65536).body
                root = kept.split(b"\n")[2].decode()
            res = subprocess.run([go, "tiles", str(out), str(size), root], capture_output=True, text=True, check=False)
            assert res.returncode == 0, res.stderr
    (tmp_path / "cp").write_bytes(note)
    res = subprocess.run([go, "note", str(tmp_path / "cp"), str(ledger / "log.vkey")], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0 and "size 370" in res.stdout
    # A tampered downloaded tile makes Go fail (the check can fail).
    bad = tmp_path / "tiles370" / "tile/0/000"
    data = bytearray(bad.read_bytes())
    data[0] ^= 1
    bad.write_bytes(bytes(data))
    res = subprocess.run([go, "tiles", str(tmp_path / "tiles370"), "370", note.split(b"\n")[2].decode()],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1


def test_witness_keys_through_the_cli(tmp_path: Path) -> None:
    from kfm_ledger.core.cosignature import CosignatureSigner
    from kfm_ledger.core.note import add_signatures
    from kfm_ledger.core.signed_checkpoint import open_checkpoint

    signer = Signer.generate(ORIGIN)
    w1, w2 = CosignatureSigner.generate("witness.test/a"), CosignatureSigner.generate("witness.test/b")
    files = {}
    for name, key in (("log", signer), ("w1", w1), ("w2", w2)):
        files[name] = tmp_path / f"{name}.vkey"
        files[name].write_text(key.verifier().vkey_text() + "\n")
    log = StaticLog(sample_lines(12), signer)
    body = open_checkpoint(log.note, [signer.verifier()]).checkpoint.body()
    log.files["checkpoint"] = add_signatures(log.note, [w1.cosign(body, int(time.time()))])
    common = ["--vkey", files["log"], "--state", tmp_path / "state", "--json"]
    with ServerThread(log.app()) as server:
        ok = kfm("client", "check", "--url", server.url, *common, "--witness-vkey", files["w1"])
        assert json.loads(ok.stdout)["witnesses"] == ["witness.test/a"]
        kfm("client", "check", "--url", server.url, *common, "--witness-vkey", files["w1"], "--witness-vkey",
            files["w2"], "--quorum", "1")
        res = kfm("client", "check", "--url", server.url, *common, "--witness-vkey", files["w1"], "--witness-vkey",
                  files["w2"], check=1)
        assert json.loads(res.stdout)["error"]["type"] == "QuorumError"
