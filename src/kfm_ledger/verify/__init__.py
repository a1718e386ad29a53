"""Streaming verification of a whole ledger (``kfm verify``).

One pass over the JSONL, with memory that does not grow with it:

* every stored checkpoint (``checkpoints/<size>`` and ``checkpoint``) is a
  signed note that verifies with the ledger's key, for this origin
  (:mod:`.checkpoints`);
* every row follows the schema, is stored canonically, fits the entry limit,
  has a unique lakeFS commit (checked in a temporary on-disk SQLite table, not
  a Python set) and a ``created_at`` that never goes backwards (:mod:`.rows`,
  :mod:`.index_check`);
* the tree recomputed from the rows has, at every signed size, the signed root
  (RFC 9162 §2.1.1 via a compact range) (:mod:`.rows`);
* every tile (c2sp.org/tlog-tiles) equals the hashes recomputed from the rows
  (:mod:`.tiles`);
* the commit index points each commit at its own row (:mod:`.index_check`);
* bytes past the signed size belong to an interrupted append (:mod:`.tail`);
* with ``since``: a checkpoint saved earlier is signed by the log and the
  ledger extends it (same root at its size, and an RFC 9162 §2.1.4 consistency
  proof built from the tiles verifies) — the CI append-only rule (:mod:`.since`);
* the Parquet mirror, when one exists, matches a regeneration (:mod:`.mirror_check`).

Every failure is collected with where it is (line number, checkpoint size,
tile path); the report (:mod:`.report`) is OK only when there is none.
:func:`verify_ledger` (:mod:`.run`) is the entry point.
"""

from __future__ import annotations

from .report import Failure, LedgerVerificationError, VerifyReport
from .rows import Progress
from .run import verify_ledger

__all__ = ["Failure", "LedgerVerificationError", "Progress", "VerifyReport", "verify_ledger"]
