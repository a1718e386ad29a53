"""Every error carries its evidence as fields, and diagnostics() still reads well."""

from __future__ import annotations

import base64

import pytest

from kfm_ledger import errors
from kfm_ledger.core import checkpoint, cosignature, keys, merkle, note, signed_checkpoint, tiles, tlogproof
from kfm_ledger.errors import (
    AmbiguousKeyError,
    BadSignatureError,
    BundleChecksumError,
    BundleError,
    ConfigMismatchError,
    CorruptLedgerError,
    EnergySourceError,
    FormatError,
    IndexOutOfRangeError,
    KeyFormatError,
    KfmError,
    MalformedNoteError,
    MirrorDriftError,
    NoteError,
    OriginMismatchError,
    ProofError,
    QueryError,
    RootMismatchError,
    SelectorError,
    UnsafeArchiveError,
    VerificationError,
)


def test_every_error_class_of_the_package_lives_in_errors() -> None:
    import kfm_ledger.mirror
    import kfm_ledger.ops.bundle
    import kfm_ledger.ops.energy
    import kfm_ledger.ops.impact
    import kfm_ledger.ops.query

    for module in (kfm_ledger.mirror, kfm_ledger.ops.bundle, kfm_ledger.ops.energy, kfm_ledger.ops.impact,
                   kfm_ledger.ops.query):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, KfmError):
                assert value.__module__ == "kfm_ledger.errors", (module.__name__, value)
    for name in errors.__all__:
        assert getattr(errors, name).__module__ == "kfm_ledger.errors"


def test_the_message_stays_the_first_positional_argument() -> None:
    for cls in (IndexOutOfRangeError, CorruptLedgerError, FormatError, BadSignatureError, ProofError, NoteError,
                BundleError, QueryError, SelectorError, MalformedNoteError):
        e = cls("what went wrong")
        assert str(e) == "what went wrong"
        assert e.diagnostics() == "what went wrong"
        assert e.evidence() == {}
    assert EnergySourceError("no mirror").evidence() == {"problems": []}


def test_index_out_of_range_from_the_merkle_plan() -> None:
    with pytest.raises(IndexOutOfRangeError) as info:
        merkle.inclusion_proof_plan(7, 5)
    assert (info.value.index, info.value.size) == (7, 5)
    assert info.value.evidence() == {"index": 7, "size": 5}
    assert info.value.diagnostics() == "index 7 out of bounds for tree size 5"


def test_index_out_of_range_from_the_memory_tree() -> None:
    tree = merkle.MemoryTree([merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")])
    with pytest.raises(IndexOutOfRangeError) as info:
        tree.root(3)
    assert (info.value.index, info.value.size) == (3, 2)


def test_proof_errors_name_the_index_and_sizes() -> None:
    leaf = merkle.leaf_hash(b"x")
    with pytest.raises(ProofError) as info:
        merkle.root_from_inclusion_proof(leaf, 0, 4, [])
    assert (info.value.index, info.value.size, info.value.old_size) == (0, 4, None)
    root = merkle.leaf_hash(b"y")
    with pytest.raises(ProofError) as info:
        merkle.verify_consistency(5, 3, root, root, [])
    assert (info.value.old_size, info.value.size) == (5, 3)


def test_a_wrong_size_hash_names_the_proof_it_was_in() -> None:
    leaf = merkle.leaf_hash(b"x")
    with pytest.raises(ProofError) as info:
        merkle.root_from_inclusion_proof(leaf, 5, 8, [leaf, leaf[:31], leaf])
    assert str(info.value) == "proof hash 1 is 31 bytes, want 32"
    assert info.value.evidence() == {"index": 5, "size": 8}
    with pytest.raises(ProofError) as info:
        merkle.verify_consistency(3, 7, leaf, leaf + b"\x00", [])
    assert str(info.value) == "new root is 33 bytes, want 32"
    assert info.value.evidence() == {"old_size": 3, "size": 7}


def test_a_hash_reader_returning_a_short_hash_is_corruption() -> None:
    class ShortReader:
        def read_node_hashes(self, nodes: list[tuple[int, int]]) -> list[bytes]:
            return [b"\x00" * 32 if level == 0 else b"\x00" * 31 for level, _ in nodes]

    with pytest.raises(CorruptLedgerError) as info:
        merkle.tree_root(6, ShortReader())  # nodes (2, 0) and (1, 2)
    assert str(info.value) == "hash reader returned 31 bytes for node (level 2, index 0), want 32"
    assert info.value.evidence() == {"index": 0}
    with pytest.raises(CorruptLedgerError) as info:
        merkle.range_hash(4, 6, ShortReader())  # node (1, 2): leaves 4 and 5
    assert info.value.evidence() == {"index": 4}


def test_root_mismatch_keeps_expected_and_calculated() -> None:
    e = RootMismatchError(b"\x01" * 32, b"\x02" * 32, what="old root")
    assert e.evidence() == {"what": "old root", "expected": b"\x01" * 32, "calculated": b"\x02" * 32}
    assert str(e).startswith("old root mismatch: expected " + base64.b64encode(b"\x01" * 32).decode())


def test_corrupt_tile_names_its_key_and_index() -> None:
    reader = tiles.TileHashReader(300, lambda level, index, width: b"\x00" * 31)
    with pytest.raises(CorruptLedgerError) as info:
        reader.read_node_hashes([(0, 0)])
    assert info.value.key == "tile/0/000"
    assert info.value.index == 0
    assert info.value.diagnostics().startswith("tile/0/000: tile is 31 bytes")


def test_tile_path_format_errors() -> None:
    with pytest.raises(FormatError) as info:
        tiles.parse_tile_path("tile/0/x000/001")
    assert info.value.evidence() == {"what": "tile path", "field": "index", "found": "tile/0/x000/001"}
    with pytest.raises(FormatError) as info:
        tiles.parse_tile_path("tile/0/001.p/256")
    assert (info.value.what, info.value.field) == ("tile path", "width")


def test_checkpoint_format_errors_name_the_line() -> None:
    with pytest.raises(FormatError) as info:
        checkpoint.Checkpoint.parse("origin\n01\nAAAA\n")
    assert (info.value.what, info.value.line) == ("checkpoint", 2)
    assert info.value.diagnostics().startswith("checkpoint line 2: tree size")


def test_tlog_proof_format_errors_name_the_line() -> None:
    with pytest.raises(FormatError) as info:
        tlogproof.parse_tlog_proof(b"not a proof\n")
    assert (info.value.what, info.value.line) == ("tlog-proof", 1)


def test_malformed_note_names_the_signature_line() -> None:
    text = "origin\n1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n"
    data = (text + "\n- name AAAAAAA=\n").encode()
    with pytest.raises(MalformedNoteError) as info:
        note.parse_note(data)
    e = info.value
    assert isinstance(e, FormatError) and isinstance(e, NoteError)
    assert (e.what, e.line, e.found) == ("signed note", 5, "- name AAAAAAA=")
    assert "line 5" in e.diagnostics()


def test_bad_signature_names_the_key() -> None:
    skey, vkey = keys.generate_key("example.com/log")
    signer = keys.Signer.from_private_key_text(skey)
    verifier = keys.Verifier.from_vkey(vkey)
    with pytest.raises(BadSignatureError) as info:
        verifier.verify(b"hello\n", b"\x00" * 64)
    assert info.value.key_name == "example.com/log"
    assert info.value.key_id == verifier.key_id == signer.key_id
    assert info.value.diagnostics().startswith(f"signature by example.com/log+{verifier.key_id.hex()} does not verify")


def test_verifier_key_errors_name_the_field_and_value() -> None:
    _, vkey = keys.generate_key("example.com/log")
    name, hex_id, key64 = vkey.split("+", 2)  # base64 may contain '+'
    wrong_id = "00000000" if hex_id != "00000000" else "11111111"
    with pytest.raises(KeyFormatError) as info:
        keys.Verifier.from_vkey(f"{name}+{wrong_id}+{key64}")
    assert info.value.evidence() == {"what": "verifier key", "field": "key ID", "found": wrong_id}
    with pytest.raises(KeyFormatError) as info:
        keys.Verifier.from_vkey(f"a b+{hex_id}+{key64}")
    assert info.value.evidence() == {"what": "verifier key", "field": "name", "found": "a b"}


def test_signing_key_errors_never_carry_the_key_material() -> None:
    skey, _ = keys.generate_key("example.com/log")
    _, _, name, hex_id, key64 = skey.split("+", 4)  # base64 may contain '+'
    wrong_id = "00000000" if hex_id != "00000000" else "11111111"
    bad_texts = [
        f"PRIVATE+KEY+{name}+{wrong_id}+{key64}",
        skey.replace("example.com/log", "example.com/other"),
        skey[:-4],
        skey[:-4] + "AAA=",
        skey.replace("PRIVATE+KEY+", "PRIVATE+KEY+a b+"),
    ]
    for text in bad_texts:
        for cls in (keys.Signer, cosignature.CosignatureSigner):
            with pytest.raises(KeyFormatError) as info:
                cls.from_private_key_text(text)
            e = info.value
            assert e.what == ("signer key" if cls is keys.Signer else "cosigner key")
            shown = str(e) + repr(e.evidence()) + e.diagnostics()
            assert key64 not in shown and key64[1:20] not in shown, e
    with pytest.raises(KeyFormatError) as info:
        keys.Signer.from_private_key_text(bad_texts[0])
    assert info.value.evidence() == {"what": "signer key", "field": "key ID", "found": wrong_id}


def test_cosignature_and_checkpoint_key_errors() -> None:
    log = keys.Signer.generate("example.com/log")
    body = checkpoint.Checkpoint("example.com/log", 0, merkle.EMPTY_ROOT).body()
    witness = cosignature.CosignatureSigner.generate("example.com/witness")
    sig = witness.cosign(body, 1)
    with pytest.raises(KeyFormatError) as info:
        cosignature.verify_cosignature(log.verifier(), body, sig)
    assert info.value.evidence() == {"what": "verifier key", "field": "key type", "found": "0x01"}
    other = checkpoint.Checkpoint("example.com/other", 0, merkle.EMPTY_ROOT)
    with pytest.raises(KeyFormatError) as info:
        signed_checkpoint.sign_checkpoint(other, log)
    assert info.value.evidence() == {"what": "signer key", "field": "name", "found": "example.com/log"}


def test_origin_mismatch_names_both_origins() -> None:
    log = keys.Signer.generate("example.com/log")
    signed = signed_checkpoint.sign_checkpoint(checkpoint.Checkpoint("example.com/log", 0, merkle.EMPTY_ROOT), log)
    with pytest.raises(OriginMismatchError) as info:
        signed_checkpoint.open_checkpoint(signed, [log.verifier()], origin="example.com/other")
    assert isinstance(info.value, VerificationError)
    assert info.value.evidence() == {"expected": "example.com/other", "found": "example.com/log"}


def test_ambiguous_verifier_keys_name_the_shared_key() -> None:
    log = keys.Signer.generate("example.com/log")
    v = log.verifier()
    impostor = keys.Verifier.__new__(keys.Verifier)  # same name and key ID, other key: forged on purpose
    object.__setattr__(impostor, "name", v.name)
    object.__setattr__(impostor, "public_key", bytes(32))
    object.__setattr__(impostor, "alg", keys.ALG_ED25519)
    object.__setattr__(impostor, "key_id", v.key_id)
    with pytest.raises(AmbiguousKeyError) as info:
        note.open_note(note.sign_note("hello\n", [log]), [v, impostor])
    assert isinstance(info.value, NoteError)
    assert info.value.evidence() == {"key_name": "example.com/log", "key_id": v.key_id}


def test_bundle_errors_carry_their_evidence() -> None:
    e = BundleChecksumError("b.tar.zst", "a" * 64, "b" * 64, when="after extraction")
    assert e.evidence() == {"path": "b.tar.zst", "expected": "a" * 64, "found": "b" * 64}
    assert isinstance(e, BundleError)
    u = UnsafeArchiveError("b.tar.zst", "../x", "'..' path component")
    assert u.evidence() == {"path": "b.tar.zst", "member": "../x", "reason": "'..' path component"}
    assert "member '../x' refused" in u.diagnostics()


def test_config_mismatch_diagnostics_list_the_bad_configs() -> None:
    from kfm_ledger.ops.bundle import ConfigCheck

    checks = [ConfigCheck("a.yaml", "a" * 64, "a" * 64, "ok"), ConfigCheck("b.yaml", "b" * 64, None, "missing")]
    e = ConfigMismatchError("b.tar.zst", checks)
    assert e.path == "b.tar.zst" and e.checks == checks
    assert e.diagnostics().splitlines() == [
        "bundle b.tar.zst: 1 of 2 config(s) do not match; nothing was restored",
        f"  b.yaml: missing from the bundle (expected sha256 {'b' * 64})",
    ]


def test_mirror_drift_renders_the_status() -> None:
    class Status:
        state = "stale"
        problems = ("the mirror has 3 rows, the ledger 4",)

        def render_text(self) -> str:
            return "mirror: stale"

    e = MirrorDriftError(Status())
    assert str(e) == "mirror stale: the mirror has 3 rows, the ledger 4"
    assert e.diagnostics() == "mirror: stale"


def test_selector_and_query_and_energy_fields() -> None:
    assert SelectorError("bad", kind="model", value=" x").evidence() == {"kind": "model", "value": " x"}
    assert SelectorError("bad").exit_code == 2
    assert QueryError("failed", sql="SELECT 1").sql == "SELECT 1"
    e = EnergySourceError("cannot", state="stale", problems=["p"])
    assert e.evidence() == {"state": "stale", "problems": ["p"]}
