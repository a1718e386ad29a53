"""A ledger in a local directory (the default backend).

Durability follows the POSIX recipe: write a temporary file in the same
directory, fsync it, rename it over the target, fsync the directory.  The
writer lock is an ``fcntl.flock`` on ``<dir>/.lock`` (released by the kernel
if the process dies).

No path leaves the ledger (a hostile ledger directory: planted symbolic links,
FIFOs, predictable temporary names).  The ledger's own directory is opened
once as given (the caller may name it through a link); every folder inside it
is opened relative to its parent's file descriptor with
``O_DIRECTORY|O_NOFOLLOW`` and kept open (so a tile write costs no extra system
call per path component), and every file relative to its folder's descriptor
with ``O_NOFOLLOW`` and checked to be a regular file.  A symbolic link or a
non-regular file inside the ledger is refused with a
:class:`~kfm_ledger.errors.StorageError` naming its path.  Temporary files are
created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` under random names
``.<name>.kfm-tmp.<pid>.<random hex>``; ``rename`` and ``unlink`` act on a
link itself, never on its target.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import ImmutableObjectError, LockedError, ObjectNotFoundError, StorageError
from .base import LOCK_KEY
from .page_cache import WriteWindow, start_writeback_function

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = os.O_NOFOLLOW
#: Folders inside the ledger: never through a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC
#: Files inside the ledger; O_NONBLOCK so that a planted FIFO cannot make a read hang
#: (it changes nothing for a regular file).
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK
#: A temporary file: always a new file, never through a link.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
#: A new append log.
_APPEND_CREATE_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
#: O_NOFOLLOW on a link fails with ELOOP (Linux) or EMLINK (FreeBSD).
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK)
#: Folder descriptors one LocalStorage keeps open (a tile folder holds up to 1000 tiles).
_MAX_CACHED_DIRS = 128

_T = TypeVar("_T")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: The temporary name of a write in progress (or interrupted): ``.<name>.kfm-tmp.<pid>.<random hex>``
#: (names without the random part are those of older versions, swept the same way).
_TMP_NAME = re.compile(r"^\..+\.kfm-tmp\.([1-9][0-9]{0,9})(?:\.[0-9a-f]{1,32})?$")


def _tmp_name(name: str) -> str:
    """A fresh temporary name for a write to ``name`` (in the same folder: rename is atomic)."""
    return f".{name}.kfm-tmp.{os.getpid()}.{os.urandom(6).hex()}"


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
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and only waits to be reaped (Linux ``/proc/<pid>/stat`` state Z):
    it will never write again (a bulk append's bundle writer killed with its parent is one until
    init reaps it).  False when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ')'.
    return stat_line[stat_line.rfind(b")") + 2 : stat_line.rfind(b")") + 3] == b"Z"


def _refusal(path: str, key: str | None, why: str, *, inside: bool = True) -> StorageError:
    if not inside:
        return StorageError(f"refusing {path}: {why}", key=key)
    return StorageError(
        f"refusing {path}: {why}; kfm never follows a link or opens a non-regular file inside a ledger "
        "(inspect it, then replace it with the real file or remove it)",
        key=key,
    )


def _explain(dir_fd: int, name: str) -> str:
    """Why ``name`` (which failed to open without following links) was refused."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "it is a symbolic link or not what kfm expects"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory"
    return "it is not a regular file"


def _check_regular(fd: int, path: str, key: str | None, *, inside: bool = True) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):  # as open() for writing would say
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        raise _refusal(path, key, "it is not a regular file", inside=inside)
    return st


def _open_regular(dir_fd: int, name: str, flags: int, path: str, key: str | None, mode: int = 0o644) -> int:
    """``name`` in ``dir_fd`` opened without following a link; a regular file or StorageError."""
    try:
        fd = os.open(name, flags | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in _LINK_ERRNOS or e.errno == errno.ENXIO:
            raise _refusal(path, key, _explain(dir_fd, name)) from None
        raise
    _check_regular(fd, path, key)
    return fd


def _read_fd(fd: int, size: int) -> bytes:
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


def open_regular_path(path: str | os.PathLike[str], key: str | None = None) -> int:
    """A read-only descriptor of the regular file at ``path``; a symbolic link there (or a FIFO,
    a device, a directory) is refused with StorageError naming the path."""
    p = os.fspath(path)
    try:
        fd = os.open(p, _READ_FLAGS)
    except OSError as e:
        if e.errno in _LINK_ERRNOS:
            raise _refusal(p, key, "it is a symbolic link") from None
        raise
    _check_regular(fd, p, key)
    return fd


def read_regular_file(
    path: str | os.PathLike[str], *, follow: bool = False, limit: int | None = None
) -> tuple[bytes, os.stat_result]:
    """A whole file's bytes and its ``fstat``, refusing anything but a regular file.

    ``follow=False`` also refuses a symbolic link at ``path`` itself (StorageError naming
    the path); a FIFO never blocks the read; with ``limit``, a file of more bytes is refused
    before it is read.  For files kfm opens by path outside a storage (key files, the mirror
    and the JSONL handed to readers).
    """
    p = os.fspath(path)
    flags = os.O_RDONLY | _CLOEXEC | os.O_NONBLOCK | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        if not follow and e.errno in _LINK_ERRNOS:
            raise _refusal(p, None, "it is a symbolic link", inside=False) from None
        raise
    st = _check_regular(fd, p, None, inside=False)
    try:
        if limit is not None and st.st_size > limit:
            why = f"it is {st.st_size} bytes, more than the {limit} such a file may hold"
            raise _refusal(p, None, why, inside=False)
        return _read_fd(fd, st.st_size), st
    finally:
        os.close(fd)


def check_regular_path(path: str | os.PathLike[str], key: str | None = None) -> None:
    """Refuse (StorageError) a symbolic link or non-regular file at ``path``; absent is fine.

    For files that a library opens by path (SQLite, pyarrow) and that cannot be given
    ``O_NOFOLLOW``: checked right before they are opened (a race with a writer of the
    directory remains; see docs/operations.md, "Hostile ledger directory").
    """
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _refusal(p, key, "it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _refusal(p, key, "it is not a regular file")


class LocalAppendLog:
    """An append log's file (the JSONL), opened for appending and positional reads."""

    def __init__(self, fd: int, path: str | Path, key: str) -> None:
        self._fd = fd
        self._path = Path(path)
        #: The storage key (errors name it as their ``key``).
        self._key = key

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def fileno(self) -> int:
        """The log's open descriptor (a bulk append's bundle writer reads the new rows through it)."""
        return self._fd

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def append_from_fd(self, source: int, offset: int, length: int) -> None:
        """Append ``length`` bytes of the file open as ``source``, from ``offset`` on.

        Copied by the kernel where it can (Linux ``copy_file_range(2)`` within a file system,
        ``sendfile(2)`` across file systems, e.g. from a tmpfs spool: page cache to page cache,
        no user-space buffer, Python's GIL released), else read and appended.  The log's
        descriptor is opened with ``O_APPEND``, which both refuse: the flag is cleared for the copy
        (the writer lock is held: nothing else appends meanwhile) and set again after.  The copied
        range's write-back is started.  Not durable until :meth:`sync`; StorageError if ``source``
        ends early.
        """
        position = self.size()
        copied = 0

        def by_copy_file_range(n: int) -> int:
            return os.copy_file_range(source, self._fd, n, offset + copied, position + copied)

        def by_sendfile(n: int) -> int:
            os.lseek(self._fd, position + copied, os.SEEK_SET)
            return os.sendfile(self._fd, source, offset + copied, n)

        kernel_copies = [f for name, f in (("copy_file_range", by_copy_file_range), ("sendfile", by_sendfile))
                         if hasattr(os, name)]
        if kernel_copies:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_APPEND)
            try:
                for kernel_copy in kernel_copies:
                    try:
                        while copied < length:
                            n = kernel_copy(min(length - copied, 1 << 30))
                            if n == 0:
                                break  # the source ended: reported below
                            copied += n
                        break
                    except OSError as e:
                        # Not for this pair of files (EXDEV: another file system, an old kernel):
                        # the next way, then user space.
                        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                            raise
            finally:
                fcntl.fcntl(self._fd, fcntl.F_SETFL, flags)
        while copied < length:
            data = os.pread(source, min(length - copied, 4 << 20), offset + copied)
            if not data:
                raise StorageError(
                    f"{self._path}: the source of an append ended {length - copied} bytes early "
                    f"(at offset {offset + copied})",
                    key=self._key,
                )
            self.append(data)
            copied += len(data)
        if (start_writeback := start_writeback_function()) is not None:
            start_writeback(self._fd, position, length)  # the disk starts on these bytes now, not at the fsync

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


def _syncfs_function() -> Callable[[int], None] | None:
    """Linux ``syncfs(2)`` on an open descriptor (flush its file system), or None where it is missing."""
    global _SYNCFS
    if _SYNCFS is False:
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            raw = libc.syncfs
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            _SYNCFS = None
            return None

        def syncfs(fd: int) -> None:
            if raw(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs failed: {os.strerror(err)}")

        _SYNCFS = syncfs
    return _SYNCFS  # type: ignore[return-value]


_SYNCFS: Callable[[int], None] | bool | None = False


def _publish_renames(
    held: dict[str, int], renames: list[tuple[int, str, str]], syncfs: Callable[[int], None] | None
) -> None:
    """Make written temporary files ``(folder descriptor, temporary name, name)`` visible: one
    ``syncfs`` per file system the folders live on (``tile/`` might be a mount of its own) makes
    every file's bytes durable before any is visible, the renames, then one more makes the names
    durable.  On failure (or with ``syncfs`` None: called off) the temporary files not renamed
    yet are removed, so none is left behind."""
    try:
        if syncfs is None:
            return
        devices = {os.fstat(fd).st_dev: fd for fd in held.values()}
        for fd in devices.values():
            syncfs(fd)
        while renames:
            dfd, tmp, name = renames[-1]
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            renames.pop()
        for fd in devices.values():
            syncfs(fd)
    finally:
        for dfd, tmp, _ in renames:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
        renames.clear()


#: What a crashed ``kfm init`` may have left in its directory (a rerun finishes it).
INIT_LEFTOVERS = frozenset({"log.key", "log.vkey", "rollback-index.jsonl", "checkpoints", LOCK_KEY})


class LocalStorage:
    """Objects as files under one directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root = os.fspath(self.root)
        # Open folder descriptors by folder ("" is the root), in use by ``_busy`` callers;
        # descriptors dropped from the cache are closed once no call uses any (``_retired``).
        self._dir_fds: dict[str, int] = {}
        self._retired: list[int] = []
        self._busy = 0
        self._mutex = threading.Lock()

    # ------------------------------------------------------------ folders
    def _split(self, key: str) -> tuple[str, str]:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"bad storage key {key!r}", key=key)
        return "/".join(parts[:-1]), parts[-1]

    def _file(self, key: str) -> str:
        self._split(key)
        return os.path.join(self._root, key)

    def _open_root(self, create: bool) -> int:
        if create:
            try:
                os.makedirs(self._root, exist_ok=True)
            except FileExistsError:
                pass
        return os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)  # as the caller named it

    def _walk(self, folder: str, create: bool) -> int:
        """The cached descriptor of ``folder`` (opened component by component, never through a link).

        Under ``_mutex``.  FileNotFoundError when it is missing and ``create`` is false.
        """
        fd = self._dir_fds.get(folder)
        if fd is not None:
            return fd
        if not folder:
            fd = self._open_root(create)
        else:
            head, _, name = folder.rpartition("/")
            parent = self._walk(head, create)
            path = os.path.join(self._root, folder)
            try:
                try:
                    fd = self._open_dir(parent, name, path, folder)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=parent)
                        os.fsync(parent)  # the new folder survives a crash
                    fd = self._open_dir(parent, name, path, folder)
            except OSError as e:
                raise OSError(e.errno, e.strerror, path) from e  # named by its full path
        if len(self._dir_fds) >= _MAX_CACHED_DIRS:
            self._retired.extend(fd for k, fd in self._dir_fds.items() if k)
            self._dir_fds = {"": self._dir_fds[""]} if "" in self._dir_fds else {}
        self._dir_fds[folder] = fd
        return fd

    def _open_dir(self, parent: int, name: str, path: str, folder: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in _LINK_ERRNOS or e.errno == errno.ENOTDIR:
                raise _refusal(path, folder, _explain(parent, name)) from None
            raise

    def _acquire(self, folder: str, create: bool) -> int:
        with self._mutex:
            fd = self._walk(folder, create)
            self._busy += 1
            return fd

    def _release(self) -> None:
        with self._mutex:
            self._busy -= 1
            if not self._busy and self._retired:
                for fd in self._retired:
                    os.close(fd)
                self._retired = []

    def _stale(self, folder: str, fd: int) -> bool:
        """Whether the cached folder was removed meanwhile (then it is dropped from the cache)."""
        if os.fstat(fd).st_nlink:
            return False
        with self._mutex:
            drop = [k for k in self._dir_fds if k == "" or folder == k or folder.startswith(k + "/")]
            drop += [k for k in self._dir_fds if folder == "" or k.startswith(folder + "/")]
            for k in set(drop):
                self._retired.append(self._dir_fds.pop(k))
        return True

    def _at(self, folder: str, create: bool, fn: Callable[[int], _T]) -> _T:
        """``fn(folder's descriptor)``, again once if the folder was removed and made anew meanwhile.

        An OSError names the file by its full path (not the name relative to the folder).
        """
        try:
            return self._at_once_more(folder, create, fn)
        except OSError as e:
            name = e.filename
            if isinstance(name, str) and not os.path.isabs(name) and not isinstance(e, StorageError):
                full = os.path.join(self._root, folder, name) if folder else os.path.join(self._root, name)
                raise OSError(e.errno, e.strerror, full) from e
            raise

    def _at_once_more(self, folder: str, create: bool, fn: Callable[[int], _T]) -> _T:
        for attempt in (0, 1):
            fd = self._acquire(folder, create)
            try:
                return fn(fd)
            except FileNotFoundError:
                if attempt or not self._stale(folder, fd):
                    raise
            finally:
                self._release()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the folder descriptors (the storage stays usable: they are opened again)."""
        with self._mutex:
            self._retired.extend(self._dir_fds.values())
            self._dir_fds = {}
            if not self._busy:
                for fd in self._retired:
                    os.close(fd)
                self._retired = []

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            for fd in [*self.__dict__.get("_dir_fds", {}).values(), *self.__dict__.get("_retired", [])]:
                os.close(fd)
        except Exception:
            pass

    def describe(self) -> str:
        return f"local directory {self.root}"

    # ------------------------------------------------------------ reads
    def read(self, key: str) -> bytes:
        folder, name = self._split(key)
        path = os.path.join(self._root, key)

        def read_at(dfd: int) -> bytes:
            fd = _open_regular(dfd, name, os.O_RDONLY, path, key)
            try:
                return _read_fd(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)

        try:
            return self._at(folder, False, read_at)
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror}", key=key) from e

    def exists(self, key: str) -> bool:
        """Whether something is stored under ``key`` (a link there counts: reading it is refused)."""
        folder, name = self._split(key)
        try:
            self._at(folder, False, lambda dfd: os.stat(name, dir_fd=dfd, follow_symlinks=False))
        except FileNotFoundError:
            return False
        return True

    def read_private(self, key: str) -> bytes:
        """A secret's bytes (a private key): refused unless a regular file that only its owner can read.

        (:class:`~kfm_ledger.storage.base.PrivateObjects`.)  A group- or world-accessible
        key is refused like ssh does, with the fix (``chmod 600``) in the message.
        """
        folder, name = self._split(key)
        path = os.path.join(self._root, key)

        def read_at(dfd: int) -> bytes:
            fd = _open_regular(dfd, name, os.O_RDONLY, path, key)
            try:
                st = os.fstat(fd)
                check_private_mode(st, path, key)
                return _read_fd(fd, st.st_size)
            finally:
                os.close(fd)

        try:
            return self._at(folder, False, read_at)
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None

    # ------------------------------------------------------------ writes
    def _create_tmp(self, dfd: int, name: str, mode: int) -> tuple[str, int]:
        for _ in range(8):
            tmp = _tmp_name(name)
            try:
                return tmp, os.open(tmp, _CREATE_FLAGS, mode, dir_fd=dfd)
            except FileExistsError:  # someone's file under our random name: another name
                continue
        raise StorageError(f"cannot create a temporary file for {name} in {self._root}", key=name)

    def _write_tmp(
        self, dfd: int, name: str, data: bytes | memoryview, mode: int, *, sync: bool = True,
        window: WriteWindow | None = None,
    ) -> str:
        """A new temporary file in ``dfd`` holding ``data`` (fsync'd unless ``sync`` is false; with
        a ``window`` its write to the disk started and its pages left to the window); its name."""
        tmp, fd = self._create_tmp(dfd, name, mode)
        try:
            try:
                os.fchmod(fd, mode)  # whatever the umask
                _write_all(fd, data)
                if sync:
                    os.fsync(fd)
                elif window is not None:
                    handed, fd = fd, -1  # the window's from here on (it closes it)
                    window.add(handed, 0, len(data), owned=True)
            finally:
                if fd >= 0:
                    os.close(fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        return tmp

    def _write(self, key: str, data: bytes | memoryview, mode: int, *, sync_dir: bool = True) -> None:
        folder, name = self._split(key)

        def write_at(dfd: int) -> None:
            tmp = self._write_tmp(dfd, name, data, mode)
            try:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces a link, never follows it
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            if sync_dir:
                os.fsync(dfd)

        self._at(folder, True, write_at)

    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        self._write(key, data, 0o644)

    def write_private(self, key: str, data: bytes) -> None:
        folder, name = self._split(key)
        path = os.path.join(self._root, key)

        def write_at(dfd: int) -> None:
            tmp = self._write_tmp(dfd, name, data, 0o600)
            try:
                # A hard link never replaces: whatever is at ``name`` (a file, a planted link) stays.
                os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            except FileExistsError:
                raise StorageError(f"refusing to overwrite the existing secret {path}", key=key) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
            os.fsync(dfd)

        self._at(folder, True, write_at)

    def _check_same(self, key: str, data: bytes) -> bool:
        """True if immutable object ``key`` exists with these bytes, False if it does not exist."""
        try:
            old = self.read(key)
        except ObjectNotFoundError:
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
            folders: set[str] = set()
            for key, data in new:
                self._write(key, data, 0o644, sync_dir=False)
                folders.add(self._split(key)[0])
            for folder in folders:
                self._at(folder, True, os.fsync)
            return
        split = [self._split(key) for key, _ in new]
        held: dict[str, int] = {}
        try:
            for folder in sorted({folder for folder, _ in split}):
                held[folder] = self._acquire(folder, True)  # open (and in use) until the end
            jobs = [(held[folder], name, data) for (folder, name), (_, data) in zip(split, new)]
            self._write_many(held, jobs, syncfs)
        finally:
            for _ in held:
                self._release()

    def write_once_stream(self, items: Iterable[tuple[str, bytes]]) -> None:
        """:meth:`write_once_many` for objects made one at a time (a bulk append's entry bundles:
        811 MB at a million rows), none of them held: each is written to a temporary file as it
        comes (its write to the disk started at once), then one ``syncfs`` makes them all durable,
        they are renamed, and a second ``syncfs`` makes the names durable.  Where ``syncfs`` is
        missing, :meth:`write_once_many` in groups of 64 MiB.

        Each object is done with (written, or copied into a group) before the next is asked for:
        a bulk append's bundles are views of a buffer that is reused once the next is asked for."""
        syncfs = _syncfs_function()
        if syncfs is None:  # pragma: no cover - not Linux
            group: list[tuple[str, bytes]] = []
            size = 0
            for key, data in items:
                group.append((key, bytes(data)))  # (a view's buffer may change once the next is taken)
                size += len(data)
                if size >= 64 << 20:
                    self.write_once_many(group)
                    group, size = [], 0
            self.write_once_many(group)
            return
        held: dict[str, int] = {}
        renames: list[tuple[int, str, str]] = []  # (folder descriptor, temporary name, name)
        try:
            try:
                # 811 MB of bundles at a million rows: not left in the page cache.
                with WriteWindow() as window:
                    for key, data in items:
                        if self._check_same(key, data):
                            continue
                        folder, name = self._split(key)
                        if folder not in held:
                            held[folder] = self._acquire(folder, True)  # open (and in use) until the end
                        dfd = held[folder]
                        tmp = self._write_tmp(dfd, name, data, 0o644, sync=False, window=window)
                        renames.append((dfd, tmp, name))
            except BaseException:
                _publish_renames(held, renames, None)  # called off: the temporary files removed
                raise
            _publish_renames(held, renames, syncfs)
        finally:
            for _ in held:
                self._release()

    def _write_many(
        self, held: dict[str, int], jobs: list[tuple[int, str, bytes]], syncfs: Callable[[int], None]
    ) -> None:
        renames: list[tuple[int, str, str]] = []  # (folder descriptor, temporary name, name)
        mutex = threading.Lock()

        def write_file(job: tuple[int, str, bytes]) -> None:
            dfd, name, data = job
            tmp = self._write_tmp(dfd, name, data, 0o644, sync=False)  # world-readable whatever the umask
            with mutex:
                renames.append((dfd, tmp, name))

        try:
            # Creating a file can wait for the disk (inode tables): several at once.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(_CREATE_THREADS, thread_name_prefix="kfm-write") as pool:
                for _ in pool.map(write_file, jobs):
                    pass
        except BaseException:
            _publish_renames(held, renames, None)
            raise
        _publish_renames(held, renames, syncfs)

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        """One file, two names: written and fsync'd once, hard-linked as ``once_key``
        (then its directory synced), renamed to ``atomic_key`` (then its directory synced).

        A new file costs an inode and an fsync; a signed checkpoint is both kept
        (``checkpoints/<size>``) and published (``checkpoint``) on every append, so
        sharing one file saves both.  Falls back to two writes where links fail.
        """
        if self._check_same(once_key, data):  # the same bytes are kept already (else ImmutableObjectError)
            self.write_atomic(atomic_key, data)
            return
        once_folder, once_name = self._split(once_key)
        folder, name = self._split(atomic_key)
        once_dfd = self._acquire(once_folder, True)
        try:
            dfd = self._acquire(folder, True)
            try:
                tmp = self._write_tmp(dfd, name, data, 0o644)
                try:
                    try:
                        os.link(tmp, once_name, src_dir_fd=dfd, dst_dir_fd=once_dfd, follow_symlinks=False)
                    except FileExistsError:  # written meanwhile: the immutable rule decides
                        self.write_once(once_key, data)
                    except OSError:  # no hard links here
                        self.write_once(once_key, data)
                    else:
                        os.fsync(once_dfd)  # the kept name is durable: write_once is done
                    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dfd)
                    raise
                os.fsync(dfd)
            finally:
                self._release()
        finally:
            self._release()

    def delete(self, key: str) -> None:
        folder, name = self._split(key)
        try:
            self._at(folder, False, lambda dfd: os.unlink(name, dir_fd=dfd))  # removes a link, not its target
        except FileNotFoundError:
            pass

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> list[str]:
        """Remove ``.<name>.kfm-tmp.<pid>[.<random>]`` files whose writer process is gone (see :func:`_tmp_name`).

        The check is by process id on this host: a writer in another PID namespace (another
        container) sharing the directory looks gone; do not recover while one writes.
        Folders are walked without following links.
        """
        removed: list[str] = []
        pid_max = _pid_max()

        def sweep(folder: str, dfd: int, names: list[str]) -> None:
            for name in names:
                m = _TMP_NAME.match(name)
                if m is None or int(m.group(1)) > pid_max or _process_alive(int(m.group(1))):
                    continue
                try:
                    os.unlink(name, dir_fd=dfd)
                except FileNotFoundError:
                    continue
                removed.append(f"{folder}/{name}" if folder else name)

        for top in folders:
            top = top.strip("/")

            def at(dfd: int, top: str = top) -> None:
                if not recursive:
                    with os.scandir(dfd) as it:
                        sweep(top, dfd, [e.name for e in it if e.is_file(follow_symlinks=False)])
                    return
                for dirpath, _dirs, names, sub in os.fwalk(".", dir_fd=dfd):
                    rel = os.path.normpath(os.path.join(top, dirpath)) if top else os.path.normpath(dirpath)
                    sweep("" if rel == "." else rel, sub, names)

            with contextlib.suppress(FileNotFoundError):
                self._at(top, False, at)
        return removed

    def list(self, prefix: str) -> Iterator[str]:
        folder = prefix.strip("/")
        if folder:
            self._split(folder)

        def at(dfd: int) -> list[str]:
            keys: list[str] = []
            for dirpath, _dirs, names, _fd in os.fwalk(".", dir_fd=dfd):  # never descends through a link
                rel = os.path.normpath(os.path.join(folder, dirpath)) if folder else os.path.normpath(dirpath)
                base = "" if rel == "." else rel + "/"
                keys.extend(base + name for name in names if not name.startswith("."))
            return keys

        try:
            keys = self._at(folder, False, at)
        except FileNotFoundError:
            return
        except StorageError:
            if folder and not os.path.isdir(os.path.join(self._root, folder)):
                return  # a file where a folder was asked: nothing under it
            raise
        yield from keys

    def append_log(self, key: str) -> LocalAppendLog:
        folder, name = self._split(key)
        path = os.path.join(self._root, key)

        def open_at(dfd: int) -> int:
            try:
                fd = os.open(name, _APPEND_CREATE_FLAGS, 0o644, dir_fd=dfd)
            except FileExistsError:
                pass
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
            else:
                os.fchmod(fd, 0o644)
                os.fsync(dfd)  # the new name survives a crash
                return fd
            try:
                return _open_regular(dfd, name, os.O_RDWR | os.O_APPEND, path, key)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                # A read-only copy (a CI checkout, an auditor's mirror) can still be read and
                # verified; writing to it fails at the first append.
                return _open_regular(dfd, name, os.O_RDONLY, path, key)

        try:
            fd = self._at(folder, True, open_at)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            fd = self._at(folder, False, open_at)  # a read-only copy: no folder to make
        return LocalAppendLog(fd, path, key)

    @contextlib.contextmanager
    def lock(self, *, wait: float = 0.0) -> Iterator[None]:
        path = os.path.join(self._root, LOCK_KEY)
        fd = self._at("", True, lambda dfd: _open_regular(dfd, LOCK_KEY, os.O_RDWR | os.O_CREAT, path, LOCK_KEY))
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
        return self._file(key)

    # ------------------------------------------------------------ init
    def check_new_ledger_dir(self) -> None:
        """Refuse (StorageError) to create a ledger in a directory kfm did not make.

        Fine: no directory yet (it is made), an empty one the current user owns, or one
        holding only what a crashed ``kfm init`` leaves (:data:`INIT_LEFTOVERS`, ``checkpoints/0``
        and temporaries), so that init can be run again.
        """
        try:
            st = os.stat(self._root)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"{self._root} exists and is not a directory; choose another path", key="")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise StorageError(
                f"refusing to create a ledger in {self._root}: the directory belongs to another user "
                f"(uid {st.st_uid}), who could plant files in it; give kfm init a path that does not "
                "exist yet (it creates the directory) or one you own",
                key="",
            )
        strays = []
        for name in os.listdir(self._root):
            if _TMP_NAME.match(name):
                continue
            full = os.path.join(self._root, name)
            lst = os.lstat(full)
            if name not in INIT_LEFTOVERS or stat.S_ISLNK(lst.st_mode):
                strays.append(name)
            elif name == "checkpoints":
                if not stat.S_ISDIR(lst.st_mode) or any(
                    n != "0" and not _TMP_NAME.match(n) for n in os.listdir(full)
                ):
                    strays.append(name)
            elif not stat.S_ISREG(lst.st_mode):
                strays.append(name)
        if strays:
            shown = ", ".join(sorted(strays)[:5]) + (", ..." if len(strays) > 5 else "")
            raise StorageError(
                f"refusing to create a ledger in {self._root}: the directory is not empty ({shown}); "
                "give kfm init a path that does not exist yet (it creates the directory) or an empty one",
                key="",
            )


def check_private_mode(st: os.stat_result, path: str, key: str | None = None) -> None:
    """Refuse (StorageError) a private key file that group or others may access (as ssh does)."""
    if st.st_mode & 0o077:
        raise StorageError(
            f"refusing the private key {path}: its mode {stat.S_IMODE(st.st_mode):04o} lets group or "
            f"others access it; run: chmod 600 {path}",
            key=key,
        )

