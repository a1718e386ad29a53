"""Benchmark the analytics commands: `kfm mirror`, `kfm report energy`, `kfm impact`, `kfm query`.

Usage::

    python bench/bench_mirror.py --rows 1000000 --dir /tmp/kfm-bench-mirror-1m

Builds (or reuses) a ledger of N sample rows by appending batches through the
library, then runs each command as a whole `python -m kfm_ledger` process under
``/usr/bin/time -v`` (falling back to the children's rusage) and prints the wall
time and the peak RSS of each.  Targets from issue 3 at 1M rows on the 2-core
reference machine: `kfm mirror` <= 8 s and <= 1.5 GB; `kfm impact` and
`kfm report energy` <= 2 s.  The figures go to docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_core import build  # the same sample ledger builder (bench/ is on sys.path when run as a script)
from kfm_ledger.sample import sample_commit


def run(args: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one `python -m kfm_ledger ARGS` process."""
    cmd = [sys.executable, "-m", "kfm_ledger", *args]
    if os.path.exists("/usr/bin/time"):
        t0 = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        return wall, (int(m.group(1)) / 1024 if m else float("nan"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(before, after) / 1024  # an upper bound: the max over all children so far


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kfm-bench-mirror"))
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=3, help="runs per command; the best wall time is kept")
    a = p.parse_args()
    build(a.dir, a.rows, a.batch)
    d = str(a.dir)
    mid = a.rows // 2
    cases = [
        ("kfm mirror", ["mirror", "--ledger", d]),
        ("kfm mirror --check", ["mirror", "--ledger", d, "--check"]),
        ("kfm report energy (mirror current)", ["report", "energy", "--ledger", d]),
        ("kfm report energy --source jsonl", ["report", "energy", "--ledger", d, "--source", "jsonl"]),
        ("kfm impact --commit <row N/2>", ["impact", "--ledger", d, "--commit", sample_commit(mid)[:16]]),
        ("kfm impact --model focus-transformer@3.1.0", ["impact", "--ledger", d, "--model", "focus-transformer@3.1.0"]),
        (
            "kfm impact --config configs/model.yaml",
            ["impact", "--ledger", d, "--config", "configs/model.yaml", "--json"],
        ),
        (
            "kfm query (rows per producer per month)",
            [
                "query", "--ledger", d,
                "SELECT producer, strftime(created_at, '%Y-%m') AS month, count(*) AS n "
                "FROM rollback_index GROUP BY ALL ORDER BY ALL",
            ],
        ),
    ]
    print(f"{a.rows} rows, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'command':48} {'best wall s':>11} {'peak RSS MiB':>13}")
    for name, args in cases:
        results = [run(args) for _ in range(a.repeat)]
        wall = min(r[0] for r in results)
        rss = max(r[1] for r in results)
        print(f"{name:48} {wall:11.2f} {rss:13.0f}", flush=True)


if __name__ == "__main__":
    main()
