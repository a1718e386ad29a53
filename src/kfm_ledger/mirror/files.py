"""The one place where the mirror reaches the ledger's storage and local files.

A local file path is an optional capability of a storage backend
(:class:`~kfm_ledger.storage.LocalFiles`): the mirror asks for local files only through
:func:`open_local_jsonl` and :func:`mirror_local_path`, and reads or writes its own object
only here, so how it reaches the storage is decided in this module alone.

A ledger whose ``mirror_file`` is set (``kfm mirror --out FILE``, ``--mirror-file FILE`` of the
readers) keeps its mirror in that local file instead of its storage: the only way an S3
ledger has a mirror (docs/s3.md), since the mirror is a derived cache and never goes to the
bucket.  The file is checked against the ledger's signed checkpoint like the stored one.
"""

from __future__ import annotations

import os
import weakref
from typing import BinaryIO

from kfm_ledger.log.layout import JSONL_KEY, MIRROR_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.storage import local_path_of
from kfm_ledger.storage.local import check_regular_path, open_regular_path


def open_local_jsonl(ledger: Ledger) -> BinaryIO | None:
    """The JSONL opened for unbuffered reading when the storage keeps it as a local file, else None
    (then read it through :meth:`Ledger.iter_lines`)."""
    path = ledger.jsonl_path
    if path is None:
        return None
    # Never through a link, never a FIFO or device (StorageError naming the path).
    return open(open_regular_path(path, JSONL_KEY), "rb", buffering=0)


def mirror_file(ledger: Ledger) -> str | None:
    """The local file named for the mirror instead of the ledger's storage, or None."""
    named = ledger.mirror_file
    return None if named is None else os.fspath(named)


def mirror_local_path(ledger: Ledger) -> str | None:
    """The mirror file's local path when the storage has one (for messages and footer-only reads)."""
    named = mirror_file(ledger)
    if named is not None:
        return named
    return local_path_of(ledger.storage, MIRROR_KEY)


def mirror_exists(ledger: Ledger) -> bool:
    named = mirror_file(ledger)
    if named is not None:
        return os.path.exists(named)
    return ledger.storage.exists(MIRROR_KEY)


def read_mirror_file(ledger: Ledger) -> bytes:
    named = mirror_file(ledger)
    if named is not None:
        with open(named, "rb") as f:
            return f.read()
    return ledger.storage.read(MIRROR_KEY)


def write_mirror_file(ledger: Ledger, data: memoryview) -> None:
    """Store the mirror atomically (the storage writes any bytes-like object)."""
    named = mirror_file(ledger)
    if named is not None:
        from kfm_ledger.outputs import write_file_atomic

        write_file_atomic(named, lambda f: f.write(data), mode=0o644)
        return
    ledger.storage.write_atomic(MIRROR_KEY, data)


def mirror_source(ledger: Ledger) -> str | bytes:
    """The stored mirror for a reader (pyarrow, DuckDB): a path to open, else its bytes.

    pyarrow and DuckDB open files by path.  The mirror is opened here once, without
    following a link and refused unless a regular file (StorageError naming it); on Linux
    the path handed out is that descriptor's ``/proc/self/fd/N``, so the readers open the
    very file that was checked, whatever is put at the mirror's path meanwhile (the
    descriptor stays open while the ledger object lives).  Elsewhere the path itself, checked
    right before (docs/operations.md, "Hostile ledger directory").
    """
    named = mirror_file(ledger)
    if named is not None:  # the user's own file (links allowed), opened once as below
        if not os.path.isdir("/proc/self/fd"):
            return os.path.abspath(named)
        fd = os.open(named, os.O_RDONLY)
        weakref.finalize(ledger, os.close, fd)
        return f"/proc/self/fd/{fd}"
    path = mirror_local_path(ledger)
    if path is None:
        return read_mirror_file(ledger)
    if not os.path.isdir("/proc/self/fd"):
        check_regular_path(path, MIRROR_KEY)
        return path
    fd = open_regular_path(path, MIRROR_KEY)
    weakref.finalize(ledger, os.close, fd)
    return f"/proc/self/fd/{fd}"
