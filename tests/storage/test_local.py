"""Unit tests of the local-directory storage backend (kfm_ledger.storage.local.LocalStorage)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfm_ledger.errors import ImmutableObjectError, LockedError, ObjectNotFoundError, StorageError
from kfm_ledger.storage import LocalStorage
from kfm_ledger.storage import local as local_storage
from kfm_ledger.storage.local import _SYNCFS_AT


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "root")


def temporaries(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".kfm-tmp." in p.name]


# -- read, exists, write_atomic ------------------------------------------------------
def test_read_of_a_missing_key_raises_object_not_found(store: LocalStorage) -> None:
    assert not store.exists("nope")
    with pytest.raises(ObjectNotFoundError):
        store.read("nope")
    with pytest.raises(ObjectNotFoundError):
        store.read("deep/nope")


def test_write_atomic_creates_replaces_and_makes_directories(store: LocalStorage) -> None:
    store.write_atomic("a/b/c.txt", b"one")
    assert store.exists("a/b/c.txt")
    assert store.read("a/b/c.txt") == b"one"
    assert (store.root / "a" / "b" / "c.txt").read_bytes() == b"one"
    store.write_atomic("a/b/c.txt", b"two, longer")
    assert store.read("a/b/c.txt") == b"two, longer"
    store.write_atomic("a/b/c.txt", b"")
    assert store.read("a/b/c.txt") == b""
    store.write_atomic("m", memoryview(b"from a view"))
    assert store.read("m") == b"from a view"
    assert stat.S_IMODE((store.root / "m").stat().st_mode) == 0o644
    assert temporaries(store.root) == []


def test_read_returns_large_objects_whole(store: LocalStorage) -> None:
    data = os.urandom(3 << 20)
    store.write_atomic("big", data)
    assert store.read("big") == data


def test_write_atomic_recreates_a_directory_removed_behind_its_back(store: LocalStorage) -> None:
    store.write_atomic("d/x", b"1")
    os.unlink(store.root / "d" / "x")
    os.rmdir(store.root / "d")
    store.write_atomic("d/y", b"2")  # the storage remembered "d" as made
    assert store.read("d/y") == b"2"


# -- write_once ----------------------------------------------------------------------
def test_write_once_accepts_the_same_bytes_and_refuses_others(store: LocalStorage) -> None:
    store.write_once("tile/0/000", b"abc")
    store.write_once("tile/0/000", b"abc")  # the same bytes again: fine
    with pytest.raises(ImmutableObjectError):
        store.write_once("tile/0/000", b"abd")
    with pytest.raises(ImmutableObjectError):
        store.write_once("tile/0/000", b"abc+more")
    assert store.read("tile/0/000") == b"abc"
    assert isinstance(ImmutableObjectError("x"), StorageError)
    assert temporaries(store.root) == []


@pytest.mark.parametrize("count", [3, _SYNCFS_AT + 6])
def test_write_once_many_writes_all_and_checks_existing(store: LocalStorage, count: int) -> None:
    items = [(f"tile/0/x{i // 10:03d}/{i:03d}", f"tile {i}".encode()) for i in range(count)]
    store.write_once("tile/0/x000/000", b"tile 0")  # already there, same bytes
    store.write_once_many(items)
    for key, data in items:
        assert store.read(key) == data
        assert stat.S_IMODE(os.stat(store.root / key).st_mode) == 0o644
    assert temporaries(store.root) == []
    store.write_once_many(items)  # all present: a no-op
    with pytest.raises(ImmutableObjectError):
        store.write_once_many([("tile/0/x000/001", b"changed")])
    assert store.read("tile/0/x000/001") == b"tile 1"


def test_write_once_stream_writes_objects_as_they_come(store: LocalStorage) -> None:
    items = [(f"tile/entries/{i:03d}", os.urandom(100 + i)) for i in range(10)]
    store.write_once(items[2][0], items[2][1])  # one already there with the same bytes
    made: list[str] = []

    def produced():  # type: ignore[no-untyped-def]
        for key, data in items:
            made.append(key)
            yield key, data

    store.write_once_stream(produced())
    assert made == [key for key, _ in items]
    assert all(store.read(k) == v for k, v in items)
    assert temporaries(store.root) == []


@pytest.mark.parametrize("syncfs", [True, False])
def test_write_once_stream_is_done_with_each_view_before_it_takes_the_next(
    store: LocalStorage, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    """A bulk append's bundles are views of a buffer refilled once the next one is taken (the row
    ring): each must be written, or copied, first, with syncfs or without (groups of 64 MiB)."""
    if not syncfs:
        monkeypatch.setattr(local_storage, "_syncfs_function", lambda: None)
    buffer = bytearray(64)
    expected = {}

    def views():  # type: ignore[no-untyped-def]
        for i in range(5):
            buffer[:] = bytes([i]) * 64
            expected[f"tile/entries/{i:03d}"] = bytes(buffer)
            yield f"tile/entries/{i:03d}", memoryview(buffer)

    store.write_once_stream(views())
    assert {key: store.read(key) for key in expected} == expected
    assert temporaries(store.root) == []


def test_write_once_stream_shows_nothing_when_it_fails(store: LocalStorage) -> None:
    """A conflict or an error in the middle of the stream: no object of it visible, no temporary left."""
    store.write_once("tile/entries/003", b"stored")
    with pytest.raises(ImmutableObjectError):
        store.write_once_stream((f"tile/entries/{i:03d}", b"new") for i in range(6))
    assert not store.exists("tile/entries/000") and store.read("tile/entries/003") == b"stored"

    def failing():  # type: ignore[no-untyped-def]
        yield "tile/entries/010", b"x"
        raise OSError("the rows ran out")

    with pytest.raises(OSError, match="ran out"):
        store.write_once_stream(failing())
    assert not store.exists("tile/entries/010")
    assert temporaries(store.root) == []


def test_write_once_and_publish(store: LocalStorage) -> None:
    store.write_once_and_publish("checkpoints/3", "checkpoint", b"note 3")
    assert store.read("checkpoints/3") == b"note 3" and store.read("checkpoint") == b"note 3"
    store.write_once_and_publish("checkpoints/5", "checkpoint", b"note 5")
    assert store.read("checkpoints/3") == b"note 3"  # the kept one is not changed by the next publish
    assert store.read("checkpoint") == b"note 5"
    store.write_once_and_publish("checkpoints/3", "checkpoint", b"note 3")  # same bytes: published again
    assert store.read("checkpoint") == b"note 3"
    with pytest.raises(ImmutableObjectError):
        store.write_once_and_publish("checkpoints/5", "checkpoint", b"forged 5")
    assert store.read("checkpoint") == b"note 3" and store.read("checkpoints/5") == b"note 5"
    assert temporaries(store.root) == []


# -- write_private --------------------------------------------------------------------
def test_write_private_is_0600_and_never_overwrites(store: LocalStorage) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        store.write_private("log.key", b"secret")
    finally:
        os.umask(old)
    assert store.read("log.key") == b"secret"
    assert stat.S_IMODE((store.root / "log.key").stat().st_mode) == 0o600
    with pytest.raises(StorageError):
        store.write_private("log.key", b"another secret")
    with pytest.raises(StorageError):
        store.write_private("log.key", b"secret")  # not even the same bytes
    assert store.read("log.key") == b"secret"
    assert temporaries(store.root) == []


# -- delete and list --------------------------------------------------------------------
def test_delete_removes_and_ignores_missing(store: LocalStorage) -> None:
    store.write_atomic("x/y", b"1")
    store.delete("x/y")
    assert not store.exists("x/y")
    with pytest.raises(ObjectNotFoundError):
        store.read("x/y")
    store.delete("x/y")  # already gone: fine
    store.delete("never/was")


def test_list_walks_nested_keys_and_skips_dot_files(store: LocalStorage) -> None:
    for key in ("checkpoint", "checkpoints/1", "checkpoints/10", "tile/0/000", "tile/0/x001/002.p/5", "tile/1/000"):
        store.write_atomic(key, b"k")
    (store.root / ".lock").write_bytes(b"")
    (store.root / "tile" / "0" / ".000.kfm-tmp.12345").write_bytes(b"half")
    (store.root / "empty-dir").mkdir()
    assert sorted(store.list("")) == [
        "checkpoint", "checkpoints/1", "checkpoints/10", "tile/0/000", "tile/0/x001/002.p/5", "tile/1/000",
    ]
    assert sorted(store.list("tile/")) == ["tile/0/000", "tile/0/x001/002.p/5", "tile/1/000"]
    assert sorted(store.list("tile/0/")) == ["tile/0/000", "tile/0/x001/002.p/5"]
    assert sorted(store.list("checkpoints")) == ["checkpoints/1", "checkpoints/10"]
    assert list(store.list("missing/")) == []
    assert list(store.list("empty-dir/")) == []


def test_list_of_a_root_that_does_not_exist_is_empty(tmp_path: Path) -> None:
    assert list(LocalStorage(tmp_path / "not-yet").list("")) == []


# -- keys -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["/abs", "/etc/passwd", "../x", "a/../../x", "a/..", ".."])
def test_bad_keys_are_refused(store: LocalStorage, key: str) -> None:
    for call in (
        lambda: store.read(key),
        lambda: store.exists(key),
        lambda: store.write_atomic(key, b"x"),
        lambda: store.write_once(key, b"x"),
        lambda: store.write_private(key, b"x"),
        lambda: store.delete(key),
        lambda: store.append_log(key),
    ):
        with pytest.raises(StorageError):
            call()
    assert not (store.root.parent / "x").exists()


def test_keys_with_dots_inside_names_are_fine(store: LocalStorage) -> None:
    store.write_atomic("a/b..c/d.e", b"ok")
    assert store.read("a/b..c/d.e") == b"ok"


# -- the append log -----------------------------------------------------------------------
def test_append_log_appends_reads_and_truncates(store: LocalStorage) -> None:
    log = store.append_log("rollback-index.jsonl")
    try:
        assert log.size() == 0
        assert (store.root / "rollback-index.jsonl").exists()
        log.append(b"line one\n")
        log.append(memoryview(b"line two\n"))
        assert log.size() == 18
        log.sync()
        assert (store.root / "rollback-index.jsonl").read_bytes() == b"line one\nline two\n"
        assert log.read(0, 4) == b"line"
        assert log.read(9, 9) == b"line two\n"
        assert log.read(18, 0) == b""
        with pytest.raises(StorageError):
            log.read(10, 100)  # short: past the end
        log.truncate(9)
        assert log.size() == 9
        assert (store.root / "rollback-index.jsonl").read_bytes() == b"line one\n"
        log.append(b"three\n")  # appends go after the cut, not at the old end
        assert (store.root / "rollback-index.jsonl").read_bytes() == b"line one\nthree\n"
        assert store.read("rollback-index.jsonl") == b"line one\nthree\n"
    finally:
        log.close()
        log.close()  # twice is fine


@pytest.mark.parametrize("missing", [(), ("copy_file_range",), ("copy_file_range", "sendfile")],
                         ids=["copy_file_range", "sendfile", "read-and-append"])
def test_append_from_fd_appends_a_range_of_another_file(
    store: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...]
) -> None:
    for name in missing:  # a platform or file pair without them: the next way, then user space
        monkeypatch.delattr(os, name, raising=False)
    source = tmp_path / "spool"
    source.write_bytes(b"0123456789" * 1000)
    log = store.append_log("rollback-index.jsonl")
    fd = os.open(source, os.O_RDONLY)
    try:
        log.append(b"head\n")
        log.append_from_fd(fd, 5, 20)
        log.append(b"\ntail\n")  # O_APPEND again after the copy: written at the end
        log.append_from_fd(fd, 9000, 1000)  # up to the source's last byte
        log.sync()
        data = (store.root / "rollback-index.jsonl").read_bytes()
        assert data == b"head\n" + b"56789012345678901234" + b"\ntail\n" + (b"0123456789" * 100)
        assert log.size() == len(data)
        with pytest.raises(StorageError, match="ended 10 bytes early"):
            log.append_from_fd(fd, 9990, 20)
    finally:
        os.close(fd)
        log.close()


def test_append_from_fd_copies_across_file_systems(store: LocalStorage) -> None:
    """From a tmpfs spool (copy_file_range refuses another file system: sendfile does it)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    import tempfile

    with tempfile.TemporaryFile(dir="/dev/shm") as spool:
        spool.write(b"abc\n" * 5000)
        spool.flush()
        log = store.append_log("rollback-index.jsonl")
        try:
            log.append(b"x\n")
            log.append_from_fd(spool.fileno(), 4, 8000)
            log.append(b"y\n")
            assert log.read(0, log.size()) == b"x\n" + b"abc\n" * 2000 + b"y\n"
        finally:
            log.close()


def test_append_log_reopens_existing_bytes(store: LocalStorage) -> None:
    log = store.append_log("sub/dir/log.jsonl")
    log.append(b"abc\n")
    log.sync()
    log.close()
    again = store.append_log("sub/dir/log.jsonl")
    try:
        assert again.size() == 4
        again.append(b"def\n")
        assert again.read(0, 8) == b"abc\ndef\n"
    finally:
        again.close()


def test_iter_chunks_with_offset_end_and_chunk_size(store: LocalStorage) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    log = store.append_log("log")
    try:
        log.append(data)
        assert b"".join(log.iter_chunks()) == data
        chunks = list(log.iter_chunks(0, chunk_size=1000))
        assert [len(c) for c in chunks] == [1000] * 10 + [240]
        assert b"".join(chunks) == data
        assert b"".join(log.iter_chunks(100, chunk_size=7)) == data[100:]
        part = list(log.iter_chunks(100, chunk_size=300, end=1000))
        assert b"".join(part) == data[100:1000]
        assert all(len(c) <= 300 for c in part)
        assert list(log.iter_chunks(500, end=500)) == []
        assert list(log.iter_chunks(500, end=400)) == []
        assert list(log.iter_chunks(len(data))) == []
        assert b"".join(log.iter_chunks(10000, end=20000)) == data[10000:]  # end past the file
    finally:
        log.close()


# -- the lock --------------------------------------------------------------------------------
def test_a_second_lock_fails_fast_while_the_first_is_held(tmp_path: Path) -> None:
    first, second = LocalStorage(tmp_path / "l"), LocalStorage(tmp_path / "l")
    with first.lock():
        with pytest.raises(LockedError):
            with second.lock(wait=0):
                pytest.fail("two writers held the lock")  # pragma: no cover
        t0 = time.monotonic()
        with pytest.raises(LockedError):
            with second.lock(wait=0.3):
                pytest.fail("two writers held the lock")  # pragma: no cover
        assert time.monotonic() - t0 >= 0.25
    with second.lock(wait=0):  # released: free again
        pass
    with first.lock():
        pass


def test_a_lock_in_another_thread_waits_for_release(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "l")
    held, release, outcome = threading.Event(), threading.Event(), {}

    def holder() -> None:
        with LocalStorage(tmp_path / "l").lock():
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(LockedError):
            with store.lock(wait=0):
                pass  # pragma: no cover

        def waiter() -> None:
            try:
                with store.lock(wait=10):
                    outcome["got"] = time.monotonic()
            except LockedError as e:  # pragma: no cover
                outcome["error"] = e

        w = threading.Thread(target=waiter)
        w.start()
        time.sleep(0.2)
        released_at = time.monotonic()
        release.set()
        w.join(15)
        assert "got" in outcome, outcome
        assert outcome["got"] >= released_at
    finally:
        release.set()
        t.join(15)


def test_the_lock_is_held_across_processes(tmp_path: Path) -> None:
    root = tmp_path / "l"
    store = LocalStorage(root)
    code = (
        "import sys\n"
        "from kfm_ledger.errors import LockedError\n"
        "from kfm_ledger.storage import LocalStorage\n"
        "try:\n"
        "    with LocalStorage(sys.argv[1]).lock(wait=0):\n"
        "        print('acquired')\n"
        "except LockedError:\n"
        "    print('locked')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def other_process() -> str:
        r = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    with store.lock():
        assert other_process() == "locked"
    assert other_process() == "acquired"


def test_a_lock_holders_exception_releases_the_lock(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "l")
    with pytest.raises(ValueError):
        with store.lock():
            raise ValueError("boom")
    with LocalStorage(tmp_path / "l").lock(wait=0):
        pass


# -- temporaries -------------------------------------------------------------------------------
def test_no_temporary_files_are_left_after_writes(store: LocalStorage) -> None:
    store.write_atomic("a", b"1")
    store.write_atomic("a", b"2")
    store.write_once("b/c", b"3")
    store.write_once("b/c", b"3")
    store.write_private("k", b"4")
    store.write_once_many([(f"t/{i}", b"5") for i in range(_SYNCFS_AT + 1)])
    store.write_once_and_publish("checkpoints/1", "checkpoint", b"6")
    with pytest.raises(ImmutableObjectError):
        store.write_once_and_publish("checkpoints/1", "checkpoint", b"7")
    with pytest.raises(ImmutableObjectError):
        store.write_once("b/c", b"8")
    with pytest.raises(StorageError):
        store.write_private("k", b"9")
    assert temporaries(store.root) == []
    assert set(store.list("")) >= {"a", "b/c", "k", "checkpoint", "checkpoints/1", "t/0"}


def test_discard_stale_temporaries_removes_only_dead_writers_files(store: LocalStorage) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    store.write_atomic("tile/0/000", b"t")
    stale = [store.root / f".checkpoint.kfm-tmp.{dead}", store.root / "tile" / "0" / f".001.kfm-tmp.{dead}"]
    live = store.root / f".checkpoint.kfm-tmp.{os.getpid()}"
    user = [store.root / "notes.kfm-tmp.1", store.root / f".x.kfm-tmp.0{dead}"]
    for p in (*stale, live, *user):
        p.write_bytes(b"partial")
    removed = store.discard_stale_temporaries([""])
    assert removed == [f".checkpoint.kfm-tmp.{dead}"]
    removed = store.discard_stale_temporaries(["tile/"], recursive=True)
    assert removed == [f"tile/0/.001.kfm-tmp.{dead}"]
    assert not any(p.exists() for p in stale)
    assert live.exists() and all(p.exists() for p in user)
    assert store.read("tile/0/000") == b"t"


def test_a_zombie_writers_temporary_files_are_stale(store: LocalStorage) -> None:
    """A writer that exited but is not reaped yet (a bulk append's bundle writer killed with its
    parent, until init reaps it) never writes again: its temporary files are swept."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits at once
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while not local_storage._is_zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert local_storage._is_zombie(pid)
        (store.root / "tile" / "entries").mkdir(parents=True)
        stale = store.root / "tile" / "entries" / f".001.kfm-tmp.{pid}.0123abcd"
        stale.write_bytes(b"x")
        mine = store.root / "tile" / "entries" / f".002.kfm-tmp.{os.getpid()}.0123abcd"
        mine.write_bytes(b"y")
        assert store.discard_stale_temporaries(["tile/"], recursive=True) == [f"tile/entries/{stale.name}"]
        assert mine.exists() and not local_storage._is_zombie(os.getpid())
    finally:
        os.waitpid(pid, 0)
