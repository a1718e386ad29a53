"""Benchmark `kfm serve` with Debian's wrk, and `kfm client prove` as a whole process.

Usage::

    apt-get install -y wrk
    python bench/bench_serve.py --rows 1000000 --dir /tmp/kfm-serve [--workers 2] [--duration 10]

Builds (once; reused when the directory already holds a ledger of that size) a ledger of N rows
with `kfm init` + a bulk `kfm append` of bench_bulk.py's rows, starts `kfm serve --workers W` on a
free port of 127.0.0.1 (after reading the ledger's files once, so the page cache holds them as for a
server that has been running), and runs `wrk -t2 -c64 -d<duration>s --latency` against:

* full level-0 hash tiles, a random one per request (`/tile/0/<N>`);
* full entry bundles, a random one per request (`/tile/entries/<N>`, identity encoding);
* `/lookup/<commit>` over random commits of the ledger (each answer proven by the server).

Then `kfm client prove --commit <random commit>` with warm state (the state already holds the
latest checkpoint) and warm bytecode caches (the children run without PYTHONDONTWRITEBYTECODE,
as an installed package has its caches), 10 runs, wall time of the whole process.  Non-2xx answers fail the benchmark.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_bulk import ORIGIN, compact_row, make_input
from kfm_ledger.core import tiles
from kfm_ledger.sample import sample_commit

#: The children may write bytecode caches (as a pip install does: it compiles them at install time);
#: with PYTHONDONTWRITEBYTECODE set, every run would compile the whole package from source again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def kfm(*args: object) -> str:
    res = subprocess.run([sys.executable, "-m", "kfm_ledger", *map(str, args)], capture_output=True, text=True,
                         check=False, env=ENV)
    if res.returncode != 0:
        raise SystemExit(f"kfm {' '.join(map(str, args))} failed:\n{res.stderr}")
    return res.stdout


def ledger_size(ledger: Path) -> int:
    try:
        return int((ledger / "checkpoint").read_text().split("\n")[1])
    except (OSError, IndexError, ValueError):
        return -1


def build(ledger: Path, rows: int) -> None:
    if ledger_size(ledger) == rows and (ledger / "tile/entries").is_dir():
        print(f"ledger: {ledger} ({rows} rows, reused)")
        return
    import shutil

    shutil.rmtree(ledger, ignore_errors=True)
    data = ledger.parent / f"rows-{rows}.jsonl"
    make_input(data, rows, compact_row)
    t0 = time.perf_counter()
    kfm("init", "--origin", ORIGIN, "--ledger", ledger)
    kfm("append", data, "--ledger", ledger)
    print(f"ledger: {ledger} ({rows} rows, built in {time.perf_counter() - t0:.1f} s)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lua_paths(paths: list[str], where: Path) -> Path:
    script = where / f"paths-{len(paths)}-{random.random():.6f}.lua"
    body = ",\n".join(f'"{p}"' for p in paths)
    script.write_text(
        "local paths = {\n" + body + "\n}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n  return wrk.format('GET', paths[math.random(#paths)])\nend\n"
    )
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url: str, script: Path, duration: int, threads: int, connections: int) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    return {"rps": rps, "p50_ms": lat["50"], "p90_ms": lat["90"], "p99_ms": lat["99"]}


def start_server(ledger: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfm_ledger", "serve", "--ledger", str(ledger), "--listen", f"127.0.0.1:{port}",
         "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    import http.client

    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/checkpoint")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("kfm serve did not start")
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)


def warm(url: str, paths: list[str]) -> None:
    """One pass over a sample of the paths, so that the first wrk seconds do not measure cold caches."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for p in paths:
        conn.request("GET", p)
        conn.getresponse().read()
    conn.close()


def read_through(ledger: Path) -> None:
    """Read the ledger's files once, so the page cache holds them as it does for a server that has
    been running (the JSONL is 1.1 GB at 1M rows: cold, every lookup is a random disk read)."""
    t0 = time.perf_counter()
    total = 0
    for path in sorted(ledger.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    total += len(chunk)
    print(f"page cache: read {total / 1e6:.0f} MB of the ledger in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/kfm-serve"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--lookups", type=int, default=20_000, help="distinct random commits in the lookup mix")
    p.add_argument("--connections-list", default="", help="extra lookup runs with these -c values (e.g. 16,32)")
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    ledger = a.dir / "ledger"
    build(ledger, a.rows)
    rng = random.Random(1)
    full_tiles = a.rows // tiles.TILE_WIDTH
    tile_paths = ["/" + tiles.tile_path(0, i) for i in range(full_tiles)]
    bundle_paths = ["/" + tiles.entries_path(i) for i in range(full_tiles)]
    lookup_paths = [f"/lookup/{sample_commit(rng.randrange(a.rows))}" for _ in range(a.lookups)]
    read_through(ledger)
    proc, url = start_server(ledger, a.workers)
    print(f"kfm serve --workers {a.workers} at {url}; wrk -t{a.threads} -c{a.connections} -d{a.duration}s")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(tmp)
            for name, paths in (("full tiles", tile_paths), ("full entry bundles", bundle_paths),
                                ("lookup/<commit>", lookup_paths)):
                warm(url, paths[:2000])
                r = wrk(url, lua_paths(paths, where), a.duration, a.threads, a.connections)
                print(f"{name:22s} {r['rps']:9.0f} requests/s   p50 {r['p50_ms']:7.2f} ms   "
                      f"p90 {r['p90_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms")
            for c in filter(None, a.connections_list.split(",")):
                r = wrk(url, lua_paths(lookup_paths, where), a.duration, a.threads, int(c))
                print(f"lookup/<commit> -c{c:<6s} {r['rps']:9.0f} requests/s   p50 {r['p50_ms']:7.2f} ms   "
                      f"p90 {r['p90_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms")
            state = where / "state"
            vkey = ledger / "log.vkey"
            kfm("client", "check", "--url", url, "--vkey", vkey, "--state", state)  # warm state
            times = []
            for _ in range(10):
                commit = sample_commit(rng.randrange(a.rows))
                t0 = time.perf_counter()
                kfm("client", "prove", "--url", url, "--vkey", vkey, "--commit", commit, "--state", state)
                times.append(time.perf_counter() - t0)
            print(f"kfm client prove (whole process, warm state, 10 runs): median {statistics.median(times):.3f} s, "
                  f"max {max(times):.3f} s")
            base = []
            for _ in range(10):  # the same machine's floor at the same time: start-up of the CLI alone
                t0 = time.perf_counter()
                kfm("--version")
                base.append(time.perf_counter() - t0)
            print(f"kfm --version (reference, 10 runs): median {statistics.median(base):.3f} s")
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
