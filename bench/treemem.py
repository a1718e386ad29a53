"""Run a command and report the peak memory of its whole process tree.

Usage::

    python bench/treemem.py kfm verify --ledger /tmp/kfm-bulk/ledger --no-mirror

Every 20 ms it reads ``/proc/<pid>/smaps_rollup`` of the process and all its
descendants and sums them: RSS (shared pages counted once per process, so an
overestimate for forked workers) and PSS (shared pages split between the
processes that share them: the tree's real footprint).  Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found += descendants(int(child))
    except OSError:  # the process ended meanwhile
        pass
    return found


def rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main() -> None:
    started = time.perf_counter()
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        samples = [rss_pss_kib(p) for p in descendants(proc.pid)]
        peak_rss = max(peak_rss, sum(r for r, _ in samples))
        peak_pss = max(peak_pss, sum(p for _, p in samples))
        time.sleep(0.02)
    print(
        f"wall {time.perf_counter() - started:.1f} s  exit {proc.returncode}  "
        f"tree peak RSS {peak_rss / 1024:.0f} MiB  PSS {peak_pss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
