"""Resolvers: fetch what a ledger row points at (docs/supply-chain.md, "Resolvers").

A row names its bundle, attestation and STAC documents by URI (``s3://``, ``https://``);
:class:`Resolver` maps each URI through the ``[resolve]`` prefix table of ``kfm.toml``, then
reads it from a local file (a plain path or ``file://``), an HTTP(S) server or S3, streaming:
SHA-256 is computed chunk by chunk with bounded memory and a size cap, a local path that is
not a regular file is refused unread, remote reads have a timeout and are retried on
transient errors, and an optional content cache keyed by SHA-256 saves refetching.

Nothing fetched is trusted by itself: callers compare the digest with the row (which is
proven against the signed checkpoint) or verify the attestation's signature.
"""

from __future__ import annotations

from .cache import ContentCache
from .resolver import DEFAULT_MAX_BYTES, DEFAULT_MAX_DOCUMENT_BYTES, Digest, Resolver

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DOCUMENT_BYTES", "ContentCache", "Digest", "Resolver"]
