"""Time the phases of one bulk append of a JSONL file, in this process.

Usage::

    python bench/bench_bulk_phases.py --input /tmp/kfm-bulk-n/rows-1000000-750b.jsonl --dir /tmp/kfm-phases

(the input from ``bench/bench_bulk.py --rows 1000000 --row-bytes 750``; run it with
``PYTHONPATH=<tree>/src`` to time another tree).  A fresh ledger is made in ``--dir`` (the last
run's deleted first, then ``--settle`` seconds of wait: see bench_bulk.py) and kept.
Prints the total wall time, then for each step (wrapped functions of
``kfm_ledger.log``): its summed wall time, calls, and when it first started and last ended
(seconds from the start of the append), and this process's peak RSS (the workers' are not
counted: ``bench_bulk.py`` measures the whole process tree).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import threading
import time
from typing import Any

from kfm_ledger import index
from kfm_ledger.log import bulk, bulk_append, tile_writer
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger

START = [0.0]
STEPS: dict[str, list[float]] = {}  # name -> [seconds, calls, first start, last end]


def wrap(owner: Any, name: str, label: str | None = None) -> None:
    f = getattr(owner, name, None)
    if f is None:  # an older tree
        return
    label = label or name

    @functools.wraps(f)
    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            now = time.perf_counter()
            s = STEPS.setdefault(label, [0.0, 0, t - START[0], 0.0])
            s[0] += now - t
            s[1] += 1
            s[3] = now - START[0]

    setattr(owner, name, timed)


PASS_ONE: dict[str, float] = {}  # CPU seconds by the end of the validation pass (commit_batch's start)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _live_children() -> list[int]:
    found = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found += [int(pid) for pid in f.read().split()]
    return found


def note_pass_one(*_: Any, **__: Any) -> None:
    """At commit_batch's start: CPU so far of this process, the reaped workers and live children."""
    if PASS_ONE:
        return
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    PASS_ONE["at"] = time.perf_counter() - START[0]
    PASS_ONE["this process"] = own.ru_utime + own.ru_stime
    PASS_ONE["exited workers"] = reaped.ru_utime + reaped.ru_stime
    PASS_ONE["live children"] = sum(_cpu_of(pid) for pid in _live_children())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--dir", default="/tmp/kfm-phases")
    p.add_argument("--settle", type=float, default=65.0, help="seconds to wait after deleting the last run's ledger")
    a = p.parse_args()
    for owner, name, label in [
        (bulk_append, "sealed_index", None),
        (bulk_append, "_index_chunk", "index inserts (main process)"),
        (bulk_append, "_add_done_terms", "seal terms added (from workers)"),
        (index.CommitIndex, "finish_inserts", None),
        (bulk_append, "commit_batch", None),
        (bulk.SpooledInput, "copy", "rows copied"),
        (bulk.SpooledInput, "copy_by_fd", "rows copied (kernel)"),
        (index.CommitIndex, "commit", "index commit"),
        (tile_writer, "write_tiles", None),
        (tile_writer, "write_bundles", None),
        (bulk_append, "seal_appended", None),
    ]:
        wrap(owner, name, label)
    commit_batch = bulk_append.commit_batch

    def noted_commit_batch(*a: Any, **k: Any) -> Any:
        note_pass_one()
        return commit_batch(*a, **k)

    bulk_append.commit_batch = noted_commit_batch  # type: ignore[assignment]
    ledger = os.path.join(a.dir, "ledger")
    if os.path.exists(ledger):  # the last run's: deleted, then a wait (bench_bulk.py's --settle)
        shutil.rmtree(ledger, ignore_errors=True)
        os.sync()
        time.sleep(a.settle)
    os.makedirs(a.dir, exist_ok=True)
    os.sync()
    led = Ledger.init(ledger, origin="bench.kfm.example/rollback-index")
    signer = load_signer(led.storage.read(SKEY_KEY))
    START[0] = time.perf_counter()
    samples: list[tuple[float, int]] = []  # (seconds from the start, this process's RSS in KiB)
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(0.05):
            with open("/proc/self/statm") as f:
                samples.append((time.perf_counter() - START[0], int(f.read().split()[1]) * 4))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    result = led.append_file(a.input, signer=signer)
    done.set()
    sampler.join()
    wall = time.perf_counter() - START[0]
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"total {wall:.2f} s for {result.count} rows; CPU: this process {own.ru_utime + own.ru_stime:.1f} s "
          f"(sys {own.ru_stime:.1f}), workers {children.ru_utime + children.ru_stime:.1f} s "
          f"(sys {children.ru_stime:.1f}); load average {os.getloadavg()[0]:.2f}")
    if PASS_ONE:
        at = PASS_ONE.pop("at")
        print(f"CPU by the end of validation ({at:.2f} s): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in PASS_ONE.items()))
    for label, (seconds, calls, first, last) in STEPS.items():
        print(f"  {label:34s} {seconds:6.2f} s  x{int(calls):<4d} from {first:6.2f} to {last:6.2f} s")
    if samples:
        peak_at, peak = max(samples, key=lambda sample: sample[1])
        print(f"RSS sampled every 50 ms: peak {peak / 1024:.0f} MiB at {peak_at:.2f} s; by second: "
              + " ".join(f"{max(r for t, r in samples if int(t) == sec) / 1024:.0f}"
                         for sec in sorted({int(t) for t, _ in samples})))
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    led.close()  # the ledger stays (deleting ~7,800 files now would slow the next minute's file creation)


if __name__ == "__main__":
    main()
