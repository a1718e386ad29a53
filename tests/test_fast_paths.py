"""The bulk paths' shortcuts give exactly what the general paths give.

* the canonical-line fast path (:func:`schema.canonical_line_fields`) accepts only
  lines the general path accepts unchanged;
* workers reading byte ranges of the input see every line exactly once;
* the deferred UNIQUE index finds the same repeats as row-by-row inserts;
* tiles written whole (and in a thread, for large batches) equal tiles written leaf by leaf;
* many immutable objects written with two file-system syncs land exactly as one by one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.errors import ImmutableObjectError, InputRejected, SchemaError
from kfm_ledger.log import append as append_module
from kfm_ledger.log import bulk, layout
from kfm_ledger.log import bulk_append as bulk_append_module
from kfm_ledger.log.expansions import EXPANSION_BYTES, _expansion_checksum, expansion_record
from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.tile_writer import write_tiles
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.storage import local as local_storage
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of

LINES = [encode_row(sample_row(i)) for i in range(40)]


def general(line: bytes) -> tuple[bytes, str, str] | None:
    """What the general path makes of a line: (canonical, commit, created_at), or None if refused."""
    try:
        canonical = schema.canonicalize(line)
    except SchemaError:
        return None
    row = schema.decode_row(canonical)
    return canonical, row.lakefs_commit, row.created_at


def test_the_fast_path_takes_canonical_sample_rows() -> None:
    for line in LINES:
        row = schema.decode_row(line)
        assert schema.canonical_line_fields(line) == (row.lakefs_commit, row.created_at)


@pytest.mark.parametrize(
    "old, new",
    [
        (b'"kwh":', b'"kwh":-'),  # negative
        (b'"created_at":"2025-01-01', b'"created_at":"2025-02-30'),  # no such day
        (b'"created_at":"2025-01-01', b'"created_at":"2023-02-29'),  # not a leap year
        (b'"lakefs_branch":"', b'"lakefs_branch":" '),  # leading space
        (b'"producer":"', b'"producer":"x\\"'),  # an escape: general path
        (b'.tar.zst"', b'.tar.gz"'),  # the bundle rule
        (b'"checksums":{"artifact_sha256":"', b'"checksums":{"artifact_sha256":"A'),
        (b'{"lakefs_repo"', b'{ "lakefs_repo"'),  # not compact
    ],
)
def test_the_fast_path_declines_what_it_cannot_prove(old: bytes, new: bytes) -> None:
    line = LINES[3].replace(old, new, 1)
    assert line != LINES[3]
    assert schema.canonical_line_fields(line) is None


@pytest.mark.parametrize("number", [b"2.50", b"1e-05", b"0.00001", b"1.0", b"0.0", b"2.5000000000000001"])
def test_numbers_take_the_fast_path_only_in_canonical_spelling(number: bytes) -> None:
    line = LINES[0].replace(b'"kwh":' + LINES[0].split(b'"kwh":')[1].split(b",")[0], b'"kwh":' + number, 1)
    fast = schema.canonical_line_fields(line)
    expected = general(line)
    # Both paths agree in every case: the fast path answers exactly for the canonical spellings.
    canonical = number in (b"0.00001", b"1.0", b"0.0")
    assert (fast is not None) == canonical, (number, fast)
    assert (expected is not None and expected[0] == line) == canonical, (number, expected)
    if fast is not None:
        assert expected == (line, *fast)


_MUTATION_BYTES = b'"\\ ,:{}[]-.0123456789aAzZ/_@\x00\x7f\xc3\xa9T'


@settings(max_examples=400, deadline=None)
@given(
    which=st.integers(0, len(LINES) - 1),
    edits=st.lists(
        st.tuples(
            st.integers(0, 2000),
            st.sampled_from(["insert", "delete", "replace"]),
            st.sampled_from(list(_MUTATION_BYTES)),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fast_path_acceptance_implies_the_general_path_keeps_the_line(which: int, edits: list) -> None:
    line = bytearray(LINES[which])
    for at, op, byte in edits:
        at %= len(line) + 1
        if op == "insert":
            line[at:at] = bytes([byte])
        elif at < len(line):
            if op == "delete":
                del line[at]
            else:
                line[at] = byte
    line = bytes(line)
    fast = schema.canonical_line_fields(line)
    expected = general(line)
    if fast is not None:
        assert expected is not None, line
        assert expected == (line, *fast)
    elif expected is not None and expected[0] == line and line.isascii() and b"\\" not in line:
        # A canonical ASCII line without escapes is one the fast path must answer for
        # (the unedited line included); only a number written with an exponent is left to
        # the general path.
        assert re.search(rb'"(?:kwh|co2e_kg)":[0-9.]*e', line), line


@settings(max_examples=200, deadline=None)
@given(fraction=st.text("0123456789", min_size=0, max_size=6), other=st.text("0123456789", min_size=0, max_size=6))
def test_created_at_order_key_orders_like_the_instants(fraction: str, other: str) -> None:
    a = "2025-01-01T00:00:00" + (f".{fraction}" if fraction else "") + "Z"
    b = "2025-01-01T00:00:00" + (f".{other}" if other else "") + "Z"
    ta, tb = schema.parse_created_at(a), schema.parse_created_at(b)
    by_time = (ta > tb) - (ta < tb)
    ka, kb = schema.created_at_order_key(a), schema.created_at_order_key(b)
    assert by_time == (ka > kb) - (ka < kb)


@settings(max_examples=60, deadline=None)
@given(
    chunk=st.integers(1, 3000),
    blank=st.sets(st.integers(0, 29), max_size=5),
    bom=st.booleans(),
    newline_at_end=st.booleans(),
)
def test_byte_ranges_give_every_line_once(
    tmp_path_factory, chunk: int, blank: set[int], bom: bool, newline_at_end: bool
) -> None:
    lines = [b"" if i in blank else LINES[i] for i in range(30)]
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    path = tmp_path_factory.mktemp("ranges") / "in.jsonl"
    path.write_bytes(data)
    start = 3 if bom else 0
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = [
            bulk.read_lines_in_range(fd, s, min(s + chunk, len(data)), start) for s in range(start, len(data), chunk)
        ]
    finally:
        os.close(fd)
    assert b"".join(pieces) == data[start:]
    with bulk.SpooledInput(str(path), start=start, workers=1, chunk_bytes=chunk) as spooled:
        results = list(spooled.results())
        rows = [(n, c) for r in results for n, c in zip(r.lines, r.commits)]
        assert rows == [(i + 1, sample_row(i).lakefs_commit) for i in range(30) if i not in blank]
        assert sum(r.line_count for r in results) == len(lines) - (1 if not newline_at_end and not lines[-1] else 0)
        out = bytearray()
        for r in results:
            spooled.copy(r.spool, out.extend)
        assert bytes(out) == b"".join(LINES[i] + b"\n" for i in range(30) if i not in blank)


@pytest.fixture
def bulk_path(monkeypatch) -> None:
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 16 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)


def ledger_files(root: Path) -> dict[str, bytes]:
    """Every file of a ledger but its derived commit index."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "index.sqlite" not in p.name
    }


@pytest.mark.parametrize("overlap", [True, False], ids=["checks-while-writing", "checks-first"])
@pytest.mark.parametrize("deferred", [True, False])
def test_repeats_are_found_with_the_index_deferred_or_not(
    tmp_path: Path, bulk_path, monkeypatch, deferred: bool, overlap: bool
) -> None:
    """A large batch builds its deferred UNIQUE index while its rows, tiles and bundles are
    written (``overlap``): a repeat found then undoes every one of those writes."""
    monkeypatch.setattr(bulk_append_module, "DEFER_UNIQUE_BYTES_PER_ROW", 1 if deferred else 1 << 40)
    monkeypatch.setattr(append_module, "OVERLAP_TILES_AT", 1 if overlap else 1 << 40)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    before = (tmp_path / "l" / JSONL_KEY).read_bytes()
    files_before = ledger_files(tmp_path / "l")
    lines = sample_jsonl(200, start=10).splitlines()
    late = lambda i: encode_row(msgspec.structs.replace(sample_row(i), created_at="2031-01-01T00:00:00Z"))  # noqa: E731
    lines += [late(3), late(50)]  # line 201 repeats ledger row 3, line 202 batch line 41
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputRejected) as e:
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2)
    problems = {(p.line, p.path): p.message for p in e.value.problems}
    assert set(problems) == {(201, "$.lakefs_commit"), (202, "$.lakefs_commit")}
    assert "already in the ledger at index 3" in problems[(201, "$.lakefs_commit")]
    assert "also on line 41" in problems[(202, "$.lakefs_commit")]
    assert (tmp_path / "l" / JSONL_KEY).read_bytes() == before
    assert ledger_files(tmp_path / "l") == files_before  # no row, tile, bundle or record left behind
    # And the index still works afterwards (the rolled-back transaction restored it).
    assert led.get(sample_row(7).lakefs_commit).index == 7
    (tmp_path / "ok.jsonl").write_bytes(b"\n".join(lines[:-2]) + b"\n")
    assert led.append_file(tmp_path / "ok.jsonl", signer=signer_of(led), workers=2).count == 200
    assert verify_ledger(led).ok
    with pytest.raises(InputRejected):
        row = msgspec.structs.replace(sample_row(150), created_at="2032-01-01T00:00:00Z")
        led.append(encode_row(row), signer=signer_of(led))


@pytest.mark.parametrize("count", [1, 255, 256, 257, 600, 65536 + 300])
def test_tiles_written_whole_equal_the_tree(tmp_path: Path, count: int) -> None:
    """Every tile written (full and the right-edge partials) holds the tree's node hashes."""
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(count)]
    tree = merkle.MemoryTree(leaves)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    written: dict[str, bytes] = {}
    tiled = write_tiles(led, 0, b"".join(leaves), written.update, None)
    new_size, root, completed = tiled.size, tiled.root, tiled.completed
    assert (new_size, root) == (count, tree.root())
    expected: dict[str, bytes] = {}
    for level, index, width in tiles.tiles_for_size(count):
        nodes = [(8 * level, index * 256 + k) for k in range(width)]
        expected[tiles.tile_path(level, index, width)] = b"".join(tree.read_node_hashes(nodes))
    full = {k: v for k, v in written.items() if ".p/" not in k}
    assert {k: v for k, v in expected.items() if ".p/" not in k} == full
    assert all(expected[k] == v for k, v in written.items() if ".p/" in k and k in expected)
    assert {k for k in written if ".p/" in k} == {k for k in expected if ".p/" in k}
    assert len(completed) == len(full)


def test_a_large_batch_writes_tiles_alongside_its_rows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(append_module, "OVERLAP_TILES_AT", 1)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 300, 20)
    assert verify_ledger(led).ok
    assert led.size == 320


def test_a_failed_row_write_waits_for_the_tiles_then_undoes_everything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(append_module, "OVERLAP_TILES_AT", 1)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 10)
    before = {
        str(p.relative_to(tmp_path)): p.read_bytes()
        for p in sorted((tmp_path / "l").rglob("*"))
        if p.is_file() and "index.sqlite" not in p.name
    }

    def broken(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(led._jsonl, "append", broken)
    with pytest.raises(OSError):
        led.append(sample_jsonl(600, start=10), signer=signer_of(led))
    after = {
        str(p.relative_to(tmp_path)): p.read_bytes()
        for p in sorted((tmp_path / "l").rglob("*"))
        if p.is_file() and "index.sqlite" not in p.name
    }
    assert after == before
    monkeypatch.undo()
    assert verify_ledger(Ledger.open(tmp_path / "l")).ok


def test_many_immutable_objects_with_two_syncs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(local_storage, "_SYNCFS_AT", 4)
    calls = []
    real = local_storage._syncfs_function()
    assert real is not None
    monkeypatch.setattr(local_storage, "_SYNCFS", lambda path: (calls.append(path), real(path)))
    store = local_storage.LocalStorage(tmp_path / "s")
    items = [(f"tile/0/{i:03d}", os.urandom(64)) for i in range(10)]
    store.write_once(items[0][0], items[0][1])  # one already there with the same bytes
    store.write_once_many(items)
    assert len(calls) == 2
    assert all(store.read(k) == v for k, v in items)
    assert not [p for p in (tmp_path / "s").rglob("*") if ".kfm-tmp." in p.name]
    with pytest.raises(ImmutableObjectError):
        store.write_once_many([(f"tile/0/x{i}", b"new") for i in range(5)] + [(items[3][0], b"other bytes")])
    assert not store.exists("tile/0/x0")  # refused before anything was written


def test_an_index_of_the_previous_layout_is_rebuilt(tmp_path: Path) -> None:
    """Index schema 1 had an inline UNIQUE constraint (which cannot be dropped): rebuilt on open."""
    import sqlite3

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 20)
    led.close()
    conn = sqlite3.connect(tmp_path / "l" / "index.sqlite")
    conn.executescript(
        "DROP INDEX entries_commit; CREATE TABLE old AS SELECT leaf, lakefs_commit, offset, length, created_at "
        "FROM entries; DROP TABLE entries; DROP TABLE seal; "
        "CREATE TABLE entries (leaf INTEGER PRIMARY KEY, lakefs_commit TEXT NOT NULL UNIQUE, "
        "offset INTEGER NOT NULL, length INTEGER NOT NULL, created_at TEXT NOT NULL); "
        "INSERT INTO entries SELECT * FROM old; DROP TABLE old; "
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.commit()
    conn.close()
    led = Ledger.open(tmp_path / "l")
    assert led.get(sample_row(7).lakefs_commit).index == 7
    fill(led, 5)
    assert verify_ledger(led).ok
    conn = sqlite3.connect(tmp_path / "l" / "index.sqlite")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'entries_commit'").fetchone() == (1,)
    conn.close()


def test_the_right_edge_is_reused_only_for_the_tree_it_was_written_for(tmp_path: Path, monkeypatch) -> None:
    a = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(a, 300)
    b = Ledger.open(tmp_path / "l")
    reads: list[int | None] = []
    real = Ledger.hash_reader

    def counting(self, size=None):  # type: ignore[no-untyped-def]
        if size is not None:  # write_tiles reading the right edge at the old size
            reads.append(size)
        return real(self, size)

    monkeypatch.setattr(Ledger, "hash_reader", counting)
    fill(a, 1)  # a wrote the tiles for size 300: no right edge read
    assert reads == []
    b.refresh()
    fill(b, 1)  # b never wrote any: reads the right edge
    assert reads
    reads.clear()
    a.refresh()
    fill(a, 1)  # another writer moved the tree on: a's edge is stale, read again
    assert reads
    assert verify_ledger(Ledger.open(tmp_path / "l")).ok


def test_the_right_edge_is_an_immutable_value(tmp_path: Path) -> None:
    led = fill(Ledger.init(tmp_path / "l", origin=ORIGIN), 300)
    edge = led._right_edge
    assert edge is not None and (edge.size, edge.root) == (led.size, led.root)
    hash(edge)  # frozen, and every field immutable
    level0 = led.read_tile(0, 1, 44)
    level1 = led.read_tile(1, 0, 1)
    assert edge.partials == (
        (0, tuple(level0[i : i + 32] for i in range(0, 44 * 32, 32))),
        (1, (level1[:32],)),
    )
    led.close()


def test_write_once_and_publish_keeps_and_publishes_one_file(tmp_path: Path) -> None:
    store = local_storage.LocalStorage(tmp_path / "s")
    store.write_atomic("checkpoint", b"old\n")
    store.write_once_and_publish("checkpoints/5", "checkpoint", b"five\n")
    assert (store.read("checkpoints/5"), store.read("checkpoint")) == (b"five\n", b"five\n")
    assert os.path.samefile(tmp_path / "s" / "checkpoints" / "5", tmp_path / "s" / "checkpoint")
    store.write_once_and_publish("checkpoints/6", "checkpoint", b"six\n")
    assert (store.read("checkpoints/5"), store.read("checkpoint")) == (b"five\n", b"six\n")
    store.write_once_and_publish("checkpoints/6", "checkpoint", b"six\n")  # the same bytes again: fine
    with pytest.raises(ImmutableObjectError):
        store.write_once_and_publish("checkpoints/5", "checkpoint", b"other\n")
    assert store.read("checkpoint") == b"six\n"  # not published
    assert not [p for p in (tmp_path / "s").rglob("*") if ".kfm-tmp." in p.name]


def test_stored_expansions_answer_first_uses_and_give_the_same_proofs(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 600, *([1] * 300))  # tiles filled whole (bulk) and leaf by leaf (one-row appends)
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    assert store.stat().st_size == (led.size // 256) * EXPANSION_BYTES
    with_store = [led.tlog_proof(i) for i in range(0, led.size, 37)]
    reader = Ledger.open(tmp_path / "l").hash_reader(stored_expansions=True)  # nothing cached yet
    reader.read_node_hashes([(1, 5), (3, 70)])  # inner nodes of full tiles 0 and 2
    assert reader.expansions_used == 2
    plain = Ledger.open(tmp_path / "l")
    store.unlink()
    assert [plain.tlog_proof(i) for i in range(0, led.size, 37)] == with_store


def test_a_wrong_expansion_record_never_gives_a_wrong_proof(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 800)
    good = led.tlog_proof(2)  # its audit path holds node (1, 0), the first hash of record 0
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    data = bytearray(store.read_bytes())
    # A torn or flipped record fails its checksum and is not used.
    data[EXPANSION_BYTES + 100] ^= 1
    # Record 0 rewritten on purpose, with a checksum to match: wrong below its root.
    tile0 = (tmp_path / "l" / "tile" / "0" / "000").read_bytes()
    nodes = bytearray(data[: EXPANSION_BYTES - 32])
    nodes[0] ^= 1
    data[: EXPANSION_BYTES] = bytes(nodes) + _expansion_checksum(tile0, bytes(nodes))
    store.write_bytes(bytes(data))
    opened = Ledger.open(tmp_path / "l")
    reader = opened.hash_reader()
    reader.read_node_hashes([(1, 130)])  # a node inside tile 1
    # Refused by its checksum (the store counts it), so neither used nor root-checked.
    assert (reader.expansions_used, opened.prover.expansions.refused, reader.expansions_refused) == (0, 1, 0)
    fresh = Ledger.open(tmp_path / "l")
    assert fresh.tlog_proof(2) == good  # the proof built from record 0 failed its check; answered from tiles
    assert fresh.prover.expansions_trusted is False
    assert fresh.tlog_proof(300) == Ledger.open(tmp_path / "l").tlog_proof(300)


def test_a_rolled_back_append_leaves_no_expansion_records(tmp_path: Path, monkeypatch) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 300)
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    before = store.read_bytes()

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(5, "I/O error")

    monkeypatch.setattr(append_module, "sign_tree_head", broken)
    with pytest.raises(OSError):
        led.append(sample_jsonl(600, start=300), signer=signer_of(led))
    assert store.read_bytes() == before
    monkeypatch.undo()
    fill(led, 600)
    assert store.stat().st_size == 3 * EXPANSION_BYTES
    assert verify_ledger(led).ok


def test_rebuild_recreates_the_expansion_records(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 700)
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    before = store.read_bytes()
    store.write_bytes(b"junk")
    led.rebuild()
    assert store.read_bytes() == before


def test_verify_checks_the_expansion_records(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 700)
    assert verify_ledger(led).ok
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    data = bytearray(store.read_bytes())
    data[EXPANSION_BYTES + 100] ^= 1
    store.write_bytes(bytes(data))
    report = verify_ledger(Ledger.open(tmp_path / "l"))
    assert report.ok  # a torn record fails its checksum and is never used: a note, not a failure
    torn = f"{layout.EXPANSIONS_KEY}: 1 record(s) torn or stale"
    assert any(torn in n and "record 1" in n for n in report.notes), report.notes
    Ledger.open(tmp_path / "l").rebuild()
    report = verify_ledger(Ledger.open(tmp_path / "l"))
    assert report.ok and not any(layout.EXPANSIONS_KEY in n for n in report.notes)


def test_a_stored_record_never_reaches_unchecked_answers(tmp_path: Path) -> None:
    """Found in review: a record torn below its root (the file is not fsync'd) once reached
    inclusion_proof / consistency_proof, which check nothing; its checksum now stops it."""
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 800)
    truth = Ledger.open(tmp_path / "l")
    want = (truth.inclusion_proof(252), truth.consistency_proof(254))
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    data = bytearray(store.read_bytes())
    data[127 * 32] ^= 1  # node (1, 127): not on leaf 0's audit path
    store.write_bytes(bytes(data))
    led = Ledger.open(tmp_path / "l")
    led.tlog_proof(0)
    assert (led.inclusion_proof(252), led.consistency_proof(254)) == want


def test_tiles_written_in_bulk_are_world_readable_whatever_the_umask(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(local_storage, "_SYNCFS_AT", 2)
    old = os.umask(0o077)
    try:
        store = local_storage.LocalStorage(tmp_path / "s")
        store.write_once_many([(f"tile/0/00{i}", b"x" * 32) for i in range(4)])
    finally:
        os.umask(old)
    assert {oct((tmp_path / "s" / "tile" / "0" / f"00{i}").stat().st_mode & 0o777) for i in range(4)} == {"0o644"}


def test_a_rewritten_record_with_a_valid_checksum_fails_verify_and_proofs_recover(tmp_path: Path) -> None:
    """Found in review: such a record reached unchecked proofs and verify only noted it."""
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 300, 300)
    truth = Ledger.open(tmp_path / "l")
    want = (truth.inclusion_proof(2), truth.consistency_proof(300), truth.inclusion_proof(2, 300))
    tile0 = (tmp_path / "l" / "tile" / "0" / "000").read_bytes()
    levels = list(tiles.expand_tile(tile0))
    levels[1] = bytes(len(levels[1]))  # wrong inner nodes, the right root
    store = tmp_path / "l" / layout.EXPANSIONS_KEY
    data = store.read_bytes()
    store.write_bytes(expansion_record(tuple(levels)) + data[EXPANSION_BYTES :])
    led = Ledger.open(tmp_path / "l")
    assert (led.inclusion_proof(2), led.consistency_proof(300), led.inclusion_proof(2, 300)) == want
    report = verify_ledger(Ledger.open(tmp_path / "l"))
    assert not report.ok
    assert any("record 0" in f.where and "rewritten" in f.message for f in report.failures)


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs unshare and root")
def test_workers_run_when_kfm_is_pid_1(tmp_path: Path) -> None:
    """Found in review: workers of a kfm running as pid 1 (a container) killed themselves."""
    import subprocess
    import sys

    data = tmp_path / "x.jsonl"
    data.write_bytes(LINES[0] + b"\n" + LINES[1] + b"\n")
    code = (
        "import os, sys; from kfm_ledger.log import bulk; assert os.getpid() == 1; "
        f"r = list(bulk.validate_stored_file({str(data)!r}, {data.stat().st_size}, "
        "parallel=True, workers=2, chunk_bytes=64)); "
        "print(sum(x.rows for x in r))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if out.returncode != 0 and "unshare" in out.stderr:
        pytest.skip(f"unshare not permitted here: {out.stderr.strip()}")
    assert (out.returncode, out.stdout.strip()) == (0, "2"), out.stderr


@pytest.mark.parametrize(
    "old, new",
    [
        (b'Z","producer"', b'.0Z","producer"'),
        (b'Z","producer"', b'.000000Z","producer"'),
        (b'Z","producer"', b'.250000Z","producer"'),
    ],
)
def test_one_spelling_per_instant_on_both_paths(old: bytes, new: bytes) -> None:
    """created_at: no zero fraction, no trailing zeros, on the fast and the general path;
    such a stored row (from before the rule) is still read."""
    line = LINES[5].replace(old, new, 1)
    assert line != LINES[5]
    assert schema.canonical_line_fields(line) is None
    assert general(line) is None
    with pytest.raises(SchemaError, match=r"\$\.created_at"):
        schema.canonicalize(line)
    row = schema.decode_canonical_line(line)  # a stored row: read
    from kfm_ledger.schema.codec import legacy_spelling

    assert "created_at" in (legacy_spelling(row) or "")
    assert schema.decode_row(line) == row


def test_commit_ids_are_lower_case_on_both_paths() -> None:
    row = schema.decode_row(LINES[7])
    upper = LINES[7].replace(row.lakefs_commit.encode(), row.lakefs_commit.upper().encode())
    assert upper != LINES[7]
    assert schema.canonical_line_fields(upper) is None
    assert general(upper) is None
    with pytest.raises(SchemaError, match=r"\$\.lakefs_commit: .*lower-case"):
        schema.canonicalize(upper)
    stored = schema.decode_canonical_line(upper)  # a stored row: read, and named
    from kfm_ledger.schema.codec import canonical_timestamp, legacy_spelling

    assert "not lower-case" in (legacy_spelling(stored) or "")
    assert legacy_spelling(row) is None
    assert canonical_timestamp("2025-01-01T00:00:00.250000Z") == "2025-01-01T00:00:00.25Z"
    assert canonical_timestamp("2025-01-01T00:00:00.0Z") == "2025-01-01T00:00:00Z"
    assert canonical_timestamp("2025-01-01T00:00:00Z") == "2025-01-01T00:00:00Z"


@settings(max_examples=3000, deadline=None)
@given(
    st.integers(0, 10**10 - 1),
    st.text(alphabet="0123456789", min_size=0, max_size=6),
)
def test_a_short_decimal_taken_without_encoding_is_what_msgspec_writes(integer: int, fraction: str) -> None:
    """The fast path's shortcut for energy numbers (schema/fast_path._SHORT_DECIMAL, the strict
    regex's decimals) accepts only spellings that encoding the value gives back (the check it skips)."""
    from kfm_ledger.schema.fast_path import _is_short_decimal as _SHORT_DECIMAL
    from kfm_ledger.schema.rows import ENCODER

    text = f"{integer}.{fraction or '0'}".encode()
    if _SHORT_DECIMAL(text) is not None:
        assert ENCODER.encode(float(text)) == text
    for edge in (b"0.0", b"0.00001", b"9999999999.99999", b"5.0"):
        assert _SHORT_DECIMAL(edge) is not None and ENCODER.encode(float(edge)) == edge
    for refused in (b"0.10", b"1.000000", b"0.000001", b"10000000000.5", b"00.5", b"1e5"):
        assert _SHORT_DECIMAL(refused) is None



@pytest.mark.parametrize("year", [2023, 2024, 2000, 1900])
def test_the_strict_regex_knows_the_calendar(year: int) -> None:
    """Every month-day of a year: the strict regex, the fast path as a whole and the general
    path each take exactly the real dates."""
    import calendar

    from kfm_ledger.schema.fast_path import strict_canonical_line

    line = LINES[5]
    at = line.index(b'"created_at":"') + len(b'"created_at":"')
    for month in range(1, 13):
        for day in range(1, 32):
            dated = line[:at] + b"%04d-%02d-%02d" % (year, month, day) + line[at + 10 :]
            real = day <= calendar.monthrange(year, month)[1]
            assert (strict_canonical_line(dated) is not None) == real, (month, day)
            assert (schema.canonical_line_fields(dated) is not None) == real, (month, day)
            assert (general(dated) is not None) == real, (month, day)


def test_the_strict_regex_takes_february_29_in_exactly_the_leap_years() -> None:
    """Every year from 0001 to 9999 (0000 is no year of the schema): February 29 matches the
    strict regex exactly when the calendar has it (the rule of 4, 100 and 400)."""
    import calendar

    from kfm_ledger.schema.fast_path import strict_canonical_line

    line = LINES[5]
    at = line.index(b'"created_at":"') + len(b'"created_at":"')
    for year in range(0, 10000):
        dated = line[:at] + b"%04d-02-29" % year + line[at + 10 :]
        assert (strict_canonical_line(dated) is not None) == (year > 0 and calendar.isleap(year)), year
    for sample in (4, 96, 100, 400, 1600, 1700, 2000, 2100, 2400, 9996):
        dated = line[:at] + b"%04d-02-29" % sample + line[at + 10 :]
        assert (general(dated) is not None) == calendar.isleap(sample), sample


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.integers(0, len(LINES) - 1),
            st.integers(0, 2000),
            st.sampled_from([b"", b"\n", b"x", b"\\", b" ", b"\xff"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_the_strict_findall_over_a_chunk_finds_exactly_the_lines_the_strict_regex_matches(
    picks: list[tuple[int, int, bytes]],
) -> None:
    """A bulk worker finds its chunk's rows with one findall (``strict_canonical_rows``) and takes
    the chunk whole when there are as many as lines: that holds only if the findall yields, in
    order, the (commit, created) of exactly the lines the strict ``fullmatch`` takes, whatever the
    other lines hold (a newline cut in, a stray byte)."""
    from kfm_ledger.schema.fast_path import strict_canonical_line, strict_canonical_rows

    lines = []
    for which, at, extra in picks:
        line = LINES[which]
        at %= len(line) + 1
        lines.append(line[:at] + extra + line[at:])
    data = b"\n".join(lines) + b"\n"
    expected = [m.group("commit", "created") for m in map(strict_canonical_line, data.split(b"\n")[:-1]) if m]
    assert strict_canonical_rows(data) == expected


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(LINES) - 1), at=st.integers(0, 2000), byte=st.sampled_from([0x5C, *range(0x80, 0x100)]))
def test_no_line_with_a_backslash_or_a_byte_beyond_ascii_takes_the_fast_path(which: int, at: int, byte: int) -> None:
    """The regexes' classes exclude both (an escape, or a string whose characters are not its
    bytes): such a line is the general path's, whatever position the byte is at."""
    from kfm_ledger.schema.fast_path import strict_canonical_line

    line = bytearray(LINES[which])
    at %= len(line)
    for edited in (line[:at] + bytes([byte]) + line[at:], line[:at] + bytes([byte]) + line[at + 1 :]):
        assert strict_canonical_line(bytes(edited)) is None
        assert schema.canonical_line_bytes(bytes(edited)) is None


@settings(max_examples=400, deadline=None)
@given(
    st.tuples(st.integers(0, 3), st.text("0123456789", max_size=6)),
    st.tuples(st.integers(0, 3), st.text("0123456789", max_size=6)),
)
def test_canonical_timestamps_without_their_z_sort_as_their_instants(a: tuple, b: tuple) -> None:
    """The bulk path's order check (log/bulk._note_backwards) compares created_at[:-1]: for the
    one spelling of each instant (no trailing zeros), that is the order of the instants."""
    from kfm_ledger.schema.codec import canonical_timestamp
    from kfm_ledger.schema.timestamps import timestamp_to_datetime

    def spelled(second: int, fraction: str) -> str:
        return canonical_timestamp(f"2025-01-01T00:00:0{second}" + (f".{fraction}" if fraction else "") + "Z")

    x, y = spelled(*a), spelled(*b)
    assert (x[:-1] < y[:-1]) == (timestamp_to_datetime(x) < timestamp_to_datetime(y))
    assert (x[:-1] < y[:-1]) == (schema.created_at_order_key(x) < schema.created_at_order_key(y))


def test_a_chunk_of_canonical_lines_gives_what_the_line_by_line_path_gives() -> None:
    """validate_input_chunk's C-level path (every line canonical) and its line-by-line path
    (taken here because of one trailing blank line) agree, backwards rows included."""
    lines = [encode_row(sample_row(i)) for i in (0, 1, 2, 5, 3, 4, 9, 8)]  # created_at goes back twice
    data = b"\n".join(lines) + b"\n"
    fast, slow = bulk.validate_input_chunk(7, data), bulk.validate_input_chunk(7, data + b"\n")
    assert fast.canonical is data
    assert slow.canonical == data
    assert fast.backwards and fast.backwards == slow.backwards
    for name in ("rows", "commit_text", "created_text", "lines", "lengths", "leaf_hashes", "first_created",
                 "last_created", "problems"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast.leaf_hashes == b"".join(merkle.leaf_hash(line) for line in lines)
    assert slow.line_count == fast.line_count + 1


# Characters that sit on the rules' edges: whitespace of every kind, C0 and DEL, the URI and ref
# punctuation, both cases, digits.
_FIELD_ALPHABET = " \t\n\x0b\x0c\r\x1c\x1f\x00\x7f/:.-_@~^aAzZ09fgs3"
_FIELD_PREFIXES = ["", "s3://", "s3://kfm-b/", "https://h.example/", "https://h:8080/", "lakefs://r@main", "lakefs://r@"]


@settings(max_examples=600, deadline=None)
@given(
    field=st.sampled_from(sorted(schema.rules.STRING_RULES)),
    prefix=st.sampled_from(_FIELD_PREFIXES),
    text=st.text(_FIELD_ALPHABET, max_size=12),
    suffix=st.sampled_from(["", " ", "\t", "a", "/", ".tar.zst"]),
)
def test_each_fields_fast_form_takes_exactly_what_its_rule_takes(
    field: str, prefix: str, text: str, suffix: str
) -> None:
    """The fast path's form of a rule (schema/fast_path._inline_json: its classes given the
    quote, the backslash and bytes beyond ASCII to refuse, ``\\s`` written as the space, the text
    rule as a look-behind) matches, as the inside of a JSON string, exactly the ASCII strings
    without a quote or backslash that the rule itself matches."""
    from kfm_ledger.schema import fast_path

    value = prefix + text + suffix
    rule = schema.rules.STRING_RULES[field].pattern
    fast = re.compile((fast_path._inline_json(field) + '"').encode("ascii"))
    assert (fast.fullmatch(value.encode("ascii") + b'"') is not None) == (re.match(rule, value) is not None), value


def test_the_regex_rewrites_keep_their_shapes() -> None:
    """The two rewrites that make the row regex faster touch only what they are for."""
    from kfm_ledger.schema.fast_path import _optional_groups_as_branches, _space_as_byte, _text_form

    assert _optional_groups_as_branches(r"a(?:b(?:c)?)?d") == r"a(?:b(?:c|)|)d"
    # capturing groups, lazy and possessive quantifiers, other quantifiers, escapes and classes kept
    kept = [r"(?P<g>a)?", r"(?:a)??", r"(?:a)?+", r"(?:a)*", r"\(?:a\)?", r"[(?:a)?]", r"(?=a)?"]
    for pattern in kept:
        assert _optional_groups_as_branches(pattern) == pattern, pattern
    x, y = r"[^a\x20\x00-\x1f]", r"[^a\x00-\x1f]"
    assert _text_form(f"{x}(?:{y}*{x})?") == f"{x}{y}*(?<!\\x20)"
    other = r"[^ab\x00-\x1f]"  # X not Y without the space: left alone
    assert _text_form(f"{other}(?:{y}*{other})?") == f"{other}(?:{y}*{other})?"
    ranged = r"[^a\x20-\x2f\x00-\x1f]"  # the space as the start of a range: left alone
    assert _text_form(f"{ranged}(?:{y}*{ranged})?") == f"{ranged}(?:{y}*{ranged})?"
    # \s is rewritten escape by escape: an escaped backslash followed by "s" is not \s
    assert _space_as_byte(r"[^\s\x00-\x1f]") == r"[^\x20\x00-\x1f]"
    assert _space_as_byte(r"[^\\s\x00-\x1f]") == r"[^\\s\x00-\x1f]"


_STORED_FIELDS = ("line_count", "rows", "commit_text", "created_text", "lines", "lengths", "line_lengths",
                  "leaf_hashes", "first_created", "last_created", "problems")


@settings(max_examples=200, deadline=None)
@given(
    order=st.lists(st.integers(0, 39), min_size=1, max_size=12),
    edit=st.sampled_from([None, b" ", b"\\", b"x", b"\n"]),
    at=st.integers(0, 2000),
    newline_at_end=st.booleans(),
    legacy=st.sampled_from([None, "commit", "created_at"]),
)
def test_a_stored_chunk_checked_whole_gives_what_the_line_by_line_loop_gives(
    order: list[int], edit: bytes | None, at: int, newline_at_end: bool, legacy: str | None
) -> None:
    """`kfm verify`'s workers check a chunk of stored lines with one findall when every line is
    canonical and created_at never goes back; the result (rows, line numbers, lengths, leaf
    hashes, commits, created_at values, problems) is the loop's, whatever the chunk holds:
    rows out of order, an edited line, a torn last line, a row stored with a spelling that only
    older rows may have (an upper-case commit, a fraction with a trailing zero)."""
    lines = [LINES[k] for k in order]
    if legacy is not None:
        k = at % len(lines)
        row = schema.decode_row(lines[k])
        if legacy == "commit":
            lines[k] = lines[k].replace(row.lakefs_commit.encode(), row.lakefs_commit.upper().encode())
        else:
            spelled = row.created_at[:-1] + ("0Z" if "." in row.created_at else ".0Z")
            lines[k] = lines[k].replace(row.created_at.encode(), spelled.encode(), 1)
        stored = schema.decode_canonical_line(lines[k])  # still a row a ledger may hold
        assert (stored.lakefs_commit, stored.created_at) != (row.lakefs_commit, row.created_at)
    if edit is not None:
        k = at % len(lines)
        cut = at % (len(lines[k]) + 1)
        lines[k] = lines[k][:cut] + edit + lines[k][cut:]
    data = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    whole = bulk.validate_stored_chunk(5, data)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(bulk, "strict_canonical_rows", lambda _data: [])
        by_line = bulk.validate_stored_chunk(5, data)
    for name in _STORED_FIELDS:
        assert getattr(whole, name) == getattr(by_line, name), name


def test_a_stored_chunk_of_canonical_rows_in_order_is_checked_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual chunk takes the whole-chunk way: no line goes through the per-line fast path."""
    data = b"".join(line + b"\n" for line in LINES)

    def per_line(_line: bytes) -> None:
        raise AssertionError("a line was checked on its own")

    monkeypatch.setattr(schema, "canonical_line_fields", per_line)
    result = bulk.validate_stored_chunk(1, data)
    assert result.rows == len(LINES) and not result.problems
    assert result.commit_text.split("\n") == [schema.decode_row(line).lakefs_commit for line in LINES]
