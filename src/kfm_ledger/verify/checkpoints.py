"""The checkpoint phase: every stored checkpoint is a signed note of this log, the published
``checkpoint`` is the latest, and every signed size the chain names (kfm-previous-size) is kept;
also the interrupted append's record (``pending-append``)."""

from __future__ import annotations

import contextlib

from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.log.checkpoint_chain import previous_signed_size
from kfm_ledger.log.layout import CHECKPOINT_KEY, CHECKPOINTS_PREFIX, PENDING_KEY

from ..errors import KfmError
from . import access
from .context import Run


def check_pending_append(run: Run) -> None:
    """Read the interrupted append's record (if any) into ``run`` and say what will become of it."""
    try:
        run.pending_append = run.ledger.pending_append()
    except KfmError as e:
        run.fail(PENDING_KEY, str(e))
        run.pending_append = None
    pending = run.pending_append
    if pending is not None:
        run.note(
            f"an append of rows {pending.old_size}..{pending.new_size - 1} was interrupted; "
            "the next writer (or `kfm recover`) "
            + (
                "publishes its signed checkpoint"
                if access.exists(run.ledger, f"{CHECKPOINTS_PREFIX}{pending.new_size}")
                else "removes it (it was never signed or acknowledged)"
            )
        )


def check_checkpoints(run: Run) -> None:
    """Verify the stored checkpoints; fills ``run.expected_roots`` (signed size -> root)."""
    ledger = run.ledger
    named_before: dict[int, int] = {}  # previous size -> the signed size that names it
    sizes = _stored_sizes(run)
    for size in sorted(sizes):
        _check_stored(run, size, named_before)
    expected_roots = run.expected_roots
    if ledger.size not in expected_roots and ledger.size not in sizes:
        run.fail(
            f"checkpoint {ledger.size}",
            f"the latest checkpoint is not kept as {CHECKPOINTS_PREFIX}{ledger.size}",
        )
    elif ledger.size in expected_roots and expected_roots[ledger.size] != ledger.root:
        run.fail(CHECKPOINT_KEY, f"differs from {CHECKPOINTS_PREFIX}{ledger.size}")
    expected_roots[ledger.size] = ledger.root
    _check_chain(run, named_before, set(sizes))


def _stored_sizes(run: Run) -> list[int]:
    sizes: list[int] = []
    for key in access.list_keys(run.ledger, CHECKPOINTS_PREFIX):
        name = key[len(CHECKPOINTS_PREFIX) :]
        if name.isdigit() and str(int(name)) == name:
            sizes.append(int(name))
        else:
            run.fail(key, "not a checkpoint name (a canonical decimal tree size)")
    return sizes


def _check_stored(run: Run, size: int, named_before: dict[int, int]) -> None:
    """One stored checkpoint ``checkpoints/<size>``."""
    ledger = run.ledger
    where = f"checkpoint {size}"
    try:
        signed = open_checkpoint(
            access.read(ledger, f"{CHECKPOINTS_PREFIX}{size}"), [ledger.verifier], origin=ledger.origin
        )
    except KfmError as e:
        run.fail(where, str(e))
        return
    run.report.checkpoints_checked += 1
    if signed.checkpoint.size != size:
        run.fail(where, f"stored as size {size} but says size {signed.checkpoint.size}")
        return
    try:
        previous = previous_signed_size(signed.checkpoint)
    except KfmError as e:
        run.fail(where, str(e))
        previous = None
    if previous is not None:
        named_before[previous] = size
    if size > ledger.size:
        if run.pending_append is None or run.pending_append.new_size != size:
            run.fail(
                where,
                f"the log signed size {size} but the published checkpoint is older (size {ledger.size}): "
                "`checkpoint` was replaced by an older one",
            )
        return
    run.expected_roots[size] = signed.checkpoint.root


def _check_chain(run: Run, named_before: dict[int, int], present: set[int]) -> None:
    """Every signed tree head names the one before it (kfm-previous-size): each named size
    must be kept, or an auditor can no longer check consistency with that tree head."""
    ledger = run.ledger
    with contextlib.suppress(KfmError):
        latest_previous = previous_signed_size(ledger.checkpoint.checkpoint)
        if latest_previous is not None:
            named_before.setdefault(latest_previous, ledger.size)
    for previous, by in sorted(named_before.items()):
        if previous not in present:
            run.fail(
                f"checkpoint {previous}",
                f"{CHECKPOINTS_PREFIX}{previous} is missing: the checkpoint of size {by} says the log signed "
                f"size {previous} just before it; every signed checkpoint must be kept",
            )
