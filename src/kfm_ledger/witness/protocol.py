"""The wire formats of c2sp.org/tlog-witness ``add-checkpoint``: the request body, the 409 size
body and the 200 cosignature lines.

Pure code (bytes in, values out; nothing here opens a file or a socket).  Strict and bounded,
like the rest of kfm's parsers: every number canonical, every hash canonical base64 of 32
bytes, at most :data:`MAX_PROOF_LINES` proof lines, at most :data:`MAX_REQUEST_BYTES` bytes.
Malformed input raises :class:`~kfm_ledger.errors.WitnessRequestError` (a FormatError) naming
the line; a witness answers it with 400 Bad Request (tlog-witness §add-checkpoint).

Request body (tlog-witness §add-checkpoint)::

    old <size>\\n              canonical decimal, 0 when the client knows no cosigned size
    <base64 hash>\\n           zero to 63 consistency proof lines (RFC 6962 §2.1.2)
    \\n                        an empty line
    <signed checkpoint>       a c2sp.org/signed-note holding a c2sp.org/tlog-checkpoint
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core.checkpoint import MAX_TREE_SIZE, Checkpoint
from kfm_ledger.core.note import MAX_SIGNATURES, NoteSignature, parse_note
from kfm_ledger.errors import FormatError, WitnessRequestError

__all__ = [
    "ADD_CHECKPOINT_PATH",
    "CONTENT_TYPE_SIZE",
    "HASH_SIZE",
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "AddCheckpointRequest",
    "format_add_checkpoint",
    "format_signature_lines",
    "format_tlog_size",
    "parse_add_checkpoint",
    "parse_signature_lines",
    "parse_tlog_size",
]

#: The submission path (tlog-witness §add-checkpoint), under the submission prefix.
ADD_CHECKPOINT_PATH = "/add-checkpoint"
#: The content type of a 409 Conflict answer: the witness's latest cosigned size and a newline.
CONTENT_TYPE_SIZE = "text/x.tlog.size"
#: "The client MUST NOT send more than 63 consistency proof lines" (tlog-witness §add-checkpoint).
MAX_PROOF_LINES = 63
#: SHA-256 (RFC 6962 §2.1): every proof line is one such hash.
HASH_SIZE = 32
#: Largest request body a witness reads.  The old size line (< 30 bytes) and 63 proof lines
#: (45 bytes each) take under 3 KiB; the rest is the signed checkpoint, which signed-note asks
#: verifiers to accept with at least 16 signatures (post-quantum ones near 3.3 KiB each).
MAX_REQUEST_BYTES = 128 * 1024
#: Largest 200 answer a client reads: cosignature lines, one per witness key.
MAX_RESPONSE_BYTES = 64 * 1024

_WHAT = "add-checkpoint request"


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed ``add-checkpoint`` body: the size the client believes the witness last cosigned,
    the RFC 6962 consistency proof from it, and the signed checkpoint (note bytes, verbatim, and
    its parsed body; no signature is checked here)."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    checkpoint: Checkpoint


def _bad(
    message: str, line: int | None = None, field: str | None = None, found: str | None = None
) -> WitnessRequestError:
    where = f"{_WHAT}, line {line}: " if line is not None else f"{_WHAT}: "
    if found is not None and len(found) > 60:
        found = found[:60] + "..."
    return WitnessRequestError(where + message, what=_WHAT, line=line, field=field, found=found)


def _canonical_size(text: str) -> int | None:
    """``text`` as a tree size when it is a canonical decimal in [0, 2**63-1], else None."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    if text != "0" and text.startswith("0"):
        return None
    value = int(text)
    return value if value <= MAX_TREE_SIZE else None


def _decode_hash(text: str) -> bytes | None:
    """Canonical standard base64 (RFC 4648 §4) of exactly 32 bytes, else None."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse an ``add-checkpoint`` request body (tlog-witness §add-checkpoint), strictly.

    The old size line, then up to 63 proof lines, an empty line and a signed note whose text is
    a checkpoint (c2sp.org/signed-note §Format, c2sp.org/tlog-checkpoint).  Raises
    WitnessRequestError naming the line for anything else (a witness answers 400).
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise _bad(f"body must be bytes, not {type(body).__name__}")
    body = bytes(body)
    if len(body) > MAX_REQUEST_BYTES:
        raise _bad(f"body is {len(body)} bytes, more than the limit of {MAX_REQUEST_BYTES}")
    pos = body.find(b"\n")
    if pos < 0:
        raise _bad("no old size line ending in a newline", line=1, field="old size")
    first = body[:pos].decode("ascii", "replace")
    keyword, sep, size_text = first.partition(" ")
    old_size = _canonical_size(size_text) if keyword == "old" and sep else None
    if old_size is None:
        raise _bad(
            "the first line must be 'old <size>' (a canonical decimal tree size)",
            line=1,
            field="old size",
            found=first,
        )
    proof: list[bytes] = []
    line_number = 1
    while True:
        start = pos + 1
        pos = body.find(b"\n", start)
        line_number += 1
        if pos < 0:
            raise _bad("no empty line before the checkpoint", line=line_number)
        raw = body[start:pos]
        if not raw:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise _bad(
                f"more than {MAX_PROOF_LINES} consistency proof lines", line=line_number, field="consistency proof"
            )
        text = raw.decode("ascii", "replace")
        digest = _decode_hash(text)
        if digest is None:
            raise _bad(
                f"proof line {len(proof) + 1} is not the canonical base64 of a {HASH_SIZE}-byte hash",
                line=line_number,
                field="consistency proof",
                found=text,
            )
        proof.append(digest)
    note = body[pos + 1 :]
    if not note:
        raise _bad("no checkpoint after the empty line", line=line_number + 1, field="checkpoint")
    try:
        checkpoint = Checkpoint.parse(parse_note(note).text)
    except FormatError as e:
        raise _bad(
            f"the checkpoint (from line {line_number + 1}) is malformed: {e}", line=line_number + 1, field="checkpoint"
        ) from None
    return AddCheckpointRequest(old_size=old_size, proof=tuple(proof), note=note, checkpoint=checkpoint)


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The request body for ``add-checkpoint`` (tlog-witness §add-checkpoint).  ValueError for
    a negative size, more than 63 proof hashes or a hash that is not 32 bytes."""
    if isinstance(old_size, bool) or not isinstance(old_size, int) or not 0 <= old_size <= MAX_TREE_SIZE:
        raise ValueError(f"old size {old_size!r} is not a tree size")
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"{len(proof)} proof hashes, more than the protocol's {MAX_PROOF_LINES}")
    lines = [f"old {old_size}\n".encode()]
    for h in proof:
        if len(h) != HASH_SIZE:
            raise ValueError(f"proof hash is {len(h)} bytes, expected {HASH_SIZE}")
        lines.append(base64.b64encode(h) + b"\n")
    return b"".join(lines) + b"\n" + bytes(note)


def format_tlog_size(size: int) -> bytes:
    """The 409 Conflict body: the latest cosigned tree size in decimal and a newline."""
    return f"{size}\n".encode()


def parse_tlog_size(body: bytes) -> int:
    """A 409 Conflict body (``text/x.tlog.size``): one canonical decimal size and a newline.
    Raises FormatError."""
    text = bytes(body[:32]).decode("ascii", "replace")
    size = _canonical_size(text[:-1]) if len(body) <= 21 and text.endswith("\n") else None
    if size is None:
        raise FormatError(
            f"a {CONTENT_TYPE_SIZE} body must be a decimal tree size and a newline, found {text!r}",
            what=CONTENT_TYPE_SIZE,
            found=text,
        )
    return size


def format_signature_lines(sigs: Sequence[NoteSignature]) -> bytes:
    """The 200 answer: one note signature line per cosignature (tlog-witness §add-checkpoint)."""
    return "".join(s.line() for s in sigs).encode("utf-8")


def parse_signature_lines(body: bytes) -> tuple[NoteSignature, ...]:
    """The cosignature lines of a 200 answer: one or more ``— <name> <base64>\\n`` lines
    (c2sp.org/signed-note §Signatures).  Parsed as the signature block of a note (so every rule
    of :func:`~kfm_ledger.core.note.parse_note` applies); nothing is verified.  FormatError."""
    if len(body) > MAX_RESPONSE_BYTES:
        raise FormatError(
            f"cosignature answer is {len(body)} bytes, more than the limit of {MAX_RESPONSE_BYTES}",
            what="cosignature lines",
        )
    if not body:
        raise FormatError("the witness answered 200 with no cosignature line", what="cosignature lines")
    if body.count(b"\n") > MAX_SIGNATURES:
        raise FormatError(f"more than {MAX_SIGNATURES} cosignature lines", what="cosignature lines")
    # A dummy one-line text makes the lines the signature block of a note.
    note = parse_note(b"x\n\n" + bytes(body))
    return note.signatures
