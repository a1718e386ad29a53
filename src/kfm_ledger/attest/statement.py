"""The in-toto Statement v1 checks (in-toto attestation framework, statement.md; SLSA v1.0 provenance).

After the signature verified, the payload must be: payloadType ``application/vnd.in-toto+json``;
a JSON object with ``predicateType`` ``https://slsa.dev/provenance/v1`` (an older SLSA
predicate, e.g. ``https://slsa.dev/provenance/v0.2``, fails naming it); ``_type``
``https://in-toto.io/Statement/v1``; a ``subject`` whose ``digest.sha256`` equals the row's
``checksums.artifact_sha256``; and, when ``[attestation] builders`` is set, a
``predicate.runDetails.builder.id`` in that list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import AttestationError
from .dsse import loads_json

__all__ = ["INTOTO_PAYLOAD_TYPE", "SLSA_V1", "STATEMENT_V1", "StatementInfo", "check_statement"]

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_V1 = "https://slsa.dev/provenance/v1"


@dataclass(frozen=True)
class StatementInfo:
    """What the statement said: the builder id (None when absent) and the matching subject's name."""

    builder_id: str | None
    subject_name: str | None


def check_statement(
    payload_type: str, payload: bytes, expected_sha256: str, builders: Sequence[str], *, kind: str
) -> StatementInfo:
    """Check the payload against the row; AttestationError naming expected vs found."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(
            f"payload type {payload_type!r} is not an in-toto statement",
            kind=kind, expected=INTOTO_PAYLOAD_TYPE, found=payload_type,
        )
    doc = loads_json(payload, "the in-toto statement", kind)
    if not isinstance(doc, dict):
        raise AttestationError("the in-toto statement is not a JSON object", kind=kind)
    ptype = doc.get("predicateType")
    if ptype != SLSA_V1:
        shown = ptype if isinstance(ptype, str) else repr(ptype)
        older = " (an older SLSA provenance version, not accepted)" if isinstance(ptype, str) and \
            ptype.startswith("https://slsa.dev/provenance/") else ""
        raise AttestationError(
            f"predicate type {shown}{older}: expected {SLSA_V1}", kind=kind, expected=SLSA_V1, found=str(shown)
        )
    stype = doc.get("_type")
    if stype != STATEMENT_V1:
        raise AttestationError(
            f"statement _type {stype!r}: expected {STATEMENT_V1}", kind=kind, expected=STATEMENT_V1, found=str(stype)
        )
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise AttestationError("the statement has no subject", kind=kind, expected=expected_sha256, found="no subject")
    found = []
    match = None
    for s in subjects:
        digest = s.get("digest") if isinstance(s, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if isinstance(sha, str):
            found.append(sha)
            if sha.lower() == expected_sha256:
                match = s
                break
    if match is None:
        shown = ", ".join(found[:5]) + (f" (+{len(found) - 5} more)" if len(found) > 5 else "") or "none"
        raise AttestationError(
            f"no subject has sha256 {expected_sha256} (checksums.artifact_sha256); subjects' sha256: {shown}",
            kind=kind, expected=expected_sha256, found=shown,
        )
    builder = _builder_id(doc)
    if builders and builder not in builders:
        raise AttestationError(
            f"builder id {builder!r} is not one of [attestation] builders ({', '.join(builders)})",
            kind=kind, expected=" | ".join(builders), found=str(builder),
        )
    name = match.get("name")
    return StatementInfo(builder, name if isinstance(name, str) else None)


def _builder_id(doc: dict[str, object]) -> str | None:
    pred = doc.get("predicate")
    run = pred.get("runDetails") if isinstance(pred, dict) else None
    builder = run.get("builder") if isinstance(run, dict) else None
    bid = builder.get("id") if isinstance(builder, dict) else None
    return bid if isinstance(bid, str) else None
