"""`kfm impact` and `kfm report energy` on an S3 ledger (SeaweedFS): the same reports as on a
local ledger holding the same rows, read from the entry bundles and proven against the signed
root; a changed bundle is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kfm_ledger import schema
from kfm_ledger.core.entry_bundle import encode_entry_bundle
from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import CorruptLedgerError, EnergySourceError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.remote import RemoteLedger
from kfm_ledger.ops.energy import energy_report
from kfm_ledger.ops.impact import Artifact, artifacts_of, impact_of_artifact, impact_of_entry
from kfm_ledger.s3 import parse_s3_url
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage.s3 import S3Storage

ORIGIN = "test.kfm.example/s3-analytics"
SIGNER = Signer.generate(ORIGIN)
ROWS = 700  # two full entry bundles and a partial one
LINES = sample_jsonl(ROWS).splitlines()
PIECES = ((0, 5), (5, 300), (300, ROWS))


def batch(start: int, stop: int) -> bytes:
    return b"".join(line + b"\n" for line in LINES[start:stop])


@pytest.fixture
def ledgers(s3_server, s3_location: str, tmp_path: Path) -> tuple[Ledger, RemoteLedger]:
    """A local ledger and an S3 ledger, both given the same appends with the same key."""
    local = Ledger.init(tmp_path / "local", origin=ORIGIN, signer=SIGNER)
    storage = S3Storage(s3_server.client(parse_s3_url(s3_location).prefix), cache_dir=tmp_path / "cache")
    remote = RemoteLedger.init(storage, origin=ORIGIN, signer=SIGNER)
    for a, b in PIECES:
        local.append(batch(a, b), signer=SIGNER)
        remote.append(batch(a, b), signer=SIGNER)
    assert (remote.size, remote.root) == (local.size, local.root) == (ROWS, local.root)
    yield local, remote
    local.close()
    remote.close()
    storage.close()


def selectors() -> list[Artifact]:
    """Artifacts of a few rows, each with and without its version / hash / ref."""
    out: list[Artifact] = []
    for line in (LINES[3], LINES[400], LINES[ROWS - 1]):
        for a in artifacts_of(schema.decode_row(line)):
            for s in (a, Artifact(a.kind, a.key)):
                if s not in out:
                    out.append(s)
    assert {a.kind for a in out} == {"model", "config", "dataset"}
    return out


def test_energy_report_is_the_local_ledgers(ledgers: tuple[Ledger, RemoteLedger]) -> None:
    local, remote = ledgers
    want = energy_report(local, source="jsonl").to_json()
    assert want["totals"]["rows"] == ROWS and want["source"] == "jsonl"
    for source in ("auto", "jsonl"):
        assert energy_report(remote, source=source).to_json() == want  # type: ignore[arg-type]
    remote.verify_reads = False
    assert energy_report(remote).to_json() == want
    seen: list[tuple[int, int]] = []
    energy_report(remote, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (ROWS, ROWS)


def test_impact_reports_are_the_local_ledgers(ledgers: tuple[Ledger, RemoteLedger]) -> None:
    local, remote = ledgers
    found_some = False
    for selector in selectors():
        want = impact_of_artifact(local, selector, source="jsonl").to_json()
        got = impact_of_artifact(remote, selector).to_json()
        assert got == want, selector
        found_some = found_some or bool(want["producers"])
    assert found_some
    for index in (0, 3, 299, 300, ROWS - 1):
        want = impact_of_entry(local, local.entry(index), source="jsonl").to_json()
        assert impact_of_entry(remote, remote.entry(index)).to_json() == want, index
        commit = schema.decode_row(LINES[index]).lakefs_commit
        assert impact_of_entry(remote, remote.get(commit), source="jsonl").to_json() == want


def test_the_mirror_source_is_refused_with_the_way_round(ledgers: tuple[Ledger, RemoteLedger]) -> None:
    _, remote = ledgers
    with pytest.raises(EnergySourceError, match="--source jsonl"):
        energy_report(remote, source="mirror")
    with pytest.raises(EnergySourceError, match="--source jsonl"):
        impact_of_artifact(remote, selectors()[0], source="mirror")


def tamper(s3_server, s3_location: str) -> None:
    """Entry bundle 001 with one row replaced by another valid row: only the proof finds it."""
    client = s3_server.client(parse_s3_url(s3_location).prefix)
    other = sample_jsonl(ROWS, seed=7).splitlines()
    entries = LINES[256:512]
    entries[10] = other[266]
    client.put("tile/entries/001", encode_entry_bundle(entries))


def test_a_changed_entry_bundle_is_refused(ledgers: tuple[Ledger, RemoteLedger], s3_server, s3_location: str,
                                          tmp_path: Path) -> None:
    _, remote = ledgers
    tamper(s3_server, s3_location)
    with pytest.raises(CorruptLedgerError, match="signed root"):
        energy_report(remote)
    for selector in selectors():
        with pytest.raises(CorruptLedgerError, match="signed root"):
            impact_of_artifact(remote, selector)
    with pytest.raises(CorruptLedgerError):
        impact_of_entry(remote, remote.entry(3))
    remote.verify_reads = False  # --unverified reads what is stored
    assert energy_report(remote).to_json()["tree_size"] == ROWS


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def env(s3_server, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KFM_"))}
    e.update(s3_server.env())
    e["KFM_CACHE_DIR"] = str(tmp_path / "cli-cache")
    return e


def kfm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kfm_ledger", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def same_output(env: dict[str, str], s3: str, local: Path, *args: str) -> str:
    got = kfm(env, *args, "--ledger", s3)
    want = kfm(env, *args, "--ledger", str(local))
    assert got.returncode == want.returncode == 0, (got.stderr, want.stderr)
    assert got.stdout == want.stdout, args
    assert got.stdout.strip()
    return got.stdout


def test_cli_output_is_the_local_ledgers(ledgers: tuple[Ledger, RemoteLedger], env: dict[str, str],
                                         s3_location: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    model = next(a for a in selectors() if a.kind == "model" and a.detail is not None)
    dataset = next(a for a in selectors() if a.kind == "dataset" and a.detail is None)
    doc: dict[str, Any] = json.loads(same_output(env, s3_location, local, "report", "energy", "--json"))
    assert doc["tree_size"] == ROWS
    same_output(env, s3_location, local, "report", "energy", "--csv")
    same_output(env, s3_location, local, "report", "energy")
    doc = json.loads(same_output(env, s3_location, local, "impact", "--model", f"{model.key}@{model.detail}",
                                 "--json"))
    assert doc["tree_size"] == ROWS and doc["producers"]
    same_output(env, s3_location, local, "impact", "--dataset", dataset.key)
    commit = schema.decode_row(LINES[3]).lakefs_commit
    same_output(env, s3_location, local, "impact", "--commit", commit, "--json")
    same_output(env, s3_location, local, "impact", "--index", "3")


def test_cli_refuses_a_changed_bundle(ledgers: tuple[Ledger, RemoteLedger], env: dict[str, str], s3_server,
                                      s3_location: str) -> None:
    tamper(s3_server, s3_location)
    for args in (("report", "energy", "--json"), ("impact", "--dataset", selectors()[-1].key, "--json")):
        res = kfm(env, *args, "--ledger", s3_location)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and "signed root" in res.stderr and "entry bundles" in res.stderr
        doc = json.loads(res.stdout)  # no report: only the --json error document (docs/cli.md)
        assert doc["ok"] is False and doc["error"]["type"] == "CorruptLedgerError" and "producers" not in doc
    res = kfm(env, "report", "energy", "--source", "mirror", "--ledger", s3_location)
    assert res.returncode == 1 and "--source jsonl" in res.stderr


# ------------------------------------------------------------------ the mirror in a local file


def test_mirror_out_query_and_readers_on_a_local_mirror_file(
    ledgers: tuple[Ledger, RemoteLedger], env: dict[str, str], s3_location: str, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    mirror = tmp_path / "s3-mirror.parquet"
    wrote = json.loads(kfm(env, "mirror", "--ledger", s3_location, "--out", str(mirror), "--json").stdout)
    assert wrote["rows"] == ROWS and wrote["path"] == str(mirror)
    assert kfm(env, "mirror", "--ledger", str(local)).returncode == 0
    assert mirror.read_bytes() == (local / "rollback-index.parquet").read_bytes()  # the same file, byte for byte
    check = kfm(env, "mirror", "--check", "--ledger", s3_location, "--out", str(mirror))
    assert check.returncode == 0 and "byte-identical" in check.stdout
    sql = "SELECT producer, count(*) AS n, sum(leaf_index) AS s FROM rollback_index GROUP BY producer ORDER BY producer"
    got = kfm(env, "query", sql, "--ledger", s3_location, "--mirror-file", str(mirror), "--json")
    want = kfm(env, "query", sql, "--ledger", str(local), "--json")
    assert got.returncode == want.returncode == 0, got.stderr
    assert got.stdout == want.stdout and json.loads(got.stdout)["rows"]
    model = next(a for a in selectors() if a.kind == "model" and a.detail is not None)
    for args in (("report", "energy", "--json", "--source", "mirror"),
                 ("impact", "--model", f"{model.key}@{model.detail}", "--json", "--source", "mirror"),
                 ("impact", "--index", "3", "--json", "--source", "mirror")):
        got = kfm(env, *args, "--ledger", s3_location, "--mirror-file", str(mirror))
        want = kfm(env, *args, "--ledger", str(local))
        assert got.returncode == want.returncode == 0, (args, got.stderr)
        assert got.stdout == want.stdout, args
    assert json.loads(got.stdout)["tree_size"] == ROWS


def test_a_stale_or_changed_mirror_file_is_refused(
    ledgers: tuple[Ledger, RemoteLedger], env: dict[str, str], s3_location: str, tmp_path: Path
) -> None:
    _, remote = ledgers
    mirror = tmp_path / "m.parquet"
    assert kfm(env, "mirror", "--ledger", s3_location, "--out", str(mirror)).returncode == 0
    missing = kfm(env, "query", "SELECT 1", "--ledger", s3_location, "--mirror-file",
                  str(tmp_path / "none.parquet"))
    assert missing.returncode == 1 and "none.parquet" in missing.stderr
    remote.append(sample_jsonl(3, start=ROWS), signer=SIGNER)  # the bucket moves on: the file is stale
    res = kfm(env, "query", "SELECT count(*) FROM rollback_index", "--ledger", s3_location, "--mirror-file",
              str(mirror))
    assert res.returncode == 1 and "stale" in res.stderr.lower() and "Traceback" not in res.stderr
    res = kfm(env, "report", "energy", "--json", "--source", "mirror", "--ledger", s3_location,
              "--mirror-file", str(mirror))
    assert res.returncode == 1 and "stale" in res.stderr
    auto = json.loads(kfm(env, "report", "energy", "--json", "--ledger", s3_location, "--mirror-file",
                          str(mirror)).stdout)
    assert auto["source"] == "jsonl" and auto["tree_size"] == ROWS + 3  # auto falls back to the proven scan
    res = kfm(env, "mirror", "--check", "--ledger", s3_location, "--out", str(mirror))
    assert res.returncode == 1 and "stale" in (res.stdout + res.stderr).lower()
    assert kfm(env, "mirror", "--ledger", s3_location, "--out", str(mirror)).returncode == 0  # regenerated
    res = kfm(env, "query", "SELECT count(*) AS n FROM rollback_index", "--ledger", s3_location, "--mirror-file",
              str(mirror), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["rows"] == [[ROWS + 3]]
