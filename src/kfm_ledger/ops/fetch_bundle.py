"""``kfm rollback --commit X --bundle`` without a path: fetch the row's bundle through the
resolvers, check its SHA-256 and its attestation, before anything is restored
(docs/supply-chain.md, "Rollback").

The bundle at ``artifact_uri`` is located through ``[resolve]`` (a mapped local file is used
in place; a remote one is downloaded into a temporary directory or the ``--cache``), hashed
while it streams and compared with ``checksums.artifact_sha256``; the attestation at
``signatures.in_toto`` must verify for that digest (:mod:`kfm_ledger.attest`).  Only then is
the file handed to the usual bundle check or restore, which hash it once more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import KfmError

if TYPE_CHECKING:
    from ..attest import AttestationVerifier
    from ..resolve import Resolver
    from .rollback import RollbackPlan

__all__ = ["FetchStatus", "fetch_plan_bundle", "render_fetch_status"]


@dataclass(frozen=True)
class FetchStatus:
    """The fetched bundle: where from, the local ``path``, its digest and the attestation's verdict."""

    uri: str
    location: str | None
    path: str | None
    expected_sha256: str
    found_sha256: str | None
    attestation_status: str | None
    attestation_message: str | None
    ok: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "location": self.location,
            "path": self.path,
            "expected_sha256": self.expected_sha256,
            "found_sha256": self.found_sha256,
            "attestation": {"status": self.attestation_status, "message": self.attestation_message},
            "ok": self.ok,
            "error": self.error,
        }


def fetch_plan_bundle(
    plan: RollbackPlan,
    resolver: Resolver,
    verifier: AttestationVerifier,
    into: str | os.PathLike[str],
    *,
    max_bytes: int | None = None,
    allow_unsupported: bool = False,
) -> FetchStatus:
    """Fetch and check the plan's bundle; never raises for a refusal (the status says why)."""
    row = plan.row
    uri, expected = row.artifact_uri, row.checksums.artifact_sha256
    try:
        got = resolver.fetch(uri, into, max_bytes=max_bytes)
    except KfmError as e:
        return FetchStatus(uri, getattr(e, "location", None), None, expected, None, None, None, False,
                           f"bundle not fetched: {e}")
    path = str(got.path) if got.path is not None else None
    if got.sha256 != expected:
        return FetchStatus(uri, got.location, path, expected, got.sha256, None, None, False,
                           f"fetched bundle {uri} (from {got.location}): sha256 mismatch: expected {expected} "
                           f"(checksums.artifact_sha256), found {got.sha256}; nothing was restored")
    try:
        data = resolver.read(row.signatures.in_toto)
    except KfmError as e:
        return FetchStatus(uri, got.location, path, expected, got.sha256, "failed", str(e), False,
                           f"attestation {row.signatures.in_toto} not fetched: {e}; nothing was restored")
    result = verifier.verify(data, expected)
    ok = result.status == "ok" or (result.status == "unsupported" and allow_unsupported)
    message = f"{result.kind}: {result.message}"
    error = None if ok else (f"attestation {row.signatures.in_toto}: {result.status}: {message}; "
                             "nothing was restored")
    return FetchStatus(uri, got.location, path, expected, got.sha256, result.status, message, ok, error)


def render_fetch_status(f: FetchStatus) -> str:
    where = f" (from {f.location})" if f.location and f.location != f.uri else ""
    lines = [f"Bundle fetched through the resolvers: {f.uri}{where}"]
    if f.found_sha256 is None:
        lines.append(f"  not fetched: {f.error}")
        return "\n".join(lines)
    if f.found_sha256 == f.expected_sha256:
        lines.append(f"  sha256 OK ({f.found_sha256}), checked before restoring")
    else:
        lines.append(f"  sha256 MISMATCH: expected {f.expected_sha256}, found {f.found_sha256}")
    if f.attestation_status is not None:
        lines.append(f"  attestation {f.attestation_status}: {f.attestation_message}")
    return "\n".join(lines)
