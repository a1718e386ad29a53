"""Benchmark: `kfm rollback`, `kfm diff`, `kfm get` (and `explain`, `lineage`) as whole processes.

Target (issue 3): rollback, diff and get <= 0.5 s each at 1,000,000 rows.

Builds a ledger of N sample rows once through the library (appending in big batches)
and keeps it in a cache directory (default /tmp/kfm-bench-cache/engineer-<N>) so later
runs reuse it; then times each command as a fresh ``python -m kfm_ledger`` process,
with hyperfine when it is installed, otherwise a plain loop (wall-clock per run;
min / median / max reported).

    python bench/bench_engineer.py --rows 100000
    python bench/bench_engineer.py --rows 1000000 --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build(ledger_dir: Path, rows: int, batch: int) -> None:
    from kfm_ledger.log.keys import load_signer
    from kfm_ledger.log.layout import SKEY_KEY
    from kfm_ledger.log.ledger import Ledger
    from kfm_ledger.sample import sample_jsonl

    if (ledger_dir / "checkpoint").exists():
        with Ledger.open(ledger_dir) as led:
            if led.size == rows:
                print(f"reusing {ledger_dir} ({rows} rows)")
                return
        shutil.rmtree(ledger_dir)
    ledger_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with Ledger.init(ledger_dir, origin="bench.kfm.example/rollback-index") as led:
        signer = load_signer(led.storage.read(SKEY_KEY))
        done = 0
        while done < rows:
            n = min(batch, rows - done)
            led.append(sample_jsonl(n, start=done), signer=signer)
            done += n
            print(f"  appended {done}/{rows} rows ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"built {ledger_dir} in {time.perf_counter() - t0:.1f} s")


def time_loop(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return times


def time_hyperfine(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    import shlex
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            ["hyperfine", "--warmup", "1", "--runs", str(runs), "--export-json", out.name, "-N",
             " ".join(shlex.quote(a) for a in argv)],
            env=env, stdout=subprocess.DEVNULL, check=True,
        )
        return json.loads(Path(out.name).read_text())["results"][0]["times"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/kfm-bench-cache"))
    args = ap.parse_args()

    ledger_dir = args.cache / f"engineer-{args.rows}"
    build(ledger_dir, args.rows, args.batch)

    from kfm_ledger.sample import sample_commit

    mid = args.rows // 2
    a, b = sample_commit(mid), sample_commit(args.rows - 1)
    env = {**os.environ, "KFM_LEDGER": str(ledger_dir)}
    py = [sys.executable]
    cases = {
        "python -c pass (baseline)": py + ["-c", "pass"],
        "get": py + ["-m", "kfm_ledger", "get", "--commit", a[:12]],
        "rollback": py + ["-m", "kfm_ledger", "rollback", "--commit", a[:12]],
        "rollback --json": py + ["-m", "kfm_ledger", "rollback", "--commit", a[:12], "--json"],
        "diff": py + ["-m", "kfm_ledger", "diff", a[:12], b[:12]],
        "explain": py + ["-m", "kfm_ledger", "explain", "--commit", a[:12]],
        "lineage": py + ["-m", "kfm_ledger", "lineage", "--commit", a[:12]],
    }
    timer = time_hyperfine if shutil.which("hyperfine") else time_loop
    print(f"\n{args.rows} rows, {args.runs} runs each, timer: {timer.__name__}")
    print(f"{'command':28} {'min':>8} {'median':>8} {'max':>8}")
    for name, argv in cases.items():
        t = timer(argv, args.runs, env)
        print(f"{name:28} {min(t):8.3f} {statistics.median(t):8.3f} {max(t):8.3f}", flush=True)


if __name__ == "__main__":
    main()
