"""Shared fixtures: ledgers in memory and on disk, filled with sample rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage import MemoryStorage

ORIGIN = "test.kfm.example/rollback-index"


def signer_of(ledger: Ledger):
    return load_signer(ledger.storage.read(SKEY_KEY))


@pytest.fixture
def mem_ledger() -> Ledger:
    return Ledger.init(MemoryStorage(), origin=ORIGIN)


@pytest.fixture
def disk_ledger(tmp_path: Path) -> Ledger:
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    yield led
    led.close()


def copy_ledger(template: Path, parent: Path, name: str = "ledger") -> Path:
    """A fresh copy of a ledger directory built once per module (so each test may damage its own)."""
    d = parent / name
    shutil.copytree(template, d)
    return d


def fill(ledger: Ledger, *batches: int) -> Ledger:
    """Append sample rows in batches of the given sizes."""
    start = ledger.size
    signer = signer_of(ledger)
    for n in batches:
        ledger.append(sample_jsonl(n, start=start), signer=signer)
        start += n
    return ledger
