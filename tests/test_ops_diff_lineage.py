"""`diff_entries`, `lineage_prov` (PROV-O JSON-LD) and `explain_entry`."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from kfm_ledger.core import merkle
from kfm_ledger.errors import CorruptLedgerError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.ops.diff import DIFF_FORMAT, diff_entries, format_duration, render_diff
from kfm_ledger.ops.lineage import (
    EXPLAIN_FORMAT,
    PROV_CONTEXT,
    explain_entry,
    find_previous_on_branch,
    lineage_prov,
    render_explanation,
)
from kfm_ledger.ops.rollback import prove_entry
from kfm_ledger.sample import sample_row
from kfm_ledger.schema import Config, DataSnapshot, EnergyCarbon, Entry, Model, Row, encode_row

from conftest import ORIGIN, fill

H = {c: c * 64 for c in "0123456789abcdef"}


def entry(index: int, row: Row) -> Entry:
    return Entry(index, encode_row(row), row)


def base_row(**changes) -> Row:
    return msgspec.structs.replace(sample_row(10), **changes)


def m(name: str, version: str, uri: str | None = None) -> Model:
    return Model(name=name, version=version, uri=uri or f"s3://kfm-models/{name}/{version}.bin")


def snap(coll: str, ref: str) -> DataSnapshot:
    return DataSnapshot(stac=f"s3://kfm-stac/{coll}/collection.json", lakefs_ref=f"lakefs://kfm-main@{ref}/stac/{coll}")


# ------------------------------------------------------------------------ diff


def test_diff_models_configs_snapshots_fields_energy() -> None:
    a = entry(
        3,
        base_row(
            lakefs_branch="staging",
            producer="airflow:dag=kfm-promote",
            created_at="2025-03-01T00:00:00Z",
            models=[m("focus-transformer", "3.1.0"), m("hydro-lstm", "2.0.0"), m("same", "1.0")],
            configs=[
                Config(path="a.yaml", sha256=H["a"]),
                Config(path="b.yaml", sha256=H["b"]),
                Config(path="gone.yaml", sha256=H["c"]),
            ],
            data_snapshot=[snap("landsat", "r1"), snap("hydro", "r1")],
            energy_carbon=EnergyCarbon(kwh=2.0, co2e_kg=1.0),
        ),
    )
    b = entry(
        9,
        base_row(
            lakefs_branch="prod",
            producer="dagster:job=focus-retrain",
            created_at="2025-03-02T01:02:03Z",
            models=[m("same", "1.0"), m("focus-transformer", "3.2.0"), m("landcover-unet", "1.0.0")],
            configs=[
                Config(path="a.yaml", sha256=H["a"]),
                Config(path="b.yaml", sha256=H["d"]),
                Config(path="new.yaml", sha256=H["e"]),
            ],
            data_snapshot=[snap("landsat", "r1"), snap("hydro", "r2")],
            energy_carbon=EnergyCarbon(kwh=2.5, co2e_kg=0.75),
        ),
    )
    d = diff_entries(a, b)
    assert [(c.name, c.from_version, c.to_version) for c in d.models_changed] == [
        ("focus-transformer", "3.1.0", "3.2.0"),
    ]
    assert [x.name for x in d.models_added] == ["landcover-unet"]
    assert [x.name for x in d.models_removed] == ["hydro-lstm"]
    assert [(c.path, c.from_sha256, c.to_sha256) for c in d.configs_changed] == [("b.yaml", H["b"], H["d"])]
    assert [c.path for c in d.configs_added] == ["new.yaml"]
    assert [c.path for c in d.configs_removed] == ["gone.yaml"]
    assert d.snapshots_added == (snap("hydro", "r2"),)
    assert d.snapshots_removed == (snap("hydro", "r1"),)
    assert d.branch is not None and (d.branch.from_value, d.branch.to_value) == ("staging", "prod")
    assert d.producer is not None and d.producer.to_value == "dagster:job=focus-retrain"
    assert d.repo is None
    assert d.energy_kwh.delta == pytest.approx(0.5) and d.energy_kwh.percent == pytest.approx(25.0)
    assert d.carbon_kg.delta == pytest.approx(-0.25) and d.carbon_kg.percent == pytest.approx(-25.0)
    assert d.seconds == 86400 + 3723
    assert d.environment_changed

    j = d.to_json()
    assert j["format"] == DIFF_FORMAT
    assert j["a"]["index"] == 3 and j["b"]["index"] == 9
    assert j["a"]["lakefs_commit"] == a.row.lakefs_commit
    assert j["models"]["changed"] == [
        {
            "name": "focus-transformer",
            "from": {"version": "3.1.0", "uri": "s3://kfm-models/focus-transformer/3.1.0.bin"},
            "to": {"version": "3.2.0", "uri": "s3://kfm-models/focus-transformer/3.2.0.bin"},
        }
    ]
    assert j["models"]["added"] == [{"name": "landcover-unet", "version": "1.0.0", "uri": "s3://kfm-models/landcover-unet/1.0.0.bin"}]
    assert j["configs"]["changed"] == [{"path": "b.yaml", "from_sha256": H["b"], "to_sha256": H["d"]}]
    assert j["configs"]["removed"] == [{"path": "gone.yaml", "sha256": H["c"]}]
    assert j["data_snapshot"]["added"] == [{"stac": "s3://kfm-stac/hydro/collection.json", "lakefs_ref": "lakefs://kfm-main@r2/stac/hydro"}]
    assert j["lakefs_branch"] == {"from": "staging", "to": "prod"}
    assert j["lakefs_repo"] is None
    assert j["energy_carbon"]["kwh"] == {"from": 2.0, "to": 2.5, "delta": 0.5, "percent": 25.0}
    assert j["energy_carbon"]["co2e_kg"] == {"from": 1.0, "to": 0.75, "delta": -0.25, "percent": -25.0}
    assert j["seconds_between"] == 90123.0
    json.dumps(j)  # plain JSON


def test_diff_identical_and_reversed() -> None:
    a = entry(1, base_row())
    d = diff_entries(a, a)
    assert not d.environment_changed and d.seconds == 0
    assert d.energy_kwh.delta == 0
    assert "are the same" in render_diff(d)
    b = entry(2, base_row(created_at="2024-12-31T23:00:00Z"))
    assert diff_entries(a, b).seconds < 0  # b older than a
    assert "earlier than a" in render_diff(diff_entries(a, b))


def test_diff_zero_energy_has_no_percent() -> None:
    a = entry(1, base_row(energy_carbon=EnergyCarbon(kwh=0.0, co2e_kg=0.0)))
    b = entry(2, base_row(energy_carbon=EnergyCarbon(kwh=1.0, co2e_kg=0.5)))
    j = diff_entries(a, b).to_json()["energy_carbon"]
    assert j["kwh"]["percent"] is None and j["kwh"]["delta"] == 1.0


def test_diff_model_uri_change_and_duplicate_names() -> None:
    a = entry(1, base_row(models=[m("x", "1", "s3://kfm-models/x/old.bin")]))
    b = entry(2, base_row(models=[m("x", "1", "s3://kfm-models/x/new.bin")]))
    d = diff_entries(a, b)
    assert len(d.models_changed) == 1 and d.models_changed[0].to_uri.endswith("new.bin")
    assert "uri changed" in render_diff(d)
    # the same name twice: identical items pair off first
    a = entry(1, base_row(models=[m("x", "1"), m("x", "2")]))
    b = entry(2, base_row(models=[m("x", "1")]))
    d = diff_entries(a, b)
    assert d.models_changed == () and d.models_added == () and [x.version for x in d.models_removed] == ["2"]
    b = entry(2, base_row(models=[m("x", "3")]))
    d = diff_entries(a, b)
    assert d.models_changed == () and [x.version for x in d.models_added] == ["3"]
    assert sorted(x.version for x in d.models_removed) == ["1", "2"]


def test_render_diff_is_an_aligned_table() -> None:
    a = entry(1, base_row(models=[m("focus-transformer", "3.1.0")], lakefs_branch="dev"))
    b = entry(2, base_row(models=[m("focus-transformer", "3.2.0")]))
    text = render_diff(diff_entries(a, b))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("what"))
    table = lines[header:]
    col = table[0].index("item")
    assert all(len(line) < col or line[col - 2 : col] == "  " for line in table)
    assert any(line.startswith("model ~") and "3.1.0" in line and "3.2.0" in line for line in table)
    assert any(line.startswith("branch ~") and "dev" in line and "staging" in line for line in table)
    assert any(line.startswith("energy") for line in table)


def test_format_duration() -> None:
    assert format_duration(93784) == "1d 2h 3m 4s"
    assert format_duration(-60) == "-1m"
    assert format_duration(0.25) == "0.25s"
    assert format_duration(3600) == "1h"


# --------------------------------------------------------------------- lineage


def by_id(doc: dict) -> dict[str, dict]:
    return {node["@id"]: node for node in doc["@graph"]}


def test_lineage_graph_nodes_and_links() -> None:
    row = base_row(
        models=[m("focus-transformer", "3.1.0")],
        configs=[Config(path="configs/pipeline.yaml", sha256=H["a"])],
        data_snapshot=[snap("landsat", "abc123")],
    )
    e = entry(42, row)
    doc = json.loads(json.dumps(lineage_prov(e, ORIGIN)))
    assert doc["@context"] == PROV_CONTEXT
    assert doc["@context"]["prov"] == "http://www.w3.org/ns/prov#"
    nodes = by_id(doc)
    run = nodes[f"urn:openlineage:run:{row.openlineage_run_id}"]
    assert run["@type"] == "prov:Activity"
    assert run["kfm:openlineageRunId"] == row.openlineage_run_id
    assert run["kfm:otelTraceId"] == row.otel_trace_id
    assert run["prov:endedAtTime"] == {"@value": row.created_at, "@type": "xsd:dateTime"}
    assert "prov:startedAtTime" not in run
    agent = nodes[run["prov:wasAssociatedWith"]["@id"]]
    assert agent["@type"] == "prov:SoftwareAgent" and agent["rdfs:label"] == row.producer
    used = [u["@id"] for u in run["prov:used"]]
    assert used == [
        "lakefs://kfm-main@abc123/stac/landsat",
        "s3://kfm-models/focus-transformer/3.1.0.bin",
        f"urn:kfm:config:configs/pipeline.yaml:sha256:{H['a']}",
    ]
    snapshot, model, config = (nodes[u] for u in used)
    assert snapshot["@type"] == ["prov:Entity", "kfm:DataSnapshot"]
    assert snapshot["kfm:stac"]["@value"] == "s3://kfm-stac/landsat/collection.json"
    assert model["kfm:modelName"] == "focus-transformer" and model["kfm:modelVersion"] == "3.1.0"
    assert config["kfm:path"] == "configs/pipeline.yaml" and config["kfm:sha256"] == H["a"]
    generated = [n for n in doc["@graph"] if n.get("prov:wasGeneratedBy") == {"@id": run["@id"]}]
    kinds = {n["@type"][1]: n for n in generated}
    assert set(kinds) == {"kfm:RollbackBundle", "kfm:Attestation", "kfm:LakefsCommit"}
    assert kinds["kfm:RollbackBundle"]["@id"] == row.artifact_uri
    assert kinds["kfm:RollbackBundle"]["kfm:sha256"] == row.checksums.artifact_sha256
    assert kinds["kfm:Attestation"]["@id"] == row.signatures.in_toto
    assert kinds["kfm:Attestation"]["kfm:attests"] == {"@id": row.artifact_uri}
    commit = kinds["kfm:LakefsCommit"]
    assert commit["@id"] == f"lakefs://{row.lakefs_repo}/{row.lakefs_commit}"
    assert commit["kfm:lakefsBranch"] == row.lakefs_branch
    record = nodes[f"urn:kfm:ledger:{ORIGIN}:42"]
    assert record["kfm:leafIndex"] == 42
    assert record["kfm:leafHash"] == base64.b64encode(merkle.leaf_hash(e.line)).decode()
    assert "kfm:inclusionVerified" not in record
    # every @id reference points at a node of the graph
    def refs(value):
        if isinstance(value, dict):
            if set(value) == {"@id"}:
                yield value["@id"]
            for v in value.values():
                yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)

    assert set(refs(doc["@graph"])) <= set(nodes)


def test_lineage_escapes_identifiers_and_dedups_inputs() -> None:
    row = base_row(
        openlineage_run_id="run with spaces/and#hash",
        models=[m("x", "1"), m("x", "1")],
    )
    doc = lineage_prov(entry(0, row), "odd origin")
    ids = [n["@id"] for n in doc["@graph"]]
    assert "urn:openlineage:run:run%20with%20spaces/and%23hash" in ids
    assert "urn:kfm:ledger:odd%20origin:0" in ids
    assert len(ids) == len(set(ids))
    assert not any(" " in i for i in ids)


def test_lineage_with_proof(mem_ledger: Ledger) -> None:
    led = fill(mem_ledger, 5)
    e = led.entry(2)
    doc = lineage_prov(e, led.origin, proof=prove_entry(led, e))
    record = by_id(doc)[f"urn:kfm:ledger:{ORIGIN}:2"]
    assert record["kfm:inclusionVerified"] is True and record["kfm:treeSize"] == 5


def test_lineage_parses_as_json_ld_with_rdflib() -> None:
    rdflib = pytest.importorskip("rdflib")
    doc = lineage_prov(entry(7, base_row()), ORIGIN)
    g = rdflib.Graph().parse(data=json.dumps(doc), format="json-ld")
    prov = rdflib.Namespace("http://www.w3.org/ns/prov#")
    assert len(list(g.triples((None, prov.used, None)))) == len(base_row().models) + len(base_row().configs) + len(
        base_row().data_snapshot
    )


# --------------------------------------------------------------------- explain


def brute_previous(led: Ledger, index: int) -> int | None:
    r = led.entry(index).row
    for i in range(index - 1, -1, -1):
        p = led.entry(i).row
        if (p.lakefs_repo, p.lakefs_branch) == (r.lakefs_repo, r.lakefs_branch):
            return i
    return None


@pytest.fixture
def led(mem_ledger: Ledger) -> Ledger:
    return fill(mem_ledger, 120)


def test_previous_on_branch_matches_a_brute_force_scan(led: Ledger) -> None:
    for index in (0, 1, 2, 3, 5, 15, 16, 17, 64, 100, 119):
        prev, search = find_previous_on_branch(led, led.entry(index))
        want = brute_previous(led, index)
        assert (prev.index if prev else None) == want, index
        if prev is not None:
            assert prev.line == led.entry(want).line
        else:
            assert search.exhausted


def test_previous_search_respects_the_limit(led: Ledger) -> None:
    e = led.entry(100)
    want = brute_previous(led, 100)
    assert want is not None and 100 - want > 1
    prev, search = find_previous_on_branch(led, e, scan_limit=100 - want - 1)
    assert prev is None and not search.exhausted and search.scanned == 100 - want - 1
    prev, search = find_previous_on_branch(led, e, scan_limit=100 - want)
    assert prev is not None and prev.index == want and search.scanned == 100 - want


def test_explain_narrative_and_json(led: Ledger) -> None:
    e = led.entry(100)
    x = explain_entry(led, e)
    prev = brute_previous(led, 100)
    assert x.previous is not None and x.previous.index == prev
    assert x.diff is not None and x.diff.b.index == 100 and x.diff.a.index == prev
    r = e.row
    text = render_explanation(x)
    kwh = f"{r.energy_carbon.kwh:g} kWh"
    for needle in (r.lakefs_commit, r.producer, r.created_at, r.openlineage_run_id, r.otel_trace_id, kwh):
        assert needle in text
    assert f"(#{prev}," in text
    assert "inclusion proof verifies" in text
    j = x.to_json()
    assert j["format"] == EXPLAIN_FORMAT
    assert j["entry"]["index"] == 100 and j["entry"]["lakefs_commit"] == r.lakefs_commit
    assert j["entry"]["otel_trace_id"] == r.otel_trace_id
    previous = led.entry(prev).row
    assert j["previous"] == {"index": prev, "lakefs_commit": previous.lakefs_commit, "created_at": previous.created_at}
    assert j["changes"]["a"]["index"] == prev
    assert j["proof"]["verified"] is True and j["proof"]["tree_size"] == 120
    assert j["narrative"] == text.splitlines()


def test_explain_first_entry_and_limited_search(led: Ledger) -> None:
    x = explain_entry(led, led.entry(0))
    assert x.previous is None and x.diff is None and x.to_json()["changes"] is None
    assert "first entry" in render_explanation(x)
    x = explain_entry(led, led.entry(100), scan_limit=1)
    assert x.previous is None and "--scan-limit" in render_explanation(x)


def test_explain_warns_when_the_proof_fails(led: Ledger) -> None:
    for key in list(led.storage.list("tile/0/")):
        data = bytearray(led.storage.read(key))
        data[0] ^= 1
        led.storage.objects[key] = bytes(data)  # type: ignore[attr-defined]
    x = explain_entry(led, led.entry(50, verified=False), scan_limit=0)
    assert not x.proof.verified
    assert "inclusion proof for index 50 that does not verify" in (x.proof.reason or ""), x.proof.reason
    assert "WARNING: its inclusion proof does NOT verify: stored tiles give an inclusion proof for index 50" in (
        render_explanation(x)
    )
    assert x.to_json()["proof"]["verified"] is False
    with pytest.raises(CorruptLedgerError, match=r"row 50 \(line 51 "):  # a proven lookup refuses it
        led.entry(50)
