"""storage.page_cache: a bulk writer's recent writes bounded in the page cache, nothing lost."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import pytest

from kfm_ledger.storage.page_cache import WriteWindow, start_writeback_function

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range and fadvise are Linux's")

MiB = 1 << 20


def resident_bytes(path: Path) -> int:
    """How many of the file's bytes are in the page cache now (mincore(2) over a mapping of it)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    finally:
        os.close(fd)
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = ctypes.create_string_buffer(pages)
        assert libc.mincore(address, size, vector) == 0, ctypes.get_errno()
        return sum(b & 1 for b in vector.raw[:pages]) * mmap.PAGESIZE
    finally:
        libc.munmap(address, size)


def write_through(window: WriteWindow, path: Path, total: int, piece: int) -> bytes:
    data = os.urandom(piece)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, total, piece):
            os.pwrite(fd, data, offset)
            window.add(fd, offset, piece)
    finally:
        window.close()
        os.close(fd)
    return data


def test_a_window_keeps_a_bulk_write_out_of_the_page_cache_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rows"
    data = write_through(WriteWindow(limit=2 * MiB), path, 24 * MiB, 256 << 10)
    resident = resident_bytes(path)
    # Only what the window still held when it closed (at most its limit) may be cached.
    assert resident <= 2 * MiB, resident
    with open(path, "rb") as f:
        for offset in range(0, 24 * MiB, 256 << 10):
            assert f.read(256 << 10) == data, offset


def test_without_a_window_the_same_write_stays_cached(tmp_path: Path) -> None:
    """The control for the test above: the bound is the window's doing, not the file system's."""
    path = tmp_path / "rows"
    data = os.urandom(256 << 10)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for offset in range(0, 8 * MiB, len(data)):
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    assert resident_bytes(path) > 4 * MiB


def test_owned_descriptors_are_closed_once_dropped_or_at_close(tmp_path: Path) -> None:
    window = WriteWindow(limit=1 * MiB)
    for k in range(12):
        fd = os.open(tmp_path / f"bundle-{k}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"x" * (256 << 10))
        window.add(fd, 0, 256 << 10, owned=True)
    assert 0 < open_in(tmp_path) < 12  # the oldest were dropped and closed, the newest held
    window.close()
    assert open_in(tmp_path) == 0
    assert all((tmp_path / f"bundle-{k}").stat().st_size == 256 << 10 for k in range(12))


def test_a_descriptor_not_owned_stays_open(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "rows", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with WriteWindow(limit=MiB) as window:
            for offset in range(0, 4 * MiB, 512 << 10):
                os.pwrite(fd, b"y" * (512 << 10), offset)
                window.add(fd, offset, 512 << 10)
        assert _is_open(fd)
    finally:
        os.close(fd)


def test_start_writeback_leaves_the_bytes_as_written(tmp_path: Path) -> None:
    start = start_writeback_function()
    assert start is not None
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        start(fd, 0, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"abc" * 1000


def open_in(folder: Path) -> int:
    """How many descriptors of this process are open on files in ``folder``."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith(str(folder) + "/")
        except OSError:
            pass  # closed meanwhile
    return count


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_many_small_files_never_hold_more_than_max_ranges_descriptors(tmp_path: Path) -> None:
    """Tiny ranges far below the byte limit: the count of ranges bounds the open descriptors."""
    window = WriteWindow(limit=1 << 30, max_ranges=8)
    for k in range(40):
        fd = os.open(tmp_path / f"f{k}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"z" * 100)
        window.add(fd, 0, 100, owned=True)
        assert open_in(tmp_path) <= 8
    assert open_in(tmp_path) > 0
    window.close()
    assert open_in(tmp_path) == 0
