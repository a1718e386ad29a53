"""The S3 storage backend (kfm_ledger.storage.s3) on a real S3 server: the storage contract where it applies."""

from __future__ import annotations

import pytest

from kfm_ledger.errors import ImmutableObjectError, PreconditionFailedError, StorageError
from kfm_ledger.s3 import parse_s3_url
from kfm_ledger.storage.s3 import S3Storage
from storage.test_contract import (  # the contract's own tests, run here on the S3 backend
    test_delete_removes_and_a_missing_object_is_no_error,
    test_describe_is_a_short_text,
    test_discard_stale_temporaries_leaves_objects_alone,
    test_list_gives_the_keys_under_a_folder,
    test_read_of_a_missing_object_raises_object_not_found,
    test_write_atomic_replaces_an_object_write_once_created,
    test_write_atomic_replaces_whole_objects,
    test_write_once_and_publish_keeps_then_publishes,
    test_write_once_creates_and_the_same_bytes_again_is_a_no_op,
    test_write_once_many_writes_all_and_keeps_the_immutable_rule,
    test_write_once_with_other_bytes_raises_and_keeps_the_object,
)

CONTRACT = (
    test_delete_removes_and_a_missing_object_is_no_error,
    test_describe_is_a_short_text,
    test_discard_stale_temporaries_leaves_objects_alone,
    test_list_gives_the_keys_under_a_folder,
    test_read_of_a_missing_object_raises_object_not_found,
    test_write_atomic_replaces_an_object_write_once_created,
    test_write_atomic_replaces_whole_objects,
    test_write_once_and_publish_keeps_then_publishes,
    test_write_once_creates_and_the_same_bytes_again_is_a_no_op,
    test_write_once_many_writes_all_and_keeps_the_immutable_rule,
    test_write_once_with_other_bytes_raises_and_keeps_the_object,
)


@pytest.fixture
def store(s3_server, s3_location: str, tmp_path):
    s = S3Storage(s3_server.client(parse_s3_url(s3_location).prefix), cache_dir=tmp_path / "cache")
    yield s
    s.close()


def test_the_contract_tests_imported_here_are_collected() -> None:
    assert len(CONTRACT) == 11


def test_write_once_never_overwrites_even_when_racing(store: S3Storage) -> None:
    import threading

    results: list[str] = []
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            store.write_once("tile/0/007", bytes([n]) * 32)
            results.append("ok")
        except ImmutableObjectError:
            results.append("refused")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
    assert store.read("tile/0/007") in {bytes([n]) * 32 for n in range(4)}


def test_a_lost_answer_of_a_create_is_success_when_the_bytes_are_ours(store: S3Storage) -> None:
    store.client.put_if_absent("tile/0/000.p/1", b"h" * 32)  # the first attempt landed; its answer was lost
    store.write_once("tile/0/000.p/1", b"h" * 32)  # the retry finds our bytes: success
    with pytest.raises(ImmutableObjectError):
        store.write_once("tile/0/000.p/1", b"h" * 33)  # longer bytes: refused without reading past the cap


def test_compare_and_swap(store: S3Storage) -> None:
    store.create("checkpoint", b"size 0")
    data, etag = store.read_versioned("checkpoint")
    assert data == b"size 0"
    store.compare_and_swap("checkpoint", b"size 1", etag)
    with pytest.raises(PreconditionFailedError):
        store.compare_and_swap("checkpoint", b"size 1 again", etag)
    with pytest.raises(PreconditionFailedError):
        store.create("checkpoint", b"other")
    assert store.read("checkpoint") == b"size 1"


def test_what_s3_has_not_is_refused_with_a_reason(store: S3Storage) -> None:
    with pytest.raises(StorageError, match="private key"):
        store.write_private("log.key", b"PRIVATE")
    assert not store.exists("log.key")
    with pytest.raises(StorageError, match="compare-and-swap"):
        store.lock()
    with pytest.raises(StorageError, match="entry bundles"):
        store.append_log("rollback-index.jsonl")


def test_read_many_in_parallel(store: S3Storage) -> None:
    store.write_once_many([(f"tile/0/{i:03d}", bytes([i]) * 32) for i in range(40)])
    keys = [f"tile/0/{i:03d}" for i in range(41)]
    got = store.read_many(keys)
    assert got[:40] == [bytes([i]) * 32 for i in range(40)] and got[40] is None


def test_the_index_lives_in_a_local_cache_never_in_the_bucket(store: S3Storage, tmp_path) -> None:
    loc = store.index_location()
    conn = loc.connect()
    conn.close()
    assert str(tmp_path / "cache") in str(getattr(loc, "path", ""))
    assert list(store.list("")) == []


def test_reads_are_capped_by_what_an_object_of_that_kind_can_hold(store: S3Storage) -> None:
    from kfm_ledger.errors import ObjectTooLargeError

    store.write_atomic("tile/0/000", b"x" * 8193)  # a hostile bucket: no tile is that large
    with pytest.raises(ObjectTooLargeError):
        store.read("tile/0/000")
    store.write_atomic("tile/0/001", b"x" * 8192)
    assert len(store.read("tile/0/001")) == 8192
    store.write_atomic("checkpoint", b"n" * ((1 << 20) + 1))
    with pytest.raises(ObjectTooLargeError):
        store.read("checkpoint")
    with pytest.raises(ObjectTooLargeError):
        store.read_many(["tile/0/000"])
