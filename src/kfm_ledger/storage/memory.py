"""An in-memory backend that enforces the storage contract, for tests.

It can also simulate a crash: after :meth:`crash_at` (N) the N+1-th mutating
operation raises :class:`SimulatedCrash` *before* it takes effect, and bytes
appended to the log but not yet synced are lost when :meth:`crash` is called
(what a power cut does to a page cache).  Tests inject a crash at each write
step, reopen the ledger and check that it recovers and verifies.  After the
crash point the "process" is dead: every further mutating operation raises too,
until :meth:`crash` models the restart.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from ..errors import ImmutableObjectError, LockedError, ObjectNotFoundError, StorageError
from .base import LOCK_KEY

if TYPE_CHECKING:
    from ..index import MemoryIndex


class SimulatedCrash(Exception):
    """Raised by MemoryStorage at the injected crash point (not a KfmError on purpose)."""


class MemoryAppendLog:
    def __init__(self, owner: MemoryStorage, key: str) -> None:
        self._owner = owner
        self._key = key

    @property
    def _buf(self) -> bytearray:
        return self._owner._logs.setdefault(self._key, bytearray())

    def size(self) -> int:
        return len(self._buf)

    def append(self, data: bytes) -> None:
        self._owner._step(f"append {self._key}")
        torn = self._owner.tear_next_append
        if torn is not None:
            self._owner.tear_next_append = None
            self._owner.dead = True
            self._buf.extend(data[:torn])
            raise SimulatedCrash(f"torn append to {self._key} after {torn} bytes")
        self._buf.extend(data)

    def sync(self) -> None:
        self._owner._step(f"sync {self._key}")
        self._owner._synced[self._key] = len(self._buf)

    def truncate(self, size: int) -> None:
        self._owner._step(f"truncate {self._key}")
        del self._buf[size:]
        self._owner._synced[self._key] = min(self._owner._synced.get(self._key, 0), size)

    def read(self, offset: int, length: int) -> bytes:
        data = bytes(self._buf[offset : offset + length])
        if len(data) != length:
            raise StorageError(f"{self._key}: short read at {offset}", key=self._key)
        return data

    def iter_chunks(self, offset: int = 0, chunk_size: int = 1 << 20, end: int | None = None) -> Iterator[bytes]:
        stop = len(self._buf) if end is None else min(end, len(self._buf))
        while offset < stop:
            chunk = bytes(self._buf[offset : min(offset + chunk_size, stop)])
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        pass


class MemoryStorage:
    """Objects and logs in dicts; enforces the storage contract (see :mod:`.base`)."""

    def __init__(self, *, crash_after: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.private_keys: set[str] = set()
        self._logs: dict[str, bytearray] = {}
        self._synced: dict[str, int] = {}
        self._lock = threading.Lock()
        #: What the "process" keeps in memory and loses at :meth:`crash` (the in-memory
        #: commit index of :meth:`index_location` registers its discard here).
        self.on_restart: list[Callable[[], None]] = []
        self._index: MemoryIndex | None = None
        self.crash_after = crash_after
        self.tear_next_append: int | None = None
        self.dead = False  #: after the crash point, nothing more happens until crash()
        self.steps: list[str] = []

    # -- fault injection -------------------------------------------------
    def crash_at(self, step: int) -> None:
        """Crash before the ``step``-th mutating operation from now (0 = the next one)."""
        self.steps.clear()
        self.crash_after = step

    def _step(self, what: str) -> None:
        if self.dead:
            raise SimulatedCrash(f"the process is dead: {what} never happens")
        if self.crash_after is not None and len(self.steps) >= self.crash_after:
            self.dead = True
            raise SimulatedCrash(f"crash before step {len(self.steps)}: {what}")
        self.steps.append(what)

    def crash(self, *, power_loss: bool = True) -> None:
        """Restart after the crash point.

        ``power_loss=True``: every unsynced log byte is lost (a machine that lost
        power).  ``False``: a killed process, whose written bytes the page cache
        keeps.  Either way the index cache is gone.
        """
        if power_loss:
            for key, buf in self._logs.items():
                del buf[self._synced.get(key, 0) :]
        for forget in list(self.on_restart):
            forget()
        self.dead = False
        self.crash_after = None
        self.steps.clear()

    # -- Storage ---------------------------------------------------------
    def describe(self) -> str:
        return "memory"

    def read(self, key: str) -> bytes:
        if key in self._logs:
            return bytes(self._logs[key])
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return key in self.objects or key in self._logs

    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        self._step(f"write {key}")
        self.objects[key] = bytes(data)

    def write_private(self, key: str, data: bytes) -> None:
        if key in self.objects:
            raise StorageError(f"refusing to overwrite the existing secret {key}", key=key)
        self.write_atomic(key, data)
        self.private_keys.add(key)

    def write_once(self, key: str, data: bytes) -> None:
        old = self.objects.get(key)
        if old is None:
            self._step(f"write {key}")
            self.objects[key] = bytes(data)
        elif old != data:
            raise ImmutableObjectError(f"immutable object {key!r} rewritten with different bytes", key=key)

    def write_once_many(self, items: list[tuple[str, bytes]]) -> None:
        for key, data in items:
            self.write_once(key, data)

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        self.write_once(once_key, data)
        self.write_atomic(atomic_key, data)

    def delete(self, key: str) -> None:
        self._step(f"delete {key}")
        self.objects.pop(key, None)
        self._logs.pop(key, None)  # an append log too: a later append_log(key) starts empty
        self._synced.pop(key, None)

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> list[str]:
        return []  # writes here are atomic: nothing is ever left behind

    def list(self, prefix: str) -> Iterator[str]:
        return iter([k for k in [*self.objects, *self._logs] if k.startswith(prefix)])

    def append_log(self, key: str) -> MemoryAppendLog:
        self._logs.setdefault(key, bytearray())
        return MemoryAppendLog(self, key)

    def index_location(self) -> MemoryIndex:
        """The derived commit index of every ledger on this storage (:class:`~.base.IndexLocator`).

        An in-memory SQLite database, shared by every Ledger opened on this storage (as a
        file is), and lost at :meth:`crash` (the restart of the "process" that held it).
        """
        if self._index is None:
            from ..index import MemoryIndex  # sqlite3 is loaded only when a ledger needs it

            self._index = MemoryIndex()
            self.on_restart.append(self._index.discard)
        return self._index

    @contextlib.contextmanager
    def lock(self, *, wait: float = 0.0) -> Iterator[None]:
        acquired = self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False)
        if not acquired:
            raise LockedError("another writer holds the lock on the in-memory ledger", key=LOCK_KEY)
        try:
            yield
        finally:
            self._lock.release()
