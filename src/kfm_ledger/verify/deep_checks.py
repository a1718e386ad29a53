"""The per-row supply-chain checks of ``kfm verify --deep`` (docs/supply-chain.md, "Checks").

Each check returns :class:`CheckResult`\\ s with a status (``ok``, ``failed``, ``unsupported``,
``skipped``, ``warning``) and a message naming what was expected and what was found:

* ``artifact``: the bytes at ``artifact_uri`` hash to ``checksums.artifact_sha256``;
* ``attestation``: the file at ``signatures.in_toto`` verifies (:mod:`kfm_ledger.attest`);
* ``stac``: each ``data_snapshot[].stac`` is a valid STAC Catalog, Collection or Item;
* ``lakefs_ref``: each ``data_snapshot[].lakefs_ref`` parses and its ref is the row's commit
  (ok) or the row's branch (warning: a branch moves);
* ``configs``: with a configs directory, each ``configs[].path`` under it hashes to its sha256;
* ``energy``: ``co2e_kg / kwh`` within ``[energy] co2e_per_kwh`` (warning otherwise).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..attest import AttestationVerifier
from ..config import EnergyPolicy
from ..errors import KfmError, ResolveError
from ..resolve import DEFAULT_MAX_DOCUMENT_BYTES, Resolver
from ..schema import Row

__all__ = [
    "STATUSES",
    "CheckResult",
    "check_artifact",
    "check_attestation",
    "check_configs",
    "check_energy",
    "check_lakefs_refs",
    "check_stac",
    "parse_lakefs_ref",
]

#: Every status, in the order summaries list them.
STATUSES = ("ok", "failed", "unsupported", "warning", "skipped")


@dataclass(frozen=True)
class CheckResult:
    """One check of one row: ``check`` name, ``status``, ``message``; ``target`` the URI or path checked."""

    check: str
    status: str
    message: str
    target: str | None = None

    def to_json(self) -> dict[str, str]:
        doc = {"check": self.check, "status": self.status, "message": self.message}
        if self.target is not None:
            doc["target"] = self.target
        return doc


def _reason(e: KfmError) -> str:
    if isinstance(e, ResolveError):
        where = f" (resolved to {e.location})" if e.location not in (None, e.uri) else ""
        return f"cannot fetch{where}: {e.reason}"
    return str(e)


def check_artifact(row: Row, resolver: Resolver, max_bytes: int | None = None) -> CheckResult:
    """``artifact``: SHA-256 of the bytes at ``artifact_uri`` vs ``checksums.artifact_sha256``."""
    uri, expected = row.artifact_uri, row.checksums.artifact_sha256
    try:
        d = resolver.digest(uri, expected=expected, max_bytes=max_bytes)
    except KfmError as e:
        return CheckResult("artifact", "failed", f"expected sha256 {expected}; {_reason(e)}", uri)
    if d.sha256 != expected:
        return CheckResult("artifact", "failed", f"sha256 mismatch: expected {expected} "
                           f"(checksums.artifact_sha256), found {d.sha256} ({d.size:,} bytes at {d.location})", uri)
    src = " (from the cache)" if d.cached else ""
    return CheckResult("artifact", "ok", f"sha256 {expected} matches ({d.size:,} bytes){src}", uri)


def check_attestation(row: Row, resolver: Resolver, verifier: AttestationVerifier) -> CheckResult:
    """``attestation``: the file at ``signatures.in_toto``, detected and verified by kind."""
    uri = row.signatures.in_toto
    try:
        data = resolver.read(uri, max_bytes=DEFAULT_MAX_DOCUMENT_BYTES)
    except KfmError as e:
        return CheckResult("attestation", "failed", f"expected an attestation; {_reason(e)}", uri)
    r = verifier.verify(data, row.checksums.artifact_sha256)
    return CheckResult("attestation", r.status, f"{r.kind}: {r.message}", uri)


def check_stac(row: Row, resolver: Resolver) -> list[CheckResult]:
    """``stac``: one result per ``data_snapshot[]`` element (skipped when there is none)."""
    from .stac_schema import StacProblem, validate_stac_cached

    if not row.data_snapshot:
        return [CheckResult("stac", "skipped", "the row has no data_snapshot")]
    out = []
    for n, snap in enumerate(row.data_snapshot):
        label = f"data_snapshot[{n}].stac"
        try:
            data = resolver.read(snap.stac, max_bytes=DEFAULT_MAX_DOCUMENT_BYTES)
            kind = validate_stac_cached(data)
        except KfmError as e:
            out.append(CheckResult("stac", "failed", f"{label}: expected a STAC document; {_reason(e)}", snap.stac))
        except StacProblem as e:
            out.append(CheckResult("stac", "unsupported" if e.unsupported else "failed",
                                   f"{label}: expected a valid STAC Catalog, Collection or Item; found {e}", snap.stac))
        else:
            out.append(CheckResult("stac", "ok", f"{label}: a valid STAC {kind}", snap.stac))
    return out


_LAKEFS_RE = re.compile(r"^lakefs://(?P<repo>[^@/\s]+)@(?P<ref>[^/\s]+)(?:/(?P<path>.*))?\Z", re.S)
#: lakeFS repository names (lakeFS: 3-63 of lower-case letters, digits, '-', starting with a letter or digit).
_REPO_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}\Z")
_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*\Z")


def parse_lakefs_ref(text: str) -> tuple[str, str, str | None]:
    """(repository, ref, path or None) of ``lakefs://<repo>@<ref>[/<path>]``; ValueError naming the part."""
    m = _LAKEFS_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not lakefs://<repo>@<ref>[/<path>]")
    repo, ref, path = m.group("repo"), m.group("ref"), m.group("path")
    if not _REPO_RE.match(repo):
        raise ValueError(f"repository {repo!r} is not a lakeFS repository name (3-63 of a-z, 0-9, '-')")
    if "~" in ref or "^" in ref:
        raise ValueError(f"ref {ref!r} is relative (~ or ^): it names no fixed commit")
    if not _REF_RE.match(ref) or ".." in ref or ref.endswith((".", "/")):
        raise ValueError(f"ref {ref!r} is not a valid lakeFS ref (a commit id or a branch name)")
    if path is not None and ".." in path.split("/"):
        raise ValueError(f"path {path!r} has a '..' segment")
    return repo, ref, path


def check_lakefs_refs(row: Row) -> list[CheckResult]:
    """``lakefs_ref``: parses, and the ref is the row's commit (ok) or its branch (warning)."""
    if not row.data_snapshot:
        return [CheckResult("lakefs_ref", "skipped", "the row has no data_snapshot")]
    out = []
    for n, snap in enumerate(row.data_snapshot):
        label = f"data_snapshot[{n}].lakefs_ref"
        try:
            _, ref, _ = parse_lakefs_ref(snap.lakefs_ref)
        except ValueError as e:
            out.append(CheckResult("lakefs_ref", "failed", f"{label}: {e}", snap.lakefs_ref))
            continue
        commit, branch = row.lakefs_commit, row.lakefs_branch
        if ref == commit:
            out.append(CheckResult("lakefs_ref", "ok", f"{label}: ref is the row's commit {commit}", snap.lakefs_ref))
        elif ref == branch:
            out.append(CheckResult("lakefs_ref", "warning", f"{label}: ref is the row's branch {branch!r}, which "
                                   f"moves; expected the commit {commit} to pin the snapshot", snap.lakefs_ref))
        else:
            out.append(CheckResult("lakefs_ref", "failed", f"{label}: expected the row's commit {commit} or branch "
                                   f"{branch!r}, found ref {ref!r}", snap.lakefs_ref))
    return out


def check_configs(row: Row, configs_dir: Path | None) -> list[CheckResult]:
    """``configs``: each ``configs[].path`` under ``configs_dir`` hashes to its sha256 (skipped without a dir)."""
    from ..ops.bundle import check_configs as compare

    if configs_dir is None:
        return [CheckResult("configs", "skipped", "no configs directory given (--configs DIR)")]
    if not row.configs:
        return [CheckResult("configs", "skipped", "the row lists no configs")]
    out = []
    for c in compare(configs_dir, row.configs):
        if c.status == "ok":
            out.append(CheckResult("configs", "ok", f"{c.path}: sha256 {c.expected} matches", c.path))
        elif c.status == "mismatch":
            out.append(CheckResult("configs", "failed", f"{c.path}: sha256 mismatch: expected {c.expected}, "
                                   f"found {c.found}", c.path))
        elif c.status == "unsafe":
            out.append(CheckResult("configs", "failed", f"{c.path}: not a relative path inside {configs_dir} "
                                   "(absolute or with '..'): refused", c.path))
        else:
            out.append(CheckResult("configs", "failed", f"{c.path}: expected a regular file with sha256 "
                                   f"{c.expected} under {configs_dir}; found none", c.path))
    return out


def check_energy(row: Row, policy: EnergyPolicy) -> CheckResult:
    """``energy``: kg CO2e per kWh within the configured range (warning otherwise)."""
    kwh, co2e = row.energy_carbon.kwh, row.energy_carbon.co2e_kg
    low, high = policy.co2e_per_kwh
    if kwh == 0:
        if co2e == 0:
            return CheckResult("energy", "ok", "no energy used and no emissions")
        return CheckResult("energy", "warning", f"{co2e} kg CO2e reported for 0 kWh; expected "
                           f"{low}-{high} kg CO2e per kWh")
    ratio = co2e / kwh
    if not math.isfinite(ratio) or not low <= ratio <= high:
        return CheckResult("energy", "warning", f"{ratio:.4g} kg CO2e per kWh ({co2e} kg / {kwh} kWh) is outside "
                           f"the plausible range {low}-{high} ([energy] co2e_per_kwh)")
    return CheckResult("energy", "ok", f"{ratio:.4g} kg CO2e per kWh, within {low}-{high}")
