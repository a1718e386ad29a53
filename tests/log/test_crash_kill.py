"""Crash tests with real processes: a writer killed with SIGKILL at random points.

After each kill the ledger must open, verify, keep every row whose append was
acknowledged, and accept the next append; the JSONL must hold exactly the signed
rows once recovery ran (an unacknowledged batch leaves no row behind).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfm_ledger.log.entries import read_entries, stored_bundles_beyond
from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, signer_of

WRITER = r"""
import sys
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
led = Ledger.open(sys.argv[1])
signer = load_signer(led.storage.read(SKEY_KEY))
batch = int(sys.argv[2])
while True:
    result = led.append(sample_jsonl(batch, start=led.size), signer=signer, wait=30)
    print("acked", result.checkpoint.checkpoint.size, flush=True)
"""


def kill_a_writer(d: Path, script_and_args: list[str], after: float) -> int:
    """A ledger of 50 rows in ``d``, a writer process (``python -c script args``) appending to it,
    killed with SIGKILL after ``after`` seconds; the last size it reported as acknowledged."""
    led = Ledger.init(d, origin=ORIGIN)
    led.append(sample_jsonl(50), signer=signer_of(led))
    led.close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", *script_and_args], stdout=subprocess.PIPE, text=True, env=env)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    acked = [int(line.split()[1]) for line in out.splitlines() if line.startswith("acked ")]
    return max(acked, default=50)


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_a_random_point_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    d = tmp_path / "ledger"
    last_acked = kill_a_writer(d, [WRITER, str(d), str(rng.choice([300, 1000, 2500]))], 0.3 + rng.random() * 1.2)

    led = Ledger.open(d)
    assert led.size >= last_acked  # nothing acknowledged is lost
    report = verify_ledger(led)
    assert report.ok, report.failures
    rows = led.size
    pending = led.pending_append() is not None
    rec = led.recover()
    assert led.size >= rows
    print(f"seed {seed}: acked {last_acked}, signed {rows}, interrupted append: {pending}, "
          f"rolled forward {rec.rows_rolled_forward}, cut {rec.bytes_rolled_back} bytes")
    jsonl = (d / JSONL_KEY).read_bytes()
    assert jsonl.count(b"\n") == led.size  # exactly the signed rows: all or nothing
    # Entry bundles too: none beyond the signed tree once recovered, and they give the signed rows.
    assert stored_bundles_beyond(led.storage, led.size) == []
    assert read_entries(led, 0, led.size) == jsonl.split(b"\n")[:-1]
    for i in (0, last_acked - 1, led.size - 1):
        assert led.entry(i).line == encode_row(sample_row(i))
    led.append(sample_jsonl(3, start=led.size), signer=signer_of(led))
    assert verify_ledger(led).ok


BULK_WRITER = r"""
import sys
from kfm_ledger.log import bulk
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
bulk.PARALLEL_THRESHOLD = 1  # the bulk path (workers, rows copied ahead, the bundle writer) on small files
bulk.CHUNK_BYTES = 50_000
led = Ledger.open(sys.argv[1])
signer = load_signer(led.storage.read(SKEY_KEY))
batch, path = int(sys.argv[2]), sys.argv[3]
while True:
    with open(path, "wb") as f:
        f.write(sample_jsonl(batch, start=led.size))
    result = led.append_file(path, signer=signer, wait=30, workers=2)
    print("acked", result.checkpoint.checkpoint.size, flush=True)
"""


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_during_a_bulk_append_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    """The bulk path writes rows ahead under a provisional record and has a child write the
    bundles: a SIGKILL at any point still leaves a ledger that recovers to exactly its signed rows,
    with no bundle beyond them and no temporary file left once recovered."""
    rng = random.Random(100 + seed)
    d = tmp_path / "ledger"
    args = [BULK_WRITER, str(d), str(rng.choice([700, 2000, 4000])), str(tmp_path / "in.jsonl")]
    last_acked = kill_a_writer(d, args, 0.5 + rng.random() * 2.0)
    time.sleep(0.2)  # the workers and the bundle writer die with their parent (PR_SET_PDEATHSIG)

    led = Ledger.open(d)
    assert led.size >= last_acked
    report = verify_ledger(led)
    assert report.ok, report.failures
    led.recover()
    jsonl = (d / JSONL_KEY).read_bytes()
    assert jsonl.count(b"\n") == led.size
    assert stored_bundles_beyond(led.storage, led.size) == []
    assert read_entries(led, 0, led.size) == jsonl.split(b"\n")[:-1]
    assert not [p for p in d.rglob("*") if ".kfm-tmp." in p.name]
    led.append(sample_jsonl(3, start=led.size), signer=signer_of(led))
    assert verify_ledger(led).ok
