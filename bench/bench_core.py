"""Benchmark the core ledger: append throughput, and get / prove / verify as whole processes.

Usage::

    python bench/bench_core.py --rows 1000000 --dir /tmp/kfm-bench-1m

Builds (or reuses) a ledger of N sample rows by appending batches through the
library, then times each command as a separate `python -m kfm_ledger` process
and reports wall time and peak RSS (from the child's rusage).  Figures go to
docs/performance.md by hand, with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_commit, sample_jsonl

ORIGIN = "bench.kfm.example/rollback-index"


def build(directory: Path, rows: int, batch: int) -> None:
    if (directory / "checkpoint").exists():
        led = Ledger.open(directory)
    else:
        led = Ledger.init(directory, origin=ORIGIN)
    signer = load_signer(led.storage.read(SKEY_KEY))
    if led.size >= rows:
        print(f"reusing {directory}: {led.size} rows")
        return
    t_gen = t_append = 0.0
    while led.size < rows:
        n = min(batch, rows - led.size)
        t0 = time.perf_counter()
        data = sample_jsonl(n, start=led.size)
        t1 = time.perf_counter()
        led.append(data, signer=signer)
        t2 = time.perf_counter()
        t_gen += t1 - t0
        t_append += t2 - t1
    print(f"built {rows} rows: generating input {t_gen:.1f} s, kfm append (library) {t_append:.1f} s "
          f"= {rows / t_append:,.0f} rows/s in batches of {batch}")


def run_once(args: list[str]) -> tuple[float, float, int]:
    """Wall time (s), this child's own peak RSS (MiB) and exit code of one `kfm` process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "kfm_ledger", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024, proc.returncode


def run(args: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time of `repeat` runs, and the largest peak RSS (MiB) among them."""
    best, peak = float("inf"), 0.0
    for _ in range(repeat):
        t, rss, code = run_once(args)
        if code != 0:
            raise SystemExit(f"kfm {' '.join(args)} exited {code}")
        best, peak = min(best, t), max(peak, rss)
    return best, peak


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kfm-bench"))
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-verify", action="store_true")
    a = p.parse_args()
    build(a.dir, a.rows, a.batch)
    d = str(a.dir)
    mid = a.rows // 2
    commit = sample_commit(mid)
    cases = [
        ("kfm --help", ["--help"]),
        ("kfm get --commit <12-char prefix>", ["get", "--ledger", d, "--commit", commit[:12]]),
        ("kfm prove --commit <full id>", ["prove", "--ledger", d, "--commit", commit]),
        ("kfm prove --from N/2", ["prove", "--ledger", d, "--from", str(mid)]),
    ]
    for name, args in cases:
        t, rss = run(args, a.repeat)
        print(f"{name:40s} {t * 1000:8.0f} ms  (best of {a.repeat}), peak RSS {rss:.0f} MiB")
    if not a.skip_verify:
        t, rss, code = run_once(["verify", "--ledger", d, "--no-mirror"])
        print(f"{'kfm verify --no-mirror':40s} {t:8.1f} s   peak RSS {rss:.0f} MiB, exit {code}")
    print(f"JSONL size: {os.path.getsize(a.dir / 'rollback-index.jsonl') / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
