"""The shared S3 client layer: ``s3://bucket/prefix`` locations, connection settings, conditional writes.

Used by the S3 ledger backend (:mod:`kfm_ledger.storage.s3`) and by the resolvers of
``s3://`` references.  Importing this package does not import obstore: the client
loads it on first use (:class:`~kfm_ledger.errors.MissingExtraError` names the
``s3`` extra when it is not installed).

>>> from kfm_ledger.s3 import open_client
>>> client = open_client("s3://my-bucket/ledgers/prod")      # doctest: +SKIP
>>> client.put_if_absent("hello", b"world")                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

from kfm_ledger.config import S3Settings
from kfm_ledger.s3.client import ObjectInfo, S3Client, check_key
from kfm_ledger.s3.location import S3_SCHEME, S3Location, is_s3_url, parse_s3_url
from kfm_ledger.s3.settings import DEFAULT_REGION, S3Connection, resolve_connection

__all__ = [
    "DEFAULT_REGION",
    "S3_SCHEME",
    "ObjectInfo",
    "S3Client",
    "S3Connection",
    "S3Location",
    "check_key",
    "is_s3_url",
    "open_client",
    "parse_s3_url",
    "resolve_connection",
]


def open_client(
    location: str | S3Location,
    settings: S3Settings | None = None,
    environ: Mapping[str, str] | None = None,
) -> S3Client:
    """An :class:`S3Client` for ``location`` (``s3://bucket/prefix``) with the resolved connection settings.

    ``settings`` is the ``[s3]`` section of the configuration file (else the ``AWS_*``
    environment and the AWS shared files; see :mod:`kfm_ledger.s3.settings`).
    """
    loc = parse_s3_url(location) if isinstance(location, str) else location
    return S3Client(loc, resolve_connection(settings, environ))
