"""Witness cosignatures (c2sp.org/tlog-cosignature, ``cosignature/v1``, signature type 0x04):
the cosigner's key and the check of one cosignature line.

Pure code.  The signed message and the 0x04 verifier live in :mod:`kfm_ledger.core.keys`
(a note verifier must check every known key's signature); this module holds what only a
witness, or a client checking one witness, needs.
"""

from __future__ import annotations

from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import (
    ALG_COSIGNATURE_V1,
    TIMESTAMP_SIZE,
    Ed25519SigningKey,
    Verifier,
    check_timestamp,
    cosignature_message,
)
from kfm_ledger.core.note import NoteSignature
from kfm_ledger.errors import KeyFormatError, UnknownKeyError

__all__ = ["CosignatureSigner", "verify_cosignature"]


class CosignatureSigner(Ed25519SigningKey):
    """An Ed25519 witness cosigning key (c2sp.org/tlog-cosignature, type 0x04).

    Its private key text is ``PRIVATE+KEY+<name>+<key ID>+<base64(0x04 || seed)>`` (see the
    module docstring); its :meth:`verifier` has ``alg == ALG_COSIGNATURE_V1``."""

    __slots__ = ()
    _ALG = ALG_COSIGNATURE_V1
    _WHAT = "cosigner key"

    def cosign(self, checkpoint_body: str, timestamp: int) -> NoteSignature:
        """Cosign a checkpoint body at ``timestamp`` (POSIX seconds): the signature is
        ``uint64 BE timestamp || Ed25519(cosignature/v1\\ntime <ts>\\n || body)``
        (tlog-cosignature §Format, §Ed25519 signed message).  The body must be a valid
        checkpoint (FormatError otherwise)."""
        check_timestamp(timestamp)
        Checkpoint.parse(checkpoint_body)
        sig = self._sign(cosignature_message(checkpoint_body, timestamp))
        return NoteSignature(
            name=self.name,
            key_id=self.key_id,
            signature=timestamp.to_bytes(TIMESTAMP_SIZE, "big") + sig,
        )


def verify_cosignature(verifier: Verifier, checkpoint_body: str, sig: NoteSignature) -> int:
    """Check a ``cosignature/v1`` signature line by ``verifier`` (type 0x04) over
    ``checkpoint_body`` and return its timestamp (POSIX seconds).  Raises UnknownKeyError if
    the line is not from this key, BadSignatureError if it does not verify."""
    if verifier.alg != ALG_COSIGNATURE_V1:
        raise KeyFormatError(
            f"verifier {verifier.name}+{verifier.key_id.hex()} is a type 0x{verifier.alg:02x} key, "
            "not a cosignature/v1 (0x04) key",
            what="verifier key",
            field="key type",
            found=f"0x{verifier.alg:02x}",
        )
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise UnknownKeyError(
            f"cosignature is from {sig.name}+{sig.key_id.hex()}, "
            f"not from {verifier.name}+{verifier.key_id.hex()}",
            names=[sig.name],
        )
    return verifier.verify_cosignature_bytes(checkpoint_body.encode("utf-8"), sig.signature)
