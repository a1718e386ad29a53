"""Benchmark the witness: checkpoints cosigned per second over real HTTP (issue 10: >= 500/s).

Usage::

    python bench/bench_witness.py                      # both measurements below
    python bench/bench_witness.py --logs 32 --per-log 100 --clients 4
    python bench/bench_witness.py --skip-wrk           # the Python client only

It starts ``kfm witness serve --listen 127.0.0.1:0`` (a separate process, state in a temporary
directory, SQLite ``synchronous=FULL``: every 200 waited for its fsync'd commit) following
``--logs`` logs, then measures:

1. *growing logs* (the real workload): ``--clients`` client processes, each owning a share of
   the logs and one kept-alive ``http.client`` connection, send every log's checkpoints of sizes
   1 .. ``--per-log`` in turn, each with the consistency proof from the size before (all
   signed and proven before the clock starts).  Every answer must be 200.  Reported: cosigned
   checkpoints per second over the wall time of all clients, and the latency percentiles.
2. *wrk* (Debian's ``wrk``, ``-t2 -c16 -d10s`` by default): one body posted again and again:
   the latest checkpoint of a log with ``old`` equal to its size, which the witness checks
   (signature, same root) and cosigns again, with a committed state write, each time.

The client processes share the machine's cores with the server: on a 2-core machine the
figure is a lower bound for the server alone.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.signed_checkpoint import sign_checkpoint
from kfm_ledger.witness.protocol import format_add_checkpoint


def _bodies(origin: str, seed: str, per_log: int) -> list[bytes]:
    signer = Signer.from_private_key_text(seed)
    tree = merkle.MemoryTree()
    out = []
    for size in range(1, per_log + 1):
        tree.append(merkle.leaf_hash(b"%s %d" % (origin.encode(), size)))
        old = size - 1
        proof = merkle.consistency_proof(old, size, tree) if old else []
        note = sign_checkpoint(Checkpoint(origin=origin, size=size, root=tree.root()), signer)
        out.append(format_add_checkpoint(old, proof, note))
    return out


def _client(
    port: int, logs: list[tuple[str, str]], per_log: int, start_at: float, queue: multiprocessing.Queue
) -> None:
    bodies = [(origin, _bodies(origin, key, per_log)) for origin, key in logs]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies: list[float] = []
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i in range(per_log):
        for _origin, log_bodies in bodies:
            t = time.perf_counter()
            conn.request("POST", "/add-checkpoint", body=log_bodies[i])
            resp = conn.getresponse()
            data = resp.read()
            latencies.append(time.perf_counter() - t)
            if resp.status != 200:
                queue.put(("error", f"{resp.status} {data[:200]!r}"))
                return
    queue.put(("ok", (t0, time.perf_counter(), latencies)))


def _start_witness(tmp: Path, logs: list[tuple[str, str]]) -> tuple[subprocess.Popen[bytes], int]:
    cosigner = CosignatureSigner.generate("bench.witness/w1")
    key = tmp / "witness.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cosigner.private_key_text())
    args = [sys.executable, "-m", "kfm_ledger", "witness", "serve", "--listen", "127.0.0.1:0",
            "--state", str(tmp / "state"), "--key", str(key)]
    for n, (origin, seed) in enumerate(logs):
        vkey = tmp / f"log{n}.vkey"
        vkey.write_text(Signer.from_private_key_text(seed).verifier().vkey_text())
        args += ["--log", f"{origin}={vkey}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    port = int(line.split(" listening on ")[1].split(" ")[0].rsplit(":", 1)[1])
    return proc, port


def growing_logs(port: int, logs: list[tuple[str, str]], per_log: int, clients: int) -> None:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.time() + 3.0 + 0.02 * per_log * len(logs) / max(clients, 1) / 10
    shares = [logs[i::clients] for i in range(clients)]
    procs = [multiprocessing.Process(target=_client, args=(port, share, per_log, start_at, queue)) for share in shares]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    errors = [r[1] for r in results if r[0] != "ok"]
    if errors:
        raise SystemExit(f"a request was not cosigned: {errors[0]}")
    begin = min(r[1][0] for r in results)
    end = max(r[1][1] for r in results)
    latencies = sorted(x for r in results for x in r[1][2])
    n = len(latencies)
    print(f"growing logs: {n} checkpoints cosigned ({len(logs)} logs x {per_log} sizes, {clients} client processes) "
          f"in {end - begin:.2f} s = {n / (end - begin):,.0f} cosigned checkpoints/s; "
          f"latency p50 {statistics.median(latencies) * 1e3:.2f} ms, p99 {latencies[int(n * 0.99)] * 1e3:.2f} ms")


def wrk_same_checkpoint(
    port: int, logs: list[tuple[str, str]], per_log: int, tmp: Path, args: argparse.Namespace
) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk: not installed (apt-get install wrk); skipped")
        return
    origin, seed = logs[0]
    last = _bodies(origin, seed, per_log)[-1]
    note = last.split(b"\n\n", 1)[1]
    body = format_add_checkpoint(per_log, [], note)
    script = tmp / "post.lua"
    lua_body = "".join(f"\\{b:03d}" for b in body)
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{lua_body}"\n'
                      'wrk.headers["Content-Type"] = "text/plain"\n'
                      'done = function(summary, latency, requests)\n'
                      '  io.write(string.format("non-2xx: %d\\n", summary.errors.status))\nend\n')
    cmd = [wrk, f"-t{args.wrk_threads}", f"-c{args.wrk_connections}", f"-d{args.wrk_duration}", "--latency",
           "-s", str(script), f"http://127.0.0.1:{port}/add-checkpoint"]
    print("$ " + " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    print(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=int, default=32, help="logs the witness follows")
    ap.add_argument("--per-log", type=int, default=100, help="checkpoints sent per log (sizes 1..N)")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--skip-wrk", action="store_true")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--wrk-connections", type=int, default=16)
    ap.add_argument("--wrk-duration", default="10s")
    args = ap.parse_args()
    logs = [(f"bench.log/{n}", Signer.generate(f"bench.log/{n}").private_key_text()) for n in range(args.logs)]
    with tempfile.TemporaryDirectory(prefix="kfm-bench-witness-") as d:
        tmp = Path(d)
        proc, port = _start_witness(tmp, logs)
        try:
            growing_logs(port, logs, args.per_log, args.clients)
            if not args.skip_wrk:
                wrk_same_checkpoint(port, logs, args.per_log, tmp, args)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
