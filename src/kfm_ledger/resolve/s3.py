"""``s3://`` reads for the resolver, through the shared S3 client layer (:mod:`kfm_ledger.s3`, obstore).

One :class:`~kfm_ledger.s3.S3Client` per bucket, built on first use from the ``[s3]`` settings
(else the standard ``AWS_*`` environment and files) with the resolver's timeout.  The client
retries transient request errors itself; a stream that breaks midway is retried whole by the
resolver (:class:`.resolver.Transient`).  A missing object, an invalid key or denied access
is final.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import ObjectNotFoundError, ObjectTooLargeError, ResolveError, StorageError
from .resolver import S3Reader, Transient

if TYPE_CHECKING:
    from ..config import KfmConfig
    from ..s3 import S3Client

__all__ = ["s3_reader"]


def s3_reader(config: KfmConfig | None, timeout: float) -> S3Reader:
    """A reader of ``(bucket, key)`` as chunks, for :class:`~kfm_ledger.resolve.Resolver`."""
    from ..s3 import S3Client, S3Location, check_key, resolve_connection

    connection = resolve_connection(config.s3 if config is not None else None)
    clients: dict[str, S3Client] = {}
    lock = threading.Lock()

    def client_for(bucket: str) -> S3Client:
        with lock:
            if bucket not in clients:
                clients[bucket] = S3Client(S3Location(bucket, ""), connection, timeout=timeout)
            return clients[bucket]

    def read(bucket: str, key: str) -> Iterator[bytes]:
        uri = f"s3://{bucket}/{key}"
        try:
            check_key(key)
        except StorageError as e:
            raise ResolveError(uri, str(e), location=uri) from None
        try:
            yield from client_for(bucket).iter_get(key)
        except ObjectNotFoundError:
            raise ResolveError(uri, f"not found (no object {key!r} in bucket {bucket!r})", location=uri) from None
        except ObjectTooLargeError as e:  # pragma: no cover - the resolver caps, the client is not asked to
            raise ResolveError(uri, str(e), location=uri) from None
        except StorageError as e:
            if "denied" in str(e):
                raise ResolveError(uri, str(e), location=uri) from None
            raise Transient(str(e)) from None

    return read
