"""Builders for the supply-chain tests: in-toto statements, key-signed DSSE envelopes, keys."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kfm_ledger.attest.dsse import pae

BUILDER = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@refs/tags/v2.1.0"


def statement(sha256: str, *, predicate_type: str = "https://slsa.dev/provenance/v1",
              statement_type: str = "https://in-toto.io/Statement/v1", builder: str = BUILDER,
              name: str = "bundle.tar.zst") -> dict[str, Any]:
    return {
        "_type": statement_type,
        "subject": [{"name": name, "digest": {"sha256": sha256}}],
        "predicateType": predicate_type,
        "predicate": {"buildDefinition": {"buildType": "https://example.com/build/v1", "externalParameters": {}},
                      "runDetails": {"builder": {"id": builder}}},
    }


def new_key(kind: str) -> Any:
    return ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())


def write_public_pem(key: Any, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def sign(key: Any, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def envelope(key: Any, payload: bytes, payload_type: str = "application/vnd.in-toto+json",
             *, keyid: str = "ci") -> dict[str, Any]:
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sign(key, pae(payload_type, payload))).decode()}],
    }


def signed_statement(key: Any, sha256: str, **kw: Any) -> bytes:
    return json.dumps(envelope(key, json.dumps(statement(sha256, **kw)).encode())).encode()
