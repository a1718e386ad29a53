"""Attestations: detect the kind of the file at ``signatures.in_toto`` and verify it (docs/supply-chain.md).

Kinds: a **Sigstore bundle** (v0.1-v0.3 JSON; :mod:`.sigstore_bundle`, offline), a **DSSE
envelope** signed by a configured key (:mod:`.dsse`), **in-toto JSONL** (one bundle or
envelope per line, as slsa-github-generator writes).  After the signature, the payload must
pass the in-toto Statement v1 / SLSA v1 checks (:mod:`.statement`).

Result statuses: ``ok`` (signature and statement verified), ``failed`` (something is wrong:
the message names expected vs found), ``unsupported`` (cannot be verified offline; never
``ok``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import AttestationPolicy
from ..errors import AttestationError
from .dsse import PublicKey, load_public_keys, parse_envelope, verify_envelope
from .sigstore_bundle import SigstoreVerifier, is_sigstore_bundle
from .statement import check_statement

__all__ = ["AttestResult", "AttestationVerifier", "detect_kind"]

#: At most this many lines of an in-toto JSONL file are examined.
MAX_JSONL_LINES = 1000


@dataclass(frozen=True)
class AttestResult:
    """``status`` ok / failed / unsupported, the ``kind`` detected, and a message for a person."""

    status: str
    kind: str
    message: str


def detect_kind(data: bytes) -> tuple[str, Any]:
    """(kind, parsed JSON) of an attestation file: ``sigstore-bundle``, ``dsse``, ``intoto-jsonl``
    (parsed: the list of (line bytes, document)) or ``unknown`` (parsed: the reason)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        doc = None
    else:
        return _kind_of(doc), doc
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if len(lines) < 2:
        return "unknown", "not JSON (neither a Sigstore bundle, a DSSE envelope nor in-toto JSONL)"
    docs = []
    for n, ln in enumerate(lines[:MAX_JSONL_LINES], 1):
        try:
            docs.append((ln, json.loads(ln)))
        except (ValueError, UnicodeDecodeError):
            return "unknown", f"in-toto JSONL: line {n} is not JSON"
    return "intoto-jsonl", docs


def _kind_of(doc: Any) -> str:
    if is_sigstore_bundle(doc):
        return "sigstore-bundle"
    if isinstance(doc, dict) and "payloadType" in doc and "signatures" in doc:
        return "dsse"
    return "unknown"


class AttestationVerifier:
    """The ``[attestation]`` policy made ready: keys loaded (ConfigFileError when one cannot be),
    the Sigstore verifier prepared on first use.  Thread-safe."""

    def __init__(self, policy: AttestationPolicy, *, keys: Sequence[PublicKey] | None = None) -> None:
        self.policy = policy
        self.keys = list(keys) if keys is not None else load_public_keys([k.path for k in policy.keys])
        self.sigstore = SigstoreVerifier(policy.trusted_root, policy.identities)

    def verify(self, data: bytes, expected_sha256: str) -> AttestResult:
        """Verify one attestation file's bytes for an artifact whose SHA-256 is ``expected_sha256``."""
        kind, parsed = detect_kind(data)
        if kind == "unknown":
            reason = parsed if isinstance(parsed, str) else "a JSON document that is neither a Sigstore bundle " \
                "(mediaType application/vnd.dev.sigstore.bundle...) nor a DSSE envelope (payloadType, signatures)"
            return AttestResult("failed", "unknown", f"not an attestation: {reason}")
        if kind != "intoto-jsonl":
            return self._one(kind, parsed, data, expected_sha256)
        results = []
        for n, (line, doc) in enumerate(parsed, 1):
            sub = _kind_of(doc)
            if sub == "unknown":
                results.append(AttestResult("failed", "unknown", f"line {n}: neither a Sigstore bundle nor a DSSE "
                                            "envelope"))
                continue
            r = self._one(sub, doc, line, expected_sha256)
            if r.status == "ok":
                return AttestResult("ok", "intoto-jsonl", f"line {n} of {len(parsed)}: {r.message}")
            results.append(AttestResult(r.status, r.kind, f"line {n}: {r.message}"))
        return _combine(results, len(parsed))

    def _one(self, kind: str, doc: Any, raw: bytes, expected_sha256: str) -> AttestResult:
        try:
            if kind == "sigstore-bundle":
                ptype, payload, signer = self.sigstore.verify(raw, doc, expected_sha256)
                how = f"Sigstore bundle signed by {signer}, verified offline"
            else:
                env = parse_envelope(doc)
                key = verify_envelope(env, self.keys)
                ptype, payload = env.payload_type, env.payload
                how = f"DSSE envelope signed by {key.path} ({key.kind})"
            info = check_statement(ptype, payload, expected_sha256, self.policy.builders, kind=kind)
        except AttestationError as e:
            return AttestResult("unsupported" if e.unsupported else "failed", kind, str(e))
        builder = f", builder {info.builder_id}" if info.builder_id else ""
        return AttestResult("ok", kind, f"{how}; SLSA v1 provenance for sha256 {expected_sha256}{builder}")


def _combine(results: list[AttestResult], total: int) -> AttestResult:
    shown = "; ".join(r.message for r in results[:5]) + (f"; ... ({total - 5} more lines)" if total > 5 else "")
    hard = [r for r in results if r.status == "failed" and "no subject has sha256" not in r.message]
    if hard:
        return AttestResult("failed", "intoto-jsonl", f"no line verifies: {shown}")
    if any(r.status == "unsupported" for r in results):
        return AttestResult("unsupported", "intoto-jsonl", f"no line could be verified offline: {shown}")
    return AttestResult("failed", "intoto-jsonl", f"no line verifies: {shown}")
