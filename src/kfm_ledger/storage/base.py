"""The storage interfaces: the only place where kfm-ledger's bytes live.

The ledger never opens a file of its own; it asks a storage for objects by key
(``rollback-index.jsonl``, ``checkpoint``, ``checkpoints/12``,
``tile/0/x001/234.p/17``, ...).  Keys are ``/``-separated relative paths.

A ledger's storage is three small interfaces (after Sunlight's Backend and
LockBackend and Go's tlog), each with a written contract that the ledger's
crash safety rests on and that ``tests/storage/test_contract.py`` checks for
every backend:

1. :class:`ObjectStore`, objects by key.  Most are immutable and created with
   :meth:`~ObjectStore.write_once` (create-only: same bytes again is a no-op,
   other bytes raise :class:`~kfm_ledger.errors.ImmutableObjectError`): tiles and
   ``checkpoints/<size>``.  Read, exists, list, and delete, which the ledger's
   writer calls, under the writer lock, for: what an unsigned append wrote
   (recovery and an append's own undo), partial tiles a full tile replaced
   (step 7 of an append, and recovery), ``pending-append`` once an append is
   complete, tiles ``kfm rebuild`` did not recreate, and an append log it empties
   (the expansion records).
2. :class:`AppendLogStore` / :class:`AppendLog`, the append logs: the JSONL and the
   expansion records (``tile-expansions.bin``).  ``append`` may be torn by a crash,
   bytes are durable only after ``sync`` returns; ``truncate`` cuts them (recovery
   for the JSONL; the expansion records are derived and cut or deleted freely).
   :meth:`ObjectStore.delete` removes an append log like any object: a later
   :meth:`~AppendLogStore.append_log` opens a new, empty one.
3. :class:`Publisher`, replaceable objects and the writer lock:
   :meth:`~Publisher.write_atomic` replaces an object whole (``checkpoint``, the
   compare-and-swap point of an object store; ``pending-append``, ``log.vkey``,
   the Parquet mirror; and the tiles, which only ``kfm rebuild`` rewrites this
   way, under the writer lock, with the bytes the signed rows give), plus the
   writer lock: one writer at a time across processes.

:class:`Storage` is their union, what a :class:`~kfm_ledger.log.ledger.Ledger`
needs.  The derived SQLite commit index is *not* part of the storage (see
:mod:`kfm_ledger.index`): a backend may say where it lives with the optional
:class:`IndexLocator` capability (the memory backend does, so that its
in-memory index is lost with its simulated restarts); a backend with local
files (:class:`LocalFiles`) gets ``<dir>/index.sqlite``; any other backend needs
an explicit ``index=`` (see :func:`kfm_ledger.log.ledger.index_location_for`).
Backends with local files implement :class:`LocalFiles` (bulk readers hand a
path to worker processes or pyarrow); callers check
``isinstance(storage, LocalFiles)`` and otherwise stream.

No key leaves the storage: a backend with local files treats its directory as
possibly hostile (someone else may write into it).  It never follows a symbolic
link inside it, in a folder or at the object itself, and opens only regular
files: a link, a FIFO, a device or a directory where an object should be is
refused with :class:`~kfm_ledger.errors.StorageError` naming the path, for every
read, write, append log and the lock (:meth:`ObjectStore.exists` answers True for
it, so that nothing is written over it unseen).  Its temporary files are new
files (``O_EXCL``, never through a link) under unpredictable names; replacing or
deleting an object replaces or removes a link there, never its target.  A
private key is read with :meth:`PrivateObjects.read_private` where the backend
has it: refused unless only its owner can access it.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kfm_ledger.index import IndexLocation

#: The writer lock's key: the lock file ``<dir>/.lock`` of a local directory, and the
#: ``key`` of every backend's :class:`~kfm_ledger.errors.LockedError`.  Not an object:
#: it is never listed, read or written through the object interfaces.
LOCK_KEY = ".lock"


@runtime_checkable
class AppendLog(Protocol):
    """An append-only byte log (the JSONL ledger)."""

    def size(self) -> int:
        """Current length in bytes (including bytes not yet synced)."""

    def append(self, data: bytes) -> None:
        """Append bytes at the end.  Not durable until :meth:`sync` returns; a crash may tear them."""

    def sync(self) -> None:
        """Make every appended byte durable (fsync)."""

    def truncate(self, size: int) -> None:
        """Cut the log to ``size`` bytes and make that durable (crash recovery only)."""

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes from ``offset`` (StorageError if short)."""

    def iter_chunks(self, offset: int = 0, chunk_size: int = 1 << 20, end: int | None = None) -> Iterator[bytes]:
        """Stream the log from ``offset`` (to ``end``, default the end) in chunks of about ``chunk_size`` bytes."""

    def close(self) -> None:
        """Release the handle."""


class AppendLogStore(Protocol):
    """Where append logs live."""

    def append_log(self, key: str) -> AppendLog:
        """Open (creating if needed, empty) the append log stored under ``key``.

        Its bytes are also readable whole with :meth:`ObjectStore.read` (``key`` exists once
        opened, and is listed).  :meth:`ObjectStore.delete` removes the log; close every handle
        on it first: a later ``append_log(key)`` opens a new, empty log.
        """


class ObjectStore(Protocol):
    """Objects by key: immutable ones created once (:meth:`write_once`), read many times.

    Replaceable objects are written with :meth:`Publisher.write_atomic`.  Deleting is the
    writer's clean-up under the writer lock (see the module docstring for who deletes what).
    """

    def read(self, key: str) -> bytes:
        """The object's bytes; :class:`~kfm_ledger.errors.ObjectNotFoundError` if absent."""

    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""

    def write_once(self, key: str, data: bytes) -> None:
        """Create an immutable object, durable once this returns.

        Same bytes again is a no-op; other bytes raise
        :class:`~kfm_ledger.errors.ImmutableObjectError` and leave the object unchanged.
        """

    def write_once_many(self, items: list[tuple[str, bytes]]) -> None:
        """:meth:`write_once` for several objects; all durable once this returns."""

    def delete(self, key: str) -> None:
        """Remove the object (or append log) if it exists (no error if it does not).

        Afterwards the key is gone for :meth:`read`, :meth:`exists` and :meth:`list`, and
        may be created anew (a :meth:`write_once` with other bytes is then no error).
        """

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (a ``/``-terminated folder, ``""`` for all), in no promised order."""

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> builtins.list[str]:
        """Remove what writes interrupted by a crash left in ``folders`` (``""`` is the top).

        Only temporaries of writers that are no longer running are removed (a
        live writer's are left alone); returns their names.  A backend whose
        writes leave nothing behind returns ``[]``.
        """

    def describe(self) -> str:
        """A short human description (``local directory /srv/ledger``)."""


class Publisher(Protocol):
    """The publish point (``checkpoint``), small mutable objects, secrets, and the writer lock."""

    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        """Create or replace the object atomically; durable once this returns.

        A reader sees the old bytes or the new bytes, never a mix.  This replaces any
        object, one :meth:`ObjectStore.write_once` created too (``kfm rebuild`` rewrites
        the tiles so, under the writer lock); it is how ``checkpoint``,
        ``pending-append``, ``log.vkey`` and the mirror are written.  ``data`` may
        be any bytes-like object (large objects such as the Parquet mirror are
        passed without a copy).
        """

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        """:meth:`ObjectStore.write_once` (``once_key``), then :meth:`write_atomic` (``atomic_key``), same bytes.

        In that order and with the same guarantees: a crash in between leaves
        ``once_key`` written and ``atomic_key`` untouched.  A backend may share
        the bytes between the two (a hard link, a server-side copy).  This is
        how a checkpoint is kept (``checkpoints/<size>``) and published (``checkpoint``).
        """

    def write_private(self, key: str, data: bytes) -> None:
        """Create a secret object (a private key) readable only by its owner (mode 0600).

        Refuses (StorageError) to overwrite an existing one.
        """

    def lock(self, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Exclusive writer lock across processes; waits up to ``wait`` seconds, then
        :class:`~kfm_ledger.errors.LockedError` (``key``: :data:`LOCK_KEY`).  Released when
        the holder exits or dies."""


class Storage(ObjectStore, AppendLogStore, Publisher, Protocol):
    """Everything a ledger needs of its storage (local directory, memory; later S3)."""


@runtime_checkable
class LocalFiles(Protocol):
    """Optional capability: objects are local files (bulk readers open them by path)."""

    def local_path(self, key: str) -> str:
        """The local file path of ``key`` (which may not exist yet)."""


@runtime_checkable
class IndexLocator(Protocol):
    """Optional capability: the backend says where a ledger on it keeps its derived commit index.

    Checked with ``isinstance`` by :func:`kfm_ledger.log.ledger.index_location_for`, which
    otherwise uses ``<dir>/index.sqlite`` for :class:`LocalFiles` backends and, for any
    other backend, requires ``index=`` from the caller.  A backend that implements it
    returns the same location for every ledger opened on it (an index is shared, as a
    file is) and ties its life to the backend's (the memory backend's in-memory index
    is discarded at its simulated restart).
    """

    def index_location(self) -> IndexLocation:
        """Where the derived commit index of a ledger on this storage lives."""


@runtime_checkable
class PrivateObjects(Protocol):
    """Optional capability: secrets (a private key) are read with a check of who may read them."""

    def read_private(self, key: str) -> bytes:
        """The secret's bytes; :class:`~kfm_ledger.errors.StorageError` (naming the fix) if a group or
        others may read it, :class:`~kfm_ledger.errors.ObjectNotFoundError` if absent."""


def read_private_of(storage: ObjectStore, key: str) -> bytes:
    """A secret object's bytes: :meth:`PrivateObjects.read_private` where the backend checks them, else ``read``."""
    return storage.read_private(key) if isinstance(storage, PrivateObjects) else storage.read(key)


def local_path_of(storage: object, key: str) -> str | None:
    """``storage.local_path(key)`` when ``storage`` has local files, else None (stream instead)."""
    return storage.local_path(key) if isinstance(storage, LocalFiles) else None


def local_dir_of(storage: object) -> str | None:
    """The local directory that holds ``storage``'s objects when it has local files, else None.

    What errors name as their ``path`` (the message names the storage with ``describe()``).
    """
    path = local_path_of(storage, "checkpoint")  # any top-level key: its folder is the root
    return None if path is None else os.path.dirname(path)
