"""Signed checkpoints: a c2sp.org/tlog-checkpoint body inside a c2sp.org/signed-note.

Pure code: nothing here opens a file.  :mod:`kfm_ledger.core.checkpoint` parses and formats
the body; :mod:`kfm_ledger.core.note` signs and opens the note; this module joins the two
(c2sp.org/tlog-checkpoint §Signatures: the log's key name must equal the origin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import ALG_ED25519, Signer, Verifier
from kfm_ledger.core.note import NoteSignature, open_note, parse_note, sign_note
from kfm_ledger.errors import KeyFormatError, OriginMismatchError, UnknownKeyError

__all__ = ["SignedCheckpoint", "open_checkpoint", "parse_unverified", "sign_checkpoint"]


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature :func:`open_checkpoint` verified.

    ``note`` is the signed note exactly as received (keep and serve these bytes: re-signing
    would change them); ``verified`` the signatures checked (the log's, then any cosignatures
    from cosigner keys that were given); ``unverified`` the signatures from keys not given."""

    checkpoint: Checkpoint
    note: bytes
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...] = ()


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note of ``checkpoint`` by the log key ``signer`` (c2sp.org/tlog-checkpoint
    §Signatures).  The spec says the log's key name SHOULD match the origin; we require it
    (KeyFormatError otherwise), and :func:`open_checkpoint` checks it."""
    if not isinstance(signer, Signer):
        raise TypeError(f"{signer!r} is not a note Signer (checkpoints are signed with type 0x01 keys)")
    if signer.name != checkpoint.origin:
        raise KeyFormatError(
            f"the signing key is named {signer.name!r} but the checkpoint origin is {checkpoint.origin!r}: "
            "a log's key name must equal its origin (c2sp.org/tlog-checkpoint §Signatures)",
            what="signer key",
            field="name",
            found=signer.name,
        )
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(
    note: bytes, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> SignedCheckpoint:
    """Verify a signed checkpoint and parse it.

    Signatures first (:func:`kfm_ledger.core.note.open_note`: FormatError, BadSignatureError,
    UnknownKeyError), then the body (:meth:`Checkpoint.parse`: FormatError).  Then:

    * if ``origin`` is given, the checkpoint's origin must equal it (OriginMismatchError, a VerificationError);
    * at least one verified signature must be a log signature (type 0x01) from a key named
      like the origin: a checkpoint signed only by witnesses, or by some other log's key
      that was also trusted, is refused with UnknownKeyError.
    """
    verifiers = tuple(verifiers)
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise OriginMismatchError(
            f"checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}",
            expected=origin,
            found=checkpoint.origin,
        )
    log_keys = {(v.name, v.key_id) for v in verifiers if v.alg == ALG_ED25519 and v.name == checkpoint.origin}
    if not any((s.name, s.key_id) in log_keys for s in opened.verified):
        raise UnknownKeyError(
            f"checkpoint for origin {checkpoint.origin!r} has no verified signature from a log key named "
            f"{checkpoint.origin!r}; verified signers: "
            + (", ".join(f"{s.name}+{s.key_id.hex()}" for s in opened.verified) or "none"),
            names=sorted({s.name for s in opened.verified + opened.unverified}),
        )
    return SignedCheckpoint(
        checkpoint=checkpoint, note=bytes(note), verified=opened.verified, unverified=opened.unverified
    )


def parse_unverified(note: bytes) -> Checkpoint:
    """The checkpoint in a signed note WITHOUT checking any signature: for display only,
    never for a decision.  Raises FormatError."""
    return Checkpoint.parse(parse_note(note).text)
