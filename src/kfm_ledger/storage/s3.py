"""The S3 storage backend: a ledger's objects in a bucket, written with conditional requests only.

Implements the object parts of the storage contract (:mod:`kfm_ledger.storage.base`)
over the shared client layer (:mod:`kfm_ledger.s3`):

* :meth:`S3Storage.write_once` creates with ``If-None-Match: *``.  When the object
  exists already (another writer completing the same tree, or our own first attempt
  whose answer was lost and that the client retried), it is read back: identical bytes
  are success, other bytes :class:`~kfm_ledger.errors.ImmutableObjectError`.  An
  immutable object is never overwritten.
* :meth:`S3Storage.read_versioned` / :meth:`S3Storage.compare_and_swap` are the
  compare-and-swap point of an S3 ledger (``checkpoint``, ``If-Match: <etag>``), used by
  :mod:`kfm_ledger.log.cas_append`; a lost race is
  :class:`~kfm_ledger.errors.PreconditionFailedError`.
* :meth:`S3Storage.write_atomic` is a plain PUT (S3 replaces an object whole; a reader
  sees the old or the new bytes).  The S3 ledger uses it only for staging objects,
  whose key names their content.

What S3 does not have is refused, not emulated: append logs (an S3 ledger keeps its rows
in entry bundles, ``tile/entries/...``), the writer lock (S3 ledgers take no lock; writers
race on the checkpoint's compare-and-swap) and private objects (the signing key never
goes to the bucket).  Each refusal is a :class:`~kfm_ledger.errors.StorageError` saying so.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kfm_ledger.errors import (
    ImmutableObjectError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PreconditionFailedError,
    StorageError,
)

if TYPE_CHECKING:
    from kfm_ledger.index import IndexLocation
    from kfm_ledger.s3 import S3Client

    from .base import AppendLog

#: Requests in flight at once for the many-object calls (tiles, bundles, verify's reads).
DEFAULT_PARALLEL = 16
#: The environment variable naming the local cache directory (default ``$XDG_CACHE_HOME/kfm`` or ``~/.cache/kfm``).
CACHE_ENV = "KFM_CACHE_DIR"


def cache_root(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """The local cache directory: ``$KFM_CACHE_DIR``, else ``$XDG_CACHE_HOME/kfm``, else ``~/.cache/kfm``."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kfm"


#: The largest object of a kind not listed in :func:`max_bytes_of` that a read accepts.
MAX_OBJECT_BYTES = 2 << 30


def max_bytes_of(key: str) -> int:
    """The most bytes an object under ``key`` can hold in a ledger (c2sp.org/tlog-tiles sizes)."""
    if key.startswith("tile/entries/"):
        return 256 * (0xFFFF + 2)
    if key.startswith("tile/"):
        return 256 * 32
    if key in ("checkpoint", "log.vkey", "log.key") or key.startswith("checkpoints/"):
        return 1 << 20
    return MAX_OBJECT_BYTES


class S3Storage:
    """A ledger's objects under ``s3://bucket/prefix`` (see the module docstring for what is refused)."""

    def __init__(self, client: S3Client, *, parallel: int = DEFAULT_PARALLEL, cache_dir: Path | None = None) -> None:
        self.client = client
        self.parallel = max(1, parallel)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._cache_dir = cache_dir

    @classmethod
    def from_url(cls, url: str, settings: object | None = None) -> S3Storage:
        """Storage for ``s3://bucket/prefix``, connection settings resolved (:func:`kfm_ledger.s3.open_client`)."""
        from kfm_ledger.config import S3Settings
        from kfm_ledger.s3 import open_client

        return cls(open_client(url, settings if isinstance(settings, S3Settings) else None))

    # -- helpers ---------------------------------------------------------------------
    def describe(self) -> str:
        return f"S3 ledger {self.client.describe()}"

    def url(self) -> str:
        return self.client.location.url()

    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """A thread pool for parallel requests (obstore releases the GIL while it waits)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.parallel, thread_name_prefix="kfm-s3")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def cache_dir(self) -> Path:
        """This bucket and prefix's local cache folder (derived data: the commit index)."""
        if self._cache_dir is None:
            conn = self.client.connection
            ident = f"{conn.endpoint_url or 'aws'}\n{conn.region}\n{self.client.location.url()}"
            name = hashlib.sha256(ident.encode()).hexdigest()[:24]
            self._cache_dir = cache_root() / "s3" / name
        return self._cache_dir

    def index_location(self) -> IndexLocation:
        """The derived commit index: a SQLite file in :meth:`cache_dir` (never in the bucket)."""
        from kfm_ledger.index import SqliteFileIndex

        folder = self.cache_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return SqliteFileIndex(folder / "index.sqlite")

    # -- ObjectStore -------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        """The object's bytes, refused (ObjectTooLargeError) past the size its kind can have.

        A bucket is not trusted: a hash tile is at most 8 KiB, an entry bundle 256 entries of
        at most 65,535 bytes, a note or key 1 MiB; anything else at most :data:`MAX_OBJECT_BYTES`.
        """
        return self.client.get(key, max_bytes=max_bytes_of(key))

    def read_capped(self, key: str, max_bytes: int) -> bytes:
        """:meth:`read`, refusing an object larger than ``max_bytes`` (ObjectTooLargeError)."""
        return self.client.get(key, max_bytes=max_bytes)

    def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The objects' bytes in order, fetched in parallel; None for a missing one."""

        def one(key: str) -> bytes | None:
            try:
                return self.client.get(key, max_bytes=max_bytes_of(key))
            except ObjectNotFoundError:
                return None

        if len(keys) <= 1:
            return [one(k) for k in keys]
        return list(self.pool().map(one, keys))

    def exists(self, key: str) -> bool:
        return self.client.exists(key)

    def write_once(self, key: str, data: bytes) -> None:
        """Create with ``If-None-Match: *``; existing identical bytes are fine, other bytes refused."""
        data = bytes(data)
        try:
            self.client.put_if_absent(key, data)
            return
        except PreconditionFailedError:
            pass
        try:
            found = self.client.get(key, max_bytes=len(data))
        except ObjectNotFoundError:
            # Gone again between the two requests (a clean-up deleted it): create it.
            self.client.put_if_absent(key, data)
            return
        except ObjectTooLargeError:
            found = None
        if found != data:
            raise ImmutableObjectError(
                f"{key} already exists in {self.url()} with other bytes; an immutable object is never overwritten",
                key=key,
            )

    def write_once_many(self, items: list[tuple[str, bytes]]) -> None:
        """:meth:`write_once` for several objects, in parallel; every one is written (or refused) before return."""
        if len(items) <= 1:
            for key, data in items:
                self.write_once(key, data)
            return
        futures = [self.pool().submit(self.write_once, key, data) for key, data in items]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def delete(self, key: str) -> None:
        self.client.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        for info in self.client.list(prefix.rstrip("/") if prefix else ""):
            yield info.key

    def discard_stale_temporaries(self, folders: Sequence[str], *, recursive: bool = False) -> builtins.list[str]:
        """S3 writes are atomic: nothing is left behind (staging objects are the ledger's, see cas_append)."""
        return []

    def read_private(self, key: str) -> bytes:
        """Never a secret from a bucket: a private key found there is refused (it is exposed)."""
        if self.client.exists(key):
            raise StorageError(
                f"{key} is in {self.url()}: a signing key in a bucket must be treated as exposed; remove it, "
                "rotate the key, and pass the key with --key FILE / KFM_KEY",
                key=key,
            )
        raise ObjectNotFoundError(key)

    # -- compare-and-swap ----------------------------------------------------------------
    def read_versioned(self, key: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
        """The object's bytes and the ETag of exactly that version."""
        data, etag = self.client.get_with_etag(key, max_bytes=max_bytes)
        if not etag:
            raise StorageError(f"the S3 server gave no ETag for {key}: conditional writes are impossible", key=key)
        return data, etag

    def compare_and_swap(self, key: str, data: bytes, etag: str) -> str | None:
        """Replace ``key`` only if it is still the version ``etag`` (``If-Match``); PreconditionFailedError if not."""
        return self.client.put_if_match(key, data, etag)

    def create(self, key: str, data: bytes) -> str | None:
        """Create ``key`` only if absent (``If-None-Match: *``); PreconditionFailedError if it exists."""
        return self.client.put_if_absent(key, data)

    # -- Publisher ------------------------------------------------------------------------
    def write_atomic(self, key: str, data: bytes | memoryview) -> None:
        self.client.put(key, bytes(data))

    def write_once_and_publish(self, once_key: str, atomic_key: str, data: bytes) -> None:
        self.write_once(once_key, data)
        self.write_atomic(atomic_key, data)

    def write_private(self, key: str, data: bytes) -> None:
        raise StorageError(
            f"refusing to store a private key ({key}) in {self.url()}: the signing key of an S3 ledger stays "
            "in a local file (kfm init --key-out FILE, then --key FILE / KFM_KEY)",
            key=key,
        )

    def lock(self, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        raise StorageError(
            f"{self.url()} has no writer lock: S3 ledgers are appended with compare-and-swap "
            "(kfm_ledger.log.cas_append), which any number of writers may run at once",
            key=".lock",
        )

    # -- AppendLogStore ---------------------------------------------------------------------
    def append_log(self, key: str) -> AppendLog:
        raise StorageError(
            f"{self.url()} has no append logs: an S3 ledger keeps its rows in entry bundles "
            f"(tile/entries/...); use `kfm export` for the JSONL",
            key=key,
        )
