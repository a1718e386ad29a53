"""End to end: `kfm rollback`, `kfm diff`, `kfm lineage`, `kfm explain` on a ledger on disk."""

from __future__ import annotations

import base64
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
from typer.testing import CliRunner

from kfm_ledger.cli import app
from kfm_ledger.core import merkle
from kfm_ledger.core.tlogproof import verify_tlog_proof
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import Checksums, Config, decode_row

ORIGIN = "e2e.kfm.example/rollback-index"
PIPELINE = b"pipeline: promote\n"
MODEL_CFG = b"model: focus-transformer\n"
runner = CliRunner()


def kfm(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_zst(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    blob = zstandard.ZstdCompressor().compress(buf.getvalue())
    path.write_bytes(blob)
    return sha(blob)


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file and directory under root, except the derived SQLite index (its -wal and
    -shm files come and go with connections)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith("index.sqlite"):
                continue
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = "dir" if p.is_dir() and not p.is_symlink() else (
                "link" if p.is_symlink() else p.read_bytes()
            )
    return out


class World:
    """A ledger on disk with sample rows and rows whose bundles exist as real files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ledger = root / "ledger"
        led = Ledger.init(self.ledger, origin=ORIGIN)
        signer = load_signer(led.storage.read(SKEY_KEY))
        led.append(sample_jsonl(40), signer=signer)
        configs = [
            Config(path="configs/pipeline.yaml", sha256=sha(PIPELINE)),
            Config(path="configs/model.yaml", sha256=sha(MODEL_CFG)),
        ]
        self.bundle = root / "good.tar.zst"
        good = tar_zst(
            self.bundle,
            [
                reg("configs/pipeline.yaml", PIPELINE),
                reg("configs/model.yaml", MODEL_CFG),
                reg("model.bin", b"\x01" * 64),
            ],
        )
        self.evil: dict[str, tuple[Path, str]] = {}
        outside = str(root / "outside" / "victim.txt")
        for name, members in {
            "symlink": [reg("configs/pipeline.yaml", PIPELINE), link("escape", str(root / "outside"))],
            "hardlink": [link("hl", outside, tarfile.LNKTYPE)],
            "absolute": [reg(outside, b"pwned")],
            "dotdot": [reg("../outside/victim.txt", b"pwned")],
            "big": [reg("configs/pipeline.yaml", PIPELINE), reg("blob.bin", b"\x00" * 5000)],
            "many": [reg(f"f{i}", b"x") for i in range(20)],
            "badcfg": [reg("configs/pipeline.yaml", b"tampered\n")],
        }.items():
            p = root / f"{name}.tar.zst"
            self.evil[name] = (p, tar_zst(p, members))
        self.commits: dict[str, str] = {}
        rows = []
        for n, (name, digest) in enumerate([("good", good)] + [(k, v[1]) for k, v in self.evil.items()]):
            row = msgspec.structs.replace(
                sample_row(40 + n), checksums=Checksums(artifact_sha256=digest), configs=configs
            )
            rows.append(row)
            self.commits[name] = row.lakefs_commit
        led.append(rows, signer=signer)
        led.append(sample_jsonl(20, start=40 + len(rows)), signer=signer)
        self.size = led.size
        self.entries = list(led.iter_entries())
        self.vkey = led.verifier
        led.close()
        (root / "outside").mkdir()
        (root / "outside" / "victim.txt").write_text("original")

    def row(self, name: str):
        return next(e for e in self.entries if e.row.lakefs_commit == self.commits[name])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("engineer"))


def ambiguous(world: World) -> tuple[str, list[str]]:
    commits = sorted(e.row.lakefs_commit for e in world.entries)
    for c in "0123456789abcdef":
        matches = [x for x in commits if x.startswith(c)]
        if len(matches) > 1:
            return c, matches
    raise AssertionError("no ambiguous prefix")


# -------------------------------------------------------------------- rollback


def test_rollback_json_field_by_field(world: World) -> None:
    e = world.entries[17]
    r = e.row
    res = kfm("rollback", "--commit", r.lakefs_commit[:9], "--ledger", str(world.ledger), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "kfm.rollback-plan/v1"
    assert doc["ok"] is True
    assert doc["origin"] == ORIGIN
    assert doc["index"] == 17
    assert doc["lakefs"] == {"repo": r.lakefs_repo, "branch": r.lakefs_branch, "commit": r.lakefs_commit}
    assert doc["created_at"] == r.created_at
    assert doc["producer"] == r.producer
    assert doc["lineage"] == {"openlineage_run_id": r.openlineage_run_id, "otel_trace_id": r.otel_trace_id}
    assert doc["bundle"] == {"uri": r.artifact_uri, "sha256": r.checksums.artifact_sha256}
    assert doc["attestation"] == {"in_toto": r.signatures.in_toto}
    assert doc["models"] == [{"name": m.name, "version": m.version, "uri": m.uri} for m in r.models]
    assert doc["configs"] == [{"path": c.path, "sha256": c.sha256} for c in r.configs]
    assert doc["data_snapshot"] == [{"stac": s.stac, "lakefs_ref": s.lakefs_ref} for s in r.data_snapshot]
    assert doc["energy_carbon"] == {"kwh": r.energy_carbon.kwh, "co2e_kg": r.energy_carbon.co2e_kg}
    proof = doc["proof"]
    assert proof["verified"] is True and proof["reason"] is None
    assert (proof["index"], proof["tree_size"]) == (17, world.size)
    assert proof["leaf_hash"] == base64.b64encode(merkle.leaf_hash(e.line)).decode()
    cp, idx = verify_tlog_proof(proof["tlog_proof"].encode(), e.line, [world.vkey], origin=ORIGIN)
    assert idx == 17 and base64.b64encode(cp.root).decode() == proof["root"]
    acts = {a["id"]: a for a in doc["actions"]}
    assert acts["restore"]["command"] == (
        f"lakectl branch move-to-commit lakefs://{r.lakefs_repo}/{r.lakefs_branch} {r.lakefs_commit}"
    )
    assert acts["restore"]["destructive"] is True and acts["inspect"]["destructive"] is False
    assert doc["bundle_check"] is None and doc["restore"] is None


def test_rollback_text(world: World) -> None:
    r = world.entries[3].row
    res = kfm("rollback", "--commit", r.lakefs_commit, "--ledger", str(world.ledger))
    assert res.exit_code == 0, res.output
    assert f"repository {r.lakefs_repo}, branch {r.lakefs_branch}, commit {r.lakefs_commit}" in res.stdout
    assert r.checksums.artifact_sha256 in res.stdout and r.signatures.in_toto in res.stdout
    assert "Inclusion proof: verified" in res.stdout
    assert "lakectl branch move-to-commit" in res.stdout


def test_rollback_unknown_and_ambiguous(world: World) -> None:
    res = kfm("rollback", "--commit", "zz-not-a-commit", "--ledger", str(world.ledger))
    assert res.exit_code == 1
    assert "no row for lakeFS commit 'zz-not-a-commit'" in res.stderr
    prefix, matches = ambiguous(world)
    res = kfm("rollback", "--commit", prefix, "--ledger", str(world.ledger), "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["error"]["type"] == "AmbiguousCommitError"
    assert "ambiguous" in res.stderr
    assert sum(m in res.stderr for m in matches) >= 2


def test_rollback_bundle_checksum(world: World) -> None:
    good = world.commits["good"]
    res = kfm("rollback", "--commit", good, "--bundle", str(world.bundle), "--ledger", str(world.ledger), "--json")
    assert res.exit_code == 0, res.output
    check = json.loads(res.stdout)["bundle_check"]
    expected = world.row("good").row.checksums.artifact_sha256
    assert check == {
        "path": str(world.bundle), "expected_sha256": expected, "found_sha256": expected, "ok": True, "error": None,
    }
    other, other_sha = world.evil["many"]
    res = kfm("rollback", "--commit", good, "--bundle", str(other), "--ledger", str(world.ledger), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False
    assert doc["bundle_check"]["ok"] is False
    assert (doc["bundle_check"]["expected_sha256"], doc["bundle_check"]["found_sha256"]) == (expected, other_sha)
    assert f"expected {expected}" in res.stderr and f"found {other_sha}" in res.stderr
    res = kfm("rollback", "--commit", good, "--bundle", str(other), "--ledger", str(world.ledger))
    assert res.exit_code == 1 and "sha256 MISMATCH" in res.stdout


def test_rollback_restore(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "restored"
    res = kfm(
        "rollback", "--commit", world.commits["good"][:12], "--bundle", str(world.bundle),
        "--restore-to", str(dest), "--ledger", str(world.ledger), "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["bundle_check"]["ok"] is True
    restore = doc["restore"]
    assert restore["ok"] is True and restore["error"] is None
    assert (restore["files"], restore["bytes"]) == (3, len(PIPELINE) + len(MODEL_CFG) + 64)
    assert [(c["path"], c["status"]) for c in restore["configs"]] == [
        ("configs/pipeline.yaml", "ok"), ("configs/model.yaml", "ok"),
    ]
    assert (dest / "configs" / "pipeline.yaml").read_bytes() == PIPELINE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored"]


@pytest.mark.parametrize(
    "name, extra, needle",
    [
        ("symlink", [], "symbolic link"),
        ("hardlink", [], "hard link"),
        ("absolute", [], "absolute path"),
        ("dotdot", [], "'..' path component"),
        ("big", ["--max-bytes", "4KiB"], "exceed 4096 bytes"),
        ("many", ["--max-files", "10"], "more than 10 members"),
        ("badcfg", [], "configs/pipeline.yaml: sha256 mismatch"),
    ],
)
def test_rollback_restore_refusals_write_nothing(
    world: World, tmp_path: Path, name: str, extra: list[str], needle: str
) -> None:
    bundle, _ = world.evil[name]
    work = tmp_path / "work"
    work.mkdir()
    before_world, before_work = tree(world.root), tree(work)
    res = kfm(
        "rollback", "--commit", world.commits[name], "--bundle", str(bundle), "--restore-to", str(work / "dest"),
        *extra, "--ledger", str(world.ledger), "--json",
    )
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["bundle_check"]["ok"] is True
    assert doc["restore"]["ok"] is False and needle in doc["restore"]["error"]
    assert needle in res.stderr
    assert tree(work) == before_work == {}
    assert tree(world.root) == before_world
    assert (world.root / "outside" / "victim.txt").read_text() == "original"
    if name == "badcfg":
        assert doc["restore"]["configs"][0] == {
            "path": "configs/pipeline.yaml", "expected_sha256": sha(PIPELINE),
            "found_sha256": sha(b"tampered\n"), "status": "mismatch",
        }
        assert doc["restore"]["configs"][1]["status"] == "missing"


def test_rollback_restore_wrong_bundle_writes_nothing(world: World, tmp_path: Path) -> None:
    res = kfm(
        "rollback", "--commit", world.commits["good"], "--bundle", str(world.evil["big"][0]),
        "--restore-to", str(tmp_path / "dest"), "--ledger", str(world.ledger),
    )
    assert res.exit_code == 1
    assert "sha256 mismatch" in res.stderr and "REFUSED" in res.stdout
    assert list(tmp_path.iterdir()) == []


def test_rollback_usage_errors(world: World, tmp_path: Path) -> None:
    c = world.commits["good"]
    res = kfm("rollback", "--commit", c, "--restore-to", str(tmp_path / "d"), "--ledger", str(world.ledger))
    assert res.exit_code == 2 and "--restore-to needs --bundle" in res.stderr
    res = kfm("rollback", "--commit", c, "--bundle", str(world.bundle), "--restore-to", str(tmp_path / "d"),
              "--max-bytes", "lots", "--ledger", str(world.ledger))
    assert res.exit_code == 2 and "not a size" in res.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ diff


def test_diff_json_and_text(world: World) -> None:
    a, b = world.entries[4], world.entries[31]
    res = kfm("diff", a.row.lakefs_commit[:10], b.row.lakefs_commit[:10], "--ledger", str(world.ledger), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "kfm.diff/v1"
    assert doc["a"] == {
        "index": 4, "lakefs_commit": a.row.lakefs_commit, "lakefs_repo": a.row.lakefs_repo,
        "lakefs_branch": a.row.lakefs_branch, "created_at": a.row.created_at, "producer": a.row.producer,
    }
    assert doc["b"]["index"] == 31 and doc["b"]["lakefs_commit"] == b.row.lakefs_commit
    names_a = {m.name: m.version for m in a.row.models}
    names_b = {m.name: m.version for m in b.row.models}
    assert {m["name"] for m in doc["models"]["added"]} == set(names_b) - set(names_a)
    assert {m["name"] for m in doc["models"]["removed"]} == set(names_a) - set(names_b)
    assert {c["name"]: (c["from"]["version"], c["to"]["version"]) for c in doc["models"]["changed"]} == {
        n: (names_a[n], names_b[n]) for n in set(names_a) & set(names_b) if names_a[n] != names_b[n]
    }
    cfg_a = {c.path: c.sha256 for c in a.row.configs}
    cfg_b = {c.path: c.sha256 for c in b.row.configs}
    changed = {p for p in set(cfg_a) & set(cfg_b) if cfg_a[p] != cfg_b[p]}
    assert {c["path"] for c in doc["configs"]["changed"]} == changed
    assert {c["path"] for c in doc["configs"]["added"]} == set(cfg_b) - set(cfg_a)
    assert doc["lakefs_branch"] == (
        None if a.row.lakefs_branch == b.row.lakefs_branch else {"from": a.row.lakefs_branch, "to": b.row.lakefs_branch}
    )
    kwh = doc["energy_carbon"]["kwh"]
    assert kwh["from"] == a.row.energy_carbon.kwh and kwh["to"] == b.row.energy_carbon.kwh
    assert kwh["delta"] == pytest.approx(b.row.energy_carbon.kwh - a.row.energy_carbon.kwh)
    assert doc["seconds_between"] == 27 * 37 * 60  # sample rows are 37 minutes apart
    res = kfm("diff", a.row.lakefs_commit, b.row.lakefs_commit, "--ledger", str(world.ledger))
    assert res.exit_code == 0 and res.stdout.splitlines()[0].startswith(f"a: #4 {a.row.lakefs_commit}")
    assert "16h 39m later" in res.stdout


def test_diff_unknown_and_ambiguous(world: World) -> None:
    prefix, _ = ambiguous(world)
    res = kfm("diff", prefix, world.commits["good"], "--ledger", str(world.ledger))
    assert res.exit_code == 1 and "ambiguous" in res.stderr
    res = kfm("diff", world.commits["good"], "nope-nope", "--ledger", str(world.ledger))
    assert res.exit_code == 1 and "no row for lakeFS commit 'nope-nope'" in res.stderr


# ------------------------------------------------------------- lineage, explain


def test_lineage_json_ld(world: World, tmp_path: Path) -> None:
    e = world.entries[22]
    res = kfm("lineage", "--commit", e.row.lakefs_commit[:10], "--ledger", str(world.ledger))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["@context"]["prov"] == "http://www.w3.org/ns/prov#"
    nodes = {n["@id"]: n for n in doc["@graph"]}
    run = nodes[f"urn:openlineage:run:{e.row.openlineage_run_id}"]
    assert run["kfm:otelTraceId"] == e.row.otel_trace_id
    assert len(run["prov:used"]) == len(e.row.models) + len(e.row.configs) + len(e.row.data_snapshot)
    assert nodes[e.row.artifact_uri]["prov:wasGeneratedBy"] == {"@id": run["@id"]}
    assert nodes[f"urn:kfm:ledger:{ORIGIN}:22"]["kfm:inclusionVerified"] is True
    out = tmp_path / "prov.jsonld"
    res = kfm("lineage", "--commit", e.row.lakefs_commit, "--ledger", str(world.ledger), "--output", str(out))
    assert res.exit_code == 0 and res.stdout == ""
    assert json.loads(out.read_text()) == doc


def test_explain_text_and_json(world: World) -> None:
    e = world.entries[30]
    res = kfm("explain", "--commit", e.row.lakefs_commit[:10], "--ledger", str(world.ledger), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    prev = next(
        p for p in reversed(world.entries[:30])
        if (p.row.lakefs_repo, p.row.lakefs_branch) == (e.row.lakefs_repo, e.row.lakefs_branch)
    )
    assert doc["format"] == "kfm.explain/v1"
    assert doc["entry"]["index"] == 30 and doc["entry"]["producer"] == e.row.producer
    assert doc["previous"]["index"] == prev.index and doc["previous"]["lakefs_commit"] == prev.row.lakefs_commit
    assert doc["changes"]["a"]["index"] == prev.index and doc["changes"]["b"]["index"] == 30
    assert doc["proof"]["verified"] is True
    res = kfm("explain", "--commit", e.row.lakefs_commit, "--ledger", str(world.ledger))
    assert res.exit_code == 0
    assert res.stdout.splitlines() == doc["narrative"]
    assert "inclusion proof verifies" in res.stdout


# ------------------------------------------------------------ real processes


def test_real_processes(world: World) -> None:
    env = {**os.environ, "KFM_LEDGER": str(world.ledger)}
    e = world.entries[9]
    out = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "rollback", "--commit", e.row.lakefs_commit[:10], "--json"],
        capture_output=True, env=env, check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["lakefs"]["commit"] == e.row.lakefs_commit and doc["proof"]["verified"] is True
    out = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "diff", world.entries[1].row.lakefs_commit, e.row.lakefs_commit, "--json"],
        capture_output=True, env=env, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["b"]["index"] == 9
    out = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "rollback", "--commit", "no-such-commit"],
        capture_output=True, env=env, check=False,
    )
    assert out.returncode == 1 and b"no row for lakeFS commit" in out.stderr
    assert decode_row(world.entries[9].line) == e.row


def test_commands_exit_1_when_the_proof_fails(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    with Ledger.init(d, origin=ORIGIN) as led:
        led.append(sample_jsonl(10), signer=load_signer(led.storage.read(SKEY_KEY)))
        commit = led.entry(4).row.lakefs_commit
    for tile in (d / "tile" / "0").rglob("*"):
        if tile.is_file():
            data = bytearray(tile.read_bytes())
            data[0] ^= 1  # leaf 0's hash: under a sibling of leaf 4
            tile.write_bytes(bytes(data))
    # Proven reads: the lookup refuses the row before any plan, narrative or PROV document is made.
    res = kfm("rollback", "--commit", commit, "--ledger", str(d), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["error"]["type"] == "CorruptLedgerError"
    assert "row 4 (line 5 " in res.stderr and "tile/0/000" in res.stderr
    for command in ("explain", "lineage"):
        res = kfm(command, "--commit", commit, "--ledger", str(d))
        assert res.exit_code == 1 and "row 4 (line 5 " in res.stderr, (command, res.stderr)
