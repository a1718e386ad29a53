"""verify_deep / check_rows: every check ok on a good world, and each failure named (row, check,
expected vs found); rows read through the proven reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest

from kfm_ledger.errors import CorruptLedgerError, VerificationError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.schema import encode_row
from kfm_ledger.schema.rows import DataSnapshot, EnergyCarbon
from kfm_ledger.verify.deep import check_rows, verify_deep
from kfm_ledger.verify.deep_checks import parse_lakefs_ref

from .helpers import new_key, signed_statement
from .world import World, make_world
from conftest import ORIGIN, signer_of


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path / "world")


def _ledger(tmp_path: Path, rows: list) -> Ledger:
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    led.append(rows, signer=signer_of(led))
    return led


def _by_check(report, index: int) -> dict[str, list]:
    row = next(r for r in report.rows if r.index == index)
    out: dict[str, list] = {}
    for c in row.checks:
        out.setdefault(c.check, []).append(c)
    return out


def test_all_checks_ok(world: World, tmp_path: Path) -> None:
    led = _ledger(tmp_path, [world.row(i) for i in range(5)])
    report = verify_deep(led, world.config(), configs_dir=world.configs_dir)
    assert report.ok, report.render_text()
    assert report.summary() == {"ok": 30, "failed": 0, "unsupported": 0, "warning": 0, "skipped": 0}
    doc = report.to_json()
    assert doc["ok"] is True and doc["rows"] == [] and doc["checked_rows"] == 5
    assert len(report.to_json(all_rows=True)["rows"]) == 5
    without = verify_deep(led, world.config())
    assert without.ok and without.summary()["skipped"] == 5  # configs: no --configs DIR


def test_each_failure_is_named(world: World, tmp_path: Path) -> None:
    rows = [world.row(i) for i in range(6)]
    # 0: artifact bytes changed
    world.artifact_path(rows[0].lakefs_commit).write_bytes(b"changed")
    # 1: attestation signed by another key
    world.attestation_path(rows[1].lakefs_commit).write_bytes(
        signed_statement(new_key("ed25519"), rows[1].checksums.artifact_sha256))
    # 2: attestation missing
    world.attestation_path(rows[2].lakefs_commit).unlink()
    # 3: lakefs ref to another commit, STAC that is not STAC
    rows[3] = msgspec.structs.replace(rows[3], data_snapshot=[
        DataSnapshot(stac="s3://kfm-stac/kansas-hydro/nope.json", lakefs_ref="lakefs://kfm-main@othercommit/x")])
    # 4: implausible energy (warning only)
    rows[4] = msgspec.structs.replace(rows[4], energy_carbon=EnergyCarbon(kwh=1.0, co2e_kg=9.0))
    led = _ledger(tmp_path, rows)
    report = verify_deep(led, world.config())
    assert not report.ok
    c0 = _by_check(report, 0)["artifact"][0]
    assert c0.status == "failed" and f"expected {rows[0].checksums.artifact_sha256}" in c0.message
    assert f"found {hashlib.sha256(b'changed').hexdigest()}" in c0.message
    c1 = _by_check(report, 1)["attestation"][0]
    assert c1.status == "failed" and "configured key" in c1.message
    c2 = _by_check(report, 2)["attestation"][0]
    assert c2.status == "failed" and "no such file" in c2.message
    c3 = _by_check(report, 3)
    assert c3["stac"][0].status == "failed" and "no such file" in c3["stac"][0].message
    assert c3["lakefs_ref"][0].status == "failed" and "found ref 'othercommit'" in c3["lakefs_ref"][0].message
    c4 = _by_check(report, 4)["energy"][0]
    assert c4.status == "warning" and "9 kg CO2e per kWh" in c4.message
    doc = report.to_json()
    assert [r["index"] for r in doc["rows"]] == [0, 1, 2, 3, 4]
    assert doc["summary"]["failed"] == 5 and doc["summary"]["warning"] == 1
    lines = report.failure_lines()
    assert any(line.startswith(f"row 0 ({rows[0].lakefs_commit}): artifact: failed") for line in lines)
    text = report.render_text()
    assert "row 3  commit" in text and "FAILED" in text.splitlines()[-1]


def test_stac_checks(world: World, tmp_path: Path) -> None:
    stac = world.mirror / "stac"
    (stac / "bad.json").write_text("{not json")
    (stac / "notstac.json").write_text(json.dumps({"hello": "world"}))
    (stac / "invalid.json").write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "x"}))
    (stac / "cat.json").write_text(json.dumps({"type": "Catalog", "stac_version": "1.1.0", "id": "c",
                                               "description": "d", "links": []}))
    (stac / "item.json").write_text(json.dumps({
        "type": "Feature", "stac_version": "1.0.0", "id": "i", "geometry": {"type": "Point", "coordinates": [-98, 38]},
        "bbox": [-98, 38, -98, 38], "properties": {"datetime": "2020-01-01T00:00:00Z"}, "links": [], "assets": {}}))
    (stac / "old.json").write_text(json.dumps({"type": "Catalog", "stac_version": "0.9.0", "id": "c",
                                               "description": "d", "links": []}))
    names = ["bad", "notstac", "invalid", "cat", "item", "old", "missing"]
    base = world.row(0)
    row = msgspec.structs.replace(base, data_snapshot=[
        DataSnapshot(stac=f"s3://kfm-stac/{n}.json", lakefs_ref=base.data_snapshot[0].lakefs_ref) for n in names])
    report = check_rows([row], world.config())
    got = {c.target.rsplit("/", 1)[1][:-5]: c for c in report.rows[0].checks if c.check == "stac"}
    assert got["bad"].status == "failed" and "not valid JSON" in got["bad"].message
    assert got["notstac"].status == "failed" and "valid JSON but not STAC" in got["notstac"].message
    assert got["invalid"].status == "failed" and "not a valid STAC Catalog" in got["invalid"].message
    assert got["cat"].status == "ok" and "STAC Catalog" in got["cat"].message
    assert got["item"].status == "ok" and "STAC Item" in got["item"].message
    assert got["old"].status == "unsupported" and "0.9.0" in got["old"].message
    assert got["missing"].status == "failed" and "no such file" in got["missing"].message
    assert got["cat"].message.startswith("data_snapshot[3].stac")


def test_collection_from_the_world_is_valid(world: World) -> None:
    report = check_rows([world.row(0)], world.config())
    assert [c.status for c in report.rows[0].checks if c.check == "stac"] == ["ok"]


@pytest.mark.parametrize(
    ("ref", "status", "needle"),
    [
        ("lakefs://kfm-main@{commit}/p", "ok", "the row's commit"),
        ("lakefs://kfm-main@{branch}", "warning", "which moves"),
        ("lakefs://kfm-main@main~1/p", "failed", "relative"),
        ("lakefs://kfm-main@abcdef/p", "failed", "found ref 'abcdef'"),
        ("lakefs://Bad_Repo@{commit}", "failed", "not a lakeFS repository name"),
        ("lakefs://kfm-main@{commit}/a/../b", "failed", "'..'"),
    ],
)
def test_lakefs_ref(world: World, ref: str, status: str, needle: str) -> None:
    base = world.row(0)
    text = ref.format(commit=base.lakefs_commit, branch=base.lakefs_branch)
    row = msgspec.structs.replace(base, data_snapshot=[DataSnapshot(stac=base.data_snapshot[0].stac, lakefs_ref=text)])
    c = next(c for c in check_rows([row], world.config()).rows[0].checks if c.check == "lakefs_ref")
    assert c.status == status and needle in c.message, c.message


def test_parse_lakefs_ref() -> None:
    assert parse_lakefs_ref("lakefs://kfm@abc123/path/x") == ("kfm", "abc123", "path/x")
    assert parse_lakefs_ref("lakefs://kfm@main") == ("kfm", "main", None)
    for bad in ("lakefs://kfm", "s3://kfm@x", "lakefs://@x", "lakefs://kfm@/x"):
        with pytest.raises(ValueError):
            parse_lakefs_ref(bad)


def test_configs_check(world: World) -> None:
    row = world.row(0)
    assert [c.status for c in check_rows([row], world.config(), configs_dir=world.configs_dir).rows[0].checks
            if c.check == "configs"] == ["ok"]
    (world.configs_dir / "configs" / "pipeline.yaml").write_bytes(b"changed")
    c = next(c for c in check_rows([row], world.config(), configs_dir=world.configs_dir).rows[0].checks
             if c.check == "configs")
    assert c.status == "failed" and f"expected {row.configs[0].sha256}" in c.message
    (world.configs_dir / "configs" / "pipeline.yaml").unlink()
    c = next(c for c in check_rows([row], world.config(), configs_dir=world.configs_dir).rows[0].checks
             if c.check == "configs")
    assert c.status == "failed" and "found none" in c.message


def test_energy_range_from_config(world: World, tmp_path: Path) -> None:
    w2 = make_world(tmp_path / "w2", extra_toml="[energy]\nco2e_per_kwh = [0.5, 0.6]\n")
    row = w2.row(0)  # 0.45 kg per kWh
    c = next(c for c in check_rows([row], w2.config()).rows[0].checks if c.check == "energy")
    assert c.status == "warning" and "0.5-0.6" in c.message
    zero = msgspec.structs.replace(row, energy_carbon=EnergyCarbon(kwh=0.0, co2e_kg=0.0))
    c = next(c for c in check_rows([zero], w2.config()).rows[0].checks if c.check == "energy")
    assert c.status == "ok"


def test_commit_and_since_select_rows(world: World, tmp_path: Path) -> None:
    led = _ledger(tmp_path, [world.row(i) for i in range(3)])
    saved = led.checkpoint.note if isinstance(led.checkpoint.note, bytes) else led.checkpoint.note.encode()
    led.append([world.row(i) for i in range(3, 5)], signer=signer_of(led))
    since = verify_deep(led, world.config(), since=saved)
    assert [r.index for r in since.rows] == [3, 4]
    one = verify_deep(led, world.config(), commit=world.row(1).lakefs_commit[:12])
    assert [r.index for r in one.rows] == [1]


def test_since_from_another_log_is_refused(world: World, tmp_path: Path) -> None:
    led = _ledger(tmp_path, [world.row(0)])
    other = Ledger.init(tmp_path / "other", origin=ORIGIN)
    note = other.checkpoint.note
    with pytest.raises(VerificationError):
        verify_deep(led, world.config(), since=note if isinstance(note, bytes) else note.encode())


def test_rows_are_read_through_proven_reads(world: World, tmp_path: Path) -> None:
    led = _ledger(tmp_path, [world.row(i) for i in range(3)])
    path = Path(led.jsonl_path or "")
    lines = path.read_bytes().split(b"\n")
    other = encode_row(msgspec.structs.replace(world.row(1), producer="airflow:dag=evil"))
    lines[1] = other  # same commit, another producer: the signed tree no longer matches
    path.write_bytes(b"\n".join(lines))
    led.close()
    led = Ledger.open(tmp_path / "ledger")
    with pytest.raises(CorruptLedgerError):
        verify_deep(led, world.config())


def test_allow_unsupported(world: World, tmp_path: Path) -> None:
    stac = world.mirror / "stac" / "old.json"
    stac.write_text(json.dumps({"type": "Catalog", "stac_version": "0.9.0", "id": "c", "description": "d",
                                "links": []}))
    base = world.row(0)
    row = msgspec.structs.replace(base, data_snapshot=[
        DataSnapshot(stac="s3://kfm-stac/old.json", lakefs_ref=base.data_snapshot[0].lakefs_ref)])
    assert not check_rows([row], world.config()).ok
    allowed = check_rows([row], world.config(), allow_unsupported=True)
    assert allowed.ok and "unsupported allowed" in allowed.render_text()


# ------------------------------------------------------------------ fuzz (parsers of outside input)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_lakefs_ref_parser(text: str) -> None:
    try:
        repo, ref, path = parse_lakefs_ref(text)
    except ValueError:
        return
    assert text.startswith(f"lakefs://{repo}@{ref}") and ".." not in (path or "").split("/")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda d: json.dumps(d).encode(),
                           st.dictionaries(st.sampled_from(["type", "stac_version", "id", "links", "description",
                                                            "license", "extent", "geometry", "properties"]),
                                           st.one_of(st.none(), st.text(max_size=8),
                                                     st.sampled_from(["Catalog", "Collection", "Feature",
                                                                      "1.0.0", "1.1.0"]),
                                                     st.lists(st.integers(), max_size=3)), max_size=8))))
def test_fuzz_stac_validation_only_raises_stac_problem(data: bytes) -> None:
    from kfm_ledger.verify.stac_schema import StacProblem, validate_stac

    try:
        assert validate_stac(data) in ("Catalog", "Collection", "Item")
    except StacProblem:
        pass
