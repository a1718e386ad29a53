"""Temporary files that a crash inside a write leaves behind are removed by recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kfm_ledger.log.layout import PENDING_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.recovery import PendingAppend
from kfm_ledger.sample import sample_jsonl

from conftest import ORIGIN, fill, signer_of


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recovery_removes_what_an_interrupted_append_left(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    gone = dead_pid()
    # A crash inside step 1 and inside step 4: the record is there, and half-written temporaries.
    end = (tmp_path / "l" / "rollback-index.jsonl").stat().st_size
    led.storage.write_atomic(PENDING_KEY, PendingAppend(10, end, 11, end + 100).to_json())
    stale = [
        tmp_path / "l" / f".checkpoint.kfm-tmp.{gone}",
        tmp_path / "l" / "tile" / "0" / "000.p" / f".11.kfm-tmp.{gone}",
    ]
    stale[1].parent.mkdir(parents=True, exist_ok=True)
    live = tmp_path / "l" / f".checkpoint.kfm-tmp.{os.getpid()}"
    for p in [*stale, live]:
        p.write_bytes(b"half")
    report = Ledger.open(tmp_path / "l").recover()
    assert sorted(report.temporaries_removed) == sorted(str(p.relative_to(tmp_path / "l")) for p in stale)
    assert not any(p.exists() for p in stale)
    assert live.exists()  # a running writer's (here: ours) is left alone
    live.unlink()
    fill(Ledger.open(tmp_path / "l"), 5)


def test_kfm_recover_sweeps_every_folder(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    led.append(sample_jsonl(300), signer=signer_of(led))
    stale = tmp_path / "l" / "tile" / "1" / f".000.kfm-tmp.{dead_pid()}"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "recover", "--ledger", str(tmp_path / "l"), "--json"],
        capture_output=True, text=True, env=env, check=True,
    )
    assert json.loads(out.stdout)["temporaries_removed"] == [str(stale.relative_to(tmp_path / "l"))]
    assert not stale.exists()


def test_only_kfm_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 3)
    keep = [
        tmp_path / "l" / ".notes.tmp.99999999999999999999",  # not a kfm name, not a pid
        tmp_path / "l" / ".backup.tmp.20240101",  # someone else's file
        tmp_path / "l" / ".checkpoint.kfm-tmp.99999999999",  # a number no process has
    ]
    for p in keep:
        p.write_bytes(b"mine")
    report = Ledger.open(tmp_path / "l").recover()
    assert report.temporaries_removed == ()
    assert all(p.exists() for p in keep)
