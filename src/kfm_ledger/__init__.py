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

from .checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint, sign_checkpoint
from .errors import (
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
from .ledger import AppendResult, Ledger, load_signer
from .note import Signer, Verifier, generate_key
from .schema import Entry, Row, decode_row, encode_row
from .tlogproof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from .verify import VerifyReport, verify_ledger

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
    "Verifier",
    "VerificationError",
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
