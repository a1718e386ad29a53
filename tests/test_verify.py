"""kfm verify: every kind of tampering is found and located."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ORIGIN, fill, signer_of
from kfm_ledger import tiles
from kfm_ledger.ledger import CHECKPOINT_KEY, JSONL_KEY, Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.storage import MemoryStorage
from kfm_ledger.verify import verify_ledger


def ledger_with(rows: int = 300, *batches: int) -> tuple[MemoryStorage, Ledger]:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, *(batches or (rows,)))
    return storage, led


def rewrite_jsonl(storage: MemoryStorage, data: bytes) -> None:
    storage._logs[JSONL_KEY] = bytearray(data)


def wheres(report) -> list[str]:
    return [f.where for f in report.failures]


def test_a_clean_ledger_verifies() -> None:
    _, led = ledger_with(0, 100, 200, 1)
    report = verify_ledger(led)
    assert report.ok, report.failures
    assert report.rows_checked == 301
    assert report.checkpoints_checked == 4
    assert report.tiles_checked == len(tiles.tiles_for_size(301))


def test_a_changed_row_is_found_at_its_line() -> None:
    storage, led = ledger_with(50)
    data = storage.read(JSONL_KEY)
    row = sample_row(7)
    old = encode_row(row)
    new = old.replace(b'"kwh":', b'"kwh":1')
    rewrite_jsonl(storage, data.replace(old, new))
    report = verify_ledger(Ledger.open(storage))
    assert not report.ok
    assert "checkpoint 50" in wheres(report)
    assert "tile " + tiles.tile_path(0, 0, 50) in wheres(report)
    tile_failure = next(f for f in report.failures if f.where.startswith("tile"))
    assert "hash 7 " in tile_failure.message


def test_a_schema_violation_names_line_and_field() -> None:
    storage, led = ledger_with(5)
    data = storage.read(JSONL_KEY)
    rewrite_jsonl(storage, data.replace(sample_row(2).checksums.artifact_sha256.encode(), b"0" * 63 + b"G"))
    report = verify_ledger(Ledger.open(storage))
    msgs = [str(f) for f in report.failures]
    assert any(m.startswith("line 3: $.checksums.artifact_sha256") for m in msgs), msgs


def test_duplicate_commit_and_backwards_time_are_found() -> None:
    storage, led = ledger_with(4)
    lines = storage.read(JSONL_KEY).splitlines()
    lines[3] = lines[1]
    rewrite_jsonl(storage, b"\n".join(lines) + b"\n")
    report = verify_ledger(Ledger.open(storage))
    msgs = [str(f) for f in report.failures]
    assert any(m.startswith("line 4: $.lakefs_commit") and "line 2" in m for m in msgs), msgs
    assert any(m.startswith("line 4: $.created_at") for m in msgs), msgs


def test_removed_rows_are_found() -> None:
    storage, led = ledger_with(20)
    lines = storage.read(JSONL_KEY).splitlines(keepends=True)
    rewrite_jsonl(storage, b"".join(lines[:15]))
    report = verify_ledger(Ledger.open(storage))
    assert any("rows were removed" in f.message for f in report.failures)


def test_a_changed_or_missing_tile_is_found() -> None:
    storage, led = ledger_with(600)
    key = tiles.tile_path(0, 1)
    tile = bytearray(storage.objects[key])
    tile[100] ^= 1
    storage.objects[key] = bytes(tile)
    report = verify_ledger(led)
    assert wheres(report) == [f"tile {key}"]
    del storage.objects[tiles.tile_path(1, 0, 2)]
    assert f"tile {tiles.tile_path(1, 0, 2)}" in wheres(verify_ledger(led))


def test_a_forged_checkpoint_is_found() -> None:
    storage, led = ledger_with(0, 10, 10)
    note = bytearray(storage.objects["checkpoints/10"])
    note[-5] ^= 1
    storage.objects["checkpoints/10"] = bytes(note)
    assert "checkpoint 10" in wheres(verify_ledger(led))


def test_since_accepts_an_extension_and_rejects_a_rewrite() -> None:
    storage, led = ledger_with(0, 30)
    saved = storage.read(CHECKPOINT_KEY)
    fill(led, 40)
    report = verify_ledger(led, since=saved)
    assert report.ok and report.since_size == 30
    assert any("consistency proof 30 -> 70 verified" in n for n in report.notes)

    # A fork: the same key signs a different history of 30 rows.
    fork_storage = MemoryStorage()
    fork = Ledger.init(fork_storage, origin=ORIGIN, signer=signer_of(led), store_key=True)
    fork.append(sample_jsonl(30, seed=9), signer=signer_of(led))
    forked = fork_storage.read(CHECKPOINT_KEY)
    report = verify_ledger(led, since=forked)
    assert "since" in wheres(report)

    # A checkpoint larger than the ledger: rows were lost.
    report = verify_ledger(Ledger.open(fork_storage), since=storage.read(CHECKPOINT_KEY))
    assert any("lost rows" in f.message for f in report.failures)


def test_since_from_another_key_is_rejected() -> None:
    _, led = ledger_with(5)
    _, other = ledger_with(5)
    report = verify_ledger(led, since=other.checkpoint.note)
    assert "since" in wheres(report)


def test_memory_does_not_grow_with_the_ledger(tmp_path: Path) -> None:
    """The pass keeps O(1) state: a compact range, one tile buffer per level, 1 MiB chunks."""
    import tracemalloc

    def peak_for(rows: int) -> tuple[int, int]:
        led = Ledger.init(tmp_path / str(rows), origin=ORIGIN)
        fill(led, rows)
        tracemalloc.start()
        report = verify_ledger(led)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.ok
        return peak, (tmp_path / str(rows) / JSONL_KEY).stat().st_size

    small, small_bytes = peak_for(4000)
    large, large_bytes = peak_for(16000)
    assert large_bytes - small_bytes > 14_000_000  # the ledger grew by more than 14 MB ...
    assert large - small < 1_000_000, (small, large)  # ... verify's peak by less than 1 MB
