"""Offline inclusion proofs in the c2sp.org/tlog-proof@v1 text format ("spicy signatures").

::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional: opaque, unauthenticated application data)
    index <n>
    <base64 hash>             (zero or more: the RFC 9162 §2.1.3 audit path, leaf's sibling first)
    <empty line>
    <the signed checkpoint, verbatim, with its signatures>

Pure code: nothing here opens a file.  Parsing is strict (tlog-proof §Format): the first line
exactly; ``index`` canonical decimal (no leading zeros unless 0); each hash canonical base64
of 32 bytes; the checkpoint must be a well-formed signed checkpoint.  Verification checks
the checkpoint's signature FIRST, then the inclusion of the entry under its root.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.note import MAX_NOTE_SIZE
from kfm_ledger.core.redact import HIDDEN_KEY_TEXT, holds_private_key
from kfm_ledger.core.signed_checkpoint import open_checkpoint, parse_unverified
from kfm_ledger.errors import FormatError, RootMismatchError

__all__ = [
    "HEADER",
    "MAX_PROOF_HASHES",
    "TlogProof",
    "format_tlog_proof",
    "parse_tlog_proof",
    "verify_tlog_proof",
]

#: The first line of a proof (tlog-proof §Format).
HEADER = b"c2sp.org/tlog-proof@v1"
#: Most hashes an inclusion proof can hold: a tree of at most 2**63-1 leaves has depth 63.
MAX_PROOF_HASHES = 63
_MAX_INDEX = 2**63 - 1
_HASH_SIZE = 32
# Header, an extra line of up to one note's size, index line, 63 hash lines, a checkpoint.
_MAX_PROOF_SIZE = 3 * MAX_NOTE_SIZE
_DIGITS = frozenset(b"0123456789")


def _show(raw: bytes, limit: int = 60) -> str:
    """``repr`` of found bytes for an error message; private key text is never shown."""
    text = raw.decode("utf-8", errors="replace")
    if holds_private_key(text):
        return HIDDEN_KEY_TEXT
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _b64decode(raw: bytes) -> bytes:
    """Strict, canonical standard base64 (RFC 4648 §4); ValueError otherwise."""
    try:
        data = base64.b64decode(raw, validate=True)
    except binascii.Error as e:
        raise ValueError("not valid base64") from e
    if base64.b64encode(data) != raw:
        raise ValueError("not canonical base64")
    return data


@dataclass(frozen=True)
class TlogProof:
    """An offline proof that the entry at ``index`` is in the tree of ``checkpoint``.

    ``hashes`` is the audit path (leaf's sibling first, 32 bytes each); ``checkpoint`` the
    signed checkpoint note, verbatim; ``extra`` opaque unauthenticated data or None."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index <= _MAX_INDEX:
            raise FormatError(f"tlog-proof index {self.index!r} is not an integer in [0, 2**63-1]", what="tlog-proof")
        hashes = tuple(self.hashes)
        if len(hashes) > MAX_PROOF_HASHES:
            raise FormatError(
                f"tlog-proof has {len(hashes)} hashes, at most {MAX_PROOF_HASHES} are possible", what="tlog-proof"
            )
        for i, h in enumerate(hashes):
            if not isinstance(h, bytes) or len(h) != _HASH_SIZE:
                raise FormatError(f"tlog-proof hash {i} is not {_HASH_SIZE} bytes", what="tlog-proof")
        if not isinstance(self.checkpoint, bytes) or not self.checkpoint:
            raise FormatError("tlog-proof checkpoint is empty", what="tlog-proof")
        if self.extra is not None and not isinstance(self.extra, bytes):
            raise FormatError(
                f"tlog-proof extra must be bytes or None, not {type(self.extra).__name__}", what="tlog-proof"
            )
        object.__setattr__(self, "hashes", hashes)


def format_tlog_proof(proof: TlogProof) -> bytes:
    """The c2sp.org/tlog-proof@v1 text of ``proof`` (tlog-proof §Format)."""
    out = [HEADER + b"\n"]
    if proof.extra is not None:
        out.append(b"extra " + base64.b64encode(proof.extra) + b"\n")
    out.append(b"index %d\n" % proof.index)
    out.extend(base64.b64encode(h) + b"\n" for h in proof.hashes)
    out.append(b"\n")
    out.append(proof.checkpoint)
    return b"".join(out)


def _parse_index(value: bytes, line_no: int) -> int:
    if (
        not value
        or not set(value) <= _DIGITS
        or (len(value) > 1 and value[:1] == b"0")
        or len(value) > len(str(_MAX_INDEX))
        or int(value) > _MAX_INDEX
    ):
        raise FormatError(
            f"tlog-proof line {line_no}: index {_show(value)} is not a canonical decimal number", what="tlog-proof",
            line=line_no,
        )
    return int(value)


class _Lines:
    """The lines of a proof, read one at a time with their 1-based numbers."""

    __slots__ = ("data", "line_no", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.line_no = 0

    def next(self) -> bytes:
        """The next line without its newline; FormatError if the proof ends first."""
        end = self.data.find(b"\n", self.pos)
        self.line_no += 1
        if end < 0:
            raise FormatError(
                f"tlog-proof line {self.line_no}: missing (the proof ends before its checkpoint)", what="tlog-proof",
                line=self.line_no,
            )
        line = self.data[self.pos:end]
        self.pos = end + 1
        return line


def _parse_head(lines: _Lines) -> tuple[bytes | None, int]:
    """The header line, the optional ``extra`` line and the ``index`` line: (extra, index)."""
    first = lines.next()
    if first != HEADER:
        raise FormatError(
            f"tlog-proof line 1: expected {HEADER.decode()!r}, found {_show(first)}", what="tlog-proof", line=1
        )

    extra: bytes | None = None
    line = lines.next()
    if line.startswith(b"extra "):
        try:
            extra = _b64decode(line[len(b"extra ") :])
        except ValueError as e:
            raise FormatError(
                f"tlog-proof line {lines.line_no}: extra data is {e}: {_show(line)}", what="tlog-proof",
                line=lines.line_no,
            ) from None
        line = lines.next()

    if not line.startswith(b"index "):
        expected = "'index <n>'" if extra is not None else "'extra <base64>' or 'index <n>'"
        raise FormatError(
            f"tlog-proof line {lines.line_no}: expected {expected}, found {_show(line)}", what="tlog-proof",
            line=lines.line_no,
        )
    return extra, _parse_index(line[len(b"index ") :], lines.line_no)


def _parse_hashes(lines: _Lines) -> tuple[bytes, ...]:
    """The proof hash lines up to and including the empty line before the checkpoint."""
    hashes: list[bytes] = []
    while True:
        line = lines.next()
        if line == b"":
            break
        line_no = lines.line_no
        if len(hashes) == MAX_PROOF_HASHES:
            raise FormatError(
                f"tlog-proof line {line_no}: more than {MAX_PROOF_HASHES} proof hashes "
                "(or no empty line before the checkpoint)",
                what="tlog-proof",
                line=line_no,
            )
        try:
            h = _b64decode(line)
        except ValueError as e:
            raise FormatError(
                f"tlog-proof line {line_no}: proof hash is {e}: {_show(line)}", what="tlog-proof", line=line_no
            ) from None
        if len(h) != _HASH_SIZE:
            raise FormatError(
                f"tlog-proof line {line_no}: proof hash {_show(line)} decodes to {len(h)} bytes, expected {_HASH_SIZE}",
                what="tlog-proof",
                line=line_no,
            )
        hashes.append(h)
    return tuple(hashes)


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse a c2sp.org/tlog-proof@v1 proof strictly (tlog-proof §Format).  The embedded
    checkpoint must be a well-formed signed checkpoint (its signatures are NOT checked here:
    use :func:`verify_tlog_proof`).  Raises FormatError naming the line."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"tlog-proof must be bytes, not {type(data).__name__}", what="tlog-proof")
    data = bytes(data)
    if len(data) > _MAX_PROOF_SIZE:
        raise FormatError(
            f"tlog-proof is {len(data)} bytes, more than the limit of {_MAX_PROOF_SIZE}", what="tlog-proof"
        )
    lines = _Lines(data)
    extra, index = _parse_head(lines)
    hashes = _parse_hashes(lines)

    line_no = lines.line_no
    checkpoint = data[lines.pos:]
    if not checkpoint:
        raise FormatError(
            f"tlog-proof line {line_no + 1}: no checkpoint after the empty line", what="tlog-proof", line=line_no + 1
        )
    try:
        parse_unverified(checkpoint)
    except FormatError as e:
        raise FormatError(
            f"tlog-proof checkpoint (from line {line_no + 1}): {e}", what="tlog-proof", line=line_no + 1
        ) from None
    return TlogProof(index=index, hashes=hashes, checkpoint=checkpoint, extra=extra)


def verify_tlog_proof(
    data: bytes, entry: bytes, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> tuple[Checkpoint, int]:
    """Check offline that ``entry`` (the leaf's bytes: one ledger line without its newline)
    is in the log, and return ``(checkpoint, index)``.

    1. Parse the proof (FormatError).
    2. Verify the checkpoint's signatures against ``verifiers`` and its origin
       (:func:`kfm_ledger.core.signed_checkpoint.open_checkpoint`: BadSignatureError, UnknownKeyError,
       VerificationError) - before trusting anything the proof says.
    3. Verify the audit path of ``leaf_hash(entry)`` at the index against the checkpoint's
       size and root (RFC 9162 §2.1.3.2; :func:`kfm_ledger.core.merkle.verify_inclusion`:
       ProofError, RootMismatchError).

    The ``extra`` line is not authenticated and plays no part here.
    """
    proof = parse_tlog_proof(data)
    signed = open_checkpoint(proof.checkpoint, verifiers, origin=origin)
    checkpoint = signed.checkpoint
    try:
        merkle.verify_inclusion(merkle.leaf_hash(entry), proof.index, checkpoint.size, proof.hashes, checkpoint.root)
    except RootMismatchError as e:
        e.args = (_entry_mismatch_message(str(e), entry, proof.index),)
        raise
    return checkpoint, proof.index


def _entry_mismatch_message(mismatch: str, entry: bytes, index: int) -> str:
    """What a root mismatch means for a person checking an entry: usually not the exact bytes."""
    reformatted = b"\n" in entry.strip() or entry[:1].isspace() or b'": ' in entry or b'", "' in entry
    why = (
        "the entry looks reformatted (pretty-printed, or with spaces after ':' or ','): "
        if reformatted
        else ""
    )
    return (
        f"{mismatch}: the entry is not leaf {index} under the signed root; {why}the entry must be the "
        "exact bytes of the stored line, as `kfm get --commit <id>` prints them (compact JSON in schema "
        "field order; one final newline is ignored); a reformatted copy of the same row hashes differently. "
        "If the entry is those exact bytes, the proof is for another entry or index"
    )
