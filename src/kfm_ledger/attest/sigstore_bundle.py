"""Sigstore bundles (v0.1-v0.3), verified OFFLINE with the ``sigstore`` package.

The trusted root is ``[attestation] trusted_root`` (a ``trusted_root.json``), else the
public-good root embedded in the installed sigstore wheel; it is read from disk, never
refreshed through TUF, and verification makes no network request (the tests check with
sockets disabled).  The certificate must match one ``[[attestation.identity]]`` (OIDC issuer,
SAN exact or by regular expression, optionally the source repository and ref extensions).

What sigstore-python cannot verify offline is ``unsupported``, never ``ok``: a bundle without
a transparency-log entry, and Rekor entry kinds other than ``dsse/0.0.1``,
``hashedrekord/0.0.1`` and ``hashedrekord/0.0.2`` (e.g. ``intoto/0.0.2``).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import AttestationIdentity
from ..errors import AttestationError, ConfigFileError, MissingExtraError

__all__ = ["SUPPORTED_ENTRY_KINDS", "SigstoreVerifier", "is_sigstore_bundle"]

#: Rekor entry kinds sigstore-python verifies offline (sigstore 4.x, verify/verifier.py).
SUPPORTED_ENTRY_KINDS = frozenset({("dsse", "0.0.1"), ("hashedrekord", "0.0.1"), ("hashedrekord", "0.0.2")})
_PUBLIC_GOOD_TUF = "https://tuf-repo-cdn.sigstore.dev"

# Fulcio certificate extensions (fulcio docs/oid-info.md).
_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_SOURCE_REPOSITORY_URI = "1.3.6.1.4.1.57264.1.12"
_SOURCE_REPOSITORY_REF = "1.3.6.1.4.1.57264.1.14"
_OTHERNAME = "1.3.6.1.4.1.57264.1.7"


def is_sigstore_bundle(doc: Any) -> bool:
    """A JSON object with a Sigstore bundle media type."""
    mt = doc.get("mediaType") if isinstance(doc, dict) else None
    return isinstance(mt, str) and mt.startswith("application/vnd.dev.sigstore.bundle")


def _import_sigstore() -> Any:
    try:
        import sigstore.models
        import sigstore.verify
    except ImportError as e:  # pragma: no cover - sigstore is a dependency
        raise MissingExtraError("sigstore", "sigstore", "verifying a Sigstore bundle") from e
    return sigstore


def _cert_value(cert: Any, oid: str, v2: bool) -> str | None:
    from cryptography import x509

    try:
        raw = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
    except x509.ExtensionNotFound:
        return None
    if not v2:
        return bytes(raw).decode("utf-8", "replace")
    # DER UTF8String: tag 0x0C, a short or long length, the bytes.
    data = bytes(raw)
    if len(data) < 2 or data[0] != 0x0C:
        return None
    n, i = data[1], 2
    if n & 0x80:
        k = n & 0x7F
        n, i = int.from_bytes(data[2 : 2 + k], "big"), 2 + k
    return data[i : i + n].decode("utf-8", "replace")


def cert_identity(cert: Any) -> tuple[list[str], str | None]:
    """(SANs, OIDC issuer) of a Fulcio certificate."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans: list[str] = []
    else:
        sans = [*san.get_values_for_type(x509.UniformResourceIdentifier), *san.get_values_for_type(x509.RFC822Name)]
        sans += [o.value.decode("utf-8", "replace") for o in san.get_values_for_type(x509.OtherName)
                 if o.type_id.dotted_string == _OTHERNAME]
    issuer = _cert_value(cert, _ISSUER_V2, True) or _cert_value(cert, _ISSUER_V1, False)
    return sans, issuer


class IdentityPolicy:
    """A sigstore ``VerificationPolicy``: the certificate matches any one configured identity.

    Its failure names what each identity expected and what the certificate has.
    """

    def __init__(self, identities: Sequence[AttestationIdentity]) -> None:
        self.identities = list(identities)

    def verify(self, cert: Any) -> None:
        from sigstore.errors import VerificationError

        sans, issuer = cert_identity(cert)
        repo = _cert_value(cert, _SOURCE_REPOSITORY_URI, True)
        ref = _cert_value(cert, _SOURCE_REPOSITORY_REF, True)
        reasons = []
        for ident in self.identities:
            why = _mismatch(ident, sans, issuer, repo, ref)
            if why is None:
                return
            reasons.append(why)
        raise VerificationError(
            f"signer identity not accepted: the certificate has SAN {', '.join(sans) or 'none'} and issuer "
            f"{issuer}; " + "; ".join(reasons)
        )


def _mismatch(ident: AttestationIdentity, sans: list[str], issuer: str | None,
              repo: str | None, ref: str | None) -> str | None:
    if issuer != ident.issuer:
        return f"expected issuer {ident.issuer}"
    if ident.san is not None and ident.san not in sans:
        return f"expected SAN {ident.san}"
    if ident.san_regex is not None and not any(re.fullmatch(ident.san_regex, s) for s in sans):
        return f"expected a SAN matching {ident.san_regex!r}"
    if ident.source_repository is not None and repo != ident.source_repository:
        return f"expected source repository {ident.source_repository}, found {repo}"
    if ident.source_ref is not None and ref != ident.source_ref:
        return f"expected source ref {ident.source_ref}, found {ref}"
    return None


@functools.lru_cache(maxsize=8)
def _trusted_root(path: str | None) -> Any:
    sigstore = _import_sigstore()
    from sigstore.models import trustroot_v1

    if path is None:
        from sigstore._utils import read_embedded

        data = read_embedded("trusted_root.json", _PUBLIC_GOOD_TUF)
    else:
        from ..inputs import read_bounded

        try:
            data = read_bounded(path, 4 << 20, what="Sigstore trusted root")
        except OSError as e:
            raise ConfigFileError(f"attestation.trusted_root {path}: {e.strerror or e}", path=path,
                                  key="attestation.trusted_root") from None
    try:
        return sigstore.models.TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
    except Exception as e:  # sigstore raises its own Error, pydantic ValidationError, ValueError
        where = path or "the embedded public-good root"
        raise ConfigFileError(f"attestation.trusted_root {where}: not a usable trusted root: {e}",
                              path=path, key="attestation.trusted_root") from None


class SigstoreVerifier:
    """Verifies bundles offline against one trusted root and identity policy (thread-safe)."""

    def __init__(self, trusted_root: Path | None, identities: Sequence[AttestationIdentity]) -> None:
        self.root_path = str(trusted_root) if trusted_root is not None else None
        self.policy = IdentityPolicy(identities)
        self._verifier: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._verifier is None:
                sigstore = _import_sigstore()
                self._verifier = sigstore.verify.Verifier(trusted_root=_trusted_root(self.root_path))
            return self._verifier

    def verify(self, data: bytes, doc: dict[str, Any], expected_sha256: str) -> tuple[str, bytes, str]:
        """(payload type, payload, signer description) of a verified DSSE bundle.

        A message-signature bundle is verified over the artifact digest, then fails: it carries
        no in-toto statement.  AttestationError (``unsupported`` where offline verification is
        impossible) otherwise.
        """
        _import_sigstore()
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import Bundle

        _entry_kind_supported(doc)
        if not self.policy.identities:
            raise AttestationError(
                "Sigstore bundle: no [[attestation.identity]] is configured, so no signer can be accepted",
                kind="sigstore-bundle",
            )
        try:
            bundle = Bundle.from_json(data)
        except (SigstoreError, ValueError) as e:
            raise AttestationError(f"Sigstore bundle is malformed: {e}", kind="sigstore-bundle") from None
        sans, issuer = cert_identity(bundle.signing_certificate)
        signer = f"{', '.join(sans) or 'no SAN'} (issuer {issuer})"
        verifier = self._get()
        try:
            if bundle._dsse_envelope is None:
                from sigstore.hashes import Hashed
                from sigstore_models.common.v1 import HashAlgorithm

                verifier.verify_artifact(
                    Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(expected_sha256)),
                    bundle, self.policy,
                )
                raise AttestationError(
                    f"Sigstore message-signature bundle: the signature over sha256 {expected_sha256} by {signer} "
                    "verifies, but it carries no in-toto statement (SLSA provenance v1 is required)",
                    kind="sigstore-bundle",
                )
            ptype, payload = verifier.verify_dsse(bundle, self.policy)
        except (ValueError, TypeError) as e:  # malformed parts that sigstore does not wrap in its errors
            raise AttestationError(f"Sigstore bundle does not verify: malformed: {e}",
                                   kind="sigstore-bundle") from None
        except SigstoreError as e:
            why = str(e)
            if "valid at validation time" in why or "expired" in why:
                cert = bundle.signing_certificate
                when = _integrated_time(doc)
                why += (f" (the certificate of {signer} is valid from {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} "
                        f"to {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}; the log entry was integrated at {when}: "
                        "expired or not yet valid when signed)")
            raise AttestationError(f"Sigstore bundle does not verify: {why}", kind="sigstore-bundle") from None
        return ptype, payload, signer


def _integrated_time(doc: dict[str, Any]) -> str:
    import datetime as dt

    try:
        t = int(doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"])
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def _entry_kind_supported(doc: dict[str, Any]) -> None:
    material = doc.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    if not isinstance(entries, list) or not entries:
        raise AttestationError(
            "unsupported bundle kind: a Sigstore bundle without a transparency-log entry cannot be verified offline",
            kind="sigstore-bundle", unsupported=True,
        )
    for e in entries:
        kv = e.get("kindVersion") if isinstance(e, dict) else None
        kind = kv.get("kind") if isinstance(kv, dict) else None
        version = kv.get("version") if isinstance(kv, dict) else None
        if not isinstance(kind, str) or not isinstance(version, str):
            raise AttestationError(
                f"Sigstore bundle is malformed: a transparency-log entry has no kindVersion (found {kv!r:.80})",
                kind="sigstore-bundle",
            )
        if (kind, version) not in SUPPORTED_ENTRY_KINDS:
            raise AttestationError(
                f"unsupported bundle kind: Rekor entry {kind}/{version} cannot be verified offline by sigstore "
                "(supported: dsse/0.0.1, hashedrekord/0.0.1, hashedrekord/0.0.2)",
                kind="sigstore-bundle", found=f"{kind}/{version}", unsupported=True,
            )
