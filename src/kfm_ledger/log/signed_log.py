"""What every ledger is, wherever it is stored: a signed tree head and lookups and proofs under it.

:class:`~kfm_ledger.log.ledger.Ledger` (a directory, memory) and
:class:`~kfm_ledger.log.remote.RemoteLedger` (an S3 bucket) both derive from
:class:`SignedLog`; they differ in how rows are stored and appended, not in how a commit is
found, a row proven (RFC 9162 §2.1.3) or a c2sp.org/tlog-proof made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from kfm_ledger.errors import AmbiguousCommitError, CommitNotFoundError, KeyFormatError

if TYPE_CHECKING:  # pragma: no cover
    from kfm_ledger import schema
    from kfm_ledger.core.keys import Signer, Verifier
    from kfm_ledger.core.signed_checkpoint import SignedCheckpoint
    from kfm_ledger.core.tlogproof import TlogProof
    from kfm_ledger.index import CommitIndex, IndexedEntry

    from .prover import Prover

__all__ = ["SignedLog"]


class SignedLog:
    """The signed tree head (verified when the ledger was opened), commit lookups and proofs.

    A subclass sets ``_signed``, ``prover`` and ``verifier``, and provides :attr:`index` (the
    commit index, caught up with the signed tree), :meth:`_read_entry` (a row by its index
    entry, proven unless asked not to), :meth:`describe` and :meth:`close`.
    """

    _signed: SignedCheckpoint
    prover: Prover
    verifier: Verifier

    # ------------------------------------------------------------ subclass hooks
    @property
    def index(self) -> CommitIndex:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _read_entry(self, e: IndexedEntry, asked: str | None, verified: bool | None) -> schema.Entry:
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        raise NotImplementedError  # pragma: no cover

    # ------------------------------------------------------------ the signed tree head
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def checkpoint(self) -> SignedCheckpoint:
        """The latest signed checkpoint (verified when the ledger was opened or refreshed)."""
        return self._signed

    @property
    def origin(self) -> str:
        return self._signed.checkpoint.origin

    @property
    def size(self) -> int:
        """The signed tree size: rows 0 .. size-1 are in the ledger."""
        return self._signed.checkpoint.size

    @property
    def root(self) -> bytes:
        return self._signed.checkpoint.root

    # ------------------------------------------------------------ lookups
    def find(self, commit_prefix: str, *, limit: int = 20) -> list[IndexedEntry]:
        """Signed rows whose lakeFS commit is ``commit_prefix`` or starts with it."""
        idx = self.index
        exact = idx.lookup(commit_prefix)
        if exact is not None and exact.leaf < self.size:
            return [exact]
        return idx.find_prefix(commit_prefix, below=self.size, limit=limit)

    def get(self, commit: str, *, verified: bool | None = None) -> schema.Entry:
        """The row for a lakeFS commit id, or a unique prefix of one (as in git).

        Proven (unless ``verified`` is False; default ``verify_reads``): the bytes read
        must be the leaf at that index under the signed tree, and the row's commit must be
        ``commit`` or start with it (a wrong index entry never answers with another row).
        """
        if not commit:
            raise CommitNotFoundError(commit)
        found = self.find(commit)
        if not found:
            raise CommitNotFoundError(commit)
        if len(found) > 1:
            raise AmbiguousCommitError(commit, [f"{e.lakefs_commit} (index {e.leaf})" for e in found])
        return self._read_entry(found[0], commit, verified)

    # ------------------------------------------------------------ proofs (see .prover)
    def read_tile(self, level: int, index: int, width: int) -> bytes:
        """Bytes of tile (level, index) holding at least ``width`` hashes (c2sp.org/tlog-tiles)."""
        return self.prover.read_tile(level, index, width)

    def checkpoint_sizes(self) -> list[int]:
        """Every tree size the log has signed a checkpoint for, ascending."""
        return self.prover.checkpoint_sizes()

    def stored_checkpoint(self, size: int) -> SignedCheckpoint:
        """The signed checkpoint the log issued for ``size`` (verified)."""
        return self.prover.stored_checkpoint(size, self.checkpoint_sizes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3 audit path for leaf ``index`` in the tree of ``size`` (default: signed size)."""
        return self.prover.inclusion_proof(index, size)

    def tlog_proof(self, index: int, size: int | None = None) -> TlogProof:
        """A c2sp.org/tlog-proof for leaf ``index`` against the checkpoint signed at ``size``.

        The proof is checked against that checkpoint before it is returned, so
        a corrupt tile is caught here, not by the client.
        """
        return self.prover.tlog_proof(index, size, self.stored_checkpoint)

    # ------------------------------------------------------------ writing
    def _check_signer(self, signer: Signer) -> None:
        """Refuse a signing key that is not the log's (KeyFormatError)."""
        if signer.verifier().vkey_text() != self.verifier.vkey_text():
            raise KeyFormatError(
                f"the signing key ({signer.name}) does not match the ledger's verifier key "
                f"({self.verifier.vkey_text()})",
                what="signer key",
                field="public key",
                found=signer.verifier().vkey_text(),
            )
