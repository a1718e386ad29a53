"""The cosignature phase: every witness cosignature a stored checkpoint carries is checked
against the configured witness keys (c2sp.org/tlog-cosignature, ``cosignature/v1``).

A signature line on ``checkpoints/<size>`` or ``checkpoint`` that is not the log's own:

* from a configured witness key (same name and key ID, c2sp.org/signed-note §Signatures): it
  must verify over the checkpoint's text, else a failure naming the checkpoint and the witness;
* from any other key: not checked (signed-note: verifiers ignore unknown keys), but noted, so
  an operator sees cosignatures the configuration does not cover.

The log's own signature and the notes' form are the checkpoint phase's work (:mod:`.checkpoints`):
a note that does not parse is skipped here (it is reported there).
"""

from __future__ import annotations

from collections.abc import Sequence

from kfm_ledger.core.cosignature import verify_cosignature
from kfm_ledger.core.keys import ALG_COSIGNATURE_V1, Verifier
from kfm_ledger.core.note import parse_note
from kfm_ledger.log.layout import CHECKPOINT_KEY, checkpoint_size_of

from ..errors import KfmError
from . import access
from .context import Run

__all__ = ["check_cosignatures"]


def check_cosignatures(run: Run, witnesses: Sequence[Verifier]) -> None:
    """Check every cosignature held against ``witnesses`` (type 0x04 keys); fail a bad one."""
    ledger = run.ledger
    log_key = (ledger.verifier.name, ledger.verifier.key_id)
    known: dict[tuple[str, bytes], Verifier] = {}
    for w in witnesses:
        if w.alg != ALG_COSIGNATURE_V1:
            run.fail(f"witness {w.name}", f"configured key {w.vkey_text()} is not a cosignature/v1 (0x04) key")
            continue
        known[(w.name, w.key_id)] = w
    keys = sorted(
        (k for k in access.list_keys(ledger, "checkpoints/") if checkpoint_size_of(k) is not None),
        key=lambda k: checkpoint_size_of(k) or 0,
    )
    verified: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for key in [*keys, CHECKPOINT_KEY]:
        try:
            note = parse_note(access.read(ledger, key))
        except KfmError:
            continue  # reported by the checkpoint phase
        where = "checkpoint" if key == CHECKPOINT_KEY else f"checkpoint {checkpoint_size_of(key)}"
        for sig in note.signatures:
            ident = (sig.name, sig.key_id)
            if ident == log_key:
                continue
            witness = known.get(ident)
            if witness is None:
                label = f"{sig.name}+{sig.key_id.hex()}"
                unknown[label] = unknown.get(label, 0) + 1
                continue
            try:
                verify_cosignature(witness, note.text, sig)
            except KfmError as e:
                run.fail(where, f"cosignature by configured witness {witness.name}+{witness.key_id.hex()}: {e}")
                continue
            verified[witness.name] = verified.get(witness.name, 0) + 1
    if verified:
        run.note(
            "witness cosignatures verified: "
            + ", ".join(f"{name} ({n} checkpoint(s))" for name, n in sorted(verified.items()))
        )
    if unknown:
        run.note(
            "signature lines from keys that are not configured witnesses were not checked: "
            + ", ".join(f"{label} ({n})" for label, n in sorted(unknown.items()))
        )
