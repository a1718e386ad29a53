"""Write a large file plainly and through storage.page_cache.WriteWindow, from fresh memory.

Usage::

    python bench/bench_page_cache.py --input /tmp/kfm-bulk-b/rows-1000000-750b.jsonl --dir /tmp/kfm-pc

Before each write, ``--chill`` GiB are touched and freed and the script waits 6 s, so that the
write lands in memory the kernel has to take back from the pool it returns freed memory to (on a
VM with free page reporting, like this project's machine, that is the expensive case; elsewhere
the two writes cost about the same).  Prints each write's wall and system time and how much of
the written file is left in the page cache (fincore, if installed).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import time

from kfm_ledger.storage.page_cache import WriteWindow

PIECE = 4 << 20


def chill(gib: int) -> None:
    block = bytearray(gib << 30)
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
    time.sleep(6)


def write(source: str, target: str, window: WriteWindow | None) -> tuple[float, float]:
    src = os.open(source, os.O_RDONLY)
    dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        offset = 0
        while data := os.pread(src, PIECE, offset):
            os.pwrite(dst, data, offset)
            if window is not None:
                window.add(dst, offset, len(data))
            offset += len(data)
        if window is not None:
            window.close()
        os.fsync(dst)
    finally:
        os.close(src)
        os.close(dst)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - t, after.ru_stime - before.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--dir", default="/tmp/kfm-pc")
    p.add_argument("--chill", type=int, default=4, help="GiB touched and freed before each write")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    target = os.path.join(a.dir, "written")
    for _ in range(a.rounds):
        for name, window in (("plain", None), ("window 32 MiB", WriteWindow())):
            chill(a.chill)
            wall, system = write(a.input, target, window)
            cached = ""
            if shutil.which("fincore"):
                out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", target], capture_output=True, text=True)
                cached = f", {int(out.stdout.split()[0]) / 2**20:.0f} MiB left cached" if out.stdout.strip() else ""
            size = os.path.getsize(target) / 1e6
            print(f"{name:14s} {size:.0f} MB: {wall:.2f} s wall, {system:.2f} s system{cached}")
            os.remove(target)


if __name__ == "__main__":
    main()
