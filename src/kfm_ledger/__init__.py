"""kfm-ledger: the Kansas Frontier Matrix Rollback Registry Index.

An append-only JSONL ledger whose every line is a leaf of an RFC 9162 Merkle
tree, with signed C2SP checkpoints and tlog-tiles beside it.  The public API::

    from kfm_ledger import Ledger, load_signer, verify_ledger, verify_tlog_proof

    ledger = Ledger.init("ledger/", origin="kfm.example/rollback-index")   # or Ledger.open("ledger/")
    signer = load_signer(open("ledger/log.key", "rb").read())
    ledger.append(open("rows.jsonl", "rb").read(), signer=signer)          # all or nothing
    entry = ledger.get("abc123")                                           # commit or unique prefix
    proof = ledger.tlog_proof(entry.index)                                 # c2sp.org/tlog-proof
    report = verify_ledger(ledger)                                         # streaming, report.ok

Every error is a :class:`KfmError` with ``diagnostics()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - the lazy names below, for type checkers
    from kfm_ledger.core.checkpoint import Checkpoint
    from kfm_ledger.core.keys import Signer, Verifier, generate_key
    from kfm_ledger.core.signed_checkpoint import SignedCheckpoint, open_checkpoint, sign_checkpoint
    from kfm_ledger.core.tlogproof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof
    from kfm_ledger.errors import (
        AmbiguousCommitError,
        CommitNotFoundError,
        CorruptLedgerError,
        InputRejected,
        KfmError,
        NoteError,
        ProofError,
        RowProblem,
        SchemaError,
        VerificationError,
    )
    from kfm_ledger.log.append import AppendResult
    from kfm_ledger.log.keys import load_signer
    from kfm_ledger.log.ledger import Ledger
    from kfm_ledger.schema import Entry, Row, decode_row, encode_row
    from kfm_ledger.verify import VerifyReport, verify_ledger

#: Where each public name lives; imported on first use, so that ``import kfm_ledger.core.merkle``
#: (and ``kfm --help``) loads nothing else.
_LAZY = {
    "Checkpoint": "kfm_ledger.core.checkpoint",
    "SignedCheckpoint": "kfm_ledger.core.signed_checkpoint",
    "open_checkpoint": "kfm_ledger.core.signed_checkpoint",
    "sign_checkpoint": "kfm_ledger.core.signed_checkpoint",
    "Signer": "kfm_ledger.core.keys",
    "Verifier": "kfm_ledger.core.keys",
    "generate_key": "kfm_ledger.core.keys",
    "TlogProof": "kfm_ledger.core.tlogproof",
    "format_tlog_proof": "kfm_ledger.core.tlogproof",
    "parse_tlog_proof": "kfm_ledger.core.tlogproof",
    "verify_tlog_proof": "kfm_ledger.core.tlogproof",
    "AmbiguousCommitError": "kfm_ledger.errors",
    "CommitNotFoundError": "kfm_ledger.errors",
    "CorruptLedgerError": "kfm_ledger.errors",
    "InputRejected": "kfm_ledger.errors",
    "KfmError": "kfm_ledger.errors",
    "NoteError": "kfm_ledger.errors",
    "ProofError": "kfm_ledger.errors",
    "RowProblem": "kfm_ledger.errors",
    "SchemaError": "kfm_ledger.errors",
    "VerificationError": "kfm_ledger.errors",
    "AppendResult": "kfm_ledger.log.append",
    "Ledger": "kfm_ledger.log.ledger",
    "load_signer": "kfm_ledger.log.keys",
    "Entry": "kfm_ledger.schema",
    "Row": "kfm_ledger.schema",
    "decode_row": "kfm_ledger.schema",
    "encode_row": "kfm_ledger.schema",
    "VerifyReport": "kfm_ledger.verify",
    "verify_ledger": "kfm_ledger.verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kfm_ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "AmbiguousCommitError",
    "AppendResult",
    "Checkpoint",
    "CommitNotFoundError",
    "CorruptLedgerError",
    "Entry",
    "InputRejected",
    "KfmError",
    "Ledger",
    "NoteError",
    "ProofError",
    "Row",
    "RowProblem",
    "SchemaError",
    "SignedCheckpoint",
    "Signer",
    "TlogProof",
    "VerificationError",
    "Verifier",
    "VerifyReport",
    "decode_row",
    "encode_row",
    "format_tlog_proof",
    "generate_key",
    "load_signer",
    "open_checkpoint",
    "parse_tlog_proof",
    "sign_checkpoint",
    "verify_ledger",
    "verify_tlog_proof",
]
