"""A fault-injecting S3 client for tests: the k-th request fails (before it is sent, or after it landed).

Wraps a real :class:`~kfm_ledger.s3.S3Client` (so every request reaches the real server)
and counts each request: ``get`` (with ETag, range, stream), ``head``, ``list``, ``put``,
``put_if_absent``, ``put_if_match``, ``delete``.  The ``fail_at``-th one (1-based) fails:

* ``"error"``: a :class:`~kfm_ledger.errors.StorageError` before the request (it never happens);
* ``"timeout"``: the same, named as a timeout (a request that never reached the server);
* ``"lost"``: the request happens, then the error (its answer was lost).

With ``crash=True`` the "process" is dead after the fault: every later request raises
:class:`InjectedCrash`, so no clean-up can repair what the fault left (the next writer,
on a fresh client, must).  ``fail_at=None`` only counts (:attr:`ops`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

from kfm_ledger.errors import StorageError
from kfm_ledger.s3 import S3Client

Mode = Literal["error", "timeout", "lost"]
MODES: tuple[Mode, ...] = ("error", "timeout", "lost")


class InjectedFault(StorageError):
    """The injected failure of one request."""


class InjectedCrash(StorageError):
    """A request after a crash: the process is dead."""


class FaultyS3Client:
    """An :class:`S3Client` stand-in that injects one fault (see the module docstring)."""

    def __init__(self, inner: S3Client, fail_at: int | None = None, mode: Mode = "error", *, crash: bool = True):
        self.inner = inner
        self.location = inner.location
        self.connection = inner.connection
        self.fail_at = fail_at
        self.mode = mode
        self.crash = crash
        self.ops: list[str] = []
        self.dead = False
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.inner.describe()

    def _call(self, name: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self.dead:
                raise InjectedCrash(f"injected crash: {name} {key} after the process died", key=key)
            self.ops.append(f"{name} {key}")
            hit = self.fail_at is not None and len(self.ops) == self.fail_at
            if hit and self.crash:
                self.dead = True
        if hit:
            if self.mode == "lost":
                fn(*args, **kwargs)
                raise InjectedFault(f"injected: the answer of {name} {key} was lost", key=key)
            what = "timed out" if self.mode == "timeout" else "failed"
            raise InjectedFault(f"injected: {name} {key} {what}", key=key)
        return fn(*args, **kwargs)

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return self._call("get", key, self.inner.get, key, max_bytes=max_bytes)

    def get_with_etag(self, key: str, *, max_bytes: int | None = None) -> tuple[bytes, str | None]:
        return self._call("get", key, self.inner.get_with_etag, key, max_bytes=max_bytes)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._call("get", key, self.inner.get_range, key, start, length)

    def iter_get(self, key: str, **kwargs: Any) -> Iterator[bytes]:
        return iter(self._call("get", key, lambda: list(self.inner.iter_get(key, **kwargs))))

    def head(self, key: str) -> Any:
        return self._call("head", key, self.inner.head, key)

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list(self, prefix: str = "") -> Iterator[Any]:
        return iter(self._call("list", prefix, lambda: list(self.inner.list(prefix))))

    def put(self, key: str, data: bytes | memoryview) -> str | None:
        return self._call("put", key, self.inner.put, key, data)

    def put_if_absent(self, key: str, data: bytes | memoryview) -> str | None:
        return self._call("put_if_absent", key, self.inner.put_if_absent, key, data)

    def put_if_match(self, key: str, data: bytes | memoryview, etag: str) -> str | None:
        return self._call("put_if_match", key, self.inner.put_if_match, key, data, etag)

    def delete(self, key: str) -> None:
        return self._call("delete", key, self.inner.delete, key)
