"""A private Sigstore instance for tests: a test CA (Fulcio's role), a CT log key (SCTs), a Rekor
key (signed entry timestamps and checkpoints), a custom trusted root naming them, and bundles
(v0.3, DSSE, Rekor ``dsse/0.0.1`` entry with inclusion promise and inclusion proof) built from
parts so each part can be made wrong on purpose.

Everything follows what sigstore-python 4.x checks offline (verify/verifier.py): the chain at
the integrated time, the embedded SCT (RFC 6962 §3.2 precertificate entry), the identity
policy, the inclusion proof (a one-leaf tree) and its signed checkpoint (a signed note), the
inclusion promise (RFC 8785 canonical JSON), the DSSE signature, and the entry body.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kfm_ledger.attest.dsse import pae

GH = "https://token.actions.githubusercontent.com"
SAN = "https://github.com/kfm/registry/.github/workflows/release.yml@refs/heads/main"
REPO = "https://github.com/kfm/registry"
REF = "refs/heads/main"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
V02 = "application/vnd.dev.sigstore.bundle+json;version=0.2"
V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _utf8_der(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


@dataclass
class Instance:
    """The keys of one private Sigstore instance."""

    ca_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    ct_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ca_cert: Any = None

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kfm-test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "kfm-test-fulcio")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=365)).not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.ca_key, hashes.SHA384())
        )

    def trusted_root(self) -> dict[str, Any]:
        def log(key: Any, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": _b64(_spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": "2020-01-01T00:00:00Z"}},
                    "logId": {"keyId": _b64(hashlib.sha256(_spki(key)).digest())}}

        ca_der = _b64(self.ca_cert.public_bytes(serialization.Encoding.DER))
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, "https://rekor.kfm.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "kfm-test", "commonName": "kfm-test-fulcio"},
                "uri": "https://fulcio.kfm.test",
                "certChain": {"certificates": [{"rawBytes": ca_der}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
            "ctlogs": [log(self.ct_key, "https://ctfe.kfm.test")],
            "timestampAuthorities": [],
        }

    # ------------------------------------------------------------------ certificates
    def leaf(self, key: Any, *, san: str = SAN, issuer: str = GH, not_before: dt.datetime | None = None,
             lifetime: dt.timedelta = dt.timedelta(minutes=10), ca_key: Any = None) -> x509.Certificate:
        """A Fulcio-like code-signing certificate with an embedded SCT from the test CT log."""
        ca_key = ca_key or self.ca_key
        start = not_before or NOW - dt.timedelta(minutes=1)
        serial = x509.random_serial_number()

        def builder() -> x509.CertificateBuilder:
            oid = x509.ObjectIdentifier
            return (
                x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(start).not_valid_after(start + lifetime)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=False, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=True)
                .add_extension(x509.UnrecognizedExtension(oid("1.3.6.1.4.1.57264.1.1"), issuer.encode()),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(oid("1.3.6.1.4.1.57264.1.8"), _utf8_der(issuer)),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(oid("1.3.6.1.4.1.57264.1.12"), _utf8_der(REPO)),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(oid("1.3.6.1.4.1.57264.1.14"), _utf8_der(REF)),
                               critical=False)
            )

        precert = builder().sign(ca_key, hashes.SHA384())
        sct = self._sct(precert.tbs_certificate_bytes, start)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        value = bytes([0x04]) + _der_len(len(sct_list)) + sct_list  # OCTET STRING
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2"), value)
        return builder().add_extension(ext, critical=False).sign(ca_key, hashes.SHA384())

    def _sct(self, tbs: bytes, when: dt.datetime) -> bytes:
        """An RFC 6962 §3.2 SCT over the precertificate entry (issuer key hash + TBS)."""
        log_id = hashlib.sha256(_spki(self.ct_key)).digest()
        ts = int(when.timestamp() * 1000)
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key)).digest()
        signed = struct.pack("!BBQH", 0, 0, ts, 1) + issuer_key_hash + struct.pack("!I", len(tbs))[1:] + tbs \
            + struct.pack("!H", 0)
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return bytes([0]) + log_id + struct.pack("!Q", ts) + struct.pack("!H", 0) + bytes([4, 3]) \
            + struct.pack("!H", len(sig)) + sig

    # ------------------------------------------------------------------ bundles
    def bundle(self, statement: dict[str, Any], *, signing_key: Any = None, cert_key: Any = None,
               cert: x509.Certificate | None = None, integrated: dt.datetime | None = None,
               tamper_payload: bool = False, media_type: str = V03, **leaf_kw: Any) -> bytes:
        """A bundle (``media_type``, default v0.3): ``statement`` in a DSSE envelope signed by ``signing_key`` (the
        certificate's key), logged as a Rekor dsse/0.0.1 entry at ``integrated`` (default: now)."""
        cert_key = cert_key or ec.generate_private_key(ec.SECP256R1())
        cert = cert or self.leaf(cert_key, **leaf_kw)
        signing_key = signing_key or cert_key
        payload_type = "application/vnd.in-toto+json"
        payload = json.dumps(statement).encode()
        sig = signing_key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
        body = rfc8785.dumps({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(b"envelope").hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": _b64(sig),
                                "verifier": _b64(cert.public_bytes(serialization.Encoding.PEM))}],
            },
        })
        if tamper_payload:
            changed = json.loads(payload)
            changed["predicate"]["runDetails"]["builder"]["id"] = "https://evil.example/builder"
            payload = json.dumps(changed).encode()
        doc = {
            "mediaType": media_type,
            "verificationMaterial": self._material(cert, body, integrated, media_type),
            "dsseEnvelope": {"payload": _b64(payload), "payloadType": payload_type,
                             "signatures": [{"sig": _b64(sig), "keyid": ""}]},
        }
        return json.dumps(doc).encode()


    def message_bundle(self, artifact_sha256: str, *, media_type: str = V03) -> bytes:
        """A message-signature bundle over the artifact digest, logged as hashedrekord/0.0.1."""
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.leaf(key)
        digest = bytes.fromhex(artifact_sha256)
        sig = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        body = rfc8785.dumps({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": artifact_sha256}},
                     "signature": {"content": _b64(sig),
                                   "publicKey": {"content": _b64(cert.public_bytes(serialization.Encoding.PEM))}}},
        })
        doc = {
            "mediaType": media_type,
            "verificationMaterial": self._material(cert, body, None, media_type, kind="hashedrekord"),
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                                 "signature": _b64(sig)},
        }
        return json.dumps(doc).encode()

    def _material(self, cert: x509.Certificate, body: bytes, integrated: dt.datetime | None, media_type: str,
                  *, kind: str = "dsse") -> dict[str, Any]:
        """The verification material: the certificate and a Rekor entry for ``body`` in a one-leaf
        tree, with an inclusion promise (SET) and a signed checkpoint."""
        when = int((integrated or NOW).timestamp())
        log_id = hashlib.sha256(_spki(self.rekor_key)).digest()
        set_sig = self.rekor_key.sign(rfc8785.dumps({"body": _b64(body), "integratedTime": when,
                                                     "logID": log_id.hex(), "logIndex": 0}),
                                      ec.ECDSA(hashes.SHA256()))
        root = hashlib.sha256(b"\x00" + body).digest()  # a one-leaf tree (RFC 6962 §2.1)
        note = f"rekor.kfm.test - 1\n1\n{_b64(root)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + "\n" + f"\u2014 rekor.kfm.test {_b64(log_id[:4] + note_sig)}\n"
        der = _b64(cert.public_bytes(serialization.Encoding.DER))
        material: dict[str, Any] = (
            {"certificate": {"rawBytes": der}} if media_type == V03
            else {"x509CertificateChain": {"certificates": [{"rawBytes": der}]}}
        )
        material["tlogEntries"] = [{
            "logIndex": "0", "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(when),
            "inclusionPromise": {"signedEntryTimestamp": _b64(set_sig)},
            "inclusionProof": {"logIndex": "0", "rootHash": _b64(root), "treeSize": "1", "hashes": [],
                               "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": _b64(body),
        }]
        return material


def _der_len(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
