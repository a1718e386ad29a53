"""Benchmark `kfm serve` with Debian's wrk, and `kfm client prove` as a whole process.

Usage::

    apt-get install -y wrk
    python bench/bench_serve.py --rows 1000000 --dir /tmp/kfm-serve [--workers 2] [--duration 10]
    python bench/bench_serve.py --phases in-process,lookups   # only these (also: tiles, bundles, client)

Builds (once; reused when the directory already holds a ledger of that size) a ledger of N rows
with `kfm init` + a bulk `kfm append` of bench_bulk.py's rows, starts `kfm serve --workers W` on a
free port of 127.0.0.1 (after reading the ledger's files once, so the page cache holds them as for a
server that has been running), and runs `wrk -t2 -c64 -d<duration>s --latency` against:

* full level-0 hash tiles, a random one per request (`/tile/0/<N>`);
* full entry bundles, a random one per request (`/tile/entries/<N>`, identity encoding);
* `/lookup/<commit>` over random commits of the ledger (each answer proven by the server): by
  default every commit of the ledger is in the list (one file, read by the Lua script; a request
  draws one uniformly), so no cache of the server's can answer more than it would in use.  The
  server keeps no answers; per checkpoint it keeps the proven upper audit path of each full tile
  (net/lookup.py), which all rows share, so the figure includes filling that memo for every tile.

Then `kfm client prove --commit <random commit>` with warm state (the state already holds the
latest checkpoint) and warm bytecode caches (the children run without PYTHONDONTWRITEBYTECODE,
as an installed package has its caches), 10 runs, wall time of the whole process.  Non-2xx answers fail the benchmark.

The lookup phase runs wrk twice and prints both: the first run fills the workers' caches (see
net/lookup.py, and the index's page cache), the second is the figure of a server that has been
running.

`in-process`: the server's own cost of a lookup without HTTP: ``LogApp.handle`` called in a loop
over random commits of the whole ledger (after one pass over as many others, so the tile cache
is warm), CPU time per lookup (``time.process_time``).

Each phase prints the UTC time and the load average (1 min) before and after it.
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


def lua_path_file(path_file: Path, where: Path) -> Path:
    """A wrk script requesting a path drawn uniformly from ``path_file`` (one a line)."""
    script = where / f"paths-file-{random.random():.6f}.lua"
    script.write_text(
        "local paths = {}\n"
        f"for line in io.lines({str(path_file)!r}) do paths[#paths + 1] = line end\n"
        "math.randomseed(os.time())\n"
        "request = function()\n  return wrk.format('GET', paths[math.random(#paths)])\nend\n"
    )
    return script


def stamp() -> str:
    """UTC time and the 1-minute load average, for the record of each phase."""
    return f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.2f}"


def in_process(ledger: Path, rows: int, count: int, rng: random.Random) -> None:
    """CPU per lookup of ``LogApp.handle`` (no HTTP), over random commits of the whole ledger."""
    from kfm_ledger.net.server import LogApp

    app = LogApp(ledger)
    warm = [f"/lookup/{sample_commit(rng.randrange(rows))}" for _ in range(count)]
    timed = [f"/lookup/{sample_commit(rng.randrange(rows))}" for _ in range(count)]
    for path in warm:
        app.handle("GET", path)
    t0, c0 = time.perf_counter(), time.process_time()
    for path in timed:
        if app.handle("GET", path).status != 200:
            raise SystemExit(f"in-process lookup {path} failed")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    app.close()
    print(f"in-process LogApp.handle /lookup/<commit>: {cpu / count * 1e6:.1f} us CPU a lookup "
          f"({wall / count * 1e6:.1f} us wall; {count} random commits after {count} others)")


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
    p.add_argument("--lookups", type=int, default=0,
                   help="random commits in the lookup mix (default 0: every commit of the ledger)")
    p.add_argument("--connections-list", default="", help="extra lookup runs with these -c values (e.g. 16,32)")
    p.add_argument("--phases", default="tiles,bundles,lookups,client,in-process",
                   help="which to run, comma-separated: tiles, bundles, lookups, client, in-process")
    p.add_argument("--in-process", type=int, default=20_000, help="lookups timed in-process")
    a = p.parse_args()
    phases = set(a.phases.split(","))
    if phases - {"tiles", "bundles", "lookups", "client", "in-process"}:
        raise SystemExit(f"unknown phase in --phases {a.phases}")
    a.dir.mkdir(parents=True, exist_ok=True)
    ledger = a.dir / "ledger"
    build(ledger, a.rows)
    rng = random.Random(1)
    full_tiles = a.rows // tiles.TILE_WIDTH
    tile_paths = ["/" + tiles.tile_path(0, i) for i in range(full_tiles)]
    bundle_paths = ["/" + tiles.entries_path(i) for i in range(full_tiles)]
    if a.lookups:
        lookup_paths = [f"/lookup/{sample_commit(rng.randrange(a.rows))}" for _ in range(a.lookups)]
        lookup_set = f"{a.lookups:,} random commits"
    else:
        lookup_paths = [f"/lookup/{sample_commit(i)}" for i in range(a.rows)]
        lookup_set = f"all {a.rows:,} commits"
    read_through(ledger)
    if "in-process" in phases:
        print(f"[{stamp()}]")
        in_process(ledger, a.rows, a.in_process, rng)
        print(f"[{stamp()}]")
    if not phases & {"tiles", "bundles", "lookups", "client"}:
        return
    proc, url = start_server(ledger, a.workers)
    print(f"kfm serve --workers {a.workers} at {url}; wrk -t{a.threads} -c{a.connections} -d{a.duration}s")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(tmp)
            path_file = where / "lookups.txt"
            path_file.write_text("\n".join(lookup_paths) + "\n")
            lookup_script = lua_path_file(path_file, where)
            for phase, name, paths in (("tiles", "full tiles", tile_paths),
                                       ("bundles", "full entry bundles", bundle_paths),
                                       ("lookups", "lookup/<commit>", lookup_paths)):
                if phase not in phases:
                    continue
                if phase == "lookups":
                    # Other work on this machine evicts page-cache pages: a lookup of a row whose page
                    # went is a disk read (tens of ms on a busy disk), so the files are read again here.
                    read_through(ledger)
                warm(url, rng.sample(paths, min(2000, len(paths))))
                script = lookup_script if phase == "lookups" else lua_paths(paths, where)
                print(f"[{stamp()}]" + (f" lookups drawn from {lookup_set}" if phase == "lookups" else ""))
                # Lookups: a first run fills each worker's caches (its tile cache, the proven upper paths
                # of the full tiles, the index's page cache; warm() reaches one worker only), then the
                # measured run, as on a server that has been running.  Both are printed.
                for label in ("  (first run, workers' caches cold)", "") if phase == "lookups" else ("",):
                    r = wrk(url, script, a.duration, a.threads, a.connections)
                    print(f"{name:22s} {r['rps']:9.0f} requests/s   p50 {r['p50_ms']:7.2f} ms   "
                          f"p90 {r['p90_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   [{stamp()}]{label}")
            for c in filter(None, a.connections_list.split(",")) if "lookups" in phases else ():
                r = wrk(url, lookup_script, a.duration, a.threads, int(c))
                print(f"lookup/<commit> -c{c:<6s} {r['rps']:9.0f} requests/s   p50 {r['p50_ms']:7.2f} ms   "
                      f"p90 {r['p90_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   [{stamp()}]")
            if "client" not in phases:
                return
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
