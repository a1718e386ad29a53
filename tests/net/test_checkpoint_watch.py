"""CheckpointWatch: the served checkpoint is re-read whenever its file may have changed, and only
then once it has been still for a while (net/checkpoint_watch.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from netutil import ORIGIN

from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.net import checkpoint_watch
from kfm_ledger.net.checkpoint_watch import RACY_NS, CheckpointWatch
from kfm_ledger.net.server import LogApp
from kfm_ledger.sample import sample_commit, sample_jsonl

from conftest import copy_ledger, fill


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("watched") / "ledger"
    fill(Ledger.init(d, origin=ORIGIN), 20).close()
    return d


@pytest.fixture
def ledger(template: Path, tmp_path: Path) -> Path:
    return copy_ledger(template, tmp_path)


def watched(ledger: Path) -> tuple[Ledger, CheckpointWatch]:
    """The ledger opened and a watch on its checkpoint file."""
    return Ledger.open(ledger), CheckpointWatch(str(ledger / "checkpoint"))


def age(path: Path, seconds: float = 60) -> None:
    """Set the file's modification time into the past (its change time moves to now)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_still_file_is_read_once(ledger: Path, monkeypatch) -> None:
    led, watch = watched(ledger)
    monkeypatch.setattr(checkpoint_watch, "RACY_NS", 0)  # the change time of a fresh copy is now
    for _ in range(5):
        watch.refresh(led)
    assert watch.reads == 1
    led.close()


def test_a_recently_changed_file_is_read_every_time(ledger: Path) -> None:
    led, watch = watched(ledger)
    for _ in range(3):
        watch.refresh(led)  # copied just now: within RACY_NS of its change time
    assert watch.reads == 3 and RACY_NS >= 1_000_000_000
    led.close()


def test_an_append_by_another_writer_is_seen(ledger: Path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint_watch, "RACY_NS", 0)
    app = LogApp(ledger)
    assert app.handle("GET", "/checkpoint").body.split(b"\n")[1] == b"20"
    assert app.handle("GET", f"/lookup/{sample_commit(3)}").status == 200
    reads = app._watch.reads
    assert app.handle("GET", f"/lookup/{sample_commit(4)}").status == 200
    assert app._watch.reads == reads  # unchanged: one stat, no read
    writer = Ledger.open(ledger)
    writer.append(sample_jsonl(5, start=20), signer=load_signer((ledger / "log.key").read_bytes()))
    writer.close()
    answer = app.handle("GET", f"/lookup/{sample_commit(22)}")
    assert answer.status == 200 and b'"tree_size":25' in answer.body
    assert app.handle("GET", "/checkpoint").body.split(b"\n")[1] == b"25"
    app.close()


def test_an_edit_in_place_is_seen(ledger: Path, monkeypatch) -> None:
    """The same inode rewritten (not renamed over): its size or times differ from the last read."""
    monkeypatch.setattr(checkpoint_watch, "RACY_NS", 0)
    led = Ledger.open(ledger)
    age(ledger / "checkpoint")  # so that the write below certainly moves its modification time
    watch = CheckpointWatch(str(ledger / "checkpoint"))
    watch.refresh(led)
    watch.refresh(led)
    assert watch.reads == 1
    data = (ledger / "checkpoint").read_bytes()
    with open(ledger / "checkpoint", "r+b") as f:
        f.write(data)
    watch.refresh(led)
    assert watch.reads == 2
    led.close()


def test_a_missing_file_is_the_ledgers_error(ledger: Path) -> None:
    from kfm_ledger.errors import ObjectNotFoundError

    led, watch = watched(ledger)
    (ledger / "checkpoint").rename(ledger / "moved")
    with pytest.raises(ObjectNotFoundError):
        watch.refresh(led)
    (ledger / "moved").rename(ledger / "checkpoint")
    watch.refresh(led)
    led.close()


def test_no_local_file_is_read_every_time(ledger: Path) -> None:
    led = Ledger.open(ledger)
    watch = CheckpointWatch(None)
    watch.refresh(led)
    watch.refresh(led)
    assert watch.reads == 2
    led.close()
