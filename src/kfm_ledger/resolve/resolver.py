"""The resolver: URI -> location (``[resolve]`` prefixes) -> streamed bytes and their SHA-256.

Locations, after mapping (docs/supply-chain.md, "Resolvers"):

* a plain path or ``file://`` URI: a local file, opened with :func:`kfm_ledger.inputs.open_regular`
  (a FIFO, device, socket or directory is refused unread); a path with a ``..`` segment is
  refused, so a row's key cannot climb out of a mapped directory;
* ``https://`` / ``http://``: fetched with a timeout, retried on transient errors (connection
  errors, timeouts, HTTP 429 and 5xx) with exponential back-off; other HTTP errors are final;
* ``s3://bucket/key``: read through the S3 client (:mod:`.s3`), same retry rule.

Every read stops one chunk past its size cap; hashing keeps one 1 MiB buffer in memory.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ..errors import ResolveError
from .cache import ContentCache

if TYPE_CHECKING:
    from ..config import KfmConfig

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DOCUMENT_BYTES", "Digest", "Resolver", "Transient"]

#: The largest artifact (bundle) hashed: the default of ``kfm rollback --max-bytes``.
DEFAULT_MAX_BYTES = 10 * 1024**3
#: The largest document (attestation, STAC JSON) read into memory.
DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024**2
_CHUNK = 1 << 20
_MAX_MAPPINGS = 8  # a prefix may map to another URI prefix; this many hops at most
_T = TypeVar("_T")


class Transient(Exception):
    """A remote read failed in a way worth retrying (raised by the readers, caught here)."""


@dataclass(frozen=True)
class Digest:
    """What was read at ``uri``: its SHA-256 (hex) and size; ``path`` is a local file holding
    the bytes when there is one (the file itself, or a cache entry); ``cached``: read from the cache."""

    uri: str
    location: str
    sha256: str
    size: int
    path: Path | None = None
    cached: bool = False


#: Reads an S3 object as chunks: ``(bucket, key) -> iterator of bytes``; raises ResolveError
#: (final) or Transient (retried).
S3Reader = Callable[[str, str], Iterator[bytes]]


class Resolver:
    """Fetches what rows point at.  Thread-safe: one resolver serves a pool of workers.

    ``config``: the ``[resolve]`` prefixes and ``[s3]`` settings; ``cache_dir``: a content
    cache for remote reads; ``timeout`` (seconds, per remote request) and ``retries`` (extra
    attempts after a transient error); ``max_bytes``: the default size cap of :meth:`digest`.
    """

    def __init__(
        self,
        config: KfmConfig | None = None,
        *,
        mappings: Mapping[str, str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_bytes: int = DEFAULT_MAX_BYTES,
        s3_reader: S3Reader | None = None,
    ) -> None:
        self.config = config
        table = dict(mappings if mappings is not None else (config.resolve if config is not None else {}))
        # Longest prefix first: the most specific mapping wins.
        self._prefixes = sorted(table.items(), key=lambda kv: len(kv[0]), reverse=True)
        self.cache = ContentCache(cache_dir) if cache_dir is not None else None
        self.timeout, self.retries, self.backoff, self.max_bytes = timeout, retries, backoff, max_bytes
        self._s3_reader = s3_reader

    # ------------------------------------------------------------------ mapping
    def locate(self, uri: str) -> str:
        """``uri`` after the ``[resolve]`` prefix mappings (longest prefix first, repeated while a
        mapping leads to another mapped URI, at most 8 times)."""
        location = uri
        for _ in range(_MAX_MAPPINGS):
            for prefix, target in self._prefixes:
                if location.startswith(prefix):
                    location = target + location[len(prefix) :]
                    break
            else:
                return location
        raise ResolveError(uri, f"the [resolve] mappings loop (more than {_MAX_MAPPINGS} hops)", location=location)

    def _source(self, uri: str) -> tuple[str, str]:
        """(kind, location): kind is ``local``, ``http`` or ``s3``; local locations are paths."""
        location = self.locate(uri)
        scheme = urllib.parse.urlsplit(location).scheme if "://" in location else ""
        if scheme in ("", "file"):
            path = urllib.parse.unquote(urllib.parse.urlsplit(location).path) if scheme else location
            if ".." in Path(path).parts:
                raise ResolveError(uri, "the path has a '..' segment (refused)", location=path)
            return "local", path
        if scheme in ("http", "https"):
            return "http", location
        if scheme == "s3":
            return "s3", location
        raise ResolveError(
            uri,
            f"no resolver for {scheme}:// (map it to a directory or an s3:// or https:// prefix in [resolve])",
            location=location,
        )

    # ------------------------------------------------------------------ reads
    def digest(self, uri: str, *, expected: str | None = None, max_bytes: int | None = None) -> Digest:
        """SHA-256 and size of the bytes at ``uri``, streamed; ResolveError when they cannot be read
        or there are more than ``max_bytes``.  ``expected``: the digest the caller will compare
        with, so that a remote read may be answered from the cache (the entry re-hashed)."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        kind, location = self._source(uri)
        if kind == "local":
            return self._local_digest(uri, location, cap)
        if self.cache is not None and expected is not None:
            try:
                hit = self.cache.lookup(expected, cap)
            except (ValueError, OSError):
                hit = None
            if hit is not None:
                return Digest(uri, location, expected, hit.stat().st_size, path=hit, cached=True)
        return self._retrying(uri, location, lambda: self._remote_digest(uri, kind, location, cap))

    def read(self, uri: str, *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> bytes:
        """The bytes at ``uri`` (at most ``max_bytes``, else ResolveError)."""
        kind, location = self._source(uri)
        if kind == "local":
            with self._open_local(uri, location) as f:
                try:
                    # Buffers sized from the file (a grown file is read on), never from the cap.
                    want = min(os.fstat(f.fileno()).st_size, max_bytes) + 1
                    data = f.read(want)
                    while len(data) == want and len(data) <= max_bytes:
                        more = f.read(min(len(data), max_bytes + 1 - len(data)))
                        if not more:
                            break
                        data += more
                        want = len(data)
                except OSError as e:
                    raise ResolveError(uri, f"cannot read: {e.strerror or e}", location=location) from None
            if len(data) > max_bytes:
                raise ResolveError(uri, f"larger than the limit of {max_bytes:,} bytes (stopped reading)",
                                   location=location)
            return data

        def attempt() -> bytes:
            return b"".join(self._capped(uri, location, self._remote_chunks(uri, kind, location), max_bytes))

        return self._retrying(uri, location, attempt)

    def fetch(self, uri: str, into: str | os.PathLike[str], *, max_bytes: int | None = None) -> Digest:
        """A local file holding the bytes at ``uri``: the file itself when the location is local,
        else a download into the directory ``into`` (or the cache, when there is one).  The
        caller compares the returned digest with what it expects before using the file."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        kind, location = self._source(uri)
        if kind == "local":
            return self._local_digest(uri, location, cap)

        def attempt() -> Digest:
            if self.cache is not None:
                return self._remote_digest(uri, kind, location, cap)
            name = Path(urllib.parse.urlsplit(location).path).name or "download"
            dest = Path(into) / name
            h = hashlib.sha256()
            size = 0
            with open(dest, "wb") as f:
                for chunk in self._capped(uri, location, self._remote_chunks(uri, kind, location), cap):
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            return Digest(uri, location, h.hexdigest(), size, path=dest)

        return self._retrying(uri, location, attempt)

    # ------------------------------------------------------------------ local
    @staticmethod
    def _open_local(uri: str, path: str) -> BinaryIO:
        """``path`` opened for reading if it is a regular file (refused unread otherwise)."""
        from ..inputs import InputFileError, open_regular

        try:
            return open_regular(path, "file")
        except InputFileError as e:
            raise ResolveError(uri, f"{path} is not a regular file ({e}); refused unread", location=path) from None
        except FileNotFoundError:
            raise ResolveError(uri, "no such file", location=path) from None
        except OSError as e:
            raise ResolveError(uri, f"cannot open: {e.strerror or e}", location=path) from None

    def _local_digest(self, uri: str, path: str, cap: int) -> Digest:
        """Hash a local file with one reused buffer and no copies (``readinto`` + ``memoryview``;
        hashlib releases the GIL on large updates, so worker threads hash in parallel)."""
        f = self._open_local(uri, path)
        h = hashlib.sha256()
        size = 0
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        with f:
            while True:
                try:
                    n = f.readinto(buf)  # type: ignore[attr-defined]
                except OSError as e:
                    raise ResolveError(uri, f"cannot read: {e.strerror or e}", location=path) from None
                if not n:
                    break
                size += n
                if size > cap:
                    raise ResolveError(uri, f"larger than the limit of {cap:,} bytes (stopped reading)",
                                       location=path)
                h.update(view[:n])
        return Digest(uri, path, h.hexdigest(), size, path=Path(path))

    @staticmethod
    def _capped(uri: str, location: str, chunks: Iterator[bytes], cap: int) -> Iterator[bytes]:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise ResolveError(uri, f"larger than the limit of {cap:,} bytes (stopped reading)", location=location)
            yield chunk

    # ------------------------------------------------------------------ remote
    def _retrying(self, uri: str, location: str, attempt: Callable[[], _T]) -> _T:
        last: Exception | None = None
        for n in range(self.retries + 1):
            try:
                return attempt()
            except Transient as e:
                last = e
                if n < self.retries:
                    time.sleep(self.backoff * (2**n))
        raise ResolveError(uri, f"{last} (gave up after {self.retries + 1} attempts)", location=location)

    def _remote_chunks(self, uri: str, kind: str, location: str) -> Iterator[bytes]:
        if kind == "http":
            from .http import http_chunks

            return http_chunks(uri, location, self.timeout)
        parts = urllib.parse.urlsplit(location)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise ResolveError(uri, "not an s3://<bucket>/<key> location", location=location)
        return self._s3()(bucket, key)

    def _s3(self) -> S3Reader:
        if self._s3_reader is None:
            from .s3 import s3_reader

            self._s3_reader = s3_reader(self.config, self.timeout)
        return self._s3_reader

    def _remote_digest(self, uri: str, kind: str, location: str, cap: int) -> Digest:
        h = hashlib.sha256()
        size = 0
        chunks = self._capped(uri, location, self._remote_chunks(uri, kind, location), cap)
        if self.cache is None:
            for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
            return Digest(uri, location, h.hexdigest(), size)
        with self.cache.writer() as (f, name):
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
                size += len(chunk)
            name.append(h.hexdigest())
        return Digest(uri, location, name[0], size, path=self.cache.path_for(name[0]))
