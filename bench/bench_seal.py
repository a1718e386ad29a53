"""What the commit index's seal costs: bulk appends and one-row appends, in-process.

Usage::

    python bench/bench_seal.py --rows 200000 --dir /tmp/kfm-seal

Builds a ledger with one bulk append of ``--rows`` rows (the 750-byte rows of
bench_bulk.py), appends a second bulk batch of ``--rows`` rows (every seal bucket is
then checked against the rows already there), then ``--appends`` one-row appends.
Reports wall time and CPU time (this process and its worker processes: on a shared
machine CPU time is the steadier figure).  Run it with ``PYTHONPATH`` pointing at
another tree's ``src`` to compare.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_bulk import make_input, small_row
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger

ORIGIN = "bench.kfm.example/rollback-index"


def cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(label: str, fn) -> None:
    w, c = time.perf_counter(), cpu()
    fn()
    print(f"{label:44s} wall {time.perf_counter() - w:6.2f} s   cpu {cpu() - c:6.2f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kfm-seal"))
    p.add_argument("--appends", type=int, default=200)
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    first, second = a.dir / f"rows-{a.rows}-a.jsonl", a.dir / f"rows-{a.rows}-b.jsonl"
    make_input(first, a.rows, small_row)
    make_input(second, a.rows, lambda i: small_row(a.rows + i))
    path = a.dir / "ledger"
    shutil.rmtree(path, ignore_errors=True)
    led = Ledger.init(path, origin=ORIGIN)
    signer = load_signer(led.storage.read(SKEY_KEY))
    timed(f"bulk append, {a.rows} rows to an empty ledger", lambda: led.append_file(first, signer=signer))
    timed(f"bulk append, {a.rows} more rows", lambda: led.append_file(second, signer=signer))
    ms, cpu_ms = [], []
    for i in range(a.appends):
        row = small_row(2 * a.rows + i) + b"\n"
        t, c = time.perf_counter(), time.process_time()
        led.append(row, signer=signer)
        ms.append((time.perf_counter() - t) * 1000)
        cpu_ms.append((time.process_time() - c) * 1000)
    ms.sort()
    p90 = ms[len(ms) * 9 // 10]
    print(
        f"one-row append at {led.size} rows: median {statistics.median(ms):.2f} ms  p90 {p90:.2f} ms  "
        f"(cpu median {statistics.median(cpu_ms):.2f} ms)"
    )


if __name__ == "__main__":
    main()
