"""kfm verify: every kind of tampering is found and located."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_ledger.core import tiles
from kfm_ledger.log.layout import CHECKPOINT_KEY, JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.storage import MemoryStorage
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of


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
    stored_tiles = [
        k for k in led.storage.objects if k.startswith("tile/") and not k.startswith("tile/entries/")  # type: ignore[attr-defined]
    ]
    assert report.tiles_checked == len(stored_tiles) == len(tiles.tiles_for_size(301)) + 1  # + 0/001.p/44 of size 300


def test_a_changed_row_is_found_at_its_line() -> None:
    storage, _led = ledger_with(50)
    data = storage.read(JSONL_KEY)
    row = sample_row(7)
    old = encode_row(row)
    new = old.replace(b'"kwh":', b'"kwh":1')
    rewrite_jsonl(storage, data.replace(old, new))
    report = verify_ledger(Ledger.open(storage))
    assert not report.ok
    assert "checkpoint 50" in wheres(report)
    # The rows no longer give the signed root, so the row is blamed, by line, not the tile.
    assert "line 8" in wheres(report)
    line8 = next(f for f in report.failures if f.where == "line 8")
    assert "not the one the log signed" in line8.message
    assert not any(w.startswith("tile") for w in wheres(report))


def test_a_schema_violation_names_line_and_field() -> None:
    storage, _led = ledger_with(5)
    data = storage.read(JSONL_KEY)
    rewrite_jsonl(storage, data.replace(sample_row(2).checksums.artifact_sha256.encode(), b"0" * 63 + b"G"))
    report = verify_ledger(Ledger.open(storage))
    msgs = [str(f) for f in report.failures]
    assert any(m.startswith("line 3: $.checksums.artifact_sha256") for m in msgs), msgs


def test_duplicate_commit_and_backwards_time_are_found() -> None:
    storage, _led = ledger_with(4)
    lines = storage.read(JSONL_KEY).splitlines()
    lines[3] = lines[1]
    rewrite_jsonl(storage, b"\n".join(lines) + b"\n")
    report = verify_ledger(Ledger.open(storage))
    msgs = [str(f) for f in report.failures]
    assert any(m.startswith("line 4: $.lakefs_commit") and "line 2" in m for m in msgs), msgs
    assert any(m.startswith("line 4: $.created_at") for m in msgs), msgs


def test_removed_rows_are_found() -> None:
    storage, _led = ledger_with(20)
    lines = storage.read(JSONL_KEY).splitlines(keepends=True)
    rewrite_jsonl(storage, b"".join(lines[:15]))
    report = verify_ledger(Ledger.open(storage))
    removed = [f for f in report.failures if "rows were removed" in f.message]
    assert [f.where for f in removed] == [JSONL_KEY], report.failures
    assert "holds 15 complete rows but the signed checkpoint covers 20" in removed[0].message


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


def test_tile_length_old_partials_and_stray_tiles_are_checked() -> None:
    storage, led = ledger_with(0, 300, 10)
    full = tiles.tile_path(0, 0)
    storage.objects[full] += b"xx"
    assert wheres(verify_ledger(led)) == [f"tile {full}"]
    storage.objects[full] = storage.objects[full][:-2]
    old_partial = tiles.tile_path(0, 1, 44)  # kept for clients holding the size-300 checkpoint
    data = bytearray(storage.objects[old_partial])
    data[3] ^= 1
    storage.objects[old_partial] = bytes(data)
    assert wheres(verify_ledger(led)) == [f"tile {old_partial}"]
    data[3] ^= 1
    storage.objects[old_partial] = bytes(data)
    stray = tiles.tile_path(0, 4)
    storage.objects[stray] = storage.objects[full]
    report = verify_ledger(led)
    assert wheres(report) == [f"tile {stray}"] and "beyond the signed tree" in report.failures[0].message


def test_a_tile_changed_alone_is_blamed_not_the_rows() -> None:
    storage, led = ledger_with(20)
    key = tiles.tile_path(0, 0, 20)
    data = bytearray(storage.objects[key])
    data[32 * 5] ^= 1
    storage.objects[key] = bytes(data)
    report = verify_ledger(led)
    assert wheres(report) == [f"tile {key}"] and "hash 5 " in report.failures[0].message


def test_index_offsets_are_checked_and_a_missing_index_is_only_a_note(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    led.stored_index()._conn.execute("UPDATE entries SET offset = offset + 1 WHERE leaf = 5")  # type: ignore[union-attr]
    assert "index" in wheres(verify_ledger(Ledger.open(tmp_path / "l")))
    led.close()
    for p in (tmp_path / "l").glob("index.sqlite*"):
        p.unlink()
    report = verify_ledger(Ledger.open(tmp_path / "l"))
    assert report.ok and any("commit index covers 0 of 10" in n for n in report.notes)


def test_a_published_checkpoint_replaced_by_an_older_one_is_found() -> None:
    storage, _led = ledger_with(0, 5, 5)
    storage.objects[CHECKPOINT_KEY] = storage.objects["checkpoints/5"]
    report = verify_ledger(Ledger.open(storage))
    assert "checkpoint 10" in wheres(report)
    replaced = next(f for f in report.failures if f.where == "checkpoint 10")
    assert "published checkpoint is older (size 5)" in replaced.message


def test_verify_never_raises_for_a_bad_row_when_the_index_is_missing(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    led.close()
    for p in (tmp_path / "l").glob("index.sqlite*"):
        p.unlink()
    jsonl = tmp_path / "l" / JSONL_KEY
    jsonl.write_bytes(jsonl.read_bytes().replace(b'"kwh":', b'"kwh":-', 1))
    report = verify_ledger(Ledger.open(tmp_path / "l"))
    assert "line 1" in wheres(report)


def test_a_forged_checkpoint_is_found() -> None:
    storage, led = ledger_with(0, 10, 10)
    note = bytearray(storage.objects["checkpoints/10"])
    # Another base64 letter in the signature (a bit flip may leave the alphabet: '+' ^ 1 is '*').
    note[-5] = ord("A") if note[-5] != ord("A") else ord("B")
    storage.objects["checkpoints/10"] = bytes(note)
    report = verify_ledger(led)
    assert wheres(report) == ["checkpoint 10"]
    assert "does not verify" in report.failures[0].message


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
    assert set(wheres(report)) == {"since"}
    assert any("history was rewritten" in f.message for f in report.failures), report.failures

    # A checkpoint larger than the ledger: rows were lost.
    report = verify_ledger(Ledger.open(fork_storage), since=storage.read(CHECKPOINT_KEY))
    assert any(f.where == "since" and "lost rows" in f.message for f in report.failures), report.failures


def test_since_from_another_key_is_rejected() -> None:
    _, led = ledger_with(5)
    _, other = ledger_with(5)
    report = verify_ledger(led, since=other.checkpoint.note)
    assert wheres(report) == ["since"]
    assert "no signature from a trusted key" in report.failures[0].message


@pytest.mark.parametrize("parallel", [False, True])
def test_memory_does_not_grow_with_the_ledger(tmp_path: Path, monkeypatch, parallel: bool) -> None:
    """The pass keeps O(1) state: a compact range, one tile buffer per level, a few chunks in flight."""
    import tracemalloc

    from kfm_ledger.log import bulk

    monkeypatch.setattr(bulk, "CHUNK_BYTES", 256 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1 << 20 if parallel else 1 << 40)

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


def test_parallel_and_sequential_verify_report_the_same_failures(tmp_path: Path, monkeypatch) -> None:
    from kfm_ledger.log import bulk

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 1500, 1500)
    jsonl = tmp_path / "l" / JSONL_KEY
    lines = jsonl.read_bytes().split(b"\n")
    lines[700] = lines[100]  # a duplicate commit, time going backwards, a changed row
    lines[2000] = lines[2000].replace(b'"kwh":', b'"kwh":-', 1)  # a schema violation
    jsonl.write_bytes(b"\n".join(lines))
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1 << 40)
    sequential = verify_ledger(Ledger.open(tmp_path / "l"))
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    parallel = verify_ledger(Ledger.open(tmp_path / "l"))
    assert sequential.failures == parallel.failures
    found = [str(f) for f in parallel.failures]
    assert any(f.startswith("line 701: $.lakefs_commit") for f in found), found
    assert any(f.startswith("line 701: $.created_at") for f in found), found
    assert any(f.startswith("line 2001: $.energy_carbon.kwh") for f in found), found
    assert any(f.startswith("checkpoint 1500") for f in found), found


def test_verify_during_appends_never_reports_a_healthy_ledger_broken(tmp_path: Path) -> None:
    import threading

    d = tmp_path / "l"
    led = Ledger.init(d, origin=ORIGIN)
    fill(led, 300)
    done = threading.Event()

    def writer() -> None:
        w = Ledger.open(d)
        try:
            for i in range(300, 340):
                w.append(sample_jsonl(1, start=i), signer=signer_of(w), wait=30)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    reports = []
    while not done.is_set():
        reports.append(verify_ledger(Ledger.open(d)))
    t.join()
    assert reports and all(r.ok for r in reports), [r.failures for r in reports if not r.ok][:1]
    assert verify_ledger(Ledger.open(d)).size == 340


def test_a_changed_row_fails_every_signed_root_after_it_even_inside_a_whole_tile() -> None:
    """The row pass folds each whole level-0 tile of valid rows in at once, but never across a
    signed size: the roots at 300 and 600 (inside tiles 1 and 2) are checked as at 1000."""
    storage, _led = ledger_with(0, 300, 300, 400)
    data = storage.read(JSONL_KEY)
    old = encode_row(sample_row(7))
    rewrite_jsonl(storage, data.replace(old, old.replace(b'"kwh":', b'"kwh":1')))
    report = verify_ledger(Ledger.open(storage))
    assert {"checkpoint 300", "checkpoint 600", "checkpoint 1000", "line 8"} <= set(wheres(report))


@pytest.mark.parametrize(
    "tamper", ["nothing", "a row", "an invalid row", "a full tile", "a partial tile", "a tile missing"]
)
def test_whole_tiles_and_leaf_by_leaf_give_the_same_report(monkeypatch: pytest.MonkeyPatch, tamper: str) -> None:
    """verify/rows.RowPass._fold_leaves takes whole tiles where it can; forced to take every leaf
    on its own, the report is the same, whatever was changed."""
    from kfm_ledger.verify import rows as row_pass

    storage, _led = ledger_with(0, 300, 300, 400)
    if tamper == "a row":
        data = storage.read(JSONL_KEY)
        old = encode_row(sample_row(400))
        rewrite_jsonl(storage, data.replace(old, old.replace(b'"kwh":', b'"kwh":1')))
    elif tamper == "an invalid row":  # a chunk with a row that fails the schema: its facts row by row
        data = storage.read(JSONL_KEY)
        old = encode_row(sample_row(400))
        rewrite_jsonl(storage, data.replace(old, old.replace(b'"kwh":', b'"kwh":-')))
    elif tamper == "a full tile":
        key = tiles.tile_path(0, 2)
        storage.objects[key] = storage.objects[key][:64] + bytes(32) + storage.objects[key][96:]
    elif tamper == "a partial tile":
        key = tiles.tile_path(0, 3, 232)  # the right edge of size 1000
        storage.objects[key] = bytes(32) + storage.objects[key][32:]
    elif tamper == "a tile missing":
        del storage.objects[tiles.tile_path(0, 1)]
    whole = verify_ledger(Ledger.open(storage))
    monkeypatch.setattr(row_pass, "_inside", lambda sizes, low, high: True)
    by_leaf = verify_ledger(Ledger.open(storage))
    assert whole.failures == by_leaf.failures
    assert whole.tiles_checked == by_leaf.tiles_checked
    assert whole.ok == (tamper == "nothing")
