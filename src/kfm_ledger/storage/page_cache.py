"""Bulk writes through a bounded window of the page cache (Linux ``sync_file_range(2)``,
``posix_fadvise(2)``).

A bulk append of a million rows writes 1.6 GB (the rows, then their entry bundles) that
nothing reads again during the append.  Left in the page cache, those pages push 1.6 GB of
other files' cached pages out, and each page written is one more page the kernel must find
and zero; on a virtual machine whose free memory is handed back to the host (free page
reporting), finding it costs a host fault per page: writing 811 MB took 7 s of system time
on such a machine, against 0.3 s when the pages were reused.  Like PostgreSQL's ring of
buffers for bulk writes, :class:`WriteWindow` keeps a bulk writer's footprint bounded: a
range it is given has its write-back started at once, and once the window holds more than
its limit, the oldest ranges are waited for (written to the disk, their pages clean) and
dropped from the cache, so the next writes reuse those pages.

Nothing here is about durability: an ``fsync`` or ``syncfs`` still decides that (a dropped
page is one already written back; the flush of the disk's own cache is the sync's).  Every
call is best effort: a failure of ``sync_file_range`` or ``fadvise`` only leaves the pages
cached, and an I/O error of the write-back is the later sync's to report.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

__all__ = ["WriteWindow", "start_writeback_function"]

# sync_file_range(2) flags
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4

_SYNC_FILE_RANGE: list[Callable[[int, int, int, int], int] | None] = []  # resolved once


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not _SYNC_FILE_RANGE:
        import ctypes

        try:
            raw = ctypes.CDLL(None, use_errno=True).sync_file_range
            raw.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
            raw.restype = ctypes.c_int
            _SYNC_FILE_RANGE.append(raw)
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            _SYNC_FILE_RANGE.append(None)
    return _SYNC_FILE_RANGE[0]


def start_writeback_function() -> Callable[[int, int, int], None] | None:
    """Linux ``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``: start writing a
    file's dirty pages to the disk and return at once (no durability promise: an fsync or
    syncfs still decides that, it only waits less).  None where it is missing."""
    raw = _sync_file_range()
    if raw is None:  # pragma: no cover - not Linux
        return None

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        raw(fd, offset, nbytes, _WRITE)  # a failure only means no head start

    return start_writeback


class WriteWindow:
    """At most about ``limit`` bytes of a bulk writer's recent writes kept in the page cache.

    :meth:`add` takes a range just written (its write-back is started); when the ranges held
    pass ``limit`` bytes (or ``max_ranges`` ranges: each may hold a descriptor open), the oldest
    are waited for and dropped from the cache (``POSIX_FADV_DONTNEED`` on clean pages) until half
    of each is held.  A descriptor handed over with ``owned`` is closed by the window once its
    range is dropped (or by :meth:`close`), so a writer of many small files need not keep them.
    Where ``sync_file_range`` or ``posix_fadvise`` is missing, nothing is dropped and owned
    descriptors are closed at once.  Not thread-safe: one per writer.
    """

    #: The default limit: large enough to keep a disk busy, small enough to stay in the CPU's
    #: caches' reach (811 MB written through it in 0.5-0.8 s of system time on a machine where the
    #: unbounded write cost 5-7.5 s: bench/bench_page_cache.py, docs/performance.md).
    LIMIT = 32 << 20

    #: The default bound on the ranges held (a bulk append's bundles: 256 rows, 100 KB or more, each).
    MAX_RANGES = 256

    def __init__(self, limit: int = LIMIT, max_ranges: int = MAX_RANGES) -> None:
        self._limit = limit
        self._max_ranges = max_ranges
        self._held: deque[tuple[int, int, int, bool]] = deque()  # (fd, offset, length, owned)
        self._bytes = 0
        self._raw = _sync_file_range()
        self._works = self._raw is not None and hasattr(os, "posix_fadvise")

    def add(self, fd: int, offset: int, length: int, *, owned: bool = False) -> None:
        """Bytes ``[offset, offset + length)`` of ``fd`` were written and are not needed in memory."""
        if not self._works:  # pragma: no cover - not Linux
            if owned:
                os.close(fd)
            return
        assert self._raw is not None
        self._raw(fd, offset, length, _WRITE)
        self._held.append((fd, offset, length, owned))
        self._bytes += length
        if self._bytes > self._limit or len(self._held) > self._max_ranges:
            while self._held and (self._bytes > self._limit // 2 or len(self._held) > self._max_ranges // 2):
                self._drop(*self._held.popleft())

    def _drop(self, fd: int, offset: int, length: int, owned: bool) -> None:
        self._bytes -= length
        try:
            assert self._raw is not None
            if self._raw(fd, offset, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) == 0:
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:  # pragma: no cover - best effort: the pages stay cached
            pass
        finally:
            if owned:
                os.close(fd)

    def close(self) -> None:
        """Close the owned descriptors still held; their pages stay cached (they are few)."""
        while self._held:
            fd, _, length, owned = self._held.popleft()
            self._bytes -= length
            if owned:
                os.close(fd)

    def __enter__(self) -> WriteWindow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
