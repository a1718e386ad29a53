"""Compare two source trees (e.g. main and a branch) on a bulk append and a verify, alternating.

Usage::

    python bench/bench_bulk.py --rows 1000000 --row-bytes 750 --dir /tmp/kfm-bulk   # makes the input
    git archive main | tar -x -C /tmp/tree-main; git archive HEAD | tar -x -C /tmp/tree-new
    python bench/bench_entry_bundles.py --input /tmp/kfm-bulk/rows-1000000-750b.jsonl \\
        --tree main=/tmp/tree-main/src --tree new=/tmp/tree-new/src --rounds 3 --dir /tmp/kfm-eb

Each round, for each tree in turn: delete its ledger, ``os.sync()``, ``kfm init``, then time the
whole ``python -m kfm_ledger append INPUT --quiet`` and ``verify --no-mirror --quiet`` processes
(``PYTHONPATH`` = the tree) with ``os.wait4``: wall time, user+sys CPU of the process and the
workers it waited for, and the largest resident set.  On a shared machine the CPU figures are
the comparable ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ORIGIN = "bench.kfm.example/rollback-index"


def run(src: str, args: list[str]) -> tuple[float, float, float]:
    env = dict(os.environ, PYTHONPATH=src)
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "kfm_ledger", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{p.stderr.read().decode() if p.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR (repeat)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/kfm-entry-bundles"))
    a = ap.parse_args()
    trees = [t.split("=", 1) for t in a.tree]
    for r in range(1, a.rounds + 1):
        for name, src in trees:
            led = a.dir / name / "ledger"
            shutil.rmtree(led, ignore_errors=True)
            led.parent.mkdir(parents=True, exist_ok=True)
            os.sync()  # the deleted ledger's I/O must not land inside the timed run
            run(src, ["init", "--origin", ORIGIN, "--ledger", str(led)])
            load = open("/proc/loadavg").read().split()[0]
            aw, ac, am = run(src, ["append", str(a.input), "--ledger", str(led), "--quiet"])
            vw, vc, vm = run(src, ["verify", "--ledger", str(led), "--no-mirror", "--quiet"])
            print(
                f"round {r} {name:8} load {load:>5}  append {aw:5.1f} s wall {ac:5.1f} s cpu {am:4.0f} MiB | "
                f"verify {vw:5.1f} s wall {vc:5.1f} s cpu {vm:4.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
