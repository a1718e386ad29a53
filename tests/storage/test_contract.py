"""The storage contract (kfm_ledger.storage.base), checked for every backend.

Each test names the guarantee of the docstring it checks.  A new backend (S3, ...)
joins the ``store`` fixture's parameters and must pass all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kfm_ledger.errors import ImmutableObjectError, LockedError, ObjectNotFoundError, StorageError
from kfm_ledger.storage import (
    AppendLog,
    AppendLogStore,
    LocalFiles,
    LocalStorage,
    MemoryStorage,
    ObjectStore,
    Publisher,
    Storage,
    local_path_of,
)

BACKENDS: dict[str, Callable[[Path], Storage]] = {
    "local": lambda tmp: LocalStorage(tmp / "root"),
    "memory": lambda tmp: MemoryStorage(),
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return BACKENDS[request.param](tmp_path)


def test_every_backend_implements_the_three_interfaces(store: Storage) -> None:
    for interface in (ObjectStore, AppendLogStore, Publisher):
        for name, member in vars(interface).items():
            if callable(member) and not name.startswith("_"):
                assert callable(getattr(store, name, None)), (interface.__name__, name)


# -- 1. immutable objects --------------------------------------------------------------
def test_read_of_a_missing_object_raises_object_not_found(store: Storage) -> None:
    assert not store.exists("tile/0/000")
    with pytest.raises(ObjectNotFoundError):
        store.read("tile/0/000")


def test_write_once_creates_and_the_same_bytes_again_is_a_no_op(store: Storage) -> None:
    store.write_once("checkpoints/3", b"note")
    assert store.exists("checkpoints/3")
    assert store.read("checkpoints/3") == b"note"
    store.write_once("checkpoints/3", b"note")
    assert store.read("checkpoints/3") == b"note"


def test_write_once_with_other_bytes_raises_and_keeps_the_object(store: Storage) -> None:
    store.write_once("tile/0/000", b"a" * 32)
    with pytest.raises(ImmutableObjectError):
        store.write_once("tile/0/000", b"b" * 32)
    assert store.read("tile/0/000") == b"a" * 32


def test_write_once_many_writes_all_and_keeps_the_immutable_rule(store: Storage) -> None:
    items = [(f"tile/0/x{i:03d}/{i:03d}", bytes([i]) * 32) for i in range(20)]
    store.write_once_many(items)
    assert all(store.read(k) == v for k, v in items)
    store.write_once_many(items[:3])  # the same bytes again
    with pytest.raises(ImmutableObjectError):
        store.write_once_many([(items[0][0], b"other")])
    assert store.read(items[0][0]) == items[0][1]


def test_delete_removes_and_a_missing_object_is_no_error(store: Storage) -> None:
    store.write_once("tile/0/000.p/3", b"x" * 96)
    store.delete("tile/0/000.p/3")
    assert not store.exists("tile/0/000.p/3")
    store.delete("tile/0/000.p/3")
    store.delete("never/was")
    store.write_once("tile/0/000.p/3", b"y" * 96)  # once deleted, the key may be created anew
    assert store.read("tile/0/000.p/3") == b"y" * 96


def test_list_gives_the_keys_under_a_folder(store: Storage) -> None:
    for key in ("checkpoints/0", "checkpoints/12", "tile/0/000", "tile/1/000.p/2"):
        store.write_once(key, b"1")
    assert sorted(store.list("checkpoints/")) == ["checkpoints/0", "checkpoints/12"]
    assert sorted(store.list("tile/")) == ["tile/0/000", "tile/1/000.p/2"]
    assert sorted(store.list("tile/1/000.p/")) == ["tile/1/000.p/2"]
    assert list(store.list("nothing/")) == []


def test_list_after_delete_no_longer_gives_the_key(store: Storage) -> None:
    for key in ("tile/0/000.p/3", "tile/0/001", "pending-append"):
        store.write_once(key, b"1")
    log = store.append_log("tile-expansions.bin")
    log.append(b"r")
    log.sync()
    log.close()
    assert {"tile/0/000.p/3", "tile/0/001", "pending-append", "tile-expansions.bin"} <= set(store.list(""))
    store.delete("tile/0/000.p/3")
    store.delete("pending-append")
    store.delete("tile-expansions.bin")
    assert sorted(store.list("tile/")) == ["tile/0/001"]
    assert sorted(store.list("")) == ["tile/0/001"]


def test_discard_stale_temporaries_leaves_objects_alone(store: Storage) -> None:
    store.write_once("tile/0/000", b"t")
    store.write_atomic("checkpoint", b"c")
    assert store.discard_stale_temporaries(["", "tile/0/"], recursive=True) == []
    assert store.read("tile/0/000") == b"t" and store.read("checkpoint") == b"c"


def test_describe_is_a_short_text(store: Storage) -> None:
    assert isinstance(store.describe(), str) and store.describe()


# -- 2. the append log ------------------------------------------------------------------
def test_append_log_starts_empty_and_appends_at_the_end(store: Storage) -> None:
    log = store.append_log("rollback-index.jsonl")
    assert isinstance(log, AppendLog)
    try:
        assert log.size() == 0
        log.append(b"one\n")
        log.append(b"two\n")
        assert log.size() == 8  # unsynced bytes count
        log.sync()
        assert log.read(4, 4) == b"two\n"
        assert store.read("rollback-index.jsonl") == b"one\ntwo\n"
    finally:
        log.close()


def test_append_log_read_past_the_end_raises(store: Storage) -> None:
    log = store.append_log("log")
    try:
        log.append(b"abc")
        log.sync()
        with pytest.raises(StorageError):
            log.read(1, 5)
    finally:
        log.close()


def test_append_log_truncate_and_iter_chunks(store: Storage) -> None:
    log = store.append_log("log")
    try:
        data = bytes(range(256)) * 40
        log.append(data)
        log.sync()
        assert b"".join(log.iter_chunks(0, chunk_size=1000)) == data
        assert b"".join(log.iter_chunks(100, chunk_size=7, end=300)) == data[100:300]
        log.truncate(500)
        assert log.size() == 500
        assert b"".join(log.iter_chunks()) == data[:500]
    finally:
        log.close()


def test_append_log_reopened_sees_the_synced_bytes(store: Storage) -> None:
    log = store.append_log("sub/log")
    log.append(b"kept\n")
    log.sync()
    log.close()
    again = store.append_log("sub/log")
    try:
        assert again.size() == 5 and again.read(0, 5) == b"kept\n"
    finally:
        again.close()


def test_deleting_an_append_log_removes_it_and_a_later_open_starts_empty(store: Storage) -> None:
    log = store.append_log("tile-expansions.bin")
    log.append(b"records")
    log.sync()
    log.close()
    assert store.exists("tile-expansions.bin") and "tile-expansions.bin" in set(store.list(""))
    store.delete("tile-expansions.bin")
    assert not store.exists("tile-expansions.bin")
    assert "tile-expansions.bin" not in set(store.list(""))
    with pytest.raises(ObjectNotFoundError):
        store.read("tile-expansions.bin")
    store.delete("tile-expansions.bin")  # deleting it again is no error
    again = store.append_log("tile-expansions.bin")
    try:
        assert again.size() == 0 and store.read("tile-expansions.bin") == b""
        again.append(b"new")
        again.sync()
        assert again.read(0, 3) == b"new" and store.read("tile-expansions.bin") == b"new"
    finally:
        again.close()


# -- 3. publish, secrets and the writer lock ---------------------------------------------
def test_write_atomic_replaces_whole_objects(store: Storage) -> None:
    store.write_atomic("checkpoint", b"old")
    store.write_atomic("checkpoint", memoryview(b"new, longer"))
    assert store.read("checkpoint") == b"new, longer"
    store.write_atomic("checkpoint", b"")
    assert store.read("checkpoint") == b""


def test_write_atomic_replaces_an_object_write_once_created(store: Storage) -> None:
    """How `kfm rebuild` rewrites tiles: write_atomic may replace any object."""
    store.write_once("tile/0/000.p/2", b"a" * 64)
    store.write_atomic("tile/0/000.p/2", b"b" * 64)
    assert store.read("tile/0/000.p/2") == b"b" * 64
    store.write_once("tile/0/000.p/2", b"b" * 64)  # the new bytes are the object now
    with pytest.raises(ImmutableObjectError):
        store.write_once("tile/0/000.p/2", b"a" * 64)
    assert store.read("tile/0/000.p/2") == b"b" * 64


def _fail_the_publish(store: Storage, monkeypatch: pytest.MonkeyPatch, atomic_key: str) -> type[BaseException]:
    """Make the second half of write_once_and_publish (the atomic replace) fail; the error it raises."""
    if isinstance(store, MemoryStorage):
        from kfm_ledger.storage import SimulatedCrash

        store.crash_at(1)  # the write_once happens, the write_atomic does not
        return SimulatedCrash
    import os

    target = os.path.realpath(local_path_of(store, atomic_key) or "")
    real_replace = os.replace

    def replace(src: str, dst: str, **at: int) -> None:  # the local backend renames inside a folder's fd
        if os.path.realpath(dst) == target or ("dst_dir_fd" in at and dst == os.path.basename(target)):
            raise OSError("injected: the publish fails")
        real_replace(src, dst, **at)

    monkeypatch.setattr(os, "replace", replace)
    return OSError


def test_write_once_and_publish_keeps_before_it_publishes(store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure between the two leaves ``once_key`` written and ``atomic_key`` untouched."""
    store.write_once_and_publish("checkpoints/5", "checkpoint", b"note 5")
    error = _fail_the_publish(store, monkeypatch, "checkpoint")
    with pytest.raises(error):
        store.write_once_and_publish("checkpoints/6", "checkpoint", b"note 6")
    monkeypatch.undo()
    if isinstance(store, MemoryStorage):
        store.crash(power_loss=False)
    assert store.read("checkpoints/6") == b"note 6"  # kept first
    assert store.read("checkpoint") == b"note 5"  # not published
    store.write_once_and_publish("checkpoints/6", "checkpoint", b"note 6")  # the retry publishes it
    assert store.read("checkpoint") == b"note 6"


def test_write_once_and_publish_keeps_then_publishes(store: Storage) -> None:
    store.write_once_and_publish("checkpoints/5", "checkpoint", b"note 5")
    assert store.read("checkpoints/5") == b"note 5"
    assert store.read("checkpoint") == b"note 5"
    store.write_once_and_publish("checkpoints/6", "checkpoint", b"note 6")
    assert store.read("checkpoint") == b"note 6"
    assert store.read("checkpoints/5") == b"note 5"  # the kept one never changes
    with pytest.raises(ImmutableObjectError):
        store.write_once_and_publish("checkpoints/6", "checkpoint", b"another note 6")
    assert store.read("checkpoints/6") == b"note 6"
    assert store.read("checkpoint") == b"note 6"  # nothing published after the refusal


def test_write_private_creates_a_secret_and_never_overwrites_it(store: Storage) -> None:
    store.write_private("log.key", b"PRIVATE+KEY+x\n")
    assert store.read("log.key") == b"PRIVATE+KEY+x\n"
    with pytest.raises(StorageError):
        store.write_private("log.key", b"PRIVATE+KEY+y\n")
    assert store.read("log.key") == b"PRIVATE+KEY+x\n"


def test_the_writer_lock_admits_one_writer(store: Storage) -> None:
    with store.lock(wait=0):
        outcome: list[BaseException | None] = []

        def other() -> None:
            try:
                with store.lock(wait=0.05):
                    outcome.append(None)
            except BaseException as e:  # recorded for the assertion
                outcome.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(outcome) == 1 and isinstance(outcome[0], LockedError)
    with store.lock(wait=0):  # released on exit
        pass


# -- the optional LocalFiles capability ---------------------------------------------------
def test_local_files_is_optional_and_checked_with_isinstance(store: Storage) -> None:
    store.write_once("tile/0/000", b"t")
    path = local_path_of(store, "tile/0/000")
    if isinstance(store, LocalFiles):
        assert path is not None and Path(path).read_bytes() == b"t"
    else:
        assert path is None


# -- the memory backend enforces the rules and injects faults -----------------------------
def test_memory_backend_crash_injection_stops_before_the_step() -> None:
    from kfm_ledger.storage import SimulatedCrash

    store = MemoryStorage()
    log = store.append_log("log")
    log.append(b"synced\n")
    log.sync()
    log.append(b"lost\n")
    store.crash_at(0)
    with pytest.raises(SimulatedCrash):
        store.write_once("tile/0/000", b"t")
    assert not store.exists("tile/0/000")
    store.crash(power_loss=True)
    assert store.read("log") == b"synced\n"
