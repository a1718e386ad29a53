"""The ledger: append, lookups, proofs from tiles, invariants, recovery after crashes."""

from __future__ import annotations

import threading

import pytest

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof
from kfm_ledger.errors import (
    AmbiguousCommitError,
    CommitNotFoundError,
    CorruptLedgerError,
    IndexOutOfRangeError,
    InputRejected,
    KeyFormatError,
    LedgerExistsError,
    LockedError,
)
from kfm_ledger.log.entries import stored_bundles_beyond
from kfm_ledger.log.layout import CHECKPOINT_KEY, JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row, sample_rows
from kfm_ledger.schema import encode_row
from kfm_ledger.storage import MemoryStorage, SimulatedCrash
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of


def reference_tree(ledger: Ledger) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(line) for line in ledger.iter_lines())


def snapshot(storage: MemoryStorage) -> tuple[dict[str, bytes], bytes]:
    return dict(storage.objects), storage.read(JSONL_KEY)


def test_init_signs_the_empty_tree(mem_ledger: Ledger) -> None:
    assert mem_ledger.size == 0
    assert mem_ledger.root == merkle.EMPTY_ROOT
    assert mem_ledger.checkpoint_sizes() == [0]
    with pytest.raises(LedgerExistsError):
        Ledger.init(mem_ledger.storage, origin=ORIGIN)


def test_init_with_a_key_whose_name_is_not_the_origin_is_refused() -> None:
    with pytest.raises(KeyFormatError, match="origin"):
        Ledger.init(MemoryStorage(), origin=ORIGIN, signer=Signer.generate("other.example/log"))


def test_append_gives_the_rfc9162_root_and_canonical_lines(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 3, 1, 300)
    lines = list(mem_ledger.iter_lines())
    assert len(lines) == mem_ledger.size == 304
    assert lines == [encode_row(r) for r in sample_rows(304)]
    assert mem_ledger.root == reference_tree(mem_ledger).root()
    assert mem_ledger.checkpoint_sizes() == [0, 3, 4, 304]


def test_input_in_any_key_order_is_stored_canonically(mem_ledger: Ledger) -> None:
    import json

    row = json.loads(encode_row(sample_row(0)))
    shuffled = json.dumps(dict(reversed(list(row.items()))), indent=3).encode()
    mem_ledger.append(shuffled, signer=signer_of(mem_ledger))
    assert mem_ledger.entry(0).line == encode_row(sample_row(0))


def test_tiles_written_are_exactly_those_of_the_signed_size(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 255, 1, 1, 600)
    size = mem_ledger.size
    stored = {k for k in mem_ledger.storage.objects if k.startswith("tile/") and not k.startswith("tile/entries/")}
    expected = {tiles.tile_path(lv, n, w) for lv, n, w in tiles.tiles_for_size(size)}
    # Full tiles replace their partials; partials of the still-partial tile
    # from earlier sizes are kept for clients holding older checkpoints.
    assert expected <= stored
    for key in stored - expected:
        level, index, width = tiles.parse_tile_path(key)
        assert width < tiles.tile_width(level, index, size), key


def test_inclusion_proofs_from_tiles_match_the_reference_for_every_leaf(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 7, 250, 40)
    tree = reference_tree(mem_ledger)
    for size in mem_ledger.checkpoint_sizes()[1:]:
        root = tree.root(size)
        for index in range(size):
            proof = mem_ledger.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(index, size, tree)
            merkle.verify_inclusion(merkle.leaf_hash(mem_ledger.entry(index).line), index, size, proof, root)


def test_consistency_proofs_between_every_pair_of_signed_sizes(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 1, 2, 255, 1, 300)
    sizes = mem_ledger.checkpoint_sizes()
    roots = {s: mem_ledger.stored_checkpoint(s).checkpoint.root for s in sizes}
    for i, old in enumerate(sizes):
        for new in sizes[i:]:
            if old == 0:
                continue
            proof = mem_ledger.consistency_proof(old, new)
            merkle.verify_consistency(old, new, roots[old], roots[new], proof)


def test_tlog_proof_verifies_offline_and_names_the_checkpoint(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 20, 5)
    entry = mem_ledger.get(sample_row(11).lakefs_commit)
    data = format_tlog_proof(mem_ledger.tlog_proof(entry.index))
    cp, index = verify_tlog_proof(data, entry.line, [mem_ledger.verifier], origin=ORIGIN)
    assert (index, cp.size) == (11, 25)
    old = format_tlog_proof(mem_ledger.tlog_proof(entry.index, 20))
    assert verify_tlog_proof(old, entry.line, [mem_ledger.verifier])[0].size == 20
    with pytest.raises(IndexOutOfRangeError, match="never signed a checkpoint for tree size 21"):
        mem_ledger.tlog_proof(entry.index, 21)


def test_get_by_prefix_unknown_and_ambiguous(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 200)
    commit = sample_row(42).lakefs_commit
    assert mem_ledger.get(commit).index == 42
    assert mem_ledger.get(commit[:12]).index == 42
    with pytest.raises(CommitNotFoundError):
        mem_ledger.get("zzzz")
    # 200 hex ids: some one-digit prefix is shared by several
    prefix = commit[0]
    with pytest.raises(AmbiguousCommitError) as e:
        mem_ledger.get(prefix)
    assert len(e.value.candidates) > 1
    assert any(commit in c for c in e.value.candidates) or len(e.value.candidates) == 20


def test_bad_batch_writes_nothing_and_names_line_and_field(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 5)
    before = snapshot(mem_ledger.storage)
    good = sample_jsonl(2, start=5).splitlines()
    bad = good[1].replace(b'"artifact_sha256":"', b'"artifact_sha256":"XYZ')
    with pytest.raises(InputRejected) as e:
        mem_ledger.append(good[0] + b"\n" + bad + b"\n", signer=signer_of(mem_ledger))
    assert [(p.line, p.path) for p in e.value.problems] == [(2, "$.checksums.artifact_sha256")]
    assert snapshot(mem_ledger.storage) == before


def test_one_row_per_commit_across_the_ledger(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 5)
    before = snapshot(mem_ledger.storage)
    import msgspec

    again = encode_row(msgspec.structs.replace(sample_row(3), created_at="2030-01-01T00:00:00Z"))
    with pytest.raises(InputRejected) as e:
        mem_ledger.append(sample_jsonl(1, start=5) + again, signer=signer_of(mem_ledger))
    (problem,) = e.value.problems
    assert problem.line == 2 and problem.path == "$.lakefs_commit"
    assert "already in the ledger at index 3" in problem.message
    assert snapshot(mem_ledger.storage) == before


def test_created_at_never_goes_backwards(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 5)
    before = snapshot(mem_ledger.storage)
    older = sample_row(10)
    import msgspec

    older = msgspec.structs.replace(older, created_at="2024-01-01T00:00:00Z")
    with pytest.raises(InputRejected) as e:
        mem_ledger.append(encode_row(older), signer=signer_of(mem_ledger))
    assert e.value.problems[0].path == "$.created_at"
    assert "never goes backwards" in e.value.problems[0].message
    assert snapshot(mem_ledger.storage) == before


def test_a_key_that_is_not_the_logs_is_refused(mem_ledger: Ledger) -> None:
    with pytest.raises(KeyFormatError, match="does not match"):
        mem_ledger.append(sample_jsonl(1), signer=Signer.generate(ORIGIN))
    assert mem_ledger.size == 0


def test_second_writer_fails_clearly_while_the_lock_is_held(mem_ledger: Ledger) -> None:
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with mem_ledger.storage.lock():
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(LockedError, match="another writer"):
            mem_ledger.append(sample_jsonl(1), signer=signer_of(mem_ledger), wait=0.1)
    finally:
        release.set()
        t.join()
    assert mem_ledger.size == 0


def test_two_processes_appending_at_once_never_interleave(tmp_path) -> None:
    import subprocess
    import sys

    Ledger.init(tmp_path / "l", origin=ORIGIN)
    # Every row has the same created_at, so either process may go first.
    script = (
        "import sys, msgspec; from kfm_ledger.log.ledger import Ledger; from kfm_ledger.log.keys import load_signer;"
        "from kfm_ledger.log.layout import SKEY_KEY;"
        "from kfm_ledger.sample import sample_row; from kfm_ledger.schema import encode_row;"
        "l = Ledger.open(sys.argv[1]); s = load_signer(l.storage.read(SKEY_KEY));"
        "seed = int(sys.argv[2])\n"
        "def row(i):\n"
        "    return encode_row(msgspec.structs.replace(sample_row(i, seed), created_at='2026-01-01T00:00:00Z'))\n"
        "for k in range(25): l.append(b'\\n'.join(row(20 * k + j) for j in range(20)), signer=s, wait=60)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "l"), str(seed)]) for seed in (1, 2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    final = Ledger.open(tmp_path / "l")
    assert final.size == 1000
    assert verify_ledger(final).ok
    # Each batch of 20 stayed contiguous: batches start at multiples of 20.
    commits = [e.row.lakefs_commit for e in final.iter_entries()]
    for start in range(0, 1000, 20):
        first = commits[start]
        seed, i = next((s, i) for s in (1, 2) for i in range(500) if sample_row(i, s).lakefs_commit == first)
        assert i % 20 == 0
        assert commits[start : start + 20] == [sample_row(i + j, seed).lakefs_commit for j in range(20)]


# ---------------------------------------------------------------- crashes


def crash_points() -> int:
    """How many mutating storage steps one append of 300 rows onto 10 takes."""
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 10)
    storage.steps.clear()
    led.append(sample_jsonl(300, start=10), signer=signer_of(led))
    return len(storage.steps)


@pytest.mark.parametrize("step", range(crash_points() + 1))
def test_crash_at_every_write_step_leaves_a_ledger_that_opens_verifies_and_recovers(step: int) -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 10)
    signed_before = storage.read(CHECKPOINT_KEY)
    storage.crash_at(step)
    signer = signer_of(led)
    reported = False
    try:
        led.append(sample_jsonl(300, start=10), signer=signer)
        reported = True
    except SimulatedCrash:
        pass
    storage.crash()  # unsynced bytes and the index cache are gone
    after = Ledger.open(storage)
    if reported:
        assert after.size == 310
    else:
        assert storage.read(CHECKPOINT_KEY) in (signed_before, storage.objects.get("checkpoints/310"))
    report = verify_ledger(after)
    assert report.ok, report.failures
    after.recover()
    assert after.size in (10, 310)
    # All or nothing: the JSONL holds exactly the signed rows.
    assert storage.read(JSONL_KEY).count(b"\n") == after.size
    if after.size == 10:
        hash_tiles = [k for k in storage.objects if k.startswith("tile/") and not k.startswith("tile/entries/")]
        assert not any(tiles.parse_tile_path(k)[2] > 10 and tiles.parse_tile_path(k)[0] == 0 for k in hash_tiles)
        # Entry bundles the unsigned append wrote are gone too; the one of the signed tree is there.
        assert stored_bundles_beyond(storage, 10) == []
        assert "tile/entries/000.p/10" in storage.objects
    # Whatever happened, the next append works and the ledger verifies.
    nxt = after.size
    after.append(sample_jsonl(5, start=nxt), signer=signer)
    assert verify_ledger(after).ok
    assert after.root == reference_tree(after).root()


def test_an_interrupted_append_is_rolled_back_whole_and_can_be_retried() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 10)
    before = snapshot(storage)
    signer = signer_of(led)
    # Steps: 0 the pending record, 1 the rows, 2 their fsync, 3 the first tile.
    storage.crash_at(3)
    with pytest.raises(SimulatedCrash):
        led.append(sample_jsonl(300, start=10), signer=signer)
    storage.crash()  # the rows were fsync'd: they survive the crash
    led = Ledger.open(storage)
    assert led.size == 10
    report = verify_ledger(led)
    assert report.ok, report.failures
    assert report.uncovered_rows == 300
    assert any("removes it" in n for n in report.notes)
    rec = led.recover()
    assert (rec.rows_rolled_forward, rec.size) == (0, 10)
    assert snapshot(storage) == before  # no trace: rows, index, tiles and record gone
    led.append(sample_jsonl(300, start=10), signer=signer)  # the retry is not "already in the ledger"
    assert led.size == 310 and verify_ledger(led).ok


def test_a_torn_batch_is_rolled_back() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 10)
    before = snapshot(storage)
    storage.tear_next_append = 1000  # a kill in the middle of writing the batch
    with pytest.raises(SimulatedCrash):
        led.append(sample_jsonl(5, start=10), signer=signer_of(led))
    storage.crash(power_loss=False)  # killed: the torn bytes stay in the page cache
    led = Ledger.open(storage)
    report = verify_ledger(led)
    assert report.ok and report.torn_bytes > 0
    led.append(sample_jsonl(1, start=10), signer=signer_of(led))
    assert led.size == 11
    assert storage.read(JSONL_KEY)[: len(before[1])] == before[1]


def test_a_crash_after_signing_rolls_forward() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 10)
    steps = [s for s in _append_steps(storage, led)]
    step = next(i for i, s in enumerate(steps) if s == "write checkpoints/13")
    storage2 = MemoryStorage()
    led = Ledger.init(storage2, origin=ORIGIN)
    fill(led, 10)
    storage2.crash_at(step + 1)  # after checkpoints/13, before `checkpoint`
    with pytest.raises(SimulatedCrash):
        led.append(sample_jsonl(3, start=10), signer=signer_of(led))
    storage2.crash()
    led = Ledger.open(storage2)
    assert led.size == 10
    assert verify_ledger(led).ok
    rec = led.recover()
    assert (rec.rows_rolled_forward, rec.size) == (3, 13)
    assert verify_ledger(led).ok


def _append_steps(storage: MemoryStorage, led: Ledger) -> list[str]:
    storage.steps.clear()
    led.append(sample_jsonl(3, start=led.size), signer=signer_of(led))
    return list(storage.steps)


def test_bytes_after_the_signed_rows_without_a_record_stop_writers_and_fail_verify() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 3)
    storage.append_log(JSONL_KEY).append(b'{"not": "a row"}\n')
    data = storage.read(JSONL_KEY)
    with pytest.raises(CorruptLedgerError, match="no interrupted kfm append accounts for"):
        led.append(sample_jsonl(1, start=3), signer=signer_of(led))
    assert led.size == 3 and storage.read(JSONL_KEY) == data  # nothing cut
    report = verify_ledger(led)
    assert [f.where for f in report.failures] == [JSONL_KEY]


def test_a_missing_last_newline_is_never_cut() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 3)
    data = storage.read(JSONL_KEY)
    storage._logs[JSONL_KEY] = bytearray(data[:-1])
    led = Ledger.open(storage)
    with pytest.raises(CorruptLedgerError):
        led.append(sample_jsonl(1, start=3), signer=signer_of(led))
    assert storage.read(JSONL_KEY) == data[:-1]
    assert not verify_ledger(led).ok


def test_a_failed_append_leaves_no_trace() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 10)
    # A stray tile where the append will write: refused before any row is written.
    storage.objects[tiles.tile_path(0, 0, 12)] = b"x" * (12 * 32)
    before = snapshot(storage)
    with pytest.raises(CorruptLedgerError, match="kfm rebuild"):
        led.append(sample_jsonl(2, start=10), signer=signer_of(led))
    assert snapshot(storage) == before


def test_rebuild_recreates_index_and_tiles(disk_ledger: Ledger) -> None:
    fill(disk_ledger, 700)
    root = disk_ledger.storage.root  # type: ignore[attr-defined]
    tile_bytes = {p: p.read_bytes() for p in (root / "tile").rglob("*") if p.is_file()}
    import shutil

    shutil.rmtree(root / "tile")
    (root / "index.sqlite").unlink()
    led = Ledger.open(root)
    assert led.rebuild() == 700
    again = {p: p.read_bytes() for p in (root / "tile").rglob("*") if p.is_file()}
    assert {p: b for p, b in tile_bytes.items() if p in again} == {p: again[p] for p in tile_bytes if p in again}
    assert set(again) <= set(tile_bytes)
    assert verify_ledger(led).ok
    assert led.get(sample_row(650).lakefs_commit).index == 650


def test_private_key_is_mode_0600_and_vkey_is_public(disk_ledger: Ledger) -> None:
    import stat

    root = disk_ledger.storage.root  # type: ignore[attr-defined]
    assert stat.S_IMODE((root / "log.key").stat().st_mode) == 0o600
    assert (root / "log.vkey").read_text().startswith(ORIGIN + "+")


def test_a_corrupt_tile_is_never_built_on() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 300, 400)
    key = tiles.tile_path(1, 0, 2)
    data = bytearray(storage.objects[key])
    data[0] ^= 1
    storage.objects[key] = bytes(data)
    led = Ledger.open(storage)  # a fresh process: no cached tiles
    before = snapshot(storage)
    with pytest.raises(CorruptLedgerError, match="kfm rebuild"):
        led.append(sample_jsonl(1, start=700), signer=signer_of(led))
    assert snapshot(storage) == before
    led.rebuild()
    led.append(sample_jsonl(1, start=700), signer=signer_of(led))
    assert verify_ledger(led).ok and led.root == reference_tree(led).root()


def test_a_pending_record_that_does_not_match_the_ledger_cuts_nothing() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 3)
    storage.objects["pending-append"] = b'{"old_size": 3, "old_end": 10, "new_size": 4, "new_end": 20}\n'
    before = snapshot(storage)
    with pytest.raises(CorruptLedgerError, match="does not belong to this ledger"):
        led.append(sample_jsonl(1, start=3), signer=signer_of(led))
    assert snapshot(storage) == before
    assert not verify_ledger(led).ok


def test_a_signed_checkpoint_beyond_the_tree_is_never_signed_over() -> None:
    storage = MemoryStorage()
    led = Ledger.init(storage, origin=ORIGIN)
    fill(led, 3, 2)
    storage.objects["checkpoints/6"] = storage.objects["checkpoints/5"]  # stands for an old signature
    before = snapshot(storage)
    with pytest.raises(CorruptLedgerError, match="must not sign another"):
        led.append(sample_jsonl(1, start=5), signer=signer_of(led))
    assert snapshot(storage) == before


def test_every_proof_kind_reads_tiles_through_the_prover_factory(
    mem_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bench/bench_proofs.py --tile-cache off/on replaces Prover.hash_reader: every proof must use it.
    from kfm_ledger.log.prover import Prover

    fill(mem_ledger, 300, 20)
    library = Prover.hash_reader
    sizes: list[int] = []

    def hash_reader(self: Prover, size: int, *, stored_expansions: bool = True) -> tiles.TileHashReader:
        sizes.append(size)
        return library(self, size, stored_expansions=stored_expansions)

    monkeypatch.setattr(Prover, "hash_reader", hash_reader)
    mem_ledger.inclusion_proof(5, 300)
    assert sizes == [300]
    mem_ledger.consistency_proof(300)
    assert sizes == [300, 320]
    mem_ledger.tlog_proof(5)
    assert sizes == [300, 320, 320]
    mem_ledger.hash_reader(10)
    assert sizes == [300, 320, 320, 10]


def test_bench_tile_cache_modes_reach_every_proof_kind(mem_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    # --tile-cache off must not fill the library's cache, whichever proof kind runs.
    import importlib.util
    from pathlib import Path

    from kfm_ledger.log.prover import Prover

    path = Path(__file__).parents[2] / "bench" / "bench_proofs.py"
    spec = importlib.util.spec_from_file_location("bench_proofs", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(Prover, "hash_reader", Prover.hash_reader)  # restored after the test
    fill(mem_ledger, 300, 20)
    bench.set_tile_cache("off", 16)
    mem_ledger.consistency_proof(300)
    mem_ledger.inclusion_proof(5)
    mem_ledger.tlog_proof(5)
    assert len(mem_ledger.prover.tile_cache) == 0
    bench.set_tile_cache("on", 16)
    mem_ledger.consistency_proof(300)
    assert len(mem_ledger.prover.tile_cache) == 0 and len(bench.tile_cache_of(mem_ledger)) > 0
    bench.set_tile_cache("library", 16)
    mem_ledger.consistency_proof(300)
    assert len(mem_ledger.prover.tile_cache) > 0


def test_a_ledger_dropped_without_close_is_freed_at_once(tmp_path) -> None:
    # No reference cycle: reference counting alone frees it, and with it its open files.
    import gc
    import os
    import weakref

    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        pytest.skip("needs /proc/self/fd")
    fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 300).close()
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir(fds))
        led = Ledger.open(tmp_path / "l")
        led.get(led.entry(3).row.lakefs_commit)  # the commit index open
        led.tlog_proof(3)
        led.consistency_proof(100)
        assert len(os.listdir(fds)) > before
        alive = weakref.ref(led)
        del led
        assert alive() is None
        assert len(os.listdir(fds)) == before
    finally:
        if was_enabled:
            gc.enable()


def test_split_lines_lives_beside_its_readers_not_in_the_key_layout() -> None:
    from kfm_ledger.log import layout
    from kfm_ledger.log.lines import split_lines

    assert not hasattr(layout, "split_lines")  # layout.py names storage keys only
    chunks = iter([b"ab\nc", b"d\n", b"\n", b"torn"])
    assert list(split_lines(chunks)) == [(b"ab", True), (b"cd", True), (b"", True), (b"torn", False)]
