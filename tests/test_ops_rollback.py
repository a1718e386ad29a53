"""`plan_rollback`: the row, its proven inclusion, the lakeFS actions, bundle check and restore."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import msgspec
import pytest
import zstandard

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.tlogproof import TlogProof, verify_tlog_proof
from kfm_ledger.errors import AmbiguousCommitError, CommitNotFoundError, CorruptLedgerError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.ops.rollback import (
    PLAN_FORMAT,
    check_plan_bundle,
    lakefs_actions,
    plan_rollback,
    prove_entry,
    restore_plan_bundle,
)
from kfm_ledger.sample import sample_row
from kfm_ledger.schema import Checksums, Config

from conftest import ORIGIN, fill, signer_of

PIPELINE = b"steps: [extract, train, promote]\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(path: Path, files: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = zstandard.ZstdCompressor().compress(buf.getvalue())
    path.write_bytes(blob)
    return sha(blob)


def append_bundle_row(ledger: Ledger, bundle_sha: str, configs: list[Config]) -> str:
    """Append sample row number ``ledger.size`` with the given bundle digest and configs."""
    row = msgspec.structs.replace(
        sample_row(ledger.size), checksums=Checksums(artifact_sha256=bundle_sha), configs=configs
    )
    ledger.append([row], signer=signer_of(ledger))
    return row.lakefs_commit


@pytest.fixture
def ledger(mem_ledger: Ledger) -> Ledger:
    return fill(mem_ledger, 30, 17)


def ambiguous_prefix(ledger: Ledger) -> tuple[str, list[str]]:
    commits = [e.row.lakefs_commit for e in ledger.iter_entries()]
    for c in "0123456789abcdef":
        matches = sorted(x for x in commits if x.startswith(c))
        if len(matches) > 1:
            return c, matches
    raise AssertionError("no ambiguous one-digit prefix in the sample")


def test_plan_has_every_field_of_the_row(ledger: Ledger) -> None:
    entry = ledger.entry(12)
    r = entry.row
    plan = plan_rollback(ledger, r.lakefs_commit[:10])
    assert plan.entry == entry
    doc = plan.to_json()
    assert doc["format"] == PLAN_FORMAT
    assert doc["origin"] == ORIGIN
    assert doc["index"] == 12
    assert doc["lakefs"] == {"repo": r.lakefs_repo, "branch": r.lakefs_branch, "commit": r.lakefs_commit}
    assert doc["created_at"] == r.created_at and doc["producer"] == r.producer
    assert doc["lineage"] == {"openlineage_run_id": r.openlineage_run_id, "otel_trace_id": r.otel_trace_id}
    assert doc["bundle"] == {"uri": r.artifact_uri, "sha256": r.checksums.artifact_sha256}
    assert doc["attestation"] == {"in_toto": r.signatures.in_toto}
    assert doc["models"] == [{"name": m.name, "version": m.version, "uri": m.uri} for m in r.models]
    assert doc["configs"] == [{"path": c.path, "sha256": c.sha256} for c in r.configs]
    assert doc["data_snapshot"] == [{"stac": s.stac, "lakefs_ref": s.lakefs_ref} for s in r.data_snapshot]
    assert doc["energy_carbon"] == {"kwh": r.energy_carbon.kwh, "co2e_kg": r.energy_carbon.co2e_kg}
    assert [a["id"] for a in doc["actions"]] == ["inspect", "restore", "revert"]


def test_proof_verifies_and_is_independently_checkable(ledger: Ledger) -> None:
    entry = ledger.entry(33)
    plan = plan_rollback(ledger, entry.row.lakefs_commit)
    p = plan.proof
    assert p.verified and p.reason is None and plan.ok
    assert (p.index, p.tree_size, p.root) == (33, 47, ledger.root)
    assert p.leaf_hash == merkle.leaf_hash(entry.line)
    merkle.verify_inclusion(p.leaf_hash, 33, 47, p.hashes, ledger.root)
    assert p.tlog_proof is not None
    cp, idx = verify_tlog_proof(p.tlog_proof, entry.line, [ledger.verifier], origin=ORIGIN)
    assert (cp.size, idx) == (47, 33)
    j = p.to_json()
    assert j["verified"] is True and j["root"] == base64.b64encode(ledger.root).decode()
    assert j["tree_size"] == 47 and j["index"] == 33
    assert j["tlog_proof"].startswith("c2sp.org/tlog-proof@v1\nindex 33\n")


def test_unknown_commit(ledger: Ledger) -> None:
    with pytest.raises(CommitNotFoundError) as e:
        plan_rollback(ledger, "ffffffffffffffffffff-nope")
    assert e.value.commit == "ffffffffffffffffffff-nope"


def test_ambiguous_prefix_lists_candidates(ledger: Ledger) -> None:
    prefix, matches = ambiguous_prefix(ledger)
    with pytest.raises(AmbiguousCommitError) as e:
        plan_rollback(ledger, prefix)
    assert e.value.prefix == prefix
    listed = [c.split(" ")[0] for c in e.value.candidates]
    assert listed == matches[: len(listed)] and len(listed) >= 2


def test_corrupt_tile_gives_unverified_plan(ledger: Ledger) -> None:
    # Flip a byte of the level-0 tile holding leaf 3's sibling: the proof must not verify.
    storage = ledger.storage
    for key in list(storage.list("tile/0/")):
        data = bytearray(storage.read(key))
        data[2 * 32] ^= 0xFF  # leaf 2 is leaf 3's sibling
        storage.objects[key] = bytes(data)  # type: ignore[attr-defined]
    commit = ledger.entry(3, verified=False).row.lakefs_commit
    # Proven reads: the lookup itself refuses the row (tests/test_proven_reads.py), before any plan.
    with pytest.raises(CorruptLedgerError, match=r"row 3 \(line 4 .*tile/0/000"):
        plan_rollback(ledger, commit)


def test_forged_proof_is_caught_by_the_independent_check(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = ledger.entry(5)
    real = ledger.tlog_proof(5)
    forged = TlogProof(index=5, hashes=(b"\x00" * 32,) + tuple(real.hashes[1:]), checkpoint=real.checkpoint)
    monkeypatch.setattr(ledger, "tlog_proof", lambda index, size=None: forged)
    status = prove_entry(ledger, entry)
    assert status.verified is False
    assert "mismatch" in (status.reason or "")


def test_lakefs_actions_are_quoted_and_accurate() -> None:
    actions = lakefs_actions("kfm-main", "release/v1", "abc123")
    by_id = {a.id: a for a in actions}
    assert by_id["inspect"].command == (
        "lakectl branch create lakefs://kfm-main/rollback-abc123 --source lakefs://kfm-main/abc123"
    )
    assert not by_id["inspect"].destructive
    assert by_id["restore"].command == "lakectl branch move-to-commit lakefs://kfm-main/release/v1 abc123"
    assert by_id["restore"].destructive
    assert "hard_reset?ref=abc123" in (by_id["restore"].api or "")
    assert by_id["revert"].command is None and "lakectl branch revert" in by_id["revert"].description
    weird = lakefs_actions("repo", "b", "x'; rm -rf /")
    assert "'x'\"'\"'; rm -rf /'" in (weird[1].command or "")


# ------------------------------------------------------------------- bundles


def test_bundle_check_and_restore(ledger: Ledger, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.zst"
    digest = write_bundle(bundle, {"configs/pipeline.yaml": PIPELINE, "model.bin": b"\x00" * 100})
    commit = append_bundle_row(ledger, digest, [Config(path="configs/pipeline.yaml", sha256=sha(PIPELINE))])
    plan = plan_rollback(ledger, commit)
    assert plan.ok

    ok = check_plan_bundle(plan, str(bundle))
    assert ok.ok and ok.found_sha256 == digest and ok.expected_sha256 == digest

    other = tmp_path / "other.tar.zst"
    other_digest = write_bundle(other, {"x": b"y"})
    bad = check_plan_bundle(plan, str(other))
    assert not bad.ok and bad.found_sha256 == other_digest and bad.expected_sha256 == digest
    assert "sha256 mismatch" in (bad.error or "")

    missing = check_plan_bundle(plan, str(tmp_path / "absent.tar.zst"))
    assert not missing.ok and missing.found_sha256 is None
    assert "absent.tar.zst: cannot read: No such file" in (missing.error or "")

    b_status, r_status = restore_plan_bundle(
        plan, str(bundle), str(tmp_path / "restore"), max_bytes=10_000, max_files=10
    )
    assert b_status.ok and r_status.ok, r_status.error
    assert (r_status.files, r_status.bytes) == (2, len(PIPELINE) + 100)
    assert [c.status for c in r_status.configs] == ["ok"]
    assert (tmp_path / "restore" / "configs" / "pipeline.yaml").read_bytes() == PIPELINE


def test_restore_refusals_are_reported_not_raised(ledger: Ledger, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.zst"
    digest = write_bundle(bundle, {"configs/pipeline.yaml": b"tampered\n"})
    commit = append_bundle_row(ledger, digest, [Config(path="configs/pipeline.yaml", sha256=sha(PIPELINE))])
    plan = plan_rollback(ledger, commit)
    b_status, r_status = restore_plan_bundle(plan, str(bundle), str(tmp_path / "r"), max_bytes=10_000, max_files=10)
    assert b_status.ok and not r_status.ok
    assert "configs/pipeline.yaml" in (r_status.error or ""), r_status.error
    assert [c.to_json() for c in r_status.configs] == [
        {
            "path": "configs/pipeline.yaml",
            "expected_sha256": sha(PIPELINE),
            "found_sha256": sha(b"tampered\n"),
            "status": "mismatch",
        }
    ]
    assert not (tmp_path / "r").exists()

    b_status, r_status = restore_plan_bundle(plan, str(bundle), str(tmp_path / "r"), max_bytes=3, max_files=10)
    assert b_status.ok and not r_status.ok and r_status.refused_member == "configs/pipeline.yaml"
    assert "--max-bytes" in (r_status.error or "")
    assert not (tmp_path / "r").exists()


def test_a_bundle_file_past_the_limits_is_not_reported_as_checksum_ok(ledger: Ledger, tmp_path: Path) -> None:
    """Refused while being hashed (the file cap), its checksum was never established."""
    import os

    bundle = tmp_path / "big.tar.zst"
    bundle.write_bytes(os.urandom(2 << 20))  # 2 MiB: past max_bytes + the tar allowance below
    commit = append_bundle_row(ledger, hashlib.sha256(bundle.read_bytes()).hexdigest(), [])
    plan = plan_rollback(ledger, commit)
    b_status, r_status = restore_plan_bundle(plan, str(bundle), str(tmp_path / "r"), max_bytes=10, max_files=1)
    assert not b_status.ok and b_status.found_sha256 is None
    assert "larger than" in (b_status.error or "") and not r_status.ok
    assert not (tmp_path / "r").exists()


def test_no_restore_when_the_proof_fails(ledger: Ledger, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.zst"
    digest = write_bundle(bundle, {"a": b"a"})
    commit = append_bundle_row(ledger, digest, [])
    entry = ledger.get(commit)
    # corrupt leaf 0's hash in every level-0 tile: it is under a sibling of the new leaf
    storage = ledger.storage
    for key in list(storage.list("tile/0/")):
        data = bytearray(storage.read(key))
        data[0] ^= 1
        storage.objects[key] = bytes(data)  # type: ignore[attr-defined]
    # Proven reads: no plan at all for a row that cannot be proven, so nothing can be restored.
    with pytest.raises(CorruptLedgerError, match=rf"row {entry.index} "):
        plan_rollback(Ledger.open(ledger.storage), commit)  # a fresh Ledger: no tile cached before the damage
    assert not (tmp_path / "r").exists()


def test_tile_names_used_by_the_corruption_tests_exist(ledger: Ledger) -> None:
    assert tiles.tile_path(0, 0, 47) in set(ledger.storage.list("tile/0/"))
    hash_tiles = [k for k in ledger.storage.list("tile/") if not k.startswith("tile/entries/")]
    assert all(k.startswith("tile/0/") for k in hash_tiles)  # one level only
