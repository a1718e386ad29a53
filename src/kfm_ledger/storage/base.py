"""The storage interface: the only place where kfm-ledger's bytes live.

The ledger core never opens a file; it asks a :class:`Storage` for objects by
key (``rollback-index.jsonl``, ``checkpoint``, ``checkpoints/12``,
``tile/0/x001/234.p/17``, ...).  Keys are ``/``-separated relative paths.

The contract each backend must keep (the ledger's crash safety rests on it):

* :meth:`Storage.write_atomic` is durable once it returns, and a reader sees
  either the old bytes or the new bytes, never a mix.
* :meth:`Storage.write_once` is for immutable objects (full tiles, stored
  checkpoints, partial tiles of a given width): writing the same bytes again is
  fine; writing other bytes raises :class:`~kfm_ledger.errors.ImmutableObjectError`.
  :meth:`Storage.write_once_and_publish` is a write_once followed by a
  write_atomic of the same bytes (a stored checkpoint, then the latest one).
* The append log (:meth:`Storage.append_log`) is the JSONL ledger.  ``append``
  may be torn by a crash; bytes are durable only after ``sync`` returns.
* :meth:`Storage.lock` gives one writer at a time across processes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class AppendLog(Protocol):
    """An append-only byte log (the JSONL ledger)."""

    def size(self) -> int:
        """Current length in bytes (including bytes not yet synced)."""

    def append(self, data: bytes) -> None:
        """Append bytes at the end.  Not durable until :meth:`sync` returns."""

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


class Storage(Protocol):
    """Where a ledger's objects live (local directory, memory; later S3)."""

    def read(self, key: str) -> bytes:
        """The object's bytes; :class:`~kfm_ledger.errors.ObjectNotFoundError` if absent."""

    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""

    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        """Replace the object atomically; durable once this returns.

        ``data`` may be any bytes-like object (bytes, memoryview): large
        objects such as the Parquet mirror are passed without a copy.
        """

    def write_once(self, key: str, data: bytes) -> None:
        """Create an immutable object; same bytes again is a no-op, other bytes raise."""

    def write_once_many(self, items: list[tuple[str, bytes]]) -> None:
        """:meth:`write_once` for several objects; all durable once this returns."""

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        """:meth:`write_once` (``once_key``, ``data``), then :meth:`write_atomic` (``atomic_key``, ``data``).

        In that order and with the same guarantees: a crash in between leaves
        ``once_key`` written and ``atomic_key`` untouched.  A backend may share
        the bytes between the two (a hard link, a server-side copy).
        """

    def write_private(self, key: str, data: bytes) -> None:
        """Create a secret object (a private key) readable only by its owner (mode 0600)."""

    def delete(self, key: str) -> None:
        """Remove the object if it exists."""

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> list[str]:
        """Remove what writes interrupted by a crash left in ``folders`` (``""`` is the top).

        Only temporaries of writers that are no longer running are removed (a
        live writer's are left alone); returns their names.  A backend whose
        writes leave nothing behind returns ``[]``.
        """

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (a ``/``-terminated folder), in no promised order."""

    def append_log(self, key: str) -> AppendLog:
        """Open (creating if needed) the append log stored under ``key``."""

    def lock(self, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """Exclusive writer lock; waits up to ``wait`` seconds, then :class:`~kfm_ledger.errors.LockedError`."""

    def open_index_db(self) -> sqlite3.Connection:
        """A connection to the derived SQLite commit index (a file beside the ledger, or in memory)."""

    def discard_index_db(self) -> None:
        """Delete the derived index database (it is rebuilt from the JSONL); call under the lock."""

    def local_path(self, key: str) -> str | None:
        """A local file path for ``key`` when the backend has one (bulk readers use it), else None."""

    def describe(self) -> str:
        """A short human description (``local directory /srv/ledger``)."""
