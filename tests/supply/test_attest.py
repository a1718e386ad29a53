"""Attestations: key-signed DSSE (Ed25519, P-256), in-toto JSONL, the Statement v1 checks, and the
real Sigstore bundles of ../shared/conformance/sigstore (offline)."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.attest import AttestationVerifier, detect_kind
from kfm_ledger.attest.dsse import load_public_keys, pae
from kfm_ledger.config import AttestationIdentity, AttestationKey, AttestationPolicy
from kfm_ledger.errors import ConfigFileError

from .helpers import BUILDER, envelope, new_key, signed_statement, statement, write_public_pem

SHA = "ab" * 32
CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "sigstore"
if not CONFORMANCE.is_dir():
    CONFORMANCE = Path("/work/shared/conformance/sigstore")


def test_pae_matches_the_dsse_spec_example() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("t\u00e9", b"x") == "DSSEv1 3 t\u00e9 1 x".encode()  # byte length of UTF-8


def _verifier(tmp_path: Path, *keys: object, builders: tuple[str, ...] = ()) -> AttestationVerifier:
    paths = [write_public_pem(k, tmp_path / f"k{n}.pem") for n, k in enumerate(keys)]
    return AttestationVerifier(AttestationPolicy(builders=builders, keys=tuple(AttestationKey(p) for p in paths)))


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_key_signed_dsse_good(tmp_path: Path, kind: str) -> None:
    key = new_key(kind)
    r = _verifier(tmp_path, key).verify(signed_statement(key, SHA), SHA)
    assert (r.status, r.kind) == ("ok", "dsse"), r.message
    assert "SLSA v1 provenance" in r.message and BUILDER in r.message


@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_key_signed_dsse_tampered_payload(tmp_path: Path, kind: str) -> None:
    key = new_key(kind)
    env = json.loads(signed_statement(key, SHA))
    tampered = statement("cd" * 32)
    env["payload"] = base64.b64encode(json.dumps(tampered).encode()).decode()
    r = _verifier(tmp_path, key).verify(json.dumps(env).encode(), "cd" * 32)
    assert r.status == "failed" and "none of its 1 signature(s)" in r.message


def test_dsse_signed_by_another_key_fails(tmp_path: Path) -> None:
    r = _verifier(tmp_path, new_key("ed25519")).verify(signed_statement(new_key("ed25519"), SHA), SHA)
    assert r.status == "failed" and "configured key" in r.message


def test_dsse_raw_p256_signature_and_urlsafe_base64(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = new_key("p256")
    env = json.loads(signed_statement(key, SHA))
    r_, s_ = decode_dss_signature(base64.b64decode(env["signatures"][0]["sig"]))
    env["signatures"][0]["sig"] = base64.urlsafe_b64encode(r_.to_bytes(32, "big") + s_.to_bytes(32, "big")).decode()
    env["payload"] = base64.urlsafe_b64encode(base64.b64decode(env["payload"])).decode().rstrip("=")
    assert _verifier(tmp_path, key).verify(json.dumps(env).encode(), SHA).status == "ok"


def test_no_keys_configured_fails_naming_the_setting() -> None:
    r = AttestationVerifier(AttestationPolicy()).verify(signed_statement(new_key("ed25519"), SHA), SHA)
    assert r.status == "failed" and "[[attestation.key]]" in r.message


@pytest.mark.parametrize(
    ("kw", "expected_sha", "needle"),
    [
        ({"predicate_type": "https://slsa.dev/provenance/v0.2"}, SHA, "predicate type https://slsa.dev/provenance/v0.2"),
        ({"statement_type": "https://in-toto.io/Statement/v0.1"}, SHA, "_type"),
        ({}, "cd" * 32, f"no subject has sha256 {'cd' * 32}"),
        ({"builder": "https://evil.example/builder"}, SHA, "builder id 'https://evil.example/builder'"),
    ],
)
def test_statement_checks(tmp_path: Path, kw: dict[str, str], expected_sha: str, needle: str) -> None:
    key = new_key("ed25519")
    r = _verifier(tmp_path, key, builders=(BUILDER,)).verify(signed_statement(key, SHA, **kw), expected_sha)
    assert r.status == "failed" and needle in r.message, r.message


def test_wrong_payload_type_fails(tmp_path: Path) -> None:
    key = new_key("ed25519")
    data = json.dumps(envelope(key, json.dumps(statement(SHA)).encode(), "text/plain")).encode()
    r = _verifier(tmp_path, key).verify(data, SHA)
    assert r.status == "failed" and "payload type 'text/plain'" in r.message


def test_intoto_jsonl_one_envelope_per_line(tmp_path: Path) -> None:
    key = new_key("p256")
    other = signed_statement(key, "11" * 32, name="other")
    mine = signed_statement(key, SHA)
    data = other + b"\n" + mine + b"\n"
    assert detect_kind(data)[0] == "intoto-jsonl"
    r = _verifier(tmp_path, key).verify(data, SHA)
    assert (r.status, r.kind) == ("ok", "intoto-jsonl") and r.message.startswith("line 2 of 2")
    r = _verifier(tmp_path, key).verify(other + b"\n" + other + b"\n", SHA)
    assert r.status == "failed" and "no line verifies" in r.message


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'{"a": 1}', b"{}\n{\n"])
def test_not_an_attestation(data: bytes) -> None:
    r = AttestationVerifier(AttestationPolicy()).verify(data, SHA)
    assert r.status == "failed" and "not an attestation" in r.message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_never_ok_never_raises(data: bytes) -> None:
    r = AttestationVerifier(AttestationPolicy()).verify(data, SHA)
    assert r.status in ("failed", "unsupported")


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["payloadType", "payload", "signatures", "mediaType"]),
                       st.one_of(st.text(max_size=20), st.lists(st.dictionaries(st.text(max_size=5),
                                                                                st.text(max_size=10)), max_size=2))))
def test_fuzz_json_shapes(doc: dict[str, object]) -> None:
    r = AttestationVerifier(AttestationPolicy()).verify(json.dumps(doc).encode(), SHA)
    assert r.status in ("failed", "unsupported")


def test_bad_key_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigFileError, match="not a PEM public key"):
        load_public_keys([tmp_path / "bad.pem"])
    with pytest.raises(ConfigFileError, match="No such file"):
        load_public_keys([tmp_path / "missing.pem"])
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigFileError, match="unsupported key type"):
        load_public_keys([write_public_pem(p384, tmp_path / "p384.pem")])


# ------------------------------------------------------------- real Sigstore bundles

needs_conformance = pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"conformance bundles not present at {CONFORMANCE} (../shared/conformance)"
)
GH = "https://token.actions.githubusercontent.com"
ATTEST_SAN = ("https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml"
              "@09b495c3f12c7881b3cc17209a327792065c1a1d")
REUSABLE_SHA = "49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25"
CUSTOM_SHA = "afa27b44d43b02a9fea41d13cedc2e4016cfcf87c5dbf990e593669aa8ce286d"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("network access during offline verification")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _sig(*identities: AttestationIdentity) -> AttestationVerifier:
    return AttestationVerifier(AttestationPolicy(identities=identities))


@needs_conformance
def test_real_github_attestation_verifies_offline(no_network: None) -> None:
    data = (CONFORMANCE / "reusable-workflow-attestation.sigstore.json").read_bytes()
    ident = AttestationIdentity(issuer=GH, san=ATTEST_SAN, source_repository="https://github.com/malancas/attest-demo",
                                source_ref="refs/heads/main")
    r = _sig(ident).verify(data, REUSABLE_SHA)
    assert (r.status, r.kind) == ("ok", "sigstore-bundle"), r.message
    assert ATTEST_SAN in r.message
    import hashlib

    assert hashlib.sha256((CONFORMANCE / "reusable-workflow-artifact").read_bytes()).hexdigest() == REUSABLE_SHA


@needs_conformance
@pytest.mark.parametrize(
    ("ident", "needle"),
    [
        (AttestationIdentity(issuer=GH, san=ATTEST_SAN, source_repository="https://github.com/other/repo"),
         "expected source repository https://github.com/other/repo"),
        (AttestationIdentity(issuer="https://accounts.google.com", san=ATTEST_SAN), "expected issuer"),
        (AttestationIdentity(issuer=GH, san="https://github.com/org/repo/.github/workflows/x.yml@refs/heads/main"),
         "expected SAN"),
        (AttestationIdentity(issuer=GH, san=ATTEST_SAN, source_ref="refs/heads/release"), "expected source ref"),
    ],
)
def test_real_attestation_with_another_identity_fails(no_network: None, ident: AttestationIdentity,
                                                      needle: str) -> None:
    data = (CONFORMANCE / "reusable-workflow-attestation.sigstore.json").read_bytes()
    r = _sig(ident).verify(data, REUSABLE_SHA)
    assert r.status == "failed" and needle in r.message, r.message


@needs_conformance
def test_real_attestation_san_regex_and_wrong_subject(no_network: None) -> None:
    data = (CONFORMANCE / "reusable-workflow-attestation.sigstore.json").read_bytes()
    ident = AttestationIdentity(issuer=GH, san_regex=r"https://github\.com/github/artifact-attestations-workflows/.*")
    assert _sig(ident).verify(data, REUSABLE_SHA).status == "ok"
    r = _sig(ident).verify(data, CUSTOM_SHA)
    assert r.status == "failed" and f"no subject has sha256 {CUSTOM_SHA}" in r.message


@needs_conformance
def test_real_custom_issuer_bundle(no_network: None) -> None:
    data = (CONFORMANCE / "custom-issuer.sigstore.json").read_bytes()
    ident = AttestationIdentity(issuer=f"{GH}/hammer-time",
                                san="https://github.com/too-legit/attest/.github/workflows/integration.yml@refs/heads/main")
    assert _sig(ident).verify(data, CUSTOM_SHA).status == "ok"
    assert _sig(AttestationIdentity(issuer=GH, san=ident.san)).verify(data, CUSTOM_SHA).status == "failed"


@needs_conformance
def test_real_slsa_v02_generator_output_fails_on_predicate_type(no_network: None) -> None:
    data = (CONFORMANCE / "slsa-github-generator-v2.1.0-generic.intoto.jsonl").read_bytes()
    ident = AttestationIdentity(
        issuer=GH, san="https://github.com/slsa-framework/slsa-github-generator/.github/workflows/"
        "generator_generic_slsa3.yml@refs/tags/v2.1.0", source_repository="https://github.com/slsa-framework/example-package")
    r = _sig(ident).verify(data, "376e7e01348585b6e6643bc6663146b9d525d9b41228bf180eaeb4d4a3706caa")
    assert r.status == "failed" and "predicate type https://slsa.dev/provenance/v0.2" in r.message, r.message


@needs_conformance
def test_real_intoto_002_entry_is_unsupported(no_network: None) -> None:
    data = (CONFORMANCE / "slsa-github-generator-v2.1.0-delegator.build.slsa").read_bytes()
    r = _sig(AttestationIdentity(issuer=GH, san_regex=".*")).verify(data, SHA)
    assert r.status == "unsupported" and "unsupported bundle kind" in r.message and "intoto/0.0.2" in r.message


@needs_conformance
def test_tampered_real_bundle_fails(no_network: None) -> None:
    doc = json.loads((CONFORMANCE / "reusable-workflow-attestation.sigstore.json").read_bytes())
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    payload["subject"][0]["digest"]["sha256"] = "00" * 32
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    r = _sig(AttestationIdentity(issuer=GH, san=ATTEST_SAN)).verify(json.dumps(doc).encode(), "00" * 32)
    assert r.status == "failed" and "does not verify" in r.message, r.message


@needs_conformance
def test_bundle_without_tlog_entry_is_unsupported() -> None:
    doc = json.loads((CONFORMANCE / "reusable-workflow-attestation.sigstore.json").read_bytes())
    doc["verificationMaterial"]["tlogEntries"] = []
    r = _sig(AttestationIdentity(issuer=GH, san=ATTEST_SAN)).verify(json.dumps(doc).encode(), REUSABLE_SHA)
    assert r.status == "unsupported" and "without a transparency-log entry" in r.message


@needs_conformance
def test_no_identity_configured_fails() -> None:
    data = (CONFORMANCE / "reusable-workflow-attestation.sigstore.json").read_bytes()
    r = AttestationVerifier(AttestationPolicy()).verify(data, REUSABLE_SHA)
    assert r.status == "failed" and "[[attestation.identity]]" in r.message
