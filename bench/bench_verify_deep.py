"""Benchmark `kfm verify --deep`: N rows with local artifacts of S bytes each and key-signed (Ed25519)
DSSE attestations, as a whole process; then the cost of one Sigstore bundle verification.

Usage::

    python bench/bench_verify_deep.py --rows 10000 --artifact-bytes 1000000 --dir /tmp/kfm-deep

The world (artifacts, attestations, STAC collection, kfm.toml, ledger) is built once under
--dir and reused when it is already there.  Targets (issue 9): >= 1,000 rows/s for 10,000
rows of 1 MB on the 2-core machine; Sigstore >= 100 bundles/s.  The artifacts are in the page
cache after they were written (or after the warm-up run), so this measures hashing and the
checks, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' world builder (tests/supply/world.py)


def build(base: Path, rows: int, artifact_bytes: int) -> tuple[Path, Path]:
    from kfm_ledger.log.ledger import Ledger
    from supply.world import make_world

    from conftest import signer_of

    stamp = base / f"built-{rows}-{artifact_bytes}"
    ledger_dir, config = base / "ledger", base / "world" / "kfm.toml"
    if stamp.exists():
        print(f"reusing {base} ({rows} rows of {artifact_bytes:,} bytes)")
        return ledger_dir, config
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    t0 = time.perf_counter()
    world = make_world(base / "world")
    with Ledger.init(ledger_dir, origin="bench.kfm.example/rollback-index") as led:
        signer = signer_of(led)
        batch = []
        for i in range(rows):
            batch.append(world.row(i, artifact_bytes=artifact_bytes))
            if len(batch) == 1000:
                led.append(batch, signer=signer)
                batch = []
                print(f"  built {i + 1}/{rows} rows ({time.perf_counter() - t0:.1f} s)", flush=True)
        if batch:
            led.append(batch, signer=signer)
    stamp.write_text("ok\n")
    print(f"built {base} in {time.perf_counter() - t0:.1f} s")
    return ledger_dir, config


def run_deep(ledger_dir: Path, config: Path, runs: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of the child: user + system) per measured run."""
    import resource

    argv = [sys.executable, "-m", "kfm_ledger", "verify", "--deep", "--ledger", str(ledger_dir), "--config",
            str(config), "--json", "--quiet"]
    env = {**os.environ}
    env.pop("KFM_CONFIG", None)
    times = []
    for n in range(runs + 1):  # the first run warms the page cache
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if p.returncode != 0:
            raise SystemExit(f"kfm verify --deep failed ({p.returncode}): {p.stderr[-2000:]}")
        summary = json.loads(p.stdout)["summary"]
        if n:
            times.append((elapsed, cpu))
        load = os.getloadavg()[0]
        print(f"  run {n}{' (warm-up)' if not n else ''}: {elapsed:.2f} s wall, {cpu:.2f} s CPU, "
              f"load average {load:.1f}; {summary}", flush=True)
    return times


def sigstore_cost(count: int) -> None:
    from kfm_ledger.attest import AttestationVerifier
    from kfm_ledger.config import AttestationIdentity, AttestationPolicy

    conformance = ROOT.parent / "shared" / "conformance" / "sigstore"
    if not conformance.is_dir():
        conformance = Path("/work/shared/conformance/sigstore")
    bundle = conformance / "reusable-workflow-attestation.sigstore.json"
    if not bundle.is_file():
        print("sigstore: the conformance bundle is not there; skipped")
        return
    data = bundle.read_bytes()
    ident = AttestationIdentity(
        issuer="https://token.actions.githubusercontent.com",
        san="https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml"
        "@09b495c3f12c7881b3cc17209a327792065c1a1d")
    t0 = time.perf_counter()
    v = AttestationVerifier(AttestationPolicy(identities=(ident,)))
    sha = "49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25"
    assert v.verify(data, sha).status == "ok"
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(count):
        r = v.verify(data, sha)
    each = (time.perf_counter() - t0) / count
    assert r.status == "ok"
    print(f"sigstore: first bundle (imports + trusted root) {first * 1000:.0f} ms; then {each * 1000:.2f} ms "
          f"per bundle = {1 / each:,.0f} bundles/s (one thread, {count} bundles)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--artifact-bytes", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/kfm-bench-deep"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sigstore-bundles", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="Keep --dir (default: removed at the end).")
    args = ap.parse_args()
    ledger_dir, config = build(args.dir, args.rows, args.artifact_bytes)
    try:
        times = run_deep(ledger_dir, config, args.runs)
        best = min(t for t, _ in times)
        mean = sum(t for t, _ in times) / len(times)
        cpu = min(c for _, c in times)
        gb = args.rows * args.artifact_bytes / 1e9
        print(f"verify --deep: {args.rows:,} rows, {gb:.1f} GB: best {best:.2f} s = {args.rows / best:,.0f} rows/s "
              f"({gb / best:.2f} GB/s); mean {mean:.2f} s over {len(times)} runs; least CPU {cpu:.2f} s "
              f"({cpu / args.rows * 1000:.2f} ms CPU per row; on 2 idle cores at most "
              f"{2 * args.rows / cpu:,.0f} rows/s)")
        sigstore_cost(args.sigstore_bundles)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
