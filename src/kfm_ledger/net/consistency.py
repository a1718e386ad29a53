"""Is the checkpoint a server shows now consistent with the one this client verified before?

RFC 9162 §2.1.4 consistency, computed by the client from the server's tiles, decides it; the
answer is one of:

* the same tree, or a tree that extends the stored one: the state moves forward;
* a **fork**: two checkpoints validly signed by the log's key that cannot both be true (the
  same size with two roots, or a larger tree whose first ``m`` leaves hash to another root than
  the one signed for size ``m``).  :class:`~kfm_ledger.errors.ForkError`, and an evidence file
  with both signed checkpoints and the proof (docs/network.md, "Evidence files");
* a **rollback**: a validly signed checkpoint smaller than the stored one, consistent with it
  (a stale or rolled-back server): :class:`~kfm_ledger.errors.RollbackError`, the state kept.

A tampered tile must not pass for a fork: the proof hashes and the old tree's root ``R'``
computed from the tiles are first checked against the larger signed root
(``verify_consistency(m, n, R', root_n, proof)``: only hashes of the real size-``n`` tree fold
to ``root_n``), and only then is ``R'`` compared with the root signed for size ``m``.  Tiles that
do not fold to the signed root are a :class:`~kfm_ledger.errors.RemoteDataError`.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass

from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.signed_checkpoint import SignedCheckpoint
from kfm_ledger.errors import (
    CorruptLedgerError,
    ForkError,
    FormatError,
    NetworkError,
    ProofError,
    RemoteDataError,
    RollbackError,
)

from .remote import RemoteLog
from .state import OriginState

__all__ = ["EVIDENCE_FORMAT", "Reconciled", "prefix_proof", "reconcile"]

#: The ``format`` field of an evidence file.
EVIDENCE_FORMAT = "kfm-fork-evidence/v1"


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


@dataclass(frozen=True)
class Reconciled:
    """The outcome of a consistent fetch: ``previous`` is the checkpoint verified before (None
    on first use: trusted on first use), ``proof`` the consistency proof from it (RFC 9162)."""

    previous: SignedCheckpoint | None
    proof: tuple[bytes, ...] = ()

    @property
    def previous_size(self) -> int | None:
        return None if self.previous is None else self.previous.checkpoint.size


def prefix_proof(remote: RemoteLog, old_size: int, signed: Checkpoint) -> tuple[list[bytes], bytes]:
    """From the server's tiles: the consistency proof ``old_size -> signed.size`` and the root
    of the first ``old_size`` leaves of that tree, both checked to fold to ``signed.root``.
    RemoteDataError if they do not (the tiles are wrong); NetworkError if tiles are missing."""
    if old_size == 0:
        return [], merkle.EMPTY_ROOT
    reader = remote.hash_reader(signed.size)
    try:
        proof = merkle.consistency_proof(old_size, signed.size, reader)
        prefix_root = merkle.tree_root(old_size, reader)
        merkle.verify_consistency(old_size, signed.size, prefix_root, signed.root, proof)
    except (ProofError, CorruptLedgerError, FormatError) as err:
        raise RemoteDataError(
            f"the tiles served by {remote.fetcher.base_url} do not hash to the signed root of tree size "
            f"{signed.size}: {err}",
            url=remote.fetcher.base_url,
            what="tile",
        ) from None
    return proof, prefix_root


def _checkpoint_doc(source: str, signed: SignedCheckpoint) -> dict[str, object]:
    cp = signed.checkpoint
    return {"source": source, "size": cp.size, "root": _b64(cp.root), "note": signed.note.decode("utf-8")}


def _fork(
    state: OriginState,
    remote: RemoteLog,
    stored: SignedCheckpoint,
    served: SignedCheckpoint,
    proof: tuple[list[bytes], bytes, int, int] | None,
) -> ForkError:
    """Write the evidence file and return the ForkError naming it."""
    o, n = stored.checkpoint, served.checkpoint
    if proof is None:
        reason = "same-size-different-root"
        message = f"the log signed two checkpoints of size {n.size} with different roots"
        proof_doc = None
    else:
        hashes, prefix_root, small, big = proof
        reason = "inconsistent"
        message = (
            f"the log's signed tree of size {big} does not extend its signed tree of size {small}: "
            f"its first {small} leaves hash to {_b64(prefix_root)}, the checkpoint for size {small} says "
            f"{_b64((o if o.size == small else n).root)}"
        )
        proof_doc = {
            "type": "rfc9162-consistency",
            "old_size": small,
            "new_size": big,
            "hashes": [_b64(h) for h in hashes],
            "old_root_from_proof": _b64(prefix_root),
            "explanation": (
                f"verify_consistency({small}, {big}, old_root_from_proof, <root of the size-{big} checkpoint>, hashes) "
                f"succeeds, and old_root_from_proof differs from the root of the size-{small} checkpoint"
            ),
        }
    doc = {
        "format": EVIDENCE_FORMAT,
        "origin": o.origin,
        "url": remote.fetcher.base_url,
        "detected_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reason": reason,
        "message": message,
        "log_key": remote.verifier.vkey_text(),
        "checkpoints": [_checkpoint_doc("stored", stored), _checkpoint_doc("served", served)],
        "proof": proof_doc,
    }
    path = state.write_evidence(doc)
    return ForkError(
        f"fork: {message}; evidence written to {path}",
        origin=o.origin,
        old_size=o.size,
        new_size=n.size,
        evidence_path=str(path),
    )


def reconcile(remote: RemoteLog, state: OriginState, served: SignedCheckpoint) -> Reconciled:
    """Check ``served`` (already verified) against the stored checkpoint and remember it.

    First use: trusted and stored.  Same size: the roots must be equal (else fork).  Larger:
    consistent by a proof from the tiles (else fork), then stored.  Smaller: RollbackError, or a
    fork if the stored tree's tiles show the served one is not its prefix.  The caller holds
    ``state.locked()``.
    """
    stored = state.load(remote.open)
    if stored is None:
        state.save(served)
        return Reconciled(None)
    o, n = stored.checkpoint, served.checkpoint
    if n.size == o.size:
        if n.root != o.root:
            raise _fork(state, remote, stored, served, None)
        if served.note != stored.note:
            state.save(served)  # the same tree, maybe with other cosignatures
        return Reconciled(stored)
    if n.size > o.size:
        hashes, prefix_root = prefix_proof(remote, o.size, n)
        if prefix_root != o.root:
            raise _fork(state, remote, stored, served, (hashes, prefix_root, o.size, n.size))
        state.save(served)
        return Reconciled(stored, tuple(hashes))
    # Smaller than what was verified before: never accepted.  Is it at least a prefix?
    rollback = RollbackError(
        f"the server shows a checkpoint of size {n.size}, older than the size {o.size} already verified "
        f"for {o.origin!r} (stale or rolled back); refused, state kept",
        origin=o.origin,
        stored_size=o.size,
        served_size=n.size,
    )
    try:
        hashes, prefix_root = prefix_proof(remote, n.size, o)
    except (NetworkError, RemoteDataError):
        raise rollback from None
    if prefix_root != n.root:
        raise _fork(state, remote, stored, served, (hashes, prefix_root, n.size, o.size))
    raise rollback
