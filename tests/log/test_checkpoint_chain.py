"""Each signed checkpoint names the tree size signed before it, so a lost one is noticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.signed_checkpoint import parse_unverified
from kfm_ledger.errors import FormatError
from kfm_ledger.log.checkpoint_chain import previous_signed_size
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill


def test_every_checkpoint_after_the_first_names_its_predecessor(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 3, 4, 5)
    chain = {
        size: previous_signed_size(parse_unverified((tmp_path / "l" / "checkpoints" / str(size)).read_bytes()))
        for size in led.checkpoint_sizes()
    }
    assert chain == {0: None, 3: 0, 7: 3, 12: 7}
    assert b"\nkfm-previous-size 7\n" in (tmp_path / "l" / "checkpoint").read_bytes()


@pytest.mark.parametrize("deleted, reported", [([3], [3]), ([7], [7]), ([0], [0]), ([0, 3, 7], [7]), ([3, 7], [7])])
def test_verify_notices_a_deleted_stored_checkpoint(tmp_path: Path, deleted: list[int], reported: list[int]) -> None:
    """The newest missing one of a run is named (the ones before it were named by it)."""
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 3, 4, 5)
    assert verify_ledger(led).ok
    for size in deleted:
        (tmp_path / "l" / "checkpoints" / str(size)).unlink()
    report = verify_ledger(Ledger.open(tmp_path / "l"))
    assert not report.ok
    missing = sorted(f.where for f in report.failures if "is missing" in f.message)
    assert missing == sorted(f"checkpoint {s}" for s in reported)


@pytest.mark.parametrize(
    "line",
    [
        "kfm-previous-size 12",
        "kfm-previous-size 012",
        "kfm-previous-size x",
        "kfm-previous-size \u00b2",
        "kfm-previous-size " + "1" * 5000,
    ],
)
def test_a_malformed_previous_size_is_refused(line: str) -> None:
    with pytest.raises(FormatError):
        previous_signed_size(Checkpoint(ORIGIN, 12, b"\0" * 32, (line,)))


def test_other_extension_lines_are_ignored() -> None:
    assert previous_signed_size(Checkpoint(ORIGIN, 12, b"\0" * 32, ("something else", "kfm-previous-size 5"))) == 5
    assert previous_signed_size(Checkpoint(ORIGIN, 12, b"\0" * 32, ("something else",))) is None



def test_a_proof_at_a_lost_checkpoint_says_it_was_signed(tmp_path: Path) -> None:
    from kfm_ledger.errors import CorruptLedgerError, IndexOutOfRangeError

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 3, 4, 5)
    (tmp_path / "l" / "checkpoints" / "7").unlink()
    led = Ledger.open(tmp_path / "l")
    with pytest.raises(CorruptLedgerError, match=r"signed a checkpoint for tree size 7 .* is missing"):
        led.tlog_proof(1, 7)
    with pytest.raises(IndexOutOfRangeError, match="never signed a checkpoint for tree size 8"):
        led.tlog_proof(1, 8)
