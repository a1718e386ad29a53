"""A fault-injecting wrapper over any :class:`~.base.Storage`, for tests.

:class:`FaultyStorage` delegates every call to the storage it wraps and counts
the operations (the object, append-log and publisher operations, and through
the :class:`FaultyAppendLog` it hands out, every append-log operation).  The
``fail_at``-th operation (1-based) fails in one of three ways (``mode``):

``"error"``
    :class:`InjectedFault` (a :class:`~kfm_ledger.errors.StorageError`) is raised
    *before* the operation: it does not happen.
``"short"``
    a short write: an append writes a prefix of its bytes (half of them) and then
    raises; other operations fail as with ``"error"`` (the contract makes every
    other write atomic: a short write there leaves nothing visible).
``"lost"``
    the operation happens, then :class:`InjectedFault` is raised: the answer is
    lost (a crash after the write, before the caller learned of it).

With ``crash=True`` the faulted "process" is dead after the fault: every later
operation raises :class:`InjectedCrash` (so clean-up code cannot repair what the
fault left, as after a real crash).  Tests reopen the ledger on the wrapped
storage itself (the restart) and check that it recovers and verifies.

``fail_at=None`` never fails and only counts: :attr:`ops` lists what a clean run
did, so a test can sweep ``fail_at`` over ``1..len(ops)``.

The wrapper deliberately has no ``local_path`` (it is not
:class:`~.base.LocalFiles`): every read goes through it and is counted.  It says
where the commit index lives (:class:`~.base.IndexLocator`): where the wrapped
storage keeps it (``index.sqlite`` beside the files of a local directory).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

from ..errors import StorageError
from .base import AppendLog, IndexLocator, LocalFiles, Storage

if TYPE_CHECKING:
    from ..index import IndexLocation

FaultMode = Literal["error", "short", "lost"]
MODES: tuple[FaultMode, ...] = ("error", "short", "lost")


class InjectedFault(StorageError):
    """The injected failure of one storage operation."""


class InjectedCrash(StorageError):
    """Any operation after a fault with ``crash=True``: the process is dead."""


class FaultyAppendLog:
    """An :class:`~.base.AppendLog` whose operations count (and may fail) in its storage."""

    def __init__(self, owner: FaultyStorage, inner: AppendLog, key: str) -> None:
        self._owner = owner
        self._inner = inner
        self._key = key

    def size(self) -> int:
        self._owner._gate(f"size {self._key}")
        result = self._inner.size()
        self._owner._after()
        return result

    def append(self, data: bytes) -> None:
        if self._owner._gate(f"append {self._key}", short=True):
            self._inner.append(bytes(data[: len(data) // 2]))
            self._owner._raise_short(self._key, len(data) // 2, len(data))
        self._inner.append(data)
        self._owner._after()

    def sync(self) -> None:
        self._owner._gate(f"sync {self._key}")
        self._inner.sync()
        self._owner._after()

    def truncate(self, size: int) -> None:
        self._owner._gate(f"truncate {self._key}")
        self._inner.truncate(size)
        self._owner._after()

    def read(self, offset: int, length: int) -> bytes:
        self._owner._gate(f"read {self._key}")
        result = self._inner.read(offset, length)
        self._owner._after()
        return result

    def iter_chunks(self, offset: int = 0, chunk_size: int = 1 << 20, end: int | None = None) -> Iterator[bytes]:
        self._owner._gate(f"iter_chunks {self._key}")
        chunks = self._inner.iter_chunks(offset, chunk_size, end)
        self._owner._after()
        return chunks

    def close(self) -> None:
        # Closing is never faulted (a handle is released even by a dying process).
        self._inner.close()


class FaultyStorage:
    """Delegates to ``inner``; the ``fail_at``-th operation fails as ``mode`` says (see the module)."""

    def __init__(
        self,
        inner: Storage,
        *,
        fail_at: int | None = None,
        mode: FaultMode = "error",
        crash: bool = False,
        index: IndexLocation | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.inner = inner
        self.fail_at = fail_at
        self.mode: FaultMode = mode
        self.crash = crash
        self.ops: list[str] = []  #: every operation so far, in order
        self.fault: str | None = None  #: the faulted operation, once it happened
        self.dead = False
        self._pending_lost: str | None = None
        self._index = index

    # -- fault injection -------------------------------------------------
    def arm(self, fail_at: int | None, mode: FaultMode | None = None, *, crash: bool | None = None) -> None:
        """Count from now on (:attr:`ops` cleared) and fail the ``fail_at``-th operation."""
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
            self.mode = mode
        if crash is not None:
            self.crash = crash
        self.ops.clear()
        self.fail_at = fail_at
        self.fault = None
        self.dead = False
        self._pending_lost = None

    def _gate(self, what: str, *, short: bool = False) -> bool:
        """Count an operation; raise before it, or return True when it is to be torn (short)."""
        if self.dead:
            raise InjectedCrash(f"the process died at {self.fault}: {what} never happens", key=what)
        self.ops.append(what)
        if self.fail_at is None or len(self.ops) != self.fail_at:
            return False
        self.fault = what
        self.dead = self.crash
        if self.mode == "lost":
            self._pending_lost = what
            return False
        if self.mode == "short" and short:
            return True
        raise InjectedFault(f"injected fault at operation {self.fail_at}: {what} failed", key=what)

    def _after(self) -> None:
        """After an operation: with ``"lost"``, the faulted one's answer is lost now."""
        what, self._pending_lost = self._pending_lost, None
        if what is not None:
            raise InjectedFault(f"injected fault at operation {self.fail_at}: {what} happened, answer lost", key=what)

    def _raise_short(self, key: str, written: int, wanted: int) -> None:
        raise InjectedFault(
            f"injected fault at operation {self.fail_at}: short append to {key} ({written} of {wanted} bytes)",
            key=key,
        )

    # -- Storage ---------------------------------------------------------
    def describe(self) -> str:
        return f"faulty {self.inner.describe()}"

    def read(self, key: str) -> bytes:
        self._gate(f"read {key}")
        result = self.inner.read(key)
        self._after()
        return result

    def exists(self, key: str) -> bool:
        self._gate(f"exists {key}")
        result = self.inner.exists(key)
        self._after()
        return result

    def write_once(self, key: str, data: bytes) -> None:
        self._gate(f"write_once {key}")
        self.inner.write_once(key, data)
        self._after()

    def write_once_many(self, items: list[tuple[str, bytes]]) -> None:
        self._gate(f"write_once_many {','.join(k for k, _ in items)}")
        self.inner.write_once_many(items)
        self._after()

    def delete(self, key: str) -> None:
        self._gate(f"delete {key}")
        self.inner.delete(key)
        self._after()

    def list(self, prefix: str) -> Iterator[str]:
        self._gate(f"list {prefix}")
        result = builtins.list(self.inner.list(prefix))
        self._after()
        return iter(result)

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> builtins.list[str]:
        self._gate(f"discard_stale_temporaries {','.join(folders)}")
        result = self.inner.discard_stale_temporaries(folders, recursive=recursive)
        self._after()
        return result

    def append_log(self, key: str) -> FaultyAppendLog:
        self._gate(f"append_log {key}")
        log = self.inner.append_log(key)
        self._after()
        return FaultyAppendLog(self, log, key)

    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        self._gate(f"write_atomic {key}")
        self.inner.write_atomic(key, data)
        self._after()

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        self._gate(f"write_once_and_publish {once_key} {atomic_key}")
        self.inner.write_once_and_publish(once_key, atomic_key, data)
        self._after()

    def write_private(self, key: str, data: bytes) -> None:
        self._gate(f"write_private {key}")
        self.inner.write_private(key, data)
        self._after()

    @contextlib.contextmanager
    def lock(self, *, wait: float = 0.0) -> Iterator[None]:
        self._gate("lock")
        with self.inner.lock(wait=wait):
            self._after()
            yield

    def index_location(self) -> IndexLocation:
        """Where the wrapped storage keeps a ledger's commit index (:class:`~.base.IndexLocator`)."""
        if self._index is not None:
            return self._index
        if isinstance(self.inner, IndexLocator):
            return self.inner.index_location()
        if isinstance(self.inner, LocalFiles):
            from ..index import SqliteFileIndex

            self._index = SqliteFileIndex(self.inner.local_path("index.sqlite"))
            return self._index
        raise StorageError(f"{self.inner.describe()} does not say where the commit index lives: pass index=")
