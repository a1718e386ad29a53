"""``kfm witness serve`` over real sockets on 127.0.0.1: every request c2sp.org/tlog-witness
describes and every status code, malformed and oversize bodies, concurrent pushes from threads
and from processes, a restart keeping the state, two servers sharing one state."""

from __future__ import annotations

import concurrent.futures
import http.client
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from wit_support import FakeLog, WitnessProcess, write_witness_key

from kfm_ledger.core.cosignature import CosignatureSigner, verify_cosignature
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.note import open_note, parse_note
from kfm_ledger.witness.protocol import MAX_REQUEST_BYTES, format_add_checkpoint, parse_signature_lines
from kfm_ledger.witness.service import origin_hash


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = FakeLog("log.test/http")
        self.other = FakeLog("log.test/second")
        self.key, self.cosigner = write_witness_key(tmp)
        self.logs = [(self.log.origin, self.log.write_vkey(tmp)), (self.other.origin, self.other.write_vkey(tmp))]
        self.state = tmp / "state"

    def start(self) -> WitnessProcess:
        return WitnessProcess(self.state, self.key, self.logs)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, WitnessProcess]]:
    e = Env(tmp_path_factory.mktemp("witness-http"))
    w = e.start()
    yield e, w
    w.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Env, WitnessProcess]]:
    e = Env(tmp_path)
    w = e.start()
    yield e, w
    w.stop()


def test_200_cosignature_lines(fresh: tuple[Env, WitnessProcess]) -> None:
    e, w = fresh
    status, _, body = w.post(e.log.request(0, 12))
    assert status == 200
    (sig,) = parse_signature_lines(body)
    assert body.startswith("\u2014 witness.test/w1 ".encode()) and body.endswith(b"\n")
    ts = verify_cosignature(e.cosigner.verifier(), parse_note(e.log.checkpoint(12)).text, sig)
    assert ts > 1_600_000_000
    # The client may append the answer to the checkpoint and open it with the witness key.
    opened = open_note(e.log.checkpoint(12) + body, [e.log.signer.verifier(), e.cosigner.verifier()])
    assert len(opened.verified) == 2
    status, _, body = w.post(e.log.request(12, 300))
    assert status == 200


def test_every_refusal_status_over_http(fresh: tuple[Env, WitnessProcess]) -> None:
    e, w = fresh
    log = e.log
    assert w.post(log.request(0, 10))[0] == 200
    # 409: the old size is not the stored one; the body is the size, text/x.tlog.size.
    assert w.post(log.request(3, 20)) == (409, "text/x.tlog.size", b"10\n")
    # 400: old size above the checkpoint's size; and malformed bodies.
    assert w.post(format_add_checkpoint(30, [], log.checkpoint(20)))[0] == 400
    status, ctype, body = w.post(b"old 1O\n\n")
    assert status == 400 and ctype.startswith("text/plain") and b"line 1" in body
    # 404: an origin the witness does not follow.
    assert w.post(FakeLog("log.test/nobody").request(0, 1))[0] == 404
    # 403: signed by a key the witness does not trust for that origin.
    assert w.post(format_add_checkpoint(10, log.proof(10, 20), log.checkpoint(20, signer=Signer.generate(log.origin))))[
        0
    ] == 403
    # 422: a bad proof; the same size with another root; size 0 with a root that is not empty.
    proof = log.proof(10, 20)
    assert w.post(format_add_checkpoint(10, proof[::-1], log.checkpoint(20)))[0] == 422
    assert w.post(format_add_checkpoint(10, [], log.checkpoint(10, root=b"\7" * 32)))[0] == 422
    assert w.post(format_add_checkpoint(0, [], e.other.checkpoint(0, root=b"\7" * 32)))[0] == 422
    assert w.post(format_add_checkpoint(0, [b"\1" * 32], e.other.checkpoint(3)))[0] == 422
    # Nothing of that moved the state.
    assert w.post(log.request(0, 20)) == (409, "text/x.tlog.size", b"10\n")


def test_methods_and_paths(env: tuple[Env, WitnessProcess]) -> None:
    _, w = env
    status, _, _ = w.request("GET", "/add-checkpoint")
    assert status == 405
    assert w.request("PUT", "/add-checkpoint", b"x")[0] == 405
    assert w.request("GET", "/")[0] == 404
    assert w.request("POST", "/add-checkpoint/")[0] == 404
    assert w.request("GET", "/../../etc/passwd")[0] == 404
    assert w.request("GET", "/" + "A" * 64 + "/checkpoint")[0] == 404


def test_monitoring_prefix_checkpoint(fresh: tuple[Env, WitnessProcess]) -> None:
    e, w = fresh
    path = f"/{origin_hash(e.log.origin)}/checkpoint"
    assert w.request("GET", path)[0] == 404
    assert w.post(e.log.request(0, 5))[0] == 200
    status, _, body = w.request("GET", path)
    assert status == 200
    opened = open_note(body, [e.log.signer.verifier(), e.cosigner.verifier()])
    assert len(opened.verified) == 2
    status, _, body = w.request("HEAD", path)
    assert status == 200 and body == b""


def test_oversize_bodies(env: tuple[Env, WitnessProcess]) -> None:
    _, w = env
    big = b"old 0\n\n" + b"x" * (MAX_REQUEST_BYTES + 1)
    assert w.post(big)[0] == 413
    # Chunked, no Content-Length: cut off as it streams.
    conn = w.connection()
    conn.putrequest("POST", "/add-checkpoint")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"y" * 65536
    try:
        for _ in range(4):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close early
    assert conn.getresponse().status == 413
    conn.close()
    # A lying Content-Length above the limit is refused before the body is read.
    s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nold 0\n")
    assert s.recv(100).startswith(b"HTTP/1.1 413")
    s.close()
    # The server still answers.
    assert w.post(b"old 0\n")[0] == 400


def test_garbage_on_the_socket(env: tuple[Env, WitnessProcess]) -> None:
    _, w = env
    s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    s.sendall(b"\x00\xff garbage \r\n\r\n")
    data = s.recv(100)
    s.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 400")
    assert w.post(b"")[0] == 400


def test_keep_alive_connection(fresh: tuple[Env, WitnessProcess]) -> None:
    e, w = fresh
    conn = w.connection()
    old = 0
    for size in (5, 9, 9, 40):
        conn.request("POST", "/add-checkpoint", body=e.log.request(old, size))
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
        old = size
    conn.close()


def _push_until_done(port: int, log: FakeLog, size: int) -> tuple[int, int]:
    """A log's client loop: start from 0, follow 409s; (final status, size)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    old = 0
    try:
        for _ in range(500):
            if old > size:
                return 409, size
            conn.request("POST", "/add-checkpoint", body=format_add_checkpoint(old, log.proof(old, size),
                                                                                 log.checkpoint(size)))
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 409:
                old = int(body)
                continue
            return resp.status, size
    finally:
        conn.close()
    raise AssertionError("never settled")


def test_concurrent_pushes_never_regress(fresh: tuple[Env, WitnessProcess]) -> None:
    e, w = fresh
    e.log.grow(200)
    sizes = list(range(1, 200, 3))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda s: _push_until_done(w.port, e.log, s), sizes))
    assert all(status in (200, 409) for status, _ in results)
    cosigned = [size for status, size in results if status == 200]
    assert max(cosigned) == sizes[-1]
    # The witness holds the largest size: a request from any smaller one is told so.
    assert w.post(e.log.request(0, 199)) == (409, "text/x.tlog.size", f"{sizes[-1]}\n".encode())


_CHILD = r"""
import sys, http.client
from kfm_ledger.core.keys import Signer
from kfm_ledger.witness.protocol import format_add_checkpoint
sys.path.insert(0, sys.argv[4])
from wit_support import FakeLog
log = FakeLog(sys.argv[2]); log.signer = Signer.from_private_key_text(open(sys.argv[3]).read())
port = int(sys.argv[1]); log.grow(400)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
done = []
for size in range(int(sys.argv[5]), 400, 7):
    old = 0
    while old <= size:
        body = format_add_checkpoint(old, log.proof(old, size), log.checkpoint(size))
        conn.request("POST", "/add-checkpoint", body=body)
        r = conn.getresponse(); b = r.read()
        if r.status == 409:
            old = int(b); continue
        assert r.status == 200, (r.status, b)
        done.append(size); break
print(max(done) if done else 0)
"""


def test_two_servers_one_state_and_processes_racing(tmp_path: Path) -> None:
    """Two witness processes share one state directory (SQLite compare-and-swap across
    processes); client processes race on both: the state never moves backwards, and ends at
    the largest size any process pushed."""
    e = Env(tmp_path)
    skey = tmp_path / "log.key"
    skey.write_text(e.log.signer.private_key_text())
    w1, w2 = e.start(), e.start()
    try:
        here = str(Path(__file__).parent)
        procs = [
            subprocess.Popen([sys.executable, "-c", _CHILD, str(w.port), e.log.origin, str(skey), here, str(start)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for w, start in ((w1, 1), (w2, 2), (w1, 3), (w2, 4))
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
        # 1 + 7k, 2 + 7k, ... below 400: the largest is 396 (start 4) or 393 ... whichever exists.
        largest = max(s for start in (1, 2, 3, 4) for s in range(start, 400, 7))
        for w in (w1, w2):
            assert w.post(e.log.request(0, 399)) == (409, "text/x.tlog.size", f"{largest}\n".encode())
    finally:
        w1.stop()
        w2.stop()


def test_restart_keeps_state(tmp_path: Path) -> None:
    e = Env(tmp_path)
    w = e.start()
    try:
        assert w.post(e.log.request(0, 33))[0] == 200
    finally:
        w.stop()
    w = e.start()
    try:
        assert w.post(e.log.request(0, 40)) == (409, "text/x.tlog.size", b"33\n")
        assert w.post(e.log.request(33, 40))[0] == 200
        assert w.post(e.other.request(0, 1))[0] == 200  # per-origin state
    finally:
        w.stop()


def test_serve_refuses_bad_flags(tmp_path: Path) -> None:
    e = Env(tmp_path)
    base = [sys.executable, "-m", "kfm_ledger", "witness", "serve", "--state", str(e.state), "--key", str(e.key)]
    res = subprocess.run([*base, "--log", f"{e.log.origin}={e.logs[0][1]}", "--listen", "nohost"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr
    # A log key that is not named like the origin.
    res = subprocess.run([*base, "--log", f"log.test/other={e.logs[0][1]}", "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "named like the origin" in res.stderr
    # The cosigning key must be private (0600).
    e.key.chmod(0o644)
    res = subprocess.run([*base, "--log", f"{e.log.origin}={e.logs[0][1]}", "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "PRIVATE+KEY" not in res.stderr + res.stdout
    # A log's signing key is no cosigning key.
    bad = tmp_path / "notcosigner.key"
    bad.write_text(e.log.signer.private_key_text())
    bad.chmod(0o600)
    res = subprocess.run([sys.executable, "-m", "kfm_ledger", "witness", "serve", "--state", str(e.state), "--key",
                          str(bad), "--log", f"{e.log.origin}={e.logs[0][1]}"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and "key type" in res.stderr and "PRIVATE+KEY" not in res.stderr


def test_witness_init(tmp_path: Path) -> None:
    key = tmp_path / "w.key"
    res = subprocess.run([sys.executable, "-m", "kfm_ledger", "witness", "init", "--name", "w.test/x",
                          "--key-out", str(key)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    vkey = (tmp_path / "w.vkey").read_text().strip()
    assert f"verifier key: {vkey}" in res.stdout and "PRIVATE" not in res.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    signer = CosignatureSigner.from_private_key_text(key.read_text())
    assert signer.verifier().vkey_text() == vkey and vkey.startswith("w.test/x+")
    res = subprocess.run([sys.executable, "-m", "kfm_ledger", "witness", "init", "--name", "w.test/x",
                          "--key-out", str(key)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "refusing to overwrite" in res.stderr


def test_witness_state_command(tmp_path: Path) -> None:
    import json

    e = Env(tmp_path)
    kfm = [sys.executable, "-m", "kfm_ledger", "witness", "state", "--state", str(e.state)]
    res = subprocess.run(kfm, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no witness state" in res.stderr
    w = e.start()
    try:
        assert w.post(e.log.request(0, 21))[0] == 200
        assert w.post(format_add_checkpoint(21, [], e.log.checkpoint(21, root=b"\5" * 32)))[0] == 422
    finally:
        w.stop()
    res = subprocess.run([*kfm, "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (doc,) = json.loads(res.stdout)["logs"]
    assert (doc["origin"], doc["tree_size"], doc["refusals"]) == (e.log.origin, 21, 1)
    res = subprocess.run(kfm, capture_output=True, text=True, timeout=60)
    assert f"{e.log.origin}: tree size 21" in res.stdout and "1 refused request(s) kept" in res.stdout
