"""`kfm rollback`: the rollback plan for one lakeFS commit, with its inclusion proof.

:func:`plan_rollback` finds the ledger row for a commit (or a unique prefix of one),
proves that the row is in the log, and gathers everything a person or a pipeline needs
to restore that environment: the lakeFS repository, branch and commit, the bundle URI
and SHA-256, models, configs, data snapshots, the in-toto attestation, the lineage ids
and energy figures.

**The inclusion proof** (:func:`prove_entry`).  The ledger builds a c2sp.org/tlog-proof
for the row's leaf against its latest signed checkpoint; it is then checked
independently of the code that built it: the audit path with
:func:`kfm_ledger.core.merkle.verify_inclusion` (RFC 9162 §2.1.3.2) from the leaf hash of
the *stored bytes*, against the checkpoint's root, and the whole proof text with
:func:`kfm_ledger.core.tlogproof.verify_tlog_proof`, which also checks the checkpoint's
signature with the ledger's verifier key (c2sp.org/signed-note).  A failure does not
raise: the plan says ``verified: false`` and why, and the CLI exits 1.

**Restoring lakeFS** (what :attr:`RollbackPlan.actions` lists; lakectl 1.x, checked
against lakeFS's ``cmd/lakectl`` sources):

* ``inspect`` (safe): ``lakectl branch create lakefs://<repo>/<new-branch> --source
  lakefs://<repo>/<commit>`` makes a new branch at the recorded commit, to look at or
  test the old state without touching the live branch.
* ``restore`` (destructive): ``lakectl branch move-to-commit lakefs://<repo>/<branch>
  <commit>`` moves the branch pointer back to the commit (lakeFS API ``PUT
  /api/v1/repositories/<repo>/branches/<branch>/hard_reset?ref=<commit>``, an
  *experimental* endpoint; older lakectl releases lack the command).  Commits made on the
  branch after it are no longer on the branch; uncommitted changes make it refuse
  unless ``--force``; it asks for confirmation unless ``--yes``.
* ``revert`` (history-preserving alternative, described, not generated):
  ``lakectl branch revert lakefs://<repo>/<branch> <commit>...`` records new commits that
  undo the given commits; to get back to the recorded state, revert every commit made
  on the branch after it, newest first.  Those commits are lakeFS history, not ledger
  data, so kfm does not list them.  Note ``lakectl branch reset`` only discards
  *uncommitted* changes; it does not move a branch to a commit.

Pure apart from the ledger reads it asks for.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import to_builtins

from kfm_ledger.core import merkle

from ..errors import KfmError, ProofError
from ..schema import Entry, Row

if TYPE_CHECKING:  # pragma: no cover
    from ..log.ledger import Ledger

__all__ = [
    "PLAN_FORMAT",
    "BundleStatus",
    "LakefsAction",
    "ProofStatus",
    "RestoreStatus",
    "RollbackOutcome",
    "RollbackPlan",
    "check_plan_bundle",
    "lakefs_actions",
    "plan_for_entry",
    "plan_rollback",
    "prove_entry",
    "render_bundle_status",
    "render_plan",
    "render_restore_status",
    "restore_plan_bundle",
    "rollback_outcome",
]

#: The ``format`` field of the rollback plan's JSON (bumped on an incompatible change).
PLAN_FORMAT = "kfm.rollback-plan/v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -------------------------------------------------------------------- proof


@dataclass(frozen=True)
class ProofStatus:
    """Whether a row's inclusion proof verified against the signed checkpoint."""

    index: int  #: the row's 0-based leaf index
    tree_size: int  #: size of the signed checkpoint proved against
    root: bytes  #: that checkpoint's root hash
    leaf_hash: bytes  #: RFC 9162 leaf hash of the stored line
    verified: bool
    reason: str | None = None  #: why not, when ``verified`` is false
    hashes: tuple[bytes, ...] = ()  #: the audit path (leaf sibling first)
    tlog_proof: bytes | None = None  #: the c2sp.org/tlog-proof text, when one was built

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "root": _b64(self.root),
            "leaf_hash": _b64(self.leaf_hash),
            "verified": self.verified,
            "reason": self.reason,
            "hashes": [_b64(h) for h in self.hashes],
            "tlog_proof": self.tlog_proof.decode() if self.tlog_proof is not None else None,
        }

    def describe(self) -> str:
        where = f"index {self.index} in the signed tree of size {self.tree_size}, root {_b64(self.root)}"
        if self.verified:
            return f"verified: {where}"
        return f"NOT VERIFIED: {where}: {self.reason}"


def prove_entry(ledger: Ledger, entry: Entry) -> ProofStatus:
    """Prove ``entry`` is in the ledger's latest signed checkpoint, and check the proof.

    Builds the tlog-proof with the ledger, then verifies it two ways (audit path with
    merkle.verify_inclusion; the whole proof, checkpoint signature included, with
    tlogproof.verify_tlog_proof).  Never raises for a failed proof: returns
    ``verified=False`` with the reason.
    """
    from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof

    signed = ledger.checkpoint.checkpoint
    size, root = signed.size, signed.root
    leaf = merkle.leaf_hash(entry.line)
    hashes: tuple[bytes, ...] = ()
    text: bytes | None = None
    try:
        proof = ledger.tlog_proof(entry.index)
        hashes = tuple(proof.hashes)
        text = format_tlog_proof(proof)
        merkle.verify_inclusion(leaf, entry.index, size, hashes, root)
        checkpoint, index = verify_tlog_proof(text, entry.line, [ledger.verifier], origin=ledger.origin)
        if index != entry.index or checkpoint.size != size or checkpoint.root != root:
            raise ProofError(
                f"the tlog-proof names index {index}, size {checkpoint.size}; "
                f"expected index {entry.index}, size {size} and the ledger's root",
                index=index,
                size=checkpoint.size,
            )
    except KfmError as e:
        return ProofStatus(entry.index, size, root, leaf, False, e.diagnostics(), hashes, text)
    return ProofStatus(entry.index, size, root, leaf, True, None, hashes, text)


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class LakefsAction:
    """One way to act on lakeFS for this rollback."""

    id: str  #: "inspect", "restore" or "revert"
    description: str
    command: str | None  #: a lakectl command line (shell-quoted), None when only described
    api: str | None  #: the lakeFS REST call behind it, when there is one
    destructive: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "command": self.command,
            "api": self.api,
            "destructive": self.destructive,
        }


def lakefs_actions(repo: str, branch: str, commit: str) -> list[LakefsAction]:
    """The lakeFS actions for restoring ``branch`` of ``repo`` to ``commit`` (module docstring)."""
    q = shlex.quote
    inspect_branch = f"rollback-{commit[:12]}"
    return [
        LakefsAction(
            id="inspect",
            description=(
                f"Create branch {inspect_branch!r} at commit {commit} to inspect or test the recorded "
                "state; the live branch is not touched."
            ),
            command=(
                f"lakectl branch create {q(f'lakefs://{repo}/{inspect_branch}')} "
                f"--source {q(f'lakefs://{repo}/{commit}')}"
            ),
            api=f"POST /api/v1/repositories/{repo}/branches "
            f"{{\"name\": \"{inspect_branch}\", \"source\": \"{commit}\"}}",
            destructive=False,
        ),
        LakefsAction(
            id="restore",
            description=(
                f"Move branch {branch!r} back to commit {commit} (a hard reset: commits made on the "
                "branch after it are no longer on it; refuses if the branch has uncommitted changes "
                "unless --force; asks for confirmation unless --yes)."
            ),
            command=f"lakectl branch move-to-commit {q(f'lakefs://{repo}/{branch}')} {q(commit)}",
            api=f"PUT /api/v1/repositories/{repo}/branches/{branch}/hard_reset?ref={commit} (experimental)",
            destructive=True,
        ),
        LakefsAction(
            id="revert",
            description=(
                f"History-preserving alternative: revert, newest first, every commit made on {branch!r} "
                f"after {commit} with `lakectl branch revert lakefs://{repo}/{branch} <commit>...` "
                "(each revert records a new commit; the commits to revert come from lakeFS's log, "
                "not from this ledger)."
            ),
            command=None,
            api=f"POST /api/v1/repositories/{repo}/branches/{branch}/revert (once per commit)",
            destructive=False,
        ),
    ]


# --------------------------------------------------------------------- plan


@dataclass(frozen=True)
class RollbackPlan:
    """Everything needed to roll back to one ledger row."""

    origin: str  #: the ledger's origin (log identity)
    entry: Entry
    proof: ProofStatus
    actions: tuple[LakefsAction, ...]

    @property
    def row(self) -> Row:
        return self.entry.row

    @property
    def ok(self) -> bool:
        return self.proof.verified

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape (docs/engineer.md, "kfm rollback")."""
        r = self.row
        return {
            "format": PLAN_FORMAT,
            "origin": self.origin,
            "index": self.entry.index,
            "lakefs": {"repo": r.lakefs_repo, "branch": r.lakefs_branch, "commit": r.lakefs_commit},
            "created_at": r.created_at,
            "producer": r.producer,
            "lineage": {"openlineage_run_id": r.openlineage_run_id, "otel_trace_id": r.otel_trace_id},
            "bundle": {"uri": r.artifact_uri, "sha256": r.checksums.artifact_sha256},
            "attestation": {"in_toto": r.signatures.in_toto},
            "models": to_builtins(r.models),
            "configs": to_builtins(r.configs),
            "data_snapshot": to_builtins(r.data_snapshot),
            "energy_carbon": {"kwh": r.energy_carbon.kwh, "co2e_kg": r.energy_carbon.co2e_kg},
            "proof": self.proof.to_json(),
            "actions": [a.to_json() for a in self.actions],
        }




def plan_for_entry(ledger: Ledger, entry: Entry) -> RollbackPlan:
    """The rollback plan for a row already looked up."""
    r = entry.row
    return RollbackPlan(
        origin=ledger.origin,
        entry=entry,
        proof=prove_entry(ledger, entry),
        actions=tuple(lakefs_actions(r.lakefs_repo, r.lakefs_branch, r.lakefs_commit)),
    )


def plan_rollback(ledger: Ledger, commit: str) -> RollbackPlan:
    """The rollback plan for a lakeFS commit id or a unique prefix of one.

    Raises :class:`~kfm_ledger.errors.CommitNotFoundError` for an unknown commit and
    :class:`~kfm_ledger.errors.AmbiguousCommitError` (with ``candidates``) for a prefix
    that matches several rows.  A proof that fails is reported in ``plan.proof``.
    """
    return plan_for_entry(ledger, ledger.get(commit))


# ------------------------------------------------------------------ bundles


@dataclass(frozen=True)
class BundleStatus:
    """The bundle file checked against the row's ``checksums.artifact_sha256``."""

    path: str
    expected_sha256: str
    found_sha256: str | None  #: None when the file could not be read
    ok: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "expected_sha256": self.expected_sha256,
            "found_sha256": self.found_sha256,
            "ok": self.ok,
            "error": self.error,
        }


@dataclass(frozen=True)
class RestoreStatus:
    """The outcome of ``--restore-to``: the bundle extracted (or refused) and its configs checked."""

    dest: str
    ok: bool
    error: str | None = None
    refused_member: str | None = None  #: the archive member that was refused, if one was
    members: int = 0
    files: int = 0
    bytes: int = 0
    configs: tuple[Any, ...] = ()  #: bundle.ConfigCheck for each configs[] entry, when checked

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "ok": self.ok,
            "error": self.error,
            "refused_member": self.refused_member,
            "members": self.members,
            "files": self.files,
            "bytes": self.bytes,
            "configs": [c.to_json() for c in self.configs],
        }


def check_plan_bundle(
    plan: RollbackPlan, path: str, *, max_bytes: int | None = None, max_files: int | None = None
) -> BundleStatus:
    """Stream the bundle file and compare its SHA-256 with the plan's; never raises for a mismatch.

    Hashing stops past ``max_bytes`` (default :data:`~.bundle.DEFAULT_MAX_BYTES`) plus the
    tar overhead allowance; a FIFO or device is refused unread."""
    from .bundle import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, BundleChecksumError, BundleError, verify_bundle_sha256

    expected = plan.row.checksums.artifact_sha256
    try:
        check = verify_bundle_sha256(
            path,
            expected,
            max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
            max_files=DEFAULT_MAX_FILES if max_files is None else max_files,
        )
    except BundleChecksumError as e:
        return BundleStatus(path, expected, e.found, False, e.diagnostics())
    except BundleError as e:
        return BundleStatus(path, expected, None, False, e.diagnostics())
    return BundleStatus(path, expected, check.sha256, True)


def restore_plan_bundle(
    plan: RollbackPlan, path: str, dest: str, *, max_bytes: int, max_files: int
) -> tuple[BundleStatus, RestoreStatus]:
    """Check the bundle's SHA-256, extract it safely into ``dest`` and check the configs.

    Refused when the plan's inclusion proof did not verify (a row not proven to be in
    the log is not restored).  Never raises for a refusal: the statuses say what failed.
    """
    import os

    from .bundle import (
        BundleChecksumError,
        BundleError,
        BundleFileTooLargeError,
        ConfigMismatchError,
        UnsafeArchiveError,
        extract_bundle,
    )

    expected = plan.row.checksums.artifact_sha256
    # ``dest`` is reported absolute whether the restore was done or refused.
    dest = os.path.abspath(dest)
    if not plan.proof.verified:
        why = "not restored: the row's inclusion proof does not verify"
        return BundleStatus(path, expected, None, False, why), RestoreStatus(dest, False, why)
    try:
        report = extract_bundle(
            path, dest, expected_sha256=expected, max_bytes=max_bytes, max_files=max_files,
            configs=plan.row.configs,
        )
    except BundleChecksumError as e:
        bundle = BundleStatus(path, expected, e.found, False, e.diagnostics())
        return bundle, RestoreStatus(dest, False, e.diagnostics())
    except BundleFileTooLargeError as e:  # refused while hashing: its checksum is unknown
        return BundleStatus(path, expected, None, False, e.diagnostics()), RestoreStatus(
            dest, False, e.diagnostics()
        )
    except UnsafeArchiveError as e:  # refused after the checksum matched
        return BundleStatus(path, expected, expected, True), RestoreStatus(
            dest, False, e.diagnostics(), refused_member=e.member
        )
    except ConfigMismatchError as e:
        return BundleStatus(path, expected, expected, True), RestoreStatus(
            dest, False, e.diagnostics(), configs=tuple(e.checks)
        )
    except BundleError as e:
        # Refused before or while extracting for another reason than the checksum (not a
        # zstd stream, unreadable): say what the file's checksum is, as ``--bundle`` alone
        # would, instead of leaving it unknown.
        return check_plan_bundle(plan, path), RestoreStatus(dest, False, e.diagnostics())
    return BundleStatus(path, expected, report.sha256, True), RestoreStatus(
        os.path.abspath(report.dest), True, None, None, report.members, report.files, report.bytes, report.configs
    )


def render_bundle_status(b: BundleStatus) -> str:
    if b.ok:
        return f"Bundle {b.path}: sha256 OK ({b.found_sha256})"
    if b.found_sha256 is not None:
        return f"Bundle {b.path}: sha256 MISMATCH: expected {b.expected_sha256}, found {b.found_sha256}"
    return f"Bundle {b.path}: not checked: {b.error}"


def render_restore_status(r: RestoreStatus) -> str:
    if r.ok:
        lines = [f"Restored into {r.dest}: {r.files} files, {r.bytes} bytes ({r.members} members)"]
        lines += [f"  config {c.describe()}" for c in r.configs]
        return "\n".join(lines)
    return f"Restore into {r.dest} REFUSED, nothing was written: {r.error}"


# -------------------------------------------------------------------- text


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def render_plan(plan: RollbackPlan, withheld: str | None = None) -> str:
    """The plan for a person (plain text).

    A destructive action is shown as runnable only when nothing failed: with ``withheld``
    (why the rollback must not go ahead), or when the plan's proof did not verify, its
    command is replaced by the reason."""
    if withheld is None and not plan.proof.verified:
        withheld = f"the inclusion proof does not verify: {plan.proof.reason}"
    r = plan.row
    lines = [
        f"Rollback plan for lakeFS commit {r.lakefs_commit}",
        f"  ledger        {plan.origin}, entry #{plan.entry.index}",
        f"  restore       repository {r.lakefs_repo}, branch {r.lakefs_branch}, commit {r.lakefs_commit}",
        f"  recorded      {r.created_at} by {r.producer}",
        f"  bundle        {r.artifact_uri}",
        f"  bundle sha256 {r.checksums.artifact_sha256}",
        f"  attestation   {r.signatures.in_toto}",
        f"  lineage       OpenLineage run {r.openlineage_run_id}, OTel trace {r.otel_trace_id}",
        f"  energy        {r.energy_carbon.kwh:g} kWh, {r.energy_carbon.co2e_kg:g} kg CO2e",
        "",
        f"Models ({len(r.models)}):",
        *_table([[m.name, m.version, m.uri] for m in r.models]),
        f"Configs ({len(r.configs)}):",
        *_table([[c.path, c.sha256] for c in r.configs]),
        f"Data snapshots ({len(r.data_snapshot)}):",
        *_table([[s.stac, s.lakefs_ref] for s in r.data_snapshot]),
        "",
        f"Inclusion proof: {plan.proof.describe()}",
        "",
        "lakeFS actions:",
    ]
    for a in plan.actions:
        tag = "DESTRUCTIVE" if a.destructive else "safe"
        if a.destructive and withheld is not None:
            lines.append(f"  [{a.id}, {tag}] WITHHELD, do not run it: {withheld}")
            continue
        lines.append(f"  [{a.id}, {tag}] {a.description}")
        if a.command:
            lines.append(f"      $ {a.command}")
        if a.api:
            lines.append(f"      API: {a.api}")
    return "\n".join(lines)


@dataclass(frozen=True)
class RollbackOutcome:
    """The verdict of ``kfm rollback``: the plan, the optional bundle check and restore, and
    what failed (empty when the rollback can go ahead)."""

    plan: RollbackPlan
    bundle: BundleStatus | None = None
    restore: RestoreStatus | None = None
    problems: tuple[str, ...] = ()
    fetched: Any = None  #: fetch_bundle.FetchStatus when --bundle was given without a path

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def withheld(self) -> str | None:
        """Why destructive actions must not be run (None when the rollback can go ahead)."""
        return "; ".join(self.problems) if self.problems else None

    def render_text(self) -> str:
        """The plan, the bundle check and the restore, for a person; a destructive action is
        printed as runnable only when everything passed."""
        parts = [render_plan(self.plan, self.withheld)]
        if self.fetched is not None:
            from .fetch_bundle import render_fetch_status

            parts += ["", render_fetch_status(self.fetched)]
        if self.bundle is not None:
            parts += ["", render_bundle_status(self.bundle)]
        if self.restore is not None:
            parts.append(render_restore_status(self.restore))
        if self.problems:
            parts += ["", "NOT READY: " + self.withheld]  # type: ignore[operator]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        doc = self.plan.to_json()
        why = self.withheld
        for action in doc["actions"]:
            # A destructive action is never given as runnable when a check failed.
            action["withheld"] = why if action["destructive"] else None
            if action["destructive"] and why is not None:
                action["command"] = None
                action["api"] = None
        doc["bundle_check"] = self.bundle.to_json() if self.bundle else None
        doc["restore"] = self.restore.to_json() if self.restore else None
        if self.fetched is not None:
            doc["fetched_bundle"] = self.fetched.to_json()
        doc["ok"] = self.ok
        return doc


def rollback_outcome(
    plan: RollbackPlan, bundle: BundleStatus | None = None, restore: RestoreStatus | None = None,
    *, fetched: Any = None,
) -> RollbackOutcome:
    """Decide whether the rollback can go ahead: the proof verified, the fetched bundle (``fetched``,
    a ``fetch_bundle.FetchStatus``) passed its sha256 and attestation checks, and the bundle
    check or the restore passed."""
    problems = []
    if not plan.proof.verified:
        problems.append(f"the inclusion proof does not verify: {plan.proof.reason}")
    if fetched is not None and not fetched.ok:
        problems.append(fetched.error or "the fetched bundle did not pass its checks")
    if bundle is not None and not bundle.ok:
        problems.append(bundle.error or "bundle check failed")
    elif restore is not None and not restore.ok:
        problems.append(restore.error or "restore failed")
    return RollbackOutcome(plan, bundle, restore, tuple(problems), fetched)
