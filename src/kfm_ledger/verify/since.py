"""The ``since`` phase: a checkpoint saved earlier is signed by the log and the ledger extends
it (same root at its size, and an RFC 9162 §2.1.4 consistency proof built from the tiles
verifies): the CI append-only rule."""

from __future__ import annotations

from kfm_ledger.core import merkle
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.signed_checkpoint import open_checkpoint

from ..errors import KfmError
from .context import Run


def open_since(run: Run, since: bytes, since_verifier: Verifier | None) -> None:
    """Open the saved checkpoint; sets ``report.since_size`` and, while it may hold, ``run.since_root``."""
    ledger = run.ledger
    try:
        old = open_checkpoint(since, [since_verifier or ledger.verifier], origin=ledger.origin)
    except KfmError as e:
        run.fail("since", f"the saved checkpoint does not verify: {e}")
        return
    run.report.since_size = old.checkpoint.size
    run.since_root = old.checkpoint.root
    if old.checkpoint.size > ledger.size:
        run.fail(
            "since",
            f"the saved checkpoint has size {old.checkpoint.size} but the ledger's signed size "
            f"is {ledger.size}: the ledger lost rows (append-only violated)",
        )
        run.since_root = None
    elif old.checkpoint.size in run.expected_roots and run.expected_roots[old.checkpoint.size] != run.since_root:
        run.fail(
            "since",
            f"the log signed two different roots for size {old.checkpoint.size}: "
            "a split view (append-only violated)",
        )


def check_prefix_root(run: Run, size: int, root: bytes) -> None:
    """During the row pass: the first ``size`` rows must hash to the saved checkpoint's root."""
    if run.since_root is not None and size == run.report.since_size and root != run.since_root:
        run.fail(
            "since",
            f"the ledger's first {size} rows do not hash to the saved checkpoint's root: "
            "history was rewritten (append-only violated)",
        )


def prove_extends(run: Run) -> None:
    """After the row pass: the consistency proof from the saved size to the ledger's."""
    ledger, report = run.ledger, run.report
    if run.since_root is None or report.since_size is None or any(f.where == "since" for f in report.failures):
        return
    try:
        if 0 < report.since_size <= ledger.size:
            proof = ledger.consistency_proof(report.since_size, ledger.size, stored_expansions=False)
            merkle.verify_consistency(report.since_size, ledger.size, run.since_root, ledger.root, proof)
        run.note(
            f"the ledger extends the saved checkpoint of size {report.since_size} "
            f"(consistency proof {report.since_size} -> {ledger.size} verified)"
        )
    except KfmError as e:
        run.fail("since", f"consistency proof {report.since_size} -> {ledger.size}: {e}")
