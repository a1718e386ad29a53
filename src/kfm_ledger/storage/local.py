"""A ledger in a local directory (the default backend).

Durability follows the POSIX recipe: write a temporary file in the same
directory, fsync it, rename it over the target, fsync the directory.  The
writer lock is an ``fcntl.flock`` on ``<dir>/.lock`` (released by the kernel
if the process dies).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import ImmutableObjectError, LockedError, ObjectNotFoundError, StorageError
from .base import LOCK_KEY


def _makedirs(path: Path) -> None:
    """mkdir -p, syncing each parent whose new entry it made (so the directory survives a crash)."""
    if path.is_dir():
        return
    _makedirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_file(path: str) -> bytes:
    """A whole file's bytes, with plain system calls (objects are small and read often)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) <= size:  # a short read, or a file that grew meanwhile: read on
            parts = [data]
            while True:
                more = os.read(fd, 1 << 20)
                if not more:
                    break
                parts.append(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


#: The temporary name of a write in progress (or interrupted): ``.<name>.kfm-tmp.<pid>``.
_TMP_NAME = re.compile(r"^\..+\.kfm-tmp\.([1-9][0-9]{0,9})$")


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 1 << 22


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` may be a running process (when in doubt: yes, so nothing is removed)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # someone else's process, or not a number a process could have
    return True


def _file_names(directory: str) -> list[str]:
    try:
        return [e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _tmp_name(path: str) -> str:
    """The temporary name a write to ``path`` goes through (same directory: rename is atomic)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.kfm-tmp.{os.getpid()}")


class LocalAppendLog:
    """An append log's file (the JSONL), opened for appending and positional reads."""

    def __init__(self, path: Path, key: str | None = None) -> None:
        self._path = path
        #: The storage key (errors name it as their ``key``); the file name without one.
        self._key = key if key is not None else path.name
        created = not path.exists()
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            if created or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # A read-only copy (a CI checkout, an auditor's mirror) can still be read and
            # verified; writing to it fails at the first append.
            self._fd = os.open(path, os.O_RDONLY)
        if created:
            _fsync_dir(path.parent)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync(self) -> None:
        os.fsync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise StorageError(
                f"{self._path}: short read at offset {offset}: wanted {length} bytes, got {len(data)}",
                key=self._key,
            )
        return data

    def iter_chunks(self, offset: int = 0, chunk_size: int = 1 << 20, end: int | None = None) -> Iterator[bytes]:
        while True:
            want = chunk_size if end is None else min(chunk_size, end - offset)
            if want <= 0:
                return
            chunk = os.pread(self._fd, want, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


#: From this many new objects on, :meth:`LocalStorage.write_once_many` syncs the
#: file system twice instead of every file.
_SYNCFS_AT = 64
#: Files created at once by a large :meth:`LocalStorage.write_once_many`.
_CREATE_THREADS = 4


def _syncfs_function() -> Callable[[Path], None] | None:
    """Linux ``syncfs(2)`` (flush one file system), or None where it is missing."""
    global _SYNCFS
    if _SYNCFS is False:
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            raw = libc.syncfs
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            _SYNCFS = None
            return None

        def syncfs(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                if raw(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
            finally:
                os.close(fd)

        _SYNCFS = syncfs
    return _SYNCFS  # type: ignore[return-value]


_SYNCFS: Callable[[Path], None] | bool | None = False


class LocalStorage:
    """Objects as files under one directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root = os.fspath(self.root)
        self._dirs: set[str] = set()  # directories known to exist (made or seen by this object)

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"bad storage key {key!r}", key=key)
        return os.path.join(self._root, key)

    def _ensure_dir(self, directory: str) -> None:
        if directory not in self._dirs:
            _makedirs(Path(directory))
            self._dirs.add(directory)

    def describe(self) -> str:
        return f"local directory {self.root}"

    def read(self, key: str) -> bytes:
        path = self._file(key)
        try:
            return _read_file(path)
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror}", key=key) from e

    def exists(self, key: str) -> bool:
        return os.path.exists(self._file(key))

    def _write(self, key: str, data: bytes | memoryview, mode: int, *, sync_dir: bool = True) -> None:
        path = self._file(key)
        directory = os.path.dirname(path)
        self._ensure_dir(directory)
        tmp = _tmp_name(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except FileNotFoundError:  # the directory was removed behind our back
            self._dirs.discard(directory)
            self._ensure_dir(directory)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_dir:
            _fsync_dir(directory)

    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        self._write(key, data, 0o644)

    def write_private(self, key: str, data: bytes) -> None:
        path = self._file(key)
        if os.path.exists(path):
            raise StorageError(f"refusing to overwrite the existing secret {path}", key=key)
        self._write(key, data, 0o600)

    def _check_same(self, key: str, data: bytes) -> bool:
        """True if immutable object ``key`` exists with these bytes, False if it does not exist."""
        try:
            old = _read_file(self._file(key))
        except FileNotFoundError:
            return False
        if old != data:
            raise ImmutableObjectError(
                f"immutable object {key!r} already exists with different bytes "
                f"({len(old)} bytes stored, {len(data)} bytes offered)",
                key=key,
            )
        return True

    def write_once(self, key: str, data: bytes) -> None:
        if not self._check_same(key, data):
            self._write(key, data, 0o644)

    def write_once_many(self, items: list[tuple[str, bytes]]) -> None:
        """:meth:`write_once` for many objects, durable together when this returns.

        A few objects: each file is written, fsync'd and renamed, and each
        directory synced once.  Many (a bulk append's thousands of tiles): every
        file is written to a temporary name, one ``syncfs`` makes them all
        durable, they are renamed, and a second ``syncfs`` makes the renames
        durable: two flushes the disk can merge instead of one per file.
        """
        new = [(key, data) for key, data in items if not self._check_same(key, data)]
        syncfs = _syncfs_function() if len(new) >= _SYNCFS_AT else None
        if syncfs is None:
            dirs: set[str] = set()
            for key, data in new:
                self._write(key, data, 0o644, sync_dir=False)
                dirs.add(os.path.dirname(self._file(key)))
            for d in dirs:
                _fsync_dir(d)
            return
        renames = [(Path(_tmp_name(self._file(k))), self._path(k)) for k, _ in new]
        for parent in sorted({path.parent for _, path in renames}):
            _makedirs(parent)

        def write_file(job: tuple[tuple[Path, Path], tuple[str, bytes]]) -> None:
            (tmp, _), (_, data) = job
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.fchmod(fd, 0o644)  # as _write does: whatever the umask, tiles are world-readable
                _write_all(fd, data)
            finally:
                os.close(fd)

        try:
            # Creating a file can wait for the disk (inode tables): several at once.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(_CREATE_THREADS, thread_name_prefix="kfm-write") as pool:
                for _ in pool.map(write_file, zip(renames, new)):
                    pass
            # One folder per file system the objects live on (tile/ might be a mount of its own).
            devices = {os.stat(d).st_dev: d for d in sorted({str(path.parent) for _, path in renames})}
            for d in devices.values():
                syncfs(Path(d))  # every file's bytes durable before any is visible
            for tmp, path in renames:
                os.replace(tmp, path)
            renames = []
            for d in devices.values():
                syncfs(Path(d))  # the new names durable
        finally:
            for tmp, _ in renames:  # a failure before the renames: no temporary file left behind
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        """One file, two names: written and fsync'd once, hard-linked as ``once_key``
        (then its directory synced), renamed to ``atomic_key`` (then its directory synced).

        A new file costs an inode and an fsync; a signed checkpoint is both kept
        (``checkpoints/<size>``) and published (``checkpoint``) on every append, so
        sharing one file saves both.  Falls back to two writes where links fail.
        """
        once = self._file(once_key)
        target = self._file(atomic_key)
        if self._check_same(once_key, data):  # the same bytes are kept already (else ImmutableObjectError)
            self.write_atomic(atomic_key, data)
            return
        once_dir, target_dir = os.path.dirname(once), os.path.dirname(target)
        self._ensure_dir(once_dir)
        self._ensure_dir(target_dir)
        tmp = _tmp_name(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                os.fchmod(fd, 0o644)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, once)
            except FileExistsError:  # written meanwhile: the immutable rule decides
                self.write_once(once_key, data)
            except OSError:  # no hard links here
                self.write_once(once_key, data)
            else:
                _fsync_dir(once_dir)  # the kept name is durable: write_once is done
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(target_dir)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._file(key))
        except FileNotFoundError:
            pass

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> list[str]:
        """Remove ``.<name>.kfm-tmp.<pid>`` files whose writer process is gone (see :func:`_tmp_name`).

        The check is by process id on this host: a writer in another PID namespace (another
        container) sharing the directory looks gone; do not recover while one writes.
        """
        removed: list[str] = []
        pid_max = _pid_max()
        for folder in folders:
            top = self._file(folder.rstrip("/")) if folder else self._root
            walk = os.walk(top) if recursive else [(top, [], _file_names(top))]
            for directory, _subdirs, names in walk:
                for name in names:
                    m = _TMP_NAME.match(name)
                    if m is None or int(m.group(1)) > pid_max or _process_alive(int(m.group(1))):
                        continue
                    try:
                        os.unlink(os.path.join(directory, name))
                    except FileNotFoundError:
                        continue
                    removed.append(os.path.relpath(os.path.join(directory, name), self._root))
        return removed

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                yield full.relative_to(self.root).as_posix()

    def append_log(self, key: str) -> LocalAppendLog:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return LocalAppendLog(path, key)

    @contextlib.contextmanager
    def lock(self, *, wait: float = 0.0) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_KEY, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockedError(
                            f"another writer holds the lock on {self.root} "
                            f"(waited {wait:g} s); try again when it has finished",
                            key=LOCK_KEY,
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def local_path(self, key: str) -> str:
        """The file of ``key`` (:class:`~kfm_ledger.storage.base.LocalFiles`)."""
        return str(self._path(key))
