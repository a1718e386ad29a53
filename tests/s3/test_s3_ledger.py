"""The S3 ledger (kfm_ledger.log.remote, cas_append) on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from kfm_ledger.core import merkle
from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import (
    CommitNotFoundError,
    CorruptLedgerError,
    InputRejected,
    LedgerExistsError,
    NotALedgerError,
    StorageError,
)
from kfm_ledger.log import cas_append
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.remote import RemoteLedger
from kfm_ledger.log.staging import STAGING_PREFIX
from kfm_ledger.s3 import parse_s3_url
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage.s3 import S3Storage

ORIGIN = "test.kfm.example/s3-ledger"
SIGNER = Signer.generate(ORIGIN)
LINES = sample_jsonl(1200).splitlines()


def batch(start: int, stop: int) -> bytes:
    return b"".join(line + b"\n" for line in LINES[start:stop])


def same_time(line: bytes) -> bytes:
    """The row with created_at 2025-01-01T00:00:00Z (rows of racing writers may land in any order)."""
    at = line.index(b'"created_at":"') + len(b'"created_at":"')
    return line[:at] + b"2025-01-01T00:00:00Z" + line[line.index(b'"', at):]


def concurrent_batch(start: int, stop: int) -> bytes:
    return b"".join(same_time(line) + b"\n" for line in LINES[start:stop])


@pytest.fixture
def storage(s3_server, s3_location: str, tmp_path: Path) -> S3Storage:
    s = S3Storage(s3_server.client(parse_s3_url(s3_location).prefix), cache_dir=tmp_path / "cache")
    yield s
    s.close()


def reopen(storage: S3Storage, cache: Path | None = None) -> RemoteLedger:
    """The ledger as another process sees it (its own client and, unless given, the same local cache)."""
    return RemoteLedger.open(S3Storage(storage.client, cache_dir=cache or storage.cache_dir()))


@pytest.fixture
def led(storage: S3Storage) -> RemoteLedger:
    ledger = RemoteLedger.init(storage, origin=ORIGIN, signer=SIGNER)
    yield ledger
    ledger.close()


def test_init_writes_vkey_and_checkpoints_and_never_a_private_key(led: RemoteLedger, storage: S3Storage) -> None:
    assert sorted(storage.list("")) == ["checkpoint", "checkpoints/0", "log.vkey"]
    assert led.size == 0 and led.root == merkle.EMPTY_ROOT
    with pytest.raises(LedgerExistsError):
        RemoteLedger.init(storage, origin=ORIGIN, signer=SIGNER)
    with pytest.raises(LedgerExistsError):  # another key's init over it
        RemoteLedger.init(S3Storage(storage.client, cache_dir=storage.cache_dir()), origin=ORIGIN,
                          signer=Signer.generate(ORIGIN))


def test_open_of_an_empty_prefix_is_not_a_ledger(storage: S3Storage) -> None:
    with pytest.raises(NotALedgerError, match="kfm init"):
        RemoteLedger.open(storage)


def test_appends_give_the_local_ledgers_jsonl_tiles_and_checkpoints(led: RemoteLedger, storage: S3Storage,
                                                                    tmp_path: Path) -> None:
    local = Ledger.init(tmp_path / "local", origin=ORIGIN, signer=SIGNER, store_key=False)
    pos = 0
    for n in (1, 2, 300, 5, 256, 250, 1, 185):
        data = batch(pos, pos + n)
        result = led.append(data, signer=SIGNER)
        local.append(data, signer=SIGNER)
        assert (result.first_index, result.count) == (pos, n)
        pos += n
        assert (led.size, led.root) == (local.size, local.root)
    out = io.BytesIO()
    assert led.export(out) == pos
    assert out.getvalue() == local.storage.read("rollback-index.jsonl")
    for key in list(local.storage.list("tile/")) + list(local.storage.list("checkpoints/")) + ["checkpoint"]:
        assert storage.read(key) == local.storage.read(key), key
    assert list(storage.list(STAGING_PREFIX)) == []
    local.close()


def test_get_and_proofs_from_another_process(led: RemoteLedger, storage: S3Storage, tmp_path: Path) -> None:
    led.append(batch(0, 600), signer=SIGNER)
    other = reopen(storage, tmp_path / "cold-cache")  # a cold cache: caught up from the bundles
    row = other.get(LINES[517].split(b'"lakefs_commit":"')[1].split(b'"')[0].decode())
    assert row.index == 517 and row.line == LINES[517]
    assert other.entry(3).line == LINES[3]
    proof = other.tlog_proof(517)
    merkle.verify_inclusion(merkle.leaf_hash(LINES[517]), 517, 600, proof.hashes, other.root)
    with pytest.raises(CommitNotFoundError):
        other.get("no-such-commit")
    assert other.checkpoint_sizes() == [0, 600]
    assert other.consistency_proof(600) == []
    other.close()


def test_the_ledger_rules_hold_against_the_tree_in_the_bucket(led: RemoteLedger, storage: S3Storage) -> None:
    led.append(batch(0, 10), signer=SIGNER)
    other = reopen(storage)
    with pytest.raises(InputRejected, match="already in the ledger at index 4"):
        other.append(batch(4, 5), signer=SIGNER)
    earlier = LINES[11].replace(b'"created_at":"', b'"created_at":"1999', 1)
    if earlier != LINES[11]:
        with pytest.raises(InputRejected):
            other.append(earlier[: earlier.index(b'"created_at":"1999') + 14] + b"-01-01T00:00:00Z" +
                         earlier[earlier.index(b'"', earlier.index(b'"created_at":"1999') + 14):] + b"\n",
                         signer=SIGNER)
    assert other.size == 10 and led.size == 10


def test_a_loser_of_the_swap_retries_against_the_new_tree(led: RemoteLedger, storage: S3Storage) -> None:
    other = reopen(storage)
    led.append(batch(0, 3), signer=SIGNER)  # `other` still holds the tree of size 0
    result = other.append(batch(3, 5), signer=SIGNER)
    assert (result.first_index, other.size) == (3, 5)
    with pytest.raises(InputRejected, match="already in the ledger"):
        led.append(batch(4, 6), signer=SIGNER)  # re-checked against the tree it lost to
    assert list(storage.list(STAGING_PREFIX)) == []


def test_racing_writers_in_threads_append_every_row_once(led: RemoteLedger, storage: S3Storage) -> None:
    writers = [reopen(storage) for _ in range(4)]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            for k in range(6):
                first = 100 + n * 30 + k * 5
                writers[n].append(concurrent_batch(first, first + 5), signer=SIGNER, wait=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = reopen(storage)
    lines = list(final.iter_lines())
    assert len(lines) == 120 and sorted(lines) == sorted(same_time(line) for line in LINES[100:220])


def test_a_writer_dead_after_its_swap_is_completed_by_the_next(led: RemoteLedger, storage: S3Storage,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    led.append(batch(0, 300), signer=SIGNER)

    def die(*args: object, **kwargs: object) -> None:
        raise StorageError("injected: the writer died after its swap")

    monkeypatch.setattr(cas_append, "finish", die)
    with pytest.raises(StorageError, match="the batch is appended"):
        led.append(batch(300, 310), signer=SIGNER)
    monkeypatch.undo()
    assert [k for k in storage.list(STAGING_PREFIX)] and not storage.exists("checkpoints/310")
    other = reopen(storage)  # opening completes it from the staging object
    assert storage.exists("checkpoints/310") and list(storage.list(STAGING_PREFIX)) == []
    assert other.entry(305).line == LINES[305]
    other.append(batch(310, 320), signer=SIGNER)
    assert other.size == 320


def test_a_staging_object_whose_swap_never_happened_is_ignored_and_swept(led: RemoteLedger,
                                                                         storage: S3Storage) -> None:
    led.append(batch(0, 5), signer=SIGNER)
    storage.write_atomic("staging/9-" + "ab" * 32, b"left by a writer that died before its swap")
    other = reopen(storage)
    other.append(batch(5, 9), signer=SIGNER)  # the same size, another root: no conflict
    summary = other.recover()
    assert summary.temporaries_removed == ("staging/9-" + "ab" * 32,)
    assert list(storage.list(STAGING_PREFIX)) == []


def test_a_signed_tree_whose_staging_and_objects_are_gone_is_reported(led: RemoteLedger, storage: S3Storage,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cas_append, "finish", lambda *a, **k: (_ for _ in ()).throw(StorageError("died")))
    with pytest.raises(StorageError):
        led.append(batch(0, 5), signer=SIGNER)
    monkeypatch.undo()
    for key in list(storage.list(STAGING_PREFIX)):
        storage.delete(key)
    with pytest.raises(CorruptLedgerError, match="neither its objects"):
        reopen(storage)


def test_a_tile_changed_behind_the_ledgers_back_stops_the_writer(led: RemoteLedger, storage: S3Storage) -> None:
    led.append(batch(0, 20), signer=SIGNER)
    storage.write_atomic("tile/0/000.p/20", b"\x00" * 32 * 20)
    with pytest.raises(CorruptLedgerError, match="right edge"):
        reopen(storage).append(batch(20, 21), signer=SIGNER)
    assert storage.read("checkpoint") == led.checkpoint.note  # nothing was written


def test_a_bundle_changed_behind_the_ledgers_back_is_caught_by_readers(led: RemoteLedger, storage: S3Storage,
                                                                      tmp_path: Path) -> None:
    led.append(batch(0, 300), signer=SIGNER)
    forged = LINES[7].replace(b'"', b"'", 0)
    from kfm_ledger.core.entry_bundle import encode_entry_bundle

    entries = list(LINES[:256])
    entries[7] = LINES[400]  # another valid row in its place
    storage.write_atomic("tile/entries/000", encode_entry_bundle(entries))
    assert forged == LINES[7]
    other = reopen(storage, tmp_path / "fresh-cache")
    with pytest.raises(CorruptLedgerError):
        other.entry(7)
    with pytest.raises(CorruptLedgerError):
        other.export(io.BytesIO())
    with pytest.raises(CorruptLedgerError, match="bundles do not give the signed root"):
        other.get("anything")  # the cold index refuses to catch up from a forged bundle


def test_a_checkpoint_rolled_back_is_caught_by_a_reader_that_saw_more(led: RemoteLedger, storage: S3Storage) -> None:
    led.append(batch(0, 10), signer=SIGNER)
    old = led.checkpoint.note
    led.append(batch(10, 20), signer=SIGNER)
    led.get(LINES[15].split(b'"lakefs_commit":"')[1].split(b'"')[0].decode())  # this machine has seen 20 rows
    storage.write_atomic("checkpoint", old)
    other = reopen(storage)
    with pytest.raises(CorruptLedgerError, match="rolled back"):
        other.get("x")


def test_a_private_key_in_the_bucket_is_refused(led: RemoteLedger, storage: S3Storage) -> None:
    from kfm_ledger.log.keys import default_signer

    with pytest.raises(NotALedgerError, match="--key"):
        default_signer(storage)
    storage.write_atomic("log.key", SIGNER.private_key_text().encode())
    with pytest.raises(StorageError, match="exposed"):
        default_signer(storage)


def test_a_swap_whose_answer_was_lost_and_another_writer_built_on_it_is_a_win(
    led: RemoteLedger, storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfm_ledger.errors import PreconditionFailedError

    led.append(batch(0, 5), signer=SIGNER)
    other = reopen(storage)
    real = S3Storage.compare_and_swap

    def swap_then_lose_the_answer(self: S3Storage, key: str, data: bytes, etag: str) -> str | None:
        real(self, key, data, etag)  # it lands ...
        monkeypatch.setattr(S3Storage, "compare_and_swap", real)
        other.append(batch(7, 9), signer=SIGNER)  # ... another writer completes our tree and builds on it ...
        raise PreconditionFailedError("injected: the retry of a landed swap", key=key)  # ... and we hear 412

    monkeypatch.setattr(S3Storage, "compare_and_swap", swap_then_lose_the_answer)
    result = led.append(batch(5, 7), signer=SIGNER)
    assert (result.first_index, result.count, result.checkpoint.checkpoint.size) == (5, 2, 7)
    final = reopen(storage)
    assert list(final.iter_lines()) == LINES[:9]
    assert list(storage.list(STAGING_PREFIX)) == []


def test_verify_since_a_saved_checkpoint(led: RemoteLedger, storage: S3Storage, tmp_path: Path) -> None:
    from kfm_ledger.log.remote_verify import verify_remote

    led.append(batch(0, 40), signer=SIGNER)
    saved = led.checkpoint.note
    led.append(batch(40, 300), signer=SIGNER)
    report = verify_remote(reopen(storage), since=saved)
    assert report.ok and report.since_size == 40 and report.rows_checked == 300, report.failures
    # a checkpoint of another history at the same size, signed with the same key: a fork
    fork = RemoteLedger.init(S3Storage(storage.client.__class__(storage.client.location.child("fork"),
                                                                storage.client.connection),
                                       cache_dir=tmp_path / "fork-cache"), origin=ORIGIN, signer=SIGNER)
    fork.append(batch(1, 41), signer=SIGNER)
    report = verify_remote(reopen(storage), since=fork.checkpoint.note)
    assert not report.ok and [f.where for f in report.failures] == ["since"]


def test_a_range_of_rows_is_proven_with_the_tiles_around_it(led: RemoteLedger, storage: S3Storage) -> None:
    led.append(batch(0, 300), signer=SIGNER)
    led.append(batch(300, 700), signer=SIGNER)
    assert list(led.iter_lines(100, 600)) == LINES[100:600]
    assert list(led.iter_lines(699)) == LINES[699:700]
    from kfm_ledger.core.entry_bundle import encode_entry_bundle

    entries = list(LINES[256:512])
    entries[3] = LINES[900]
    storage.write_atomic("tile/entries/001", encode_entry_bundle(entries))
    assert list(led.iter_lines(0, 256)) == LINES[:256]  # the rows before it still prove
    with pytest.raises(CorruptLedgerError, match=r"rows 256\.\.299"):
        list(led.iter_lines(256, 300))


def test_an_s3_append_lists_at_most_max_problems_and_counts_them_all(
    led: RemoteLedger, storage: S3Storage, tmp_path: Path
) -> None:
    # Five rows with one problem each (a branch name with a leading space).
    bad = sample_jsonl(5).replace(b'"lakefs_branch":"', b'"lakefs_branch":" ')
    for call in (
        lambda: led.append(bad, signer=SIGNER, max_problems=2),
        lambda: led.append_file(write(tmp_path / "bad.jsonl", bad), signer=SIGNER, max_problems=2),
    ):
        with pytest.raises(InputRejected) as e:
            call()
        assert len(e.value.problems) == 2 and e.value.total >= 5
        assert [p.line for p in e.value.problems] == [1, 2]
    assert led.size == 0 and list(storage.list(STAGING_PREFIX)) == []


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
