"""The S3 client layer: objects under an ``s3://bucket/prefix``, with conditional writes.

A thin, typed wrapper over obstore (imported lazily: ``kfm --help`` never loads it) that
every S3 user of kfm-ledger shares: the ledger's storage backend and the resolvers of
``s3://`` references.  Keys are relative to the location's prefix.

Conditional writes (RFC 9110 section 13.1; S3 conditional requests):

* :meth:`S3Client.put_if_absent`: ``If-None-Match: *``, create only;
* :meth:`S3Client.put_if_match`: ``If-Match: <etag>``, replace only the version read.

Both raise :class:`~kfm_ledger.errors.PreconditionFailedError` when they lose (412; for
``If-Match`` also 404, the object gone: both mean "someone else moved first").  The
client retries transient failures (connection errors, 5xx, timeouts) a bounded number of
times, so a conditional write whose first attempt landed but whose answer was lost comes
back as a lost race: a caller that must know re-reads the object and compares the bytes.

Errors are typed: a missing object is :class:`~kfm_ledger.errors.ObjectNotFoundError`,
an object past a reader's cap :class:`~kfm_ledger.errors.ObjectTooLargeError`, anything
else :class:`~kfm_ledger.errors.StorageError` naming the key (never a credential).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from kfm_ledger.errors import (
    MissingExtraError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PreconditionFailedError,
    StorageError,
)
from kfm_ledger.s3.location import S3Location
from kfm_ledger.s3.settings import S3Connection

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["ObjectInfo", "S3Client", "check_key"]

#: Seconds for a whole request (connect, send, answer) before it is a timeout.
DEFAULT_TIMEOUT = 30.0
#: Seconds to open a connection.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Retries of a request that failed transiently (connection error, 5xx, timeout).
DEFAULT_MAX_RETRIES = 3
#: Longest an object key may be (S3's limit).
MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD or a listing tells of an object (``key`` relative to the location's prefix)."""

    key: str
    size: int
    etag: str | None
    last_modified: _dt.datetime | None = None


def check_key(key: str) -> str:
    """``key`` if it is a safe relative object key (``/``-separated, no empty, ``.`` or ``..`` segment)."""
    if not key or key.startswith("/") or any(seg in ("", ".", "..") for seg in key.split("/")):
        raise StorageError(f"invalid object key {key!r}", key=key)
    if any(ord(ch) < 0x20 or ch in "\\\x7f" for ch in key):
        raise StorageError(f"invalid object key {key!r} (control character or backslash)", key=key)
    return key


def _obstore() -> Any:
    try:
        import obstore
    except ImportError:
        raise MissingExtraError("obstore", "s3", "an s3:// ledger or reference") from None
    return obstore


class S3Client:
    """Objects in one bucket under one prefix (an :class:`S3Location`), over one connection.

    Thread-safe: one client may serve many threads (the underlying HTTP pool is shared).
    """

    def __init__(
        self,
        location: S3Location,
        connection: S3Connection,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.location = location
        self.connection = connection
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._max_retries = max_retries
        self._store: S3Store | None = None

    def describe(self) -> str:
        """``s3://bucket/prefix at <endpoint>`` (no credential)."""
        return f"{self.location.url()} at {self.connection.describe()}"

    # -- the obstore handle ------------------------------------------------------------
    @property
    def store(self) -> S3Store:
        """The obstore ``S3Store`` (built on first use)."""
        if self._store is None:
            self._store = self._build_store()
        return self._store

    def _build_store(self) -> S3Store:
        _obstore()
        from obstore.store import S3Store

        conn = self.connection
        config: dict[str, Any] = {"region": conn.region, "conditional_put": "etag"}
        if conn.endpoint_url:
            config["endpoint"] = conn.endpoint_url
        if conn.access_key_id and conn.secret_access_key:
            config["access_key_id"] = conn.access_key_id
            config["secret_access_key"] = conn.secret_access_key
            if conn.session_token:
                config["session_token"] = conn.session_token
        client_options: dict[str, Any] = {
            "allow_http": conn.allow_http,
            "timeout": _dt.timedelta(seconds=self._timeout),
            "connect_timeout": _dt.timedelta(seconds=self._connect_timeout),
        }
        retry: dict[str, Any] = {
            "max_retries": self._max_retries,
            "retry_timeout": _dt.timedelta(seconds=max(self._timeout * 2, 10.0)),
            "backoff": {
                "init_backoff": _dt.timedelta(milliseconds=50),
                "max_backoff": _dt.timedelta(seconds=2),
                "base": 2,
            },
        }
        try:
            return S3Store(self.location.bucket, config=config, client_options=client_options, retry_config=retry)  # type: ignore[arg-type]
        except Exception as exc:  # obstore refuses a bad configuration with its own errors
            raise StorageError(f"cannot set up S3 client for {self.describe()}: {_first_line(exc)}") from None

    def _full(self, key: str) -> str:
        full = self.location.key(check_key(key))
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise StorageError(f"object key longer than {MAX_KEY_BYTES} bytes: {key!r}", key=key)
        return full

    # -- reads -------------------------------------------------------------------------
    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes (ObjectNotFoundError if absent; ObjectTooLargeError past ``max_bytes``)."""
        return self.get_with_etag(key, max_bytes=max_bytes)[0]

    def get_with_etag(self, key: str, *, max_bytes: int | None = None) -> tuple[bytes, str | None]:
        """The object's bytes and the ETag of exactly that version (for a later :meth:`put_if_match`)."""
        obs = _obstore()
        try:
            result = obs.get(self.store, self._full(key))
            meta = result.meta
            self._check_size(key, meta["size"], max_bytes)
            data = bytes(result.bytes())
        except Exception as exc:
            self._raise(exc, key)
        self._check_size(key, len(data), max_bytes)
        return data, meta.get("e_tag")

    def iter_get(self, key: str, *, chunk_size: int = 1 << 20, max_bytes: int | None = None) -> Iterator[bytes]:
        """Stream the object in chunks of about ``chunk_size`` bytes, refusing it past ``max_bytes``."""
        obs = _obstore()
        try:
            result = obs.get(self.store, self._full(key))
            self._check_size(key, result.meta["size"], max_bytes)
            stream = result.stream(min_chunk_size=chunk_size)
        except Exception as exc:
            self._raise(exc, key)
        seen = 0
        while True:
            try:
                chunk = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                self._raise(exc, key)
            seen += len(chunk)
            self._check_size(key, seen, max_bytes)
            yield bytes(chunk)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes of the object from ``start`` (StorageError if the object is shorter)."""
        if length == 0:
            return b""
        obs = _obstore()
        try:
            data = bytes(obs.get_range(self.store, self._full(key), start=start, length=length))
        except Exception as exc:
            self._raise(exc, key)
        if len(data) != length:
            raise StorageError(f"short read of {key!r}: {len(data)} of {length} bytes at {start}", key=key)
        return data

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and ETag, or None when it does not exist."""
        obs = _obstore()
        try:
            meta = obs.head(self.store, self._full(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            self._raise(exc, key)
        return ObjectInfo(key, int(meta["size"]), meta.get("e_tag"), meta.get("last_modified"))

    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""
        return self.head(key) is not None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (relative; ``""`` for all), keys relative to the location."""
        obs = _obstore()
        full = self.location.key(prefix.rstrip("/")) if prefix else self.location.prefix
        want = full + "/" if full else ""
        try:
            for batch in obs.list(self.store, full or None, chunk_size=1000):
                for meta in batch:
                    path = meta["path"]
                    if not path.startswith(want):
                        continue
                    rel = self.location.relative(path)
                    if rel is not None:
                        yield ObjectInfo(rel, int(meta["size"]), meta.get("e_tag"), meta.get("last_modified"))
        except Exception as exc:
            self._raise(exc, prefix or "")

    # -- writes ------------------------------------------------------------------------
    def put(self, key: str, data: bytes | memoryview) -> str | None:
        """Create or replace the object unconditionally; returns the new ETag."""
        return self._put(key, data, "overwrite", None)

    def put_if_absent(self, key: str, data: bytes | memoryview) -> str | None:
        """Create the object only if absent (``If-None-Match: *``); PreconditionFailedError if it exists."""
        return self._put(key, data, "create", None)

    def put_if_match(self, key: str, data: bytes | memoryview, etag: str) -> str | None:
        """Replace the object only if its ETag is still ``etag`` (``If-Match``).

        412 (changed) and 404 (gone) alike raise PreconditionFailedError: the race is lost.
        """
        return self._put(key, data, {"e_tag": etag}, etag)

    def _put(self, key: str, data: bytes | memoryview, mode: Any, expected: str | None) -> str | None:
        obs = _obstore()
        try:
            result = obs.put(self.store, self._full(key), data, mode=mode)
        except FileNotFoundError:
            if mode == "overwrite":
                raise StorageError(f"cannot write {key!r} in {self.describe()}: bucket not found", key=key) from None
            raise PreconditionFailedError(
                f"{key!r} is gone (expected ETag {expected})", key=key, expected=expected
            ) from None
        except Exception as exc:
            names = {type(exc).__name__}
            if names & {"AlreadyExistsError", "PreconditionError"}:
                what = "already exists" if mode == "create" else f"changed (expected ETag {expected})"
                raise PreconditionFailedError(f"{key!r} {what}", key=key, expected=expected) from None
            self._raise(exc, key)
        etag: str | None = result.get("e_tag")
        return etag

    def delete(self, key: str) -> None:
        """Delete the object (no error if it does not exist)."""
        obs = _obstore()
        try:
            obs.delete(self.store, self._full(key))
        except FileNotFoundError:
            return
        except Exception as exc:
            self._raise(exc, key)

    # -- errors ------------------------------------------------------------------------
    def _check_size(self, key: str, size: int, max_bytes: int | None) -> None:
        if max_bytes is not None and size > max_bytes:
            raise ObjectTooLargeError(
                f"{key!r} in {self.location.url()} is larger than {max_bytes} bytes ({size} or more)",
                key=key,
                size=size,
                limit=max_bytes,
            )

    def _raise(self, exc: BaseException, key: str) -> NoReturn:
        if isinstance(exc, StorageError):
            raise exc
        if isinstance(exc, FileNotFoundError):
            raise ObjectNotFoundError(key) from None
        name = type(exc).__name__
        if name in ("PermissionDeniedError", "UnauthenticatedError"):
            raise StorageError(
                f"access to {key!r} in {self.describe()} denied: check the AWS credentials "
                f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) ({_first_line(exc)})",
                key=key,
            ) from None
        raise StorageError(f"S3 request for {key!r} in {self.describe()} failed: {_first_line(exc)}", key=key) from None


def _first_line(exc: BaseException) -> str:
    """The first line of an obstore error (its debug dump follows), bounded."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
