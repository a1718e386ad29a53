"""Entry bundles (c2sp.org/tlog-tiles "Log entries") written by appends, bulk appends and rebuild,
and read back through the library API (kfm_ledger.log.entries)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.core import tiles
from kfm_ledger.core.entry_bundle import bundle_width, decode_entry_bundle, encode_entry_bundle
from kfm_ledger.errors import CorruptLedgerError, InputRejected, KfmError
from kfm_ledger.log import bulk, entries
from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage import MemoryStorage
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of


def bundle_keys(led: Ledger) -> list[str]:
    return sorted(led.storage.list("tile/entries/"))


def second_reading(data: bytes) -> list[bytes]:
    """An independent decoder (struct, not the codec): uint16 big-endian length, then bytes."""
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        assert len(out[-1]) == n
        pos += 2 + n
    return out


def rows_of(led: Ledger) -> list[bytes]:
    return list(led.iter_lines())


# ------------------------------------------------------------------ pure helpers


def test_bundles_changed_lists_the_new_full_and_edge_bundles() -> None:
    assert entries.bundles_changed(0, 1) == [(0, 1)]
    assert entries.bundles_changed(3, 300) == [(0, 256), (1, 44)]
    assert entries.bundles_changed(256, 512) == [(1, 256)]
    assert entries.bundles_changed(300, 301) == [(1, 45)]
    assert entries.bundles_changed(5, 5) == []


def test_edge_bundle_key() -> None:
    assert entries.edge_bundle_key(0) is None
    assert entries.edge_bundle_key(1) == "tile/entries/000.p/1"
    assert entries.edge_bundle_key(256) == "tile/entries/000"
    assert entries.edge_bundle_key(257) == "tile/entries/001.p/1"


@settings(max_examples=60, deadline=None)
@given(
    old=st.lists(st.binary(max_size=40), max_size=300),
    new=st.lists(st.lists(st.binary(max_size=40), max_size=300), min_size=1, max_size=4),
)
def test_batch_bundles_are_the_bundles_of_the_whole_tree(old: list[bytes], new: list[list[bytes]]) -> None:
    """Property: the bundles a batch creates equal the bundles computed from all entries at once."""
    old_size = len(old)
    head_entries = old[old_size - old_size % 256 :]
    head = encode_entry_bundle(head_entries) if head_entries else b""
    pieces = [p for batch in new for p in entries.encode_pieces(batch)]
    got = dict(entries.batch_bundles(old_size, head, pieces))
    everything = old + [e for batch in new for e in batch]
    size = len(everything)
    want = {}
    for index, width in entries.bundles_changed(old_size, size):
        want[tiles.entries_path(index, width)] = encode_entry_bundle(everything[index * 256 : index * 256 + width])
    assert got == want
    for key, data in got.items():
        index, width = tiles.parse_entries_path(key)
        assert second_reading(data) == everything[index * 256 : index * 256 + width]


def test_batch_bundles_refuses_a_piece_whose_lengths_do_not_match() -> None:
    with pytest.raises(ValueError, match="lengths say"):
        list(entries.batch_bundles(0, b"", [(b"\x00\x01a", [2])]))


# ------------------------------------------------------------------ appends


def test_every_append_writes_the_bundles_of_its_rows(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 3)
    assert bundle_keys(mem_ledger) == ["tile/entries/000.p/3"]
    fill(mem_ledger, 300)  # fills bundle 0: its partials go, 001.p/47 is the new edge
    assert bundle_keys(mem_ledger) == ["tile/entries/000", "tile/entries/001.p/47"]
    fill(mem_ledger, 10)  # the partial of size 303 stays for clients holding that checkpoint
    assert bundle_keys(mem_ledger) == ["tile/entries/000", "tile/entries/001.p/47", "tile/entries/001.p/57"]
    rows = rows_of(mem_ledger)
    for key in bundle_keys(mem_ledger):
        index, width = tiles.parse_entries_path(key)
        data = mem_ledger.storage.read(key)
        assert second_reading(data) == rows[index * 256 : index * 256 + width]
        assert decode_entry_bundle(data, width) == rows[index * 256 : index * 256 + width]
    assert verify_ledger(mem_ledger).ok


def test_an_entry_is_the_row_without_its_newline(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 1)
    (entry,) = decode_entry_bundle(mem_ledger.storage.read("tile/entries/000.p/1"))
    assert entry == mem_ledger.entry(0).line and not entry.endswith(b"\n")


def test_read_entries_returns_the_signed_rows_across_bundles(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 100, 300, 120)
    rows = rows_of(mem_ledger)
    assert entries.read_entries(mem_ledger, 0, 520) == rows
    assert entries.read_entries(mem_ledger, 250, 262) == rows[250:262]
    assert entries.read_entries(mem_ledger, 519, 520) == rows[519:]
    assert entries.read_entries(mem_ledger, 7, 7) == []
    with pytest.raises(ValueError):
        entries.read_entries(mem_ledger, 0, 521)


def test_a_missing_partial_bundle_falls_back_to_the_full_one(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 10, 300)
    # A reader of the checkpoint of size 10 wants 000.p/10; it was replaced by the full bundle.
    assert not mem_ledger.storage.exists("tile/entries/000.p/10")
    key, got = entries.read_bundle(mem_ledger.storage, 0, 10)
    assert key == "tile/entries/000" and got == rows_of(mem_ledger)[:10]


def test_read_bundle_names_a_missing_bundle(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 10)
    mem_ledger.storage.delete("tile/entries/000.p/10")
    with pytest.raises(CorruptLedgerError, match=r"missing entry bundle tile/entries/000\.p/10"):
        entries.read_entries(mem_ledger, 0, 10)


def test_read_entries_refuses_an_edited_bundle_naming_it(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 300)
    rows = rows_of(mem_ledger)
    edited = list(rows[:256])
    edited[5] = edited[5].replace(b'"', b"'", 1)
    mem_ledger.storage.objects["tile/entries/000"] = encode_entry_bundle(edited)  # type: ignore[attr-defined]
    with pytest.raises(CorruptLedgerError, match=r"entry 5 of entry bundle tile/entries/000 \(row 5\)"):
        entries.read_entries(mem_ledger, 0, 10)
    assert entries.read_entries(mem_ledger, 256, 300) == rows[256:]  # the other bundle is fine


def test_read_entries_refuses_a_malformed_bundle(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 10)
    mem_ledger.storage.objects["tile/entries/000.p/10"] = b"\x00\x09abc"  # type: ignore[attr-defined]
    with pytest.raises(CorruptLedgerError, match="malformed"):
        entries.read_entries(mem_ledger, 0, 10)


def test_an_append_refuses_to_extend_an_edited_edge_bundle(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 10)
    rows = rows_of(mem_ledger)
    bad = list(rows)
    bad[9] = bad[9][:-1] + b" }"
    mem_ledger.storage.objects["tile/entries/000.p/10"] = encode_entry_bundle(bad)  # type: ignore[attr-defined]
    with pytest.raises(CorruptLedgerError, match=r"entry 9 of entry bundle tile/entries/000\.p/10 \(row 9\)"):
        fill(mem_ledger, 5)
    assert mem_ledger.size == 10
    assert bundle_keys(mem_ledger) == ["tile/entries/000.p/10"]  # the append's own objects were undone
    assert not any(k.startswith("tile/0/000.p/15") for k in mem_ledger.storage.objects)  # type: ignore[attr-defined]
    mem_ledger.rebuild()
    fill(mem_ledger, 5)
    assert verify_ledger(mem_ledger).ok


def test_an_append_refuses_a_bundle_in_the_way(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 10)
    mem_ledger.storage.write_once("tile/entries/000.p/12", b"planted")
    with pytest.raises(CorruptLedgerError, match=r"tile/entries/000\.p/12 already exists beyond the signed tree"):
        fill(mem_ledger, 2)
    assert mem_ledger.size == 10


def test_a_bulk_append_writes_the_same_bundles_as_small_appends(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 100_000)  # several chunks, bundles cut across them
    small = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(small, 7, 900)
    big = Ledger.init(tmp_path / "big", origin=ORIGIN)
    try:
        fill(big, 7)
        (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(900, start=7))
        for workers in (1, 2):
            if workers == 2:  # again, with worker processes, on a fresh ledger
                big.close()
                big = Ledger.init(tmp_path / "big2", origin=ORIGIN)
                fill(big, 7)
            big.append_file(tmp_path / "rows.jsonl", signer=signer_of(big), workers=workers)
            assert big.size == 907
            got = {k: big.storage.read(k) for k in bundle_keys(big)}
            want = {k: small.storage.read(k) for k in bundle_keys(small)}
            assert got == want
            assert list(got) == ["tile/entries/000", "tile/entries/001", "tile/entries/002", "tile/entries/003.p/139"]
            assert verify_ledger(big).ok
    finally:
        big.close()


# ------------------------------------------------------------------ rebuild, older ledgers


def older_ledger(*batches: int) -> Ledger:
    """A ledger as a version before entry bundles left it: none stored."""
    led = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(led, *batches)
    for key in bundle_keys(led):
        led.storage.delete(key)
    return led


def test_a_ledger_without_bundles_verifies_with_a_note_and_appends_write_none() -> None:
    led = older_ledger(10, 300)
    report = verify_ledger(led)
    assert report.ok, report.failures
    assert any("no entry bundles" in n and "kfm rebuild" in n for n in report.notes)
    assert not entries.has_entry_bundles(led.storage, led.size)
    fill(led, 5)  # going forward only if the earlier ones exist: none written
    assert bundle_keys(led) == []
    assert verify_ledger(led).ok


def test_rebuild_adds_the_bundles_to_an_older_ledger_then_appends_write_them() -> None:
    led = older_ledger(10, 300, 5)  # signed sizes 10, 310, 315
    led.rebuild()
    assert bundle_keys(led) == ["tile/entries/000", "tile/entries/001.p/54", "tile/entries/001.p/59"]
    report = verify_ledger(led)
    assert report.ok, report.failures
    assert not any("no entry bundles" in n for n in report.notes)
    fill(led, 300)
    assert entries.read_entries(led, 0, led.size) == rows_of(led)
    assert verify_ledger(led).ok


def test_rebuild_recreates_edited_missing_and_extra_bundles(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 10, 300)
    before = {k: mem_ledger.storage.read(k) for k in bundle_keys(mem_ledger)}
    mem_ledger.storage.delete("tile/entries/000")
    mem_ledger.storage.objects["tile/entries/001.p/54"] = b"\x00\x01x"  # type: ignore[attr-defined]
    mem_ledger.storage.write_once("tile/entries/007", b"extra")
    assert not verify_ledger(mem_ledger).ok
    mem_ledger.rebuild()
    assert {k: mem_ledger.storage.read(k) for k in bundle_keys(mem_ledger)} == before
    assert verify_ledger(mem_ledger).ok


def test_recovery_removes_the_bundles_of_an_unsigned_append(mem_ledger: Ledger, monkeypatch) -> None:
    fill(mem_ledger, 10)
    from kfm_ledger.log import append as append_mod

    def refuse(*_a, **_k):
        raise OSError("signing device unplugged")

    monkeypatch.setattr(append_mod, "sign_tree_head", refuse)
    with pytest.raises(OSError):
        fill(mem_ledger, 300)
    assert bundle_keys(mem_ledger) == ["tile/entries/000.p/10"]
    assert entries.stored_bundles_beyond(mem_ledger.storage, 10) == []


def test_bundle_width_matches_the_paths_written(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 513)
    for key in bundle_keys(mem_ledger):
        index, width = tiles.parse_entries_path(key)
        assert width == bundle_width(index, 513)


def test_a_bulk_append_writing_its_tiles_in_a_thread_writes_the_bundles_too(tmp_path: Path, monkeypatch) -> None:
    """The overlapped path (tiles and bundles in a thread while the rows are copied)."""
    from kfm_ledger.log import append as append_mod

    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(append_mod, "OVERLAP_TILES_AT", 100)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    try:
        fill(led, 30)
        (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(700, start=30))
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=1)
        assert bundle_keys(led) == ["tile/entries/000", "tile/entries/001", "tile/entries/002.p/218"]
        assert entries.read_entries(led, 0, 730) == rows_of(led)
        assert verify_ledger(led).ok
    finally:
        led.close()


def test_a_bulk_append_whose_row_copy_fails_leaves_no_bundle(tmp_path: Path, monkeypatch) -> None:
    """The bundle thread waits for the copy; a copy that fails makes it stop (rows missing) and
    the append is undone whole, bundles included."""
    from kfm_ledger.log import append as append_mod

    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 100_000)
    monkeypatch.setattr(append_mod, "OVERLAP_TILES_AT", 100)
    real_copy = bulk.SpooledInput.copy_by_fd  # a local ledger's JSONL copies by descriptor
    calls = []

    def failing_copy(self, spool, append_from_fd):
        calls.append(spool)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_copy(self, spool, append_from_fd)

    monkeypatch.setattr(bulk.SpooledInput, "copy_by_fd", failing_copy)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    try:
        fill(led, 30)
        (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(700, start=30))
        with pytest.raises(OSError, match="disk full"):
            led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=1)
        assert led.size == 30
        assert bundle_keys(led) == ["tile/entries/000.p/30"]
        assert verify_ledger(led).ok
    finally:
        led.close()


def test_pieces_from_lines_requires_every_row() -> None:
    got = list(entries.pieces_from_lines(iter([b"ab\nc", b"d\n"]), 2))
    assert got == [(b"\x00\x02ab", [2]), (b"\x00\x02cd", [2])]
    with pytest.raises(KfmError, match="are 1 whole rows and a partial one, not the 2 appended"):
        list(entries.pieces_from_lines(iter([b"ab\ncd"]), 2))
    with pytest.raises(KfmError, match="are 1 whole rows, not the 2"):
        list(entries.pieces_from_lines(iter([b"ab\n"]), 2))


# -- the bulk append's bundle writer process (log/bundle_writer.py) ---------------------------


def ledger_files(root: Path) -> dict[str, bytes]:
    """Every file of a ledger (temporary files included) but its derived commit index."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "index.sqlite" not in p.name
    }


@pytest.fixture
def bulk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 100_000)


def test_a_bulk_append_writes_its_bundles_in_a_child_process(tmp_path: Path, bulk_path, monkeypatch) -> None:
    from kfm_ledger.log import bundle_writer

    started: list[int] = []
    real_init = bundle_writer.BundleWriter.__init__

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_init(self, *args, **kwargs)
        started.append(self._pid)

    monkeypatch.setattr(bundle_writer.BundleWriter, "__init__", init)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    try:
        fill(led, 30)
        (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(700, start=30))
        assert led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2).count == 700
        assert len(started) == 1 and started[0] != 0
        assert bundle_keys(led) == ["tile/entries/000", "tile/entries/001", "tile/entries/002.p/218"]
        assert verify_ledger(led).ok
        assert not [name for name in ledger_files(tmp_path / "l") if ".kfm-tmp." in name]
    finally:
        led.close()


@pytest.mark.parametrize("refused", ["third pipe", "fork"])
def test_a_bundle_writer_that_cannot_start_closes_the_pipes_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """A pipe or the fork refused (EMFILE, EAGAIN): the error reaches the caller and no
    descriptor of the pipes already made is left open."""
    import errno

    from kfm_ledger.log import bundle_writer

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    try:
        real_pipe, pipes = os.pipe, []

        def pipe() -> tuple[int, int]:
            if refused == "third pipe" and len(pipes) == 2:
                raise OSError(errno.EMFILE, "Too many open files")
            pipes.append(real_pipe())
            return pipes[-1]

        def fork() -> int:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

        monkeypatch.setattr(bundle_writer.os, "pipe", pipe)
        monkeypatch.setattr(bundle_writer.os, "fork", fork)
        with pytest.raises(OSError) as raised:
            bundle_writer.BundleWriter(led, 0, None, led._jsonl.fileno())
        assert raised.value.errno == (errno.EMFILE if refused == "third pipe" else errno.EAGAIN)
        assert len(pipes) == (2 if refused == "third pipe" else 3)
        for fd in (fd for pair in pipes for fd in pair):
            with pytest.raises(OSError) as closed:
                os.fstat(fd)
            assert closed.value.errno == errno.EBADF, fd
    finally:
        led.close()


@pytest.mark.parametrize("how", ["killed", "refused"])
def test_a_bundle_writer_that_dies_or_a_refused_batch_leaves_the_ledger_as_it_was(
    tmp_path: Path, bulk_path, monkeypatch, how: str
) -> None:
    """The child killed mid-batch: the append fails naming it, nothing is signed or left behind
    (no bundle, no temporary file); a batch refused after the child wrote bundles: the same."""
    import os
    import signal
    import time

    from kfm_ledger.errors import InputRejected, StorageError
    from kfm_ledger.log import bundle_writer

    real_add = bundle_writer.BundleWriter.add
    calls: list[int] = []

    def add(self, offset, length, leaf_hashes, *ring):  # type: ignore[no-untyped-def]
        real_add(self, offset, length, leaf_hashes, *ring)
        calls.append(1)
        if how == "killed" and len(calls) == 4:
            # Once the child has a bundle in a temporary file (of its own pid), kill it.
            folder = tmp_path / "l" / "tile" / "entries"
            deadline = time.monotonic() + 10
            while not [p for p in folder.glob(".*") if ".kfm-tmp." in p.name] and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [p for p in folder.glob(".*") if ".kfm-tmp." in p.name]
            os.kill(self._pid, signal.SIGKILL)

    monkeypatch.setattr(bundle_writer.BundleWriter, "add", add)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    try:
        fill(led, 30)
        before = ledger_files(tmp_path / "l")
        data = sample_jsonl(700, start=30)
        if how == "refused":  # the last row repeats the first: found after every chunk was handed over
            data += data.splitlines()[0] + b"\n"
        (tmp_path / "rows.jsonl").write_bytes(data)
        expected = StorageError if how == "killed" else InputRejected
        with pytest.raises(expected, match="entry bundle writer process died" if how == "killed" else "line 701"):
            led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2)
        assert len(calls) > 2
        assert led.size == 30
        assert ledger_files(tmp_path / "l") == before
        assert verify_ledger(led).ok
        if how == "killed":  # the next try (a new child) goes through
            assert led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2).count == 700
    finally:
        led.close()


def _append_700_canonical_rows(tmp_path: Path) -> Ledger:
    """A ledger of 30 rows given 700 more from ``rows.jsonl`` by a bulk append (2 workers): its JSONL
    then holds exactly those bytes after the first rows, and it verifies.  Returned open."""
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 30)
    data = sample_jsonl(700, start=30)
    (tmp_path / "rows.jsonl").write_bytes(data)
    jsonl = led.storage.read(JSONL_KEY)
    assert led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2).count == 700
    assert led.storage.read(JSONL_KEY) == jsonl + data
    assert verify_ledger(led).ok
    return led


def test_canonical_input_goes_through_the_row_ring_and_an_edit_of_the_input_meanwhile_changes_nothing(
    tmp_path: Path, bulk_path, monkeypatch
) -> None:
    """Canonical input is not spooled: each chunk's rows, as its worker validated and hashed them,
    go to the row ring, from where the JSONL and the bundle writer take them.  The input file
    edited after its rows were validated changes nothing: the rows stored are the ones checked.
    Small chunks (about 40 for 8 ring slots) make every slot serve several chunks in turn."""
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 20_000)
    real_copy = bulk.SpooledInput.copy_by_fd
    sources: list[int] = []

    def copy_by_fd(self, spool, append_from_fd):  # type: ignore[no-untyped-def]
        sources.append(spool[0])
        if len(sources) == 3:  # the input's bytes change after they were validated
            with open(tmp_path / "rows.jsonl", "r+b") as f:
                f.seek(20_000 * 2 + 100)
                f.write(b"X")
        return real_copy(self, spool, append_from_fd)

    monkeypatch.setattr(bulk.SpooledInput, "copy_by_fd", copy_by_fd)
    led = _append_700_canonical_rows(tmp_path)  # the rows as validated, not as edited
    try:
        assert set(sources) == {bulk.RING_SLOT} and len(sources) > 30  # canonical rows: none spooled
        # A bad row in the second chunk: the batch is refused, every later chunk's slot given back.
        bad = sample_jsonl(700, start=730).splitlines()
        bad[30] = bad[30].replace(b'"created_at":"', b'"created_at":"x', 1)
        (tmp_path / "bad.jsonl").write_bytes(b"\n".join(bad) + b"\n")
        with pytest.raises(InputRejected, match=r"1 problem.*line 31: \$\.created_at"):
            led.append_file(tmp_path / "bad.jsonl", signer=signer_of(led), workers=2)
        assert led.size == 730 and verify_ledger(led).ok
    finally:
        led.close()


@pytest.mark.parametrize("refused", [False, True])
def test_without_a_row_ring_canonical_input_is_copied_from_the_file_and_checked_when_it_arrives(
    tmp_path: Path, bulk_path, monkeypatch, refused: bool
) -> None:
    """Where there is no row ring (no memfd_create, or refused), canonical input is copied from the input
    file itself, and the bundle writer checks every row that reaches the JSONL against the leaf
    hash its validation computed.  An input file changed between the check and the copy fails
    the append, nothing signed or left behind."""
    from kfm_ledger.errors import StorageError

    if refused:  # memfd_create there but refused (a sandbox's seccomp policy)
        def refuse(*args):  # type: ignore[no-untyped-def]
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(bulk.os, "memfd_create", refuse, raising=False)
    else:
        monkeypatch.delattr(bulk.os, "memfd_create", raising=False)
    real_copy = bulk.SpooledInput.copy_by_fd
    sources: list[int] = []

    def copy_by_fd(self, spool, append_from_fd):  # type: ignore[no-untyped-def]
        sources.append(spool[0])
        if tamper and len(sources) == 3:  # the third chunk's bytes change after they were validated
            with open(tmp_path / "rows.jsonl", "r+b") as f:
                f.seek(spool[1] + 100)
                f.write(b"X")
        return real_copy(self, spool, append_from_fd)

    monkeypatch.setattr(bulk.SpooledInput, "copy_by_fd", copy_by_fd)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    try:
        fill(led, 30)
        before = ledger_files(tmp_path / "l")
        (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(700, start=30))
        tamper = True
        with pytest.raises(StorageError, match="input file changed while it was appended"):
            led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2)
        assert set(sources) == {bulk.INPUT_SLOT}  # canonical rows: none spooled
        assert led.size == 30 and ledger_files(tmp_path / "l") == before
        tamper = False
        (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(700, start=30))
        assert led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2).count == 700
        assert verify_ledger(led).ok
        # Input that is not canonical as given is spooled (its canonical form is what is stored).
        sources.clear()
        spaced = b"\n".join(line.replace(b'":', b'": ', 1) for line in sample_jsonl(300, start=730).splitlines())
        (tmp_path / "spaced.jsonl").write_bytes(spaced + b"\n")
        assert led.append_file(tmp_path / "spaced.jsonl", signer=signer_of(led), workers=2).count == 300
        assert sources and bulk.INPUT_SLOT not in sources
        assert verify_ledger(led).ok
    finally:
        led.close()


def test_a_chunk_its_ring_slot_refuses_is_copied_from_the_input_and_checked(
    tmp_path: Path, bulk_path, monkeypatch
) -> None:
    """A write into the row ring that fails (its memory refused: ENOMEM, ENOSPC under a memory
    limit) sends that chunk the input-file way, checked by the bundle writer; so do more workers
    than the ring has slots for."""
    import errno

    real_pwrite_all = bulk._pwrite_all
    writes = [0]

    def pwrite_all(fd, data, offset):  # type: ignore[no-untyped-def]
        writes[0] += 1
        if writes[0] % 4 == 1:  # (in each worker: its first chunk's, then every fourth write)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite_all(fd, data, offset)

    monkeypatch.setattr(bulk, "_pwrite_all", pwrite_all)
    real_copy = bulk.SpooledInput.copy_by_fd
    sources: list[int] = []

    def copy_by_fd(self, spool, append_from_fd):  # type: ignore[no-untyped-def]
        sources.append(spool[0])
        return real_copy(self, spool, append_from_fd)

    monkeypatch.setattr(bulk.SpooledInput, "copy_by_fd", copy_by_fd)
    _append_700_canonical_rows(tmp_path).close()
    assert set(sources) == {bulk.RING_SLOT, bulk.INPUT_SLOT}
    with bulk.SpooledInput(str(tmp_path / "rows.jsonl"), workers=2) as two, bulk.SpooledInput(
        str(tmp_path / "rows.jsonl"), workers=7
    ) as seven:
        assert (two.ring_fd >= 0) == hasattr(os, "memfd_create") and seven.ring_fd == -1


def test_the_row_ring_hands_out_its_slots_in_turn_and_waits_for_a_busy_one() -> None:
    import threading

    if not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create here")
    ring = bulk._RowRing(3, 4096)
    try:
        assert os.fstat(ring.fd).st_size == 3 * 4096
        assert [ring.acquire() for _ in range(3)] == [0, 1, 2]
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(ring.acquire()))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and not got  # slot 0 is still held
        ring.release(1)  # another slot freed: not the one next in turn
        waiter.join(0.2)
        assert waiter.is_alive() and not got
        ring.release(0)
        waiter.join(5)
        assert got == [0]
        ring.release(-1)  # a chunk that held no slot: nothing
        assert ring.acquire() == 1
    finally:
        ring.close()
