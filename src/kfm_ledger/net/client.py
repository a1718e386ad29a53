"""The trustless client (``kfm client check`` / ``kfm client prove``, docs/network.md): it trusts
nothing the server says.

``check``: fetch ``/checkpoint``, verify the log's signature (and the witness quorum), and its
consistency with the checkpoint verified last time (:func:`.consistency.reconcile`).

``prove``: ``check``, then ask ``/lookup/<commit>`` only for the leaf index (a hint), fetch that
entry from its entry bundle, recompute its audit path from the hash tiles, check that the entry's
RFC 9162 leaf hash folds to the signed root (RFC 9162 §2.1.3.2), and check that the entry is a row
for the commit asked for (the row's full schema is left to ``kfm monitor`` and ``kfm verify``).
The result carries a c2sp.org/tlog-proof built from what was verified.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint
from kfm_ledger.core.tlogproof import TlogProof, format_tlog_proof
from kfm_ledger.errors import IndexOutOfRangeError, RemoteDataError

from .consistency import Reconciled, reconcile
from .http_client import DEFAULT_TIMEOUT, Fetcher
from .remote import RemoteLog, WitnessPolicy
from .state import OriginState, default_state_dir

__all__ = ["CheckResult", "ClientOptions", "ProveResult", "check", "prove"]


@dataclass(frozen=True)
class ClientOptions:
    """Where the log is and what to trust: the log's verifier key, optional witness keys and the
    quorum of them required, and the state directory (default :func:`default_state_dir`)."""

    url: str
    vkey: Verifier
    witnesses: tuple[Verifier, ...] = ()
    quorum: int | None = None  # None: every witness given (0 when none given)
    state_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT

    def policy(self) -> WitnessPolicy:
        quorum = len(self.witnesses) if self.quorum is None else self.quorum
        return WitnessPolicy(tuple(self.witnesses), quorum)

    def state(self) -> OriginState:
        return OriginState(self.state_dir or default_state_dir(), self.vkey.name)


@dataclass(frozen=True)
class CheckResult:
    """A verified, consistent checkpoint (``kfm client check``)."""

    url: str
    checkpoint: SignedCheckpoint
    witnesses: list[str]
    reconciled: Reconciled
    state_file: str

    def to_json(self) -> dict[str, Any]:
        cp = self.checkpoint.checkpoint
        return {
            "ok": True,
            "url": self.url,
            "origin": cp.origin,
            "tree_size": cp.size,
            "root": base64.b64encode(cp.root).decode(),
            "previous_size": self.reconciled.previous_size,
            "first_use": self.reconciled.previous is None,
            "consistency_proof": [base64.b64encode(h).decode() for h in self.reconciled.proof],
            "witnesses": self.witnesses,
            "state_file": self.state_file,
        }

    def describe(self) -> str:
        cp = self.checkpoint.checkpoint
        head = f"checkpoint of {cp.origin} verified: size {cp.size}, root {base64.b64encode(cp.root).decode()}"
        prev = self.reconciled.previous_size
        if prev is None:
            tail = "first use: no earlier checkpoint in the state, this one is now trusted"
        elif prev == cp.size:
            tail = f"same tree as verified before (size {prev})"
        else:
            tail = f"consistent with the size {prev} verified before ({len(self.reconciled.proof)}-hash proof)"
        wit = f"; cosigned by {', '.join(self.witnesses)}" if self.witnesses else ""
        return f"{head}\n{tail}{wit}"


@dataclass(frozen=True)
class ProveResult:
    """A row proven under a verified, consistent checkpoint (``kfm client prove``)."""

    check: CheckResult
    index: int
    lakefs_commit: str
    line: bytes
    hashes: tuple[bytes, ...] = field(repr=False)

    @property
    def tlog_proof(self) -> bytes:
        """The c2sp.org/tlog-proof of the entry, built from the verified path and checkpoint."""
        return format_tlog_proof(TlogProof(self.index, self.hashes, self.check.checkpoint.note))

    def to_json(self) -> dict[str, Any]:
        import json

        doc = self.check.to_json()
        doc.update(
            index=self.index,
            lakefs_commit=self.lakefs_commit,
            row=json.loads(self.line),
            tlog_proof=self.tlog_proof.decode("utf-8"),
        )
        return doc


def _check(remote: RemoteLog, options: ClientOptions) -> CheckResult:
    state = options.state()
    with state.locked():
        served, witnesses = remote.checkpoint()
        reconciled = reconcile(remote, state, served)
    return CheckResult(remote.fetcher.base_url, served, witnesses, reconciled, os.fspath(state.checkpoint_path))


def check(options: ClientOptions) -> CheckResult:
    """Verify the server's latest checkpoint and its consistency with the stored one (see the
    module docstring); raises a KfmError (ForkError, RollbackError, QuorumError, NetworkError, ...)."""
    with Fetcher(options.url, timeout=options.timeout) as fetcher:
        return _check(RemoteLog(fetcher, options.vkey, options.policy()), options)


def _commit_of(line: bytes) -> str | None:
    """The ``lakefs_commit`` of a signed entry, or None if it is not a JSON object holding one.
    (The full row schema is the monitor's and ``kfm verify``'s to check; a proof needs the commit.)"""
    import json

    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    commit = doc.get("lakefs_commit") if isinstance(doc, dict) else None
    return commit if isinstance(commit, str) else None


def prove(options: ClientOptions, commit: str | None = None, *, index: int | None = None) -> ProveResult:
    """The row for ``commit`` (or a unique prefix), or the entry at leaf ``index``, proven under
    the server's verified, consistent checkpoint (see the module docstring).  By ``index`` no
    lookup API is needed: any c2sp.org/tlog-tiles log (static files, a CDN) will do.  Exactly
    one of the two (ValueError otherwise); an index beyond the signed tree is IndexOutOfRangeError."""
    if (commit is None) == (index is None):
        raise ValueError("give exactly one of commit and index")
    with Fetcher(options.url, timeout=options.timeout) as fetcher:
        remote = RemoteLog(fetcher, options.vkey, options.policy())
        checked = _check(remote, options)
        size = checked.checkpoint.checkpoint.size
        if index is None:
            assert commit is not None
            index = remote.lookup_index(commit)
        elif not 0 <= index < size:
            raise IndexOutOfRangeError(f"index {index} out of bounds for tree size {size}", index=index, size=size)
        proven = remote.entry(index, checked.checkpoint)
    found = _commit_of(proven.line)
    if found is None:
        raise RemoteDataError(
            f"entry {index} proves under the signed checkpoint but is not a ledger row (a JSON object with a "
            "string lakefs_commit)",
            what="entry",
        )
    if commit is not None and found != commit and not found.startswith(commit):
        raise RemoteDataError(
            f"the server's lookup named entry {index} for {commit!r}, but that signed entry is for {found!r}",
            url=fetcher.url(f"lookup/{commit}"),
            what="lookup",
        )
    return ProveResult(checked, index, found, proven.line, proven.hashes)
