"""Benchmark a bulk `kfm append` of N rows, then `kfm verify`, as whole processes.

Usage::

    python bench/bench_bulk.py --rows 1000000 --dir /tmp/kfm-bulk

Rows are the sample rows trimmed to one model, one config and one data snapshot
(1,111 bytes each), or with ``--row-bytes 750`` rows of about the size the targets
assume (~780 bytes: a 16-hex-digit commit id, no data snapshot, short URIs). The input
file is generated once and reused. Each command runs as `python -m kfm_ledger`
and is measured with os.wait4 (wall time, the child's own peak RSS); worker
processes' peaks are reported by /usr/bin/time when --time-v is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from kfm_ledger.sample import Signatures, sample_row
from kfm_ledger.schema import encode_row

ORIGIN = "bench.kfm.example/rollback-index"


def compact_row(i: int) -> bytes:
    """A sample row trimmed to one model, config and data snapshot: 1,111 bytes."""
    row = sample_row(i)
    row = msgspec.structs.replace(
        row, models=row.models[:1], configs=row.configs[:1], data_snapshot=row.data_snapshot[:1]
    )
    return encode_row(row)


def small_row(i: int) -> bytes:
    """A row of about 750 bytes (the issue's size): a 16-hex-digit commit id, one model,
    one config, no data snapshot, short URIs (~780 bytes)."""
    row = sample_row(i)
    commit = row.lakefs_commit[:16]
    row = msgspec.structs.replace(
        row,
        lakefs_commit=commit,
        models=row.models[:1],
        configs=row.configs[:1],
        data_snapshot=[],
        artifact_uri=f"s3://kfm-registry/rollback/{commit}.tar.zst",
        signatures=Signatures(in_toto=f"s3://kfm-registry/slsa/{commit}.json"),
    )
    return encode_row(row)


ROW_SHAPES = {"1100": compact_row, "750": small_row}


def make_input(path: Path, rows: int, make_row=compact_row) -> None:
    if path.exists() and path.stat().st_size > 0:
        return
    with open(path, "wb") as f:
        buf = []
        for i in range(rows):
            buf.append(make_row(i))
            if len(buf) == 10000:
                f.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            f.write(b"\n".join(buf) + b"\n")


def machine_reference() -> float:
    """Seconds (best of 3) for a fixed single-threaded piece of the append's own kind of work:
    SHA-256 of 80,000 750-byte rows and a regex over them.  This VM's CPUs now and then run ~20 %
    slower for minutes (the same append then takes ~20 % more user time); printed next to each
    figure, it tells such a minute from a change in the code."""
    import hashlib
    import re

    rows = [compact_row(i)[:750] for i in range(200)] * 400
    data = b"\n".join(rows) + b"\n"
    pattern = re.compile(rb'(?m)^\{"lakefs_repo":"([^"\\\x00-\x1f]*)"[^\n]*"created_at":"([0-9T:.Z-]*)"[^\n]*\n')
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for row in rows:
            hashlib.sha256(row).digest()
        pattern.findall(data)
        best = min(best, time.perf_counter() - t0)
    return best


def run(args: list[str], time_v: bool) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "kfm_ledger", *args]
    if time_v:
        cmd = ["/usr/bin/time", "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err}")
    peak = usage.ru_maxrss / 1024
    run.cpu = (usage.ru_utime, usage.ru_stime)  # type: ignore[attr-defined]  # the process and its workers
    if time_v:
        for line in err.splitlines():
            if "Maximum resident set size" in line:
                peak = int(line.split()[-1]) / 1024
    return elapsed, peak, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kfm-bulk"))
    p.add_argument("--time-v", action="store_true", help="measure with /usr/bin/time -v")
    p.add_argument("--row-bytes", choices=sorted(ROW_SHAPES), default="1100", help="row shape: ~1,100 or ~750 bytes")
    p.add_argument("--settle", type=float, default=65.0,
                   help="seconds to wait after deleting the previous run's ledger (0: do not wait)")
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if a.row_bytes == "1100" else f"-{a.row_bytes}b"
    data = a.dir / f"rows-{a.rows}{suffix}.jsonl"
    t0 = time.perf_counter()
    make_input(data, a.rows, ROW_SHAPES[a.row_bytes])
    print(f"input: {data} ({data.stat().st_size / 1e6:.0f} MB, {data.stat().st_size / a.rows:.0f} bytes a row), "
          f"made in {time.perf_counter() - t0:.1f} s")
    ledger = a.dir / "ledger"
    if ledger.exists():
        shutil.rmtree(ledger, ignore_errors=True)
        os.sync()  # the deleted ledger's I/O must not land inside the timed run
        # ext4 without a journal (this machine's disk) passes over every inode freed in the last
        # 60 s when it allocates one (fs/ext4/ialloc.c, recently_deleted()), 360 s once the freed
        # inode's table block is dirty again: creating the ~7,800 tile and bundle files right
        # after deleting the previous run's ~7,800 cost 2-3 s of kernel CPU (perf:
        # __ext4_new_inode 11 % of all samples) that a ledger in service, which deletes a few
        # files an append, never pays.  The wait removes most of it, not all; a journaled ext4
        # (mkfs.ext4's default) has no such check (docs/performance.md, session 6).
        time.sleep(a.settle)
    run(["init", "--origin", ORIGIN, "--ledger", str(ledger)], False)
    reference = machine_reference()
    t, rss, last = run(["append", str(data), "--ledger", str(ledger)], a.time_v)
    user, system = run.cpu  # type: ignore[attr-defined]
    print(f"kfm append ({a.rows} rows)        {t:7.1f} s   peak RSS {rss:6.0f} MiB   {last}")
    print(f"  CPU of the append's processes: user {user:.1f} s, system {system:.1f} s; machine reference "
          f"{reference * 1000:.0f} ms (best of 3, just before)")
    t, rss, last = run(["verify", "--ledger", str(ledger), "--no-mirror"], a.time_v)
    print(f"kfm verify ({a.rows} rows)        {t:7.1f} s   peak RSS {rss:6.0f} MiB   {last[:60]}")
    one = a.dir / "one.jsonl"
    one.write_bytes(ROW_SHAPES[a.row_bytes](a.rows) + b"\n")
    t, rss, last = run(["append", str(one), "--ledger", str(ledger)], False)
    print(f"kfm append (1 row, whole process)  {t * 1000:7.0f} ms  peak RSS {rss:6.0f} MiB")


if __name__ == "__main__":
    main()
