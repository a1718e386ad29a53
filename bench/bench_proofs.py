"""Benchmark proofs and one-row appends in-process (issue 2, "Speed and memory").

Usage::

    python bench/bench_proofs.py --dir /tmp/kfm-bench-1m
    python bench/bench_proofs.py --dir /tmp/kfm-bench-1m --tile-cache off   # "before"
    python bench/bench_proofs.py --skip-proofs --appends 200                # appends only

What it measures, with ``time.perf_counter_ns`` around library calls:

* proofs on the ledger in ``--dir`` (built with the library to ``--rows`` rows if it does not
  exist; reused, never written, if it does):

  - inclusion proof by commit: ``ledger.get(commit)`` + ``ledger.tlog_proof(index)`` over
    random commits, twice (the first pass mostly meets level-0 tiles no proof touched
    yet, the second the same ones again), then ``get``, ``tlog_proof`` and
    ``ledger.inclusion_proof(index)`` alone;
  - consistency proof ``ledger.consistency_proof(m)`` (to the signed size) and
    ``ledger.consistency_proof(m, n)`` between random sizes;
  - *warm*: the median over ``--samples`` calls in one process after a warm-up;
    *cold*: the first call in a fresh process (``--cold-runs`` child processes).

* one-row appends (``ledger.append`` of one row: validate, fsync, tiles, signed
  checkpoint) to a separate ledger, ``--append-dir`` (built once to ``--append-rows``
  rows, then grows by ``--appends`` rows per run), and to a small one,
  ``--small-append-dir`` (``--small-rows`` rows), to show the cost does not grow.

``--tile-cache`` chooses how the ledger reads tiles: ``library`` (whatever
``Prover.hash_reader`` does: the Prover's own cache and stored expansion records), ``off`` (a plain
:class:`~kfm_ledger.core.tiles.TileHashReader`, the behaviour before the tile cache) or ``on`` (a
:class:`~kfm_ledger.core.tile_cache.TileCache` of ``--cache-tiles`` tiles per Ledger, no expansion
records).  ``off`` and ``on`` replace ``Prover.hash_reader``, the one reader factory behind every
proof kind (inclusion, consistency, tlog-proof) and ``Ledger.hash_reader``.  ``--compare`` runs the proof
measurements with ``off`` and ``on`` in turn.

Before timing, the JSONL and the SQLite index are read once so the OS page cache holds
them (``--no-warm-os-cache`` to skip): a random row read from a cold page cache is a disk
read (about 0.1 ms here), which is I/O, not the code being measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kfm_ledger.core import tiles
from kfm_ledger.core.tile_cache import TileCache
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import JSONL_KEY, SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.prover import Prover
from kfm_ledger.sample import sample_jsonl

ORIGIN = "bench.kfm.example/rollback-index"


# ------------------------------------------------------------------ setup


_LIBRARY_HASH_READER = Prover.hash_reader


def set_tile_cache(mode: str, max_tiles: int) -> None:
    """Make every Ledger read tiles the way ``mode`` says (see the module docstring)."""
    if mode == "library":
        Prover.hash_reader = _LIBRARY_HASH_READER  # type: ignore[method-assign]
        return

    def hash_reader(self: Prover, size: int, *, stored_expansions: bool = True) -> tiles.TileHashReader:
        if mode == "off":
            return tiles.TileHashReader(size, self.read_tile)
        cache = self.__dict__.get("_bench_tile_cache")
        if cache is None:
            cache = self.__dict__["_bench_tile_cache"] = TileCache(max_tiles)
        return tiles.TileHashReader(size, self.read_tile, cache=cache)

    Prover.hash_reader = hash_reader  # type: ignore[method-assign]


def tile_cache_of(led: Ledger) -> TileCache | None:
    cache = led.prover.__dict__.get("_bench_tile_cache")
    if isinstance(cache, TileCache):
        return cache
    return led.prover.tile_cache


def build(directory: Path, rows: int, batch: int = 50_000) -> None:
    """A ledger of at least ``rows`` sample rows in ``directory`` (created or topped up)."""
    if (directory / "checkpoint").exists():
        led = Ledger.open(directory)
    else:
        led = Ledger.init(directory, origin=ORIGIN)
    with led:
        if led.size >= rows:
            return
        signer = load_signer(led.storage.read(SKEY_KEY))
        t0 = time.perf_counter()
        while led.size < rows:
            led.append(sample_jsonl(min(batch, rows - led.size), start=led.size), signer=signer)
        print(f"built {directory}: {led.size} rows in {time.perf_counter() - t0:.1f} s", flush=True)


def warm_os_cache(directory: Path) -> None:
    for name in (JSONL_KEY, "index.sqlite"):
        path = directory / name
        if path.exists():
            with open(path, "rb") as f:
                while f.read(8 << 20):
                    pass


# ----------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def summary(ms: list[float]) -> str:
    s = sorted(ms)
    p90 = s[min(len(s) - 1, int(len(s) * 0.9))]
    return f"median {statistics.median(s):.3f} ms  p90 {p90:.3f}  max {s[-1]:.3f}  (n={len(s)})"


def prewarm(led: Ledger) -> float:
    """One inclusion proof per level-0 tile, so a cache big enough holds every tile; seconds."""
    t0 = time.perf_counter()
    for first in range(0, led.size, tiles.TILE_WIDTH):
        led.inclusion_proof(first)
    return time.perf_counter() - t0


def measure_proofs(led: Ledger, samples: int, seed: int) -> dict[str, list[float]]:
    """Warm in-process timings (ms) of each proof operation over random arguments."""
    rng = random.Random(seed)
    n = led.size
    indexes = [rng.randrange(n) for _ in range(samples)]
    # The commit ids come from the ledger itself (untimed), so any ledger will do.
    pairs = [(i, led.entry(i).row.lakefs_commit) for i in indexes]
    # Warm-up on other indexes: SQLite statements, imports, the tiles above level 0.
    for _ in range(50):
        i = rng.randrange(n)
        led.tlog_proof(led.get(led.entry(i).row.lakefs_commit).index)
        led.consistency_proof(max(1, i))
    out: dict[str, list[float]] = {}

    def run(name: str, call: Callable[[], object]) -> None:
        out.setdefault(name, []).append(timed(call))

    # Pass 1: most of these indexes fall in a level-0 tile no proof has touched yet.
    for _, c in pairs:
        run("get+tlog_proof 1st pass", lambda c=c: led.tlog_proof(led.get(c).index))
    rng.shuffle(pairs)
    # Pass 2: the same commits again (their tiles are cached if the cache holds them all).
    for _, c in pairs:
        run("get+tlog_proof 2nd pass", lambda c=c: led.tlog_proof(led.get(c).index))
    for _, c in pairs:
        run("get", lambda c=c: led.get(c))
    for i, _ in pairs:
        run("tlog_proof", lambda i=i: led.tlog_proof(i))
    for i, _ in pairs:
        run("inclusion_proof", lambda i=i: led.inclusion_proof(i))
    for _ in range(samples):
        m = rng.randrange(1, n)
        run("consistency m->size", lambda m=m: led.consistency_proof(m))
    for _ in range(samples):
        a, b = sorted(rng.sample(range(1, n + 1), 2))
        run("consistency m->n", lambda a=a, b=b: led.consistency_proof(a, b))
    return out


def cold_child(directory: Path, seed: int) -> None:
    """One fresh process: the first proof of each kind (printed as JSON)."""
    rng = random.Random(seed)
    t0 = time.perf_counter_ns()
    led = Ledger.open(directory)
    open_ms = (time.perf_counter_ns() - t0) / 1e6
    n = led.size
    index = rng.randrange(n)
    # The commit is taken from the JSONL directly, so the index and tiles are still cold.
    with open(directory / JSONL_KEY, "rb") as f:
        f.seek(rng.randrange(max(1, os.path.getsize(directory / JSONL_KEY) - 200_000)))
        f.readline()
        commit = json.loads(f.readline())["lakefs_commit"]
    res: dict[str, float] = {"open": open_ms}
    res["first get+tlog_proof"] = timed(lambda: led.tlog_proof(led.get(commit).index))
    res["second get+tlog_proof (other index)"] = timed(lambda: led.tlog_proof(index))
    m = rng.randrange(1, n)
    res["first consistency m->size"] = timed(lambda: led.consistency_proof(m))
    print(json.dumps(res))


def measure_cold(directory: Path, runs: int, mode: str, max_tiles: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for k in range(runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--cold-child", "--dir", str(directory), "--tile-cache", mode,
             "--cache-tiles", str(max_tiles), "--seed", str(1000 + k)],
            check=True, capture_output=True, text=True,
        )
        for key, value in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            out.setdefault(key, []).append(value)
    return out


class FsyncMeter:
    """Wraps ``os.fsync`` to count calls and the time spent in them (the disk's share of an
    append); ``fake=True`` makes it a no-op, to see the code's own cost (diagnostic only:
    such figures are not durable appends)."""

    def __init__(self, fake: bool = False) -> None:
        self.calls = 0
        self.ns = 0
        self._real = os.fsync
        self._fake = fake

    def __enter__(self) -> FsyncMeter:
        def fsync(fd: int) -> None:
            t0 = time.perf_counter_ns()
            if not self._fake:
                self._real(fd)
            self.ns += time.perf_counter_ns() - t0
            self.calls += 1

        os.fsync = fsync  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real


def measure_appends(
    directory: Path, rows: int, appends: int, fake_fsync: bool
) -> tuple[int, list[float], list[float], int]:
    """Build (once), then append ``appends`` one-row batches.  Returns (size before, ms per
    append, ms per append spent in fsync, fsync calls in all)."""
    build(directory, rows)
    with Ledger.open(directory) as led:
        signer = load_signer(led.storage.read(SKEY_KEY))
        start = led.size
        _ = led.index  # the commit index opened and caught up (untimed)
        times: list[float] = []
        fsync_ms: list[float] = []
        with FsyncMeter(fake=fake_fsync) as meter:
            for _ in range(appends):
                row = sample_jsonl(1, start=led.size)  # created_at grows with the row number
                before = meter.ns
                times.append(timed(lambda row=row: led.append(row, signer=signer)))
                fsync_ms.append((meter.ns - before) / 1e6)
    return start, times, fsync_ms, meter.calls


# ------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kfm-bench-1m"), help="ledger for proofs (read only)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows to build in --dir if it has no ledger")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--cold-runs", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tile-cache", choices=("library", "off", "on"), default="library")
    p.add_argument("--cache-tiles", type=int, default=1024, help="max_tiles of the cache with --tile-cache on")
    p.add_argument("--compare", action="store_true", help="proofs with --tile-cache off, then on")
    p.add_argument("--append-dir", type=Path, default=Path("/tmp/kfm-bench-append"))
    p.add_argument("--append-rows", type=int, default=1_000_000)
    p.add_argument("--small-append-dir", type=Path, default=Path("/tmp/kfm-bench-append-1k"))
    p.add_argument("--small-rows", type=int, default=1000)
    p.add_argument("--appends", type=int, default=200)
    p.add_argument("--prewarm", action="store_true", help="touch every tile once before timing")
    p.add_argument("--skip-proofs", action="store_true")
    p.add_argument("--skip-appends", action="store_true")
    p.add_argument("--no-warm-os-cache", action="store_true")
    p.add_argument("--fake-fsync", action="store_true", help="diagnostic: appends without fsync (not durable)")
    p.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.cold_child:
        set_tile_cache(a.tile_cache, a.cache_tiles)
        cold_child(a.dir, a.seed)
        return

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
    if not a.skip_proofs:
        build(a.dir, a.rows)
        if not a.no_warm_os_cache:
            warm_os_cache(a.dir)
        modes = ["off", "on"] if a.compare else [a.tile_cache]
        for mode in modes:
            set_tile_cache(mode, a.cache_tiles)
            with Ledger.open(a.dir) as led:
                label = mode if mode != "on" else f"on, max_tiles={a.cache_tiles}"
                print(f"\n== proofs at size {led.size:,} ({a.dir}), tile cache: {label}", flush=True)
                if a.prewarm:
                    print(f"  prewarm: one proof per level-0 tile, {prewarm(led):.2f} s", flush=True)
                results = measure_proofs(led, a.samples, a.seed)
                for name, ms in results.items():
                    print(f"  warm {name:26s} {summary(ms)}")
                cache = tile_cache_of(led)
                if cache is not None:
                    print(f"  {cache!r}")
            cold = measure_cold(a.dir, a.cold_runs, mode, a.cache_tiles)
            for name, ms in cold.items():
                print(f"  cold {name:36s} median {statistics.median(ms):.3f} ms  "
                      f"min {min(ms):.3f}  max {max(ms):.3f}  ({len(ms)} fresh processes)")
    if not a.skip_appends:
        mode = "on" if a.compare else a.tile_cache
        set_tile_cache(mode, a.cache_tiles)
        for directory, rows in ((a.small_append_dir, a.small_rows), (a.append_dir, a.append_rows)):
            start, ms, fsync_ms, calls = measure_appends(directory, rows, a.appends, a.fake_fsync)
            what = "fsync replaced by a no-op (diagnostic)" if a.fake_fsync else "real fsync"
            print(f"\n== one-row appends to {directory} from size {start:,}, tile cache: {mode}, {what}")
            print(f"  first append in this process {ms[0]:.3f} ms")
            print(f"  append (1 row)      {summary(ms[1:])}")
            print(f"  of which in fsync   {summary(fsync_ms[1:])}, {calls / len(ms):.1f} fsyncs per append")
            print(f"  append minus fsync  {summary([t - f for t, f in zip(ms[1:], fsync_ms[1:])])}")


if __name__ == "__main__":
    main()
