"""Answers of the lookup API of ``kfm serve`` (docs/network.md): a row by lakeFS commit (or a
unique prefix of one) with its c2sp.org/tlog-proof, and the proof alone.

Every answer is proven before it leaves: the row's bytes are checked against the inclusion
proof that is served with them, under the latest signed checkpoint (RFC 9162 §2.1.3.2), and the
row's commit must be the one asked for.  The commit index only finds the candidate leaf.

:class:`Lookups` (one per server worker) keeps, for the signed checkpoint it last answered
under, the part of each proof that every row of a full level-0 tile shares: the audit path
above the tile (RFC 9162 §2.1.3.1: ``PATH(m, D[n])`` of a leaf in a complete subtree of 256
leaves is its path inside the subtree, then the subtree's path to the root) and the tile's root
hash, both proven with the first row of that tile asked for.  A later row of the tile is
proven by folding its leaf hash with its 8 siblings inside the tile (from the shared tile
cache) up to that proven root: the same check as verifying the whole path, whose upper part
was verified once under the same signed root.  Anything that does not fold to it takes the
full path again (tiles re-read, stored expansion records distrusted, the changed row named).
A new checkpoint starts a new memo, so nothing proven under an older tree is reused.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.tlogproof import HEADER
from kfm_ledger.errors import (
    AmbiguousCommitError,
    CommitNotFoundError,
    CorruptLedgerError,
    FormatError,
    ProofError,
)

if TYPE_CHECKING:  # pragma: no cover
    from kfm_ledger.core.signed_checkpoint import SignedCheckpoint
    from kfm_ledger.index import IndexedEntry
    from kfm_ledger.log.ledger import Ledger

__all__ = ["MAX_CANDIDATES", "MEMO_TILES", "Lookup", "Lookups", "check_commit_text"]

#: How many candidates a 409 answer for an ambiguous prefix lists at most.
MAX_CANDIDATES = 20
#: Full level-0 tiles whose proven upper path and root a :class:`Lookups` keeps per signed
#: checkpoint (about 1 KB each at 1M rows; 4,096 cover every tile of a 1M-row log, 3,906).
MEMO_TILES = 4096
# The stored rows' lakefs_commit alphabet (schema/rules.py, _STORED_COMMIT), 1..128 characters.
_COMMIT_TEXT = re.compile(r"[A-Za-z0-9._-]{1,128}")
_W = tiles.TILE_WIDTH
_H = tiles.TILE_HEIGHT
_HASH = merkle.HASH_SIZE
_sha256 = hashlib.sha256
_b64_line = binascii.b2a_base64  # RFC 4648 §4 standard base64 and a newline: one tlog-proof hash line


_JSON = json.JSONEncoder(ensure_ascii=False)


def _json_string(text: str) -> bytes:
    """``text`` as a JSON string, as ``json.dumps(text, ensure_ascii=False)`` writes it."""
    return _JSON.encode(text).encode("utf-8")


class _Commit(msgspec.Struct):
    """A row's ``lakefs_commit`` alone (the other fields are skipped, not built)."""

    lakefs_commit: str


_COMMIT_OF = msgspec.json.Decoder(_Commit).decode


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
        """``{"index", "lakefs_commit", "row", "tlog_proof", "tree_size"}`` (docs/network.md), compact.

        ``row`` is the stored line itself: a canonical JSON object (the ledger only stores
        canonical rows, and this one was proven), so it is embedded as is, not re-encoded."""
        return b'{"index":%d,"lakefs_commit":%s,"row":%s,"tlog_proof":%s,"tree_size":%d}' % (
            self.index,
            _json_string(self.lakefs_commit),
            self.line,
            _json_string(self.tlog_proof.decode("utf-8")),
            self.tree_size,
        )


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


class _Head:
    """One signed checkpoint and what was proven under it: per full level-0 tile ``k``, the
    tile's root (node ``(8, k)``) and the tlog-proof lines of the audit path above it."""

    def __init__(self, signed: SignedCheckpoint) -> None:
        self.signed = signed
        self.size = signed.checkpoint.size
        self.root = signed.checkpoint.root
        self.note = signed.note
        self.tiles: dict[int, tuple[bytes, bytes]] = {}

    def remember(self, k: int, tile_root: bytes, upper_lines: bytes) -> None:
        if len(self.tiles) >= MEMO_TILES:
            del self.tiles[next(iter(self.tiles))]  # the oldest: the memo stays bounded
        self.tiles[k] = (tile_root, upper_lines)


class Lookups:
    """The lookup API's answers for one ledger (see the module docstring); one per worker
    process, not for use from several threads at once."""

    def __init__(self, led: Ledger, refresh: Callable[[], None] | None = None) -> None:
        self.led = led
        #: Re-reads the latest signed checkpoint before each lookup (default ``led.refresh``;
        #: ``kfm serve``: a :class:`~kfm_ledger.net.checkpoint_watch.CheckpointWatch`).
        self.refresh = refresh if refresh is not None else led.refresh
        self._head: _Head | None = None

    def lookup(self, commit: str) -> Lookup:
        """The row whose lakeFS commit is ``commit`` or starts with it, proven under the latest
        signed checkpoint (re-read first, so appends by other processes are seen).

        Raises FormatError (not a commit text), CommitNotFoundError, AmbiguousCommitError (its
        ``candidates``: at most :data:`MAX_CANDIDATES` ``"<commit> (index <i>)"``), or
        CorruptLedgerError when the stored row does not prove.
        """
        check_commit_text(commit)
        led = self.led
        self.refresh()
        head = self._head
        if head is None or head.signed is not led.checkpoint:
            head = self._head = _Head(led.checkpoint)
        e = self._entry(commit, head.size)
        line = led.stored_line(e)
        hash_lines = self._proof_lines(head, e.leaf, line, commit)
        # Proven, so a signed row, validated when it was appended: only its commit is read (a line
        # that is not a JSON object with one is decoded whole, which names the problem).
        try:
            row_commit = _COMMIT_OF(line).lakefs_commit
        except msgspec.MsgspecError:
            row_commit = schema.decode_row(line).lakefs_commit
        if not row_commit.startswith(commit):
            raise CorruptLedgerError(
                f"the commit index points {commit!r} at leaf {e.leaf}, whose row is for {row_commit!r}; "
                "run `kfm rebuild`",
                index=e.leaf,
            )
        # c2sp.org/tlog-proof §Format: header, "index N", the hashes, an empty line, the checkpoint.
        text = b"%s\nindex %d\n%s\n%s" % (HEADER, e.leaf, hash_lines, head.note)
        return Lookup(e.leaf, row_commit, line, text, head.size)

    def _entry(self, commit: str, size: int) -> IndexedEntry:
        """The index entry for ``commit`` (exact) or the one row whose commit starts with it.

        An exact entry of the index as stored answers at once (indexes only grow, and the row
        is proven anyway); otherwise the index is caught up with the signed tree first."""
        led = self.led
        idx = led.stored_index()
        exact = idx.lookup(commit) if idx is not None else None
        if exact is not None and exact.leaf < size:
            return exact
        found = led.find(commit, limit=MAX_CANDIDATES)
        if not found:
            raise CommitNotFoundError(commit)
        if len(found) > 1:
            raise AmbiguousCommitError(commit, [f"{f.lakefs_commit} (index {f.leaf})" for f in found])
        return found[0]

    def _proof_lines(self, head: _Head, index: int, line: bytes, commit: str) -> bytes:
        """The audit path of leaf ``index`` under ``head`` as tlog-proof hash lines, after checking
        that it proves ``line`` (RFC 9162 §2.1.3.2)."""
        leaf = merkle.leaf_hash(line)
        k = index >> _H
        known = head.tiles.get(k)
        if known is not None:
            levels = self.led.prover.tile_cache.get((0, k, _W))
            if levels is not None:
                # The leaf's 8 siblings inside its full tile (row r of the expanded tile holds
                # the nodes r levels above the leaves), folded up to the tile's proven root.
                node, out = leaf, []
                for r in range(_H):
                    pos = (index & (_W - 1)) >> r
                    at = (pos ^ 1) * _HASH
                    sibling = levels[r][at : at + _HASH]
                    out.append(_b64_line(sibling))
                    if pos & 1:
                        node = _sha256(b"\x01" + sibling + node).digest()
                    else:
                        node = _sha256(b"\x01" + node + sibling).digest()
                if node == known[0]:
                    out.append(known[1])
                    return b"".join(out)
        path = self._full_path(head, index, leaf, commit)
        if (k + 1) << _H <= head.size:  # a full tile: its upper path is shared by its 256 rows
            tile_root = merkle.root_from_inclusion_proof(leaf, index & (_W - 1), _W, path[:_H])
            head.remember(k, tile_root, b"".join(map(_b64_line, path[_H:])))
        return b"".join(map(_b64_line, path))

    def _full_path(self, head: _Head, index: int, leaf: bytes, commit: str) -> list[bytes]:
        """The whole audit path from the tiles (and the ledger's tile cache), checked against the
        leaf; if that fails, the ledger's own tlog_proof (it distrusts derived expansion records,
        re-reads the tiles); if that fails too, the proven read names the row or tile at fault."""
        led = self.led
        size, root = head.size, head.root
        path = merkle.inclusion_proof(index, size, led.hash_reader(size))
        try:
            merkle.verify_inclusion(leaf, index, size, path, root)
            return path
        except ProofError:
            pass
        try:
            proof = led.tlog_proof(index, size)
            merkle.verify_inclusion(leaf, index, size, proof.hashes, root)
            return list(proof.hashes)
        except (ProofError, CorruptLedgerError) as err:
            cause = err
        led.get(commit)  # proven: raises naming the changed row, a moved row, or the tile
        raise CorruptLedgerError(
            f"stored row {index} does not hash to leaf {index} of the signed tree (size {size}): {cause}; "
            "run `kfm verify`",
            index=index,
        ) from None
