"""End to end: `kfm verify --deep`, `kfm append --deep` and `kfm rollback --bundle` (no path) as real
processes on real files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import msgspec
import pytest
import zstandard

from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_commit
from kfm_ledger.schema import encode_row
from kfm_ledger.schema.rows import Checksums, Config

from .helpers import new_key, signed_statement
from .world import World, make_world
from conftest import ORIGIN, signer_of


def kfm(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "KFM_PROGRESS_INTERVAL": "1000", **(env or {})}
    full_env.pop("KFM_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "kfm_ledger", *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=120)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path / "world")


def _ledger(tmp_path: Path, rows: list) -> Path:
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    if rows:
        led.append(rows, signer=signer_of(led))
    led.close()
    return tmp_path / "ledger"


def test_verify_deep_ok_and_json_shape(world: World, tmp_path: Path) -> None:
    d = _ledger(tmp_path, [world.row(i) for i in range(3)])
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path), "--json", "--all-rows")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and set(doc["summary"]) == {"ok", "failed", "unsupported", "warning", "skipped"}
    assert [row["index"] for row in doc["rows"]] == [0, 1, 2]
    assert {c["check"] for c in doc["rows"][0]["checks"]} == {"artifact", "attestation", "stac", "lakefs_ref",
                                                               "configs", "energy"}
    assert all(set(c) >= {"check", "status", "message"} for c in doc["rows"][0]["checks"])
    # kfm.toml in the ledger directory is the default configuration
    (d / "kfm.toml").write_text(world.config_path.read_text().replace('"keys/', f'"{world.root}/keys/'))
    r = kfm("verify", "--deep", "--ledger", str(d))
    assert r.returncode == 0 and "3 row(s)" in r.stdout and ": OK" in r.stdout, r.stdout + r.stderr


def test_verify_deep_failure_is_named_and_exits_1(world: World, tmp_path: Path) -> None:
    rows = [world.row(i) for i in range(3)]
    d = _ledger(tmp_path, rows)
    world.artifact_path(rows[1].lakefs_commit).write_bytes(b"tampered")
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path))
    assert r.returncode == 1
    assert f"row 1  commit {rows[1].lakefs_commit}" in r.stdout
    assert f"expected {rows[1].checksums.artifact_sha256}" in r.stdout
    assert f"found {hashlib.sha256(b'tampered').hexdigest()}" in r.stdout
    assert "deep verification failed: 1 failed" in r.stderr
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False and [row["index"] for row in doc["rows"]] == [1]
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path), "--commit",
            rows[0].lakefs_commit[:10], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["checked_rows"] == 1


def test_verify_deep_configs_and_unsupported(world: World, tmp_path: Path) -> None:
    d = _ledger(tmp_path, [world.row(0)])
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path), "--configs",
            str(world.configs_dir), "--json", "--all-rows")
    assert r.returncode == 0
    assert [c["status"] for c in json.loads(r.stdout)["rows"][0]["checks"] if c["check"] == "configs"] == ["ok"]
    # an attestation that cannot be verified offline: unsupported -> exit 1, unless allowed
    row = world.row(0)
    doc = json.loads(signed_statement(world.key, row.checksums.artifact_sha256))
    bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
              "verificationMaterial": {"tlogEntries": []}, "dsseEnvelope": doc}
    world.attestation_path(row.lakefs_commit).write_text(json.dumps(bundle))
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path))
    assert r.returncode == 1 and "unsupported" in r.stdout
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path), "--allow-unsupported")
    assert r.returncode == 0, r.stdout + r.stderr


def test_deep_options_need_deep_and_bad_config_is_usage(world: World, tmp_path: Path) -> None:
    d = _ledger(tmp_path, [world.row(0)])
    r = kfm("verify", "--ledger", str(d), "--all-rows")
    assert r.returncode == 2 and "--all-rows needs --deep" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[attestation]\nbogus = 1\n")
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(bad))
    assert r.returncode == 2 and "attestation.bogus" in r.stderr and "Traceback" not in r.stderr
    r = kfm("append", "x.jsonl", "--ledger", str(d), "--configs", str(tmp_path))
    assert r.returncode == 2 and "--configs needs --deep" in r.stderr


def test_append_deep_refuses_a_failing_batch_whole(world: World, tmp_path: Path) -> None:
    d = _ledger(tmp_path, [world.row(0)])
    before = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != "index.sqlite"}
    rows = [world.row(i) for i in range(1, 4)]
    world.attestation_path(rows[2].lakefs_commit).write_bytes(
        signed_statement(new_key("p256"), rows[2].checksums.artifact_sha256))
    batch = tmp_path / "batch.jsonl"
    batch.write_bytes(b"".join(encode_row(r) + b"\n" for r in rows))
    r = kfm("append", str(batch), "--deep", "--ledger", str(d), "--config", str(world.config_path))
    assert r.returncode == 1
    assert "refused the batch: 1 of 3 row(s)" in r.stderr and f"row 3 ({rows[2].lakefs_commit}): attestation" \
        in r.stderr
    assert f"row 3  commit {rows[2].lakefs_commit}" in r.stdout
    after = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != "index.sqlite"}
    assert after == before  # the ledger's bytes unchanged (the derived index aside)
    r = kfm("append", str(batch), "--deep", "--ledger", str(d), "--config", str(world.config_path), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False and doc["error"]["type"] == "DeepCheckFailed"
    assert [row["index"] for row in doc["deep"]["rows"]] == [3]
    # fixed: the batch goes in, the report comes along
    world.attestation_path(rows[2].lakefs_commit).write_bytes(
        signed_statement(world.key, rows[2].checksums.artifact_sha256))
    r = kfm("append", str(batch), "--deep", "--ledger", str(d), "--config", str(world.config_path), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["appended"] == 3 and doc["deep"]["ok"] is True
    with Ledger.open(d) as led:
        assert led.size == 4


def test_append_deep_from_stdin(world: World, tmp_path: Path) -> None:
    d = _ledger(tmp_path, [])
    data = encode_row(world.row(0)) + b"\n"
    p = subprocess.run([sys.executable, "-m", "kfm_ledger", "append", "-", "--deep", "--ledger", str(d),
                        "--config", str(world.config_path)], input=data, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr


def _bundle(world: World, i: int) -> tuple[bytes, list]:
    """A real .tar.zst bundle holding one config, and the row pointing at it."""
    cfg = b"pipeline: restored\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("configs/pipeline.yaml")
        info.size = len(cfg)
        tar.addfile(info, io.BytesIO(cfg))
    data = zstandard.ZstdCompressor().compress(buf.getvalue())
    row = world.row(i)
    commit = sample_commit(i)
    world.artifact_path(commit).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    world.attestation_path(commit).write_bytes(signed_statement(world.key, sha))
    cfg_sha = hashlib.sha256(cfg).hexdigest()
    row = msgspec.structs.replace(row, checksums=Checksums(artifact_sha256=sha),
                                  configs=[Config(path="configs/pipeline.yaml", sha256=cfg_sha)])
    return data, row


def test_rollback_bundle_fetched_through_resolvers(world: World, tmp_path: Path) -> None:
    _, row = _bundle(world, 0)
    d = _ledger(tmp_path, [row])
    dest = tmp_path / "restored"
    r = kfm("rollback", "--commit", row.lakefs_commit[:12], "--ledger", str(d), "--config", str(world.config_path),
            "--bundle", "--restore-to", str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Bundle fetched through the resolvers" in r.stdout and "checked before restoring" in r.stdout
    assert "attestation ok: dsse" in r.stdout
    assert (dest / "configs" / "pipeline.yaml").read_bytes() == b"pipeline: restored\n"
    r = kfm("rollback", "--commit", row.lakefs_commit, "--ledger", str(d), "--config", str(world.config_path),
            "--json", "--bundle")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["fetched_bundle"]["ok"] is True and doc["bundle_check"]["ok"] is True


def test_rollback_fetched_bundle_refused_on_mismatch_or_bad_attestation(world: World, tmp_path: Path) -> None:
    _, row = _bundle(world, 0)
    d = _ledger(tmp_path, [row])
    dest = tmp_path / "restored"
    world.attestation_path(row.lakefs_commit).write_bytes(
        signed_statement(new_key("ed25519"), row.checksums.artifact_sha256))
    r = kfm("rollback", "--commit", row.lakefs_commit, "--ledger", str(d), "--config", str(world.config_path),
            "--bundle", "--restore-to", str(dest))
    assert r.returncode == 1 and "attestation failed" in r.stdout and "nothing was restored" in r.stderr
    assert not dest.exists()
    world.artifact_path(row.lakefs_commit).write_bytes(b"other bytes")
    r = kfm("rollback", "--commit", row.lakefs_commit, "--ledger", str(d), "--config", str(world.config_path),
            "--bundle", "--restore-to", str(dest))
    assert r.returncode == 1 and "sha256 MISMATCH" in r.stdout and not dest.exists()
    assert f"found {hashlib.sha256(b'other bytes').hexdigest()}" in r.stdout


def test_bundle_without_path_argv_rule() -> None:
    from kfm_ledger.cli import bundle_without_path

    assert bundle_without_path(["rollback", "--commit", "c", "--bundle"]) == ["rollback", "--commit", "c", "--bundle="]
    assert bundle_without_path(["rollback", "--bundle", "--json"]) == ["rollback", "--bundle=", "--json"]
    assert bundle_without_path(["rollback", "--bundle", "b.tar.zst"]) == ["rollback", "--bundle", "b.tar.zst"]
    assert bundle_without_path(["get", "--bundle"]) == ["get", "--bundle"]


def test_progress_lines_on_a_non_terminal_stderr(world: World, tmp_path: Path) -> None:
    d = _ledger(tmp_path, [world.row(i) for i in range(3)])
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path),
            env={"KFM_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kfm verify --deep: ")]
    assert lines and "3 of 3 rows (100%)" in lines[-1], r.stderr
    r = kfm("verify", "--deep", "--ledger", str(d), "--config", str(world.config_path), "--quiet",
            env={"KFM_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0 and "kfm verify --deep:" not in r.stderr
    batch = tmp_path / "b.jsonl"
    batch.write_bytes(encode_row(world.row(3)) + b"\n")
    r = kfm("append", str(batch), "--deep", "--ledger", str(d), "--config", str(world.config_path),
            env={"KFM_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0 and "kfm append --deep: 1 of 1 rows (100%)" in r.stderr, r.stderr
