"""Real ``kill -9`` trials: ``kfm append`` killed with SIGKILL at a random moment.

Each trial starts ``kfm append --json`` of a batch (1 to ``--max-batch`` sample rows,
random) in a subprocess against a ledger in a temporary directory, sends it SIGKILL
after a random delay (uniform from 0.7 x the time of a clean one-row append, late in
the interpreter's start-up, to 1.1 x the time a clean append of that batch took when
calibrated), then, in this process, opens the ledger, recovers, runs
``verify_ledger`` and checks that every acknowledged row is there: a batch is
acknowledged when its ``kfm append`` printed its result before the kill.  The JSONL
must then hold exactly the signed rows (all or nothing).  A new ledger is started
every ``--rotate`` trials so that verification stays short.

    python bench/bench_kill.py --trials 1000 [--seed 1] [--max-batch 20000]

Prints one line per failure and a summary (trials, killed mid-append, acknowledged,
rolled forward, rolled back, failures, wall time); exits 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.verify import verify_ledger

ORIGIN = "bench.kfm.example/kill"


def kfm_command() -> list[str]:
    return [sys.executable, "-m", "kfm_ledger"]


def start_append(ledger: Path, batch_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*kfm_command(), "append", "--json", "--quiet", "--ledger", str(ledger), str(batch_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def calibrate(work: Path, sizes: list[int]) -> dict[int, float]:
    """The wall time of a clean ``kfm append`` of each batch size (on a scratch ledger)."""
    d = work / "calibrate"
    Ledger.init(d, origin=ORIGIN).close()
    times: dict[int, float] = {}
    start = 0
    for n in sizes:
        f = work / f"cal-{n}.jsonl"
        f.write_bytes(sample_jsonl(n, start=start))
        t = time.perf_counter()
        proc = start_append(d, f)
        proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"calibration append of {n} rows failed ({proc.returncode})")
        times[n] = time.perf_counter() - t
        start += n
    shutil.rmtree(d)
    return times


def check(d: Path, acked: int) -> tuple[str | None, int, int]:
    """Recover, verify, check the acknowledged rows; (failure or None, rows rolled forward, bytes cut)."""
    led = Ledger.open(d)
    try:
        if led.size < acked:
            return f"signed size {led.size} < acknowledged {acked}", 0, 0
        rec = led.recover()
        report = verify_ledger(led, check_mirror=False)
        if not report.ok:
            return f"verify failed: {report.failures[:3]}", 0, 0
        lines = (d / JSONL_KEY).read_bytes().count(b"\n")
        if lines != led.size:
            return f"the JSONL holds {lines} rows but {led.size} are signed", 0, 0
        for i in {0, acked - 1, led.size - 1}:
            if 0 <= i < led.size and led.entry(i).line != encode_row(sample_row(i)):
                return f"row {i} is not the row appended", 0, 0
        return None, rec.rows_rolled_forward, rec.bytes_rolled_back
    finally:
        led.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=20000)
    ap.add_argument("--rotate", type=int, default=10, help="start a new ledger every N trials")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.dir or tempfile.mkdtemp(prefix="kfm-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted({1, 100, args.max_batch // 10, args.max_batch // 2, args.max_batch} - {0})
    wall = time.perf_counter()
    durations = calibrate(work, sizes)
    print("calibrated clean append times:", {n: round(s, 3) for n, s in durations.items()}, flush=True)
    failures = killed = acknowledged = forward = back = 0
    d = work / "ledger"
    for trial in range(args.trials):
        if trial % args.rotate == 0:
            if d.exists():
                shutil.rmtree(d)
            Ledger.init(d, origin=ORIGIN).close()
            acked = 0
        n = rng.choice(sizes)
        batch = work / "batch.jsonl"
        batch.write_bytes(sample_jsonl(n, start=acked))
        proc = start_append(d, batch)
        # Most of a short append is the interpreter's start: kills land from late in the
        # start-up (70% of a one-row append's time) to just past the batch's clean time.
        time.sleep(rng.uniform(0.7 * durations[1], 1.1 * durations[n]))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        printed = out.strip()
        if printed:  # acknowledged: the append printed its result before the kill
            try:
                size = int(json.loads(printed)["checkpoint"]["size"])
            except (ValueError, KeyError, TypeError):
                size = acked + n
            acknowledged += 1
            acked = max(acked, size)
        elif proc.returncode not in (-signal.SIGKILL, 0):
            failures += 1
            print(f"trial {trial}: kfm append exited {proc.returncode} without being killed", flush=True)
        problem, fwd, cut = check(d, acked)
        forward += fwd > 0
        back += cut > 0
        if problem is not None:
            failures += 1
            print(f"trial {trial}: {problem}", flush=True)
            shutil.copytree(d, work / f"failed-{trial}")
            Ledger.init(d.with_name("fresh"), origin=ORIGIN).close()
            shutil.rmtree(d)
            os.rename(d.with_name("fresh"), d)
            acked = 0
            continue
        led = Ledger.open(d)
        acked = led.size  # the next batch continues after whatever is signed now
        led.close()
        if (trial + 1) % 50 == 0:
            print(f"{trial + 1} trials, {failures} failures, {time.perf_counter() - wall:.0f} s", flush=True)
    elapsed = time.perf_counter() - wall
    print(
        json.dumps(
            {
                "trials": args.trials,
                "killed_mid_append": killed,
                "acknowledged": acknowledged,
                "recoveries_rolled_forward": forward,
                "recoveries_rolled_back": back,
                "failures": failures,
                "wall_seconds": round(elapsed, 1),
                "seed": args.seed,
                "max_batch": args.max_batch,
            }
        )
    )
    if not args.dir and failures == 0:
        shutil.rmtree(work)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
