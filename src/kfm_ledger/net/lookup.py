"""Answers of the lookup API of ``kfm serve`` (docs/network.md): a row by lakeFS commit (or a
unique prefix of one) with its c2sp.org/tlog-proof, and the proof alone.

Every answer is proven before it leaves: the row's bytes are checked against the inclusion
proof that is served with them, under the latest signed checkpoint (RFC 9162 §2.1.3.2), and the
row's commit must be the one asked for.  The commit index only finds the candidate leaf.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfm_ledger.core import merkle
from kfm_ledger.core.tlogproof import TlogProof, format_tlog_proof
from kfm_ledger.errors import (
    CorruptLedgerError,
    FormatError,
    ProofError,
    SchemaError,
)

if TYPE_CHECKING:  # pragma: no cover
    from kfm_ledger.log.ledger import Ledger

__all__ = ["MAX_CANDIDATES", "Lookup", "check_commit_text", "lookup"]

#: How many candidates a 409 answer for an ambiguous prefix lists at most.
MAX_CANDIDATES = 20
# The stored rows' lakefs_commit alphabet (schema/rules.py, _STORED_COMMIT), 1..128 characters.
_COMMIT_TEXT = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class Lookup:
    """One proven answer: the row at ``index`` (``line``: its stored bytes) and the tlog-proof
    text against the signed checkpoint of ``tree_size``."""

    index: int
    lakefs_commit: str
    line: bytes
    tlog_proof: bytes
    tree_size: int

    def to_json(self) -> bytes:
        """``{"index", "lakefs_commit", "row", "tlog_proof", "tree_size"}`` (docs/network.md).

        ``row`` is the stored line itself: a canonical JSON object (the ledger only stores
        canonical rows, and this one was proven), so it is embedded as is, not re-encoded."""
        head = {"index": self.index, "lakefs_commit": self.lakefs_commit}
        tail = {"tlog_proof": self.tlog_proof.decode("utf-8"), "tree_size": self.tree_size}
        return b"".join([
            json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode("utf-8")[:-1],
            b',"row":', self.line, b",",
            json.dumps(tail, ensure_ascii=False, separators=(",", ":")).encode("utf-8")[1:],
        ])


def check_commit_text(text: str) -> str:
    """``text`` if it can be a lakeFS commit id or a prefix of one (1..128 of ``[A-Za-z0-9._-]``),
    else FormatError (no other text reaches the index)."""
    if not _COMMIT_TEXT.fullmatch(text) or text in (".", ".."):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise FormatError(
            f"{shown!r} is not a lakeFS commit id or prefix (1 to 128 of A-Z a-z 0-9 . _ -)",
            what="lakeFS commit",
            found=shown,
        )
    return text


def lookup(led: Ledger, commit: str) -> Lookup:
    """The row whose lakeFS commit is ``commit`` or starts with it, proven under the latest
    signed checkpoint (re-read first, so appends by other processes are seen).

    Raises FormatError (not a commit text), CommitNotFoundError, AmbiguousCommitError (its
    ``candidates``: at most :data:`MAX_CANDIDATES` ``"<commit> (index <i>)"``), or
    CorruptLedgerError when the stored row does not prove.
    """
    check_commit_text(commit)
    led.refresh()
    # The line as stored (unverified read; CommitNotFoundError, AmbiguousCommitError with at most
    # MAX_CANDIDATES candidates), then proven here with the proof that is served.
    try:
        entry = led.get(commit, verified=False)
    except SchemaError:
        led.get(commit)  # a signed row always decodes: the proven read names the changed row
        raise
    signed = led.checkpoint.checkpoint
    leaf = merkle.leaf_hash(entry.line)
    # The audit path from the tiles (and the ledger's shared tile cache), checked here against
    # the line that is served; only if that fails does the ledger's own tlog_proof run (it
    # distrusts derived expansion records, re-reads the tiles, and names what is corrupt).
    path = merkle.inclusion_proof(entry.index, signed.size, led.hash_reader())
    try:
        merkle.verify_inclusion(leaf, entry.index, signed.size, path, signed.root)
        proof = TlogProof(index=entry.index, hashes=tuple(path), checkpoint=led.checkpoint.note)
    except ProofError:
        proof = led.tlog_proof(entry.index)
        try:
            merkle.verify_inclusion(leaf, entry.index, signed.size, proof.hashes, signed.root)
        except ProofError as err:
            raise CorruptLedgerError(
                f"stored row {entry.index} does not hash to leaf {entry.index} of the signed tree "
                f"(size {signed.size}): {err}; run `kfm verify`",
                index=entry.index,
            ) from None
    row_commit = entry.row.lakefs_commit
    if row_commit != commit and not row_commit.startswith(commit):
        raise CorruptLedgerError(
            f"the commit index points {commit!r} at leaf {entry.index}, whose row is for {row_commit!r}; "
            "run `kfm rebuild`",
            index=entry.index,
        )
    return Lookup(entry.index, row_commit, entry.line, format_tlog_proof(proof), signed.size)
