"""DSSE envelopes signed by configured keys (DSSE v1.0 protocol, "Signature definition").

The signature covers PAE(payloadType, payload), the Pre-Authentication Encoding of the
DSSE spec (envelope.md / protocol.md)::

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the ASCII decimal byte length and SP one space (0x20).  ``payload`` and ``sig`` are
base64 (standard or URL-safe, padded or not: the spec accepts both).  Keys are PEM public
keys: Ed25519 (signature over PAE) or ECDSA P-256 (ECDSA with SHA-256 over PAE, the
signature DER-encoded, or raw r||s as 64 bytes).  An envelope is accepted when any one
signature verifies with any one configured key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AttestationError, ConfigFileError

__all__ = ["Envelope", "PublicKey", "load_public_keys", "pae", "parse_envelope", "verify_envelope"]

#: A key file larger than this is refused unread.
MAX_KEY_BYTES = 16 * 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload_type`` (UTF-8) and ``payload``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64decode_any(text: object, what: str) -> bytes:
    """Standard or URL-safe base64, with or without padding (DSSE accepts both)."""
    if not isinstance(text, str):
        raise AttestationError(f"{what} is not a base64 string", kind="dsse")
    s = text.strip()
    s += "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s.encode("ascii"))
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AttestationError(f"{what} is not valid base64", kind="dsse") from None


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope: payload type, decoded payload, signatures as (keyid, sig bytes, cert PEM or None)."""

    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes, str | None], ...]


def parse_envelope(doc: Any) -> Envelope:
    """The envelope in a decoded JSON document; AttestationError naming the field otherwise."""
    if not isinstance(doc, dict):
        raise AttestationError("a DSSE envelope must be a JSON object", kind="dsse")
    ptype = doc.get("payloadType")
    if not isinstance(ptype, str) or not ptype:
        raise AttestationError("DSSE envelope: payloadType is missing or not a string", kind="dsse")
    payload = b64decode_any(doc.get("payload"), "DSSE envelope: payload")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise AttestationError("DSSE envelope: no signatures", kind="dsse")
    out = []
    for n, s in enumerate(sigs):
        if not isinstance(s, dict):
            raise AttestationError(f"DSSE envelope: signatures[{n}] is not an object", kind="dsse")
        keyid = s.get("keyid") or ""
        cert = s.get("cert")
        out.append((str(keyid), b64decode_any(s.get("sig"), f"DSSE envelope: signatures[{n}].sig"),
                    cert if isinstance(cert, str) and cert else None))
    return Envelope(ptype, payload, tuple(out))


@dataclass(frozen=True)
class PublicKey:
    """A configured verification key: where it came from and the cryptography key object."""

    path: str
    kind: str  # "ed25519" or "ecdsa-p256"
    key: Any

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        try:
            if self.kind == "ed25519":
                self.key.verify(signature, message)
                return True
            try:
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                return True
            except InvalidSignature:
                if len(signature) != 64:
                    raise
                r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                self.key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
                return True
        except (InvalidSignature, ValueError):
            return False


def load_public_keys(paths: Sequence[Path]) -> list[PublicKey]:
    """The ``[[attestation.key]]`` files as keys; ConfigFileError for a file that is missing, too
    large, not PEM, or not an Ed25519 / ECDSA P-256 public key (the key is never echoed)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from ..inputs import read_bounded

    keys = []
    for path in paths:
        try:
            data = read_bounded(path, MAX_KEY_BYTES, what="attestation key")
            key = load_pem_public_key(data)
        except (OSError, ValueError, TypeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a PEM public key"
            raise ConfigFileError(f"attestation.key {path}: {reason}", path=str(path), key="attestation.key") from None
        except AttestationError:
            raise
        except Exception as e:  # InputFileError (a KfmError): not a regular file, too large
            raise ConfigFileError(f"attestation.key {path}: {e}", path=str(path), key="attestation.key") from None
        if isinstance(key, ed25519.Ed25519PublicKey):
            keys.append(PublicKey(str(path), "ed25519", key))
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            keys.append(PublicKey(str(path), "ecdsa-p256", key))
        else:
            raise ConfigFileError(
                f"attestation.key {path}: unsupported key type (Ed25519 or ECDSA P-256 accepted)",
                path=str(path),
                key="attestation.key",
            )
    return keys


def verify_envelope(env: Envelope, keys: Sequence[PublicKey]) -> PublicKey:
    """The key that verified one of the envelope's signatures over PAE; AttestationError otherwise
    (``unsupported`` when no key is configured for an envelope carrying only Sigstore certificates)."""
    message = pae(env.payload_type, env.payload)
    for _, sig, _ in env.signatures:
        for key in keys:
            if key.verify(sig, message):
                return key
    if all(cert is not None for _, _, cert in env.signatures):
        raise AttestationError(
            "DSSE envelope signed with a Sigstore certificate but without a transparency-log entry: "
            "its signing time cannot be established offline (use the Sigstore bundle instead)",
            kind="dsse",
            unsupported=True,
        )
    if not keys:
        raise AttestationError(
            "DSSE envelope: no [[attestation.key]] is configured, so no key-signed envelope can be accepted",
            kind="dsse",
        )
    ids = ", ".join(repr(k) for k, _, _ in env.signatures)
    raise AttestationError(
        f"DSSE envelope: none of its {len(env.signatures)} signature(s) (keyid {ids}) verifies with the "
        f"{len(keys)} configured key(s) ({', '.join(k.path for k in keys)})",
        kind="dsse",
        expected="a signature by a configured key",
        found="no valid signature",
    )


def loads_json(data: bytes, what: str, kind: str) -> Any:
    """JSON from bytes, AttestationError (naming ``what``) when it is not."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise AttestationError(f"{what} is not valid JSON: {e}", kind=kind) from None
