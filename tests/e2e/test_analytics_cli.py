"""End to end: `kfm mirror`, `kfm query`, `kfm report energy`, `kfm impact` on a generated ledger."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfm_ledger.cli import app
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import MIRROR_KEY, SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.schema import Row

from conftest import copy_ledger

ORIGIN = "e2e.kfm.example/analytics"
ROWS = 400
runner = CliRunner()


def kfm(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("analytics") / "ledger"
    with Ledger.init(d, origin=ORIGIN) as led:
        signer = load_signer(led.storage.read(SKEY_KEY))
        led.append(sample_jsonl(250), signer=signer)
        led.append(sample_jsonl(ROWS - 250, start=250), signer=signer)
    return d


@pytest.fixture(scope="module")
def rows(base: Path) -> list[Row]:
    with Ledger.open(base) as led:
        return [e.row for e in led.iter_entries()]


@pytest.fixture(scope="module")
def mirrored(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = copy_ledger(base, tmp_path_factory.mktemp("mirrored"))
    assert kfm("mirror", "--ledger", str(d)).exit_code == 0
    return d


@pytest.fixture
def scratch(base: Path, tmp_path: Path) -> Path:
    return copy_ledger(base, tmp_path)


def root_b64(d: Path) -> str:
    with Ledger.open(d) as led:
        return base64.b64encode(led.root).decode()


# ------------------------------------------------------------------ mirror


def test_mirror_json_field_by_field(scratch: Path) -> None:
    r = kfm("mirror", "--ledger", str(scratch), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    data = (scratch / MIRROR_KEY).read_bytes()
    assert doc == {
        "key": MIRROR_KEY,
        "path": str(scratch / MIRROR_KEY),
        "rows": ROWS,
        "bytes": len(data),
        "origin": ORIGIN,
        "tree_size": ROWS,
        "root": root_b64(scratch),
        "sha256": hashlib.sha256(data).hexdigest(),
        "ok": True,
    }
    again = json.loads(kfm("mirror", "--ledger", str(scratch), "--json").stdout)
    assert again == doc  # regenerating gives the same bytes
    r = kfm("mirror", "--ledger", str(scratch))
    assert r.stdout.splitlines()[0] == f"wrote {scratch / MIRROR_KEY}"
    assert f"  rows       {ROWS}" in r.stdout and f"  sha256     {doc['sha256']}" in r.stdout


def test_mirror_check(scratch: Path) -> None:
    d = str(scratch)
    r = kfm("mirror", "--ledger", d, "--check")
    assert r.exit_code == 1 and "mirror MISSING" in r.stderr and "run `kfm mirror`" in r.stderr
    assert kfm("mirror", "--ledger", d).exit_code == 0
    r = kfm("mirror", "--ledger", d, "--check", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc == {
        "state": "ok", "ok": True, "key": MIRROR_KEY, "path": str(scratch / MIRROR_KEY),
        "tree_size": ROWS, "root": root_b64(scratch),
        "ledger_size": ROWS, "ledger_root": root_b64(scratch), "mirror_size": ROWS,
        "mirror_root": root_b64(scratch), "regenerated": True, "problems": [],
    }
    old_root = root_b64(scratch)
    with Ledger.open(scratch) as led:  # append without regenerating
        led.append(sample_jsonl(5, start=ROWS), signer=load_signer(led.storage.read(SKEY_KEY)))
    r = kfm("mirror", "--ledger", d, "--check", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert (doc["state"], doc["ok"], doc["ledger_size"], doc["mirror_size"], doc["mirror_root"]) == (
        "stale", False, ROWS + 5, ROWS, old_root,
    )
    assert f"tree size {ROWS}" in doc["problems"][0] and "5 signed row(s)" in doc["problems"][0]
    r = kfm("mirror", "--ledger", d, "--check")
    assert r.exit_code == 1 and "mirror STALE" in r.stderr
    assert kfm("mirror", "--ledger", d).exit_code == 0
    path = scratch / MIRROR_KEY
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    r = kfm("mirror", "--ledger", d, "--check")
    assert r.exit_code == 1 and "mirror MODIFIED" in r.stderr and "its bytes differ from a regeneration" in r.stderr


# ------------------------------------------------------------------ query


SQL_BY_PRODUCER = (
    "SELECT producer, count(*) AS n, sum(energy_carbon.kwh) AS kwh FROM rollback_index "
    "GROUP BY producer ORDER BY producer"
)


def test_query_json_csv_text(mirrored: Path, rows: list[Row]) -> None:
    counts: dict[str, int] = defaultdict(int)
    kwh: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        counts[row.producer] += 1
        kwh[row.producer].append(row.energy_carbon.kwh)
    r = kfm("query", "--ledger", str(mirrored), SQL_BY_PRODUCER, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["format"] == "kfm.query/v1" and doc["tree_size"] == ROWS and doc["root"] == root_b64(mirrored)
    assert doc["columns"] == [
        {"name": "producer", "type": "VARCHAR"}, {"name": "n", "type": "BIGINT"}, {"name": "kwh", "type": "DOUBLE"},
    ]
    assert doc["row_count"] == len(counts)
    assert [row[:2] for row in doc["rows"]] == [[p, counts[p]] for p in sorted(counts)]
    for p, _n, total in doc["rows"]:
        assert total == pytest.approx(math.fsum(kwh[p]), rel=1e-12)
    r = kfm("query", "--ledger", str(mirrored), SQL_BY_PRODUCER, "--csv")
    lines = r.stdout.splitlines()
    assert lines[0] == "producer,n,kwh" and len(lines) == 1 + len(counts)
    assert lines[1].startswith(f"{sorted(counts)[0]},{counts[sorted(counts)[0]]},")
    r = kfm("query", "--ledger", str(mirrored), SQL_BY_PRODUCER)
    text = r.stdout.splitlines()
    assert text[0].split() == ["producer", "n", "kwh"] and set(text[1]) == {"-", " "}
    assert text[-1] == f"({len(counts)} rows)"


def test_query_errors(mirrored: Path, scratch: Path) -> None:
    r = kfm("query", "--ledger", str(mirrored), "SELECT 1", "--csv", "--json")
    assert r.exit_code == 2 and "cannot be used together" in r.stderr
    r = kfm("query", "--ledger", str(mirrored), "SELEC nonsense")
    assert r.exit_code == 1 and "the query failed" in r.stderr
    r = kfm("query", "--ledger", str(mirrored), "SELECT * FROM read_csv('/etc/passwd')")
    assert r.exit_code == 1 and "disabled by configuration" in r.stderr
    r = kfm("query", "--ledger", str(scratch), "SELECT 1")
    assert r.exit_code == 1 and "mirror MISSING" in r.stderr and "run `kfm mirror` to create it" in r.stderr


# ------------------------------------------------------------------ energy


def test_report_energy_json(mirrored: Path, rows: list[Row]) -> None:
    r = kfm("report", "energy", "--ledger", str(mirrored), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["format"] == "kfm.energy/v1" and doc["source"] == "mirror" and doc["tree_size"] == ROWS
    assert doc["root"] == root_b64(mirrored)
    fsum = lambda xs: round(math.fsum(xs), 9)  # noqa: E731
    assert doc["totals"] == {
        "rows": ROWS,
        "kwh": fsum(r.energy_carbon.kwh for r in rows),
        "co2e_kg": fsum(r.energy_carbon.co2e_kg for r in rows),
    }
    for section, key, attr in (("by_producer", "producer", "producer"), ("by_branch", "branch", "lakefs_branch")):
        groups: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            groups[getattr(row, attr)].append(row)
        expected = [
            {key: k, "rows": len(g), "kwh": fsum(x.energy_carbon.kwh for x in g),
             "co2e_kg": fsum(x.energy_carbon.co2e_kg for x in g)}
            for k, g in groups.items()
        ]
        expected.sort(key=lambda e: (-e["co2e_kg"], -e["kwh"], e[key]))
        assert doc[section] == expected, section
    assert [m["month"] for m in doc["by_month"]] == ["2025-01"]
    assert doc["by_month"][0]["rows"] == ROWS and doc["by_month"][0]["kwh_change"] is None
    assert doc["trend"]["months"] == 1 and doc["trend"]["kwh_slope_per_month"] is None
    from_jsonl = json.loads(kfm("report", "energy", "--ledger", str(mirrored), "--json", "--source", "jsonl").stdout)
    assert from_jsonl.pop("source") == "jsonl" and doc.pop("source") == "mirror" and from_jsonl == doc


def test_report_energy_csv_text_plot(mirrored: Path, tmp_path: Path) -> None:
    d = str(mirrored)
    r = kfm("report", "energy", "--ledger", d, "--csv")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("section,key,rows,kwh,co2e_kg") and lines[-1].startswith("trend,slope_per_month,1,,")
    assert sum(1 for line in lines if line.startswith("producer,")) == 4
    r = kfm("report", "energy", "--ledger", d)
    assert r.stdout.startswith(f"Energy and carbon of {ROWS} rows (tree size {ROWS}, read from the mirror)")
    pytest.importorskip("matplotlib")
    png = tmp_path / "energy.png"
    r = kfm("report", "energy", "--ledger", d, "--plot", str(png), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["totals"]["rows"] == ROWS
    assert f"plot written to {png}" in r.stderr
    assert png.read_bytes().startswith(b"\x89PNG")


def test_report_energy_usage_errors(mirrored: Path, scratch: Path) -> None:
    assert kfm("report", "energy", "--ledger", str(mirrored), "--source", "parquet").exit_code == 2
    assert kfm("report", "energy", "--ledger", str(mirrored), "--csv", "--json").exit_code == 2
    r = kfm("report", "energy", "--ledger", str(scratch), "--source", "mirror")
    assert r.exit_code == 1 and "run `kfm mirror`" in r.stderr


# ------------------------------------------------------------------ impact


def naive_impact(rows: list[Row], index: int) -> tuple[list[str], dict[str, list[int]]]:
    """A slow reference: what row ``index`` introduced and who uses it later, by producer."""

    def arts(row: Row) -> set[str]:
        return (
            {f"model {m.name}@{m.version}" for m in row.models}
            | {f"config {c.path}@{c.sha256}" for c in row.configs}
            | {f"dataset {d.stac}@{d.lakefs_ref}" for d in row.data_snapshot}
        )

    earlier = set().union(*(arts(r) for r in rows[:index])) if index else set()
    introduced = arts(rows[index]) - earlier
    deps: dict[str, list[int]] = defaultdict(list)
    for i in range(index + 1, len(rows)):
        if arts(rows[i]) & introduced:
            deps[rows[i].producer].append(i)
    return sorted(introduced), dict(deps)


def as_label(a: dict[str, str]) -> str:
    if a["kind"] == "model":
        return f"model {a['name']}@{a['version']}"
    if a["kind"] == "config":
        return f"config {a['path']}@{a['sha256']}"
    return f"dataset {a['stac']}@{a['lakefs_ref']}"


@pytest.mark.parametrize("index", [0, 57, 140, 399])
def test_impact_commit_matches_a_naive_reference(base: Path, rows: list[Row], index: int) -> None:
    commit = rows[index].lakefs_commit
    r = kfm("impact", "--ledger", str(base), "--commit", commit[:16], "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["format"] == "kfm.impact/v1" and doc["tree_size"] == ROWS and doc["root_hash"] == root_b64(base)
    assert doc["root"] == doc["root_hash"]  # "root" is the root hash; root_hash its alias for one release
    row = rows[index]
    assert doc["subject"] == {
        "kind": "entry", "index": index, "lakefs_commit": commit, "created_at": row.created_at,
        "lakefs_branch": row.lakefs_branch, "producer": row.producer,
    }
    introduced, deps = naive_impact(rows, index)
    assert sorted(as_label(a) for a in doc["introduced"]) == introduced
    got = {g["producer"]: [e["index"] for e in g["entries"]] for g in doc["producers"]}
    assert got == deps
    assert doc["entry_count"] == sum(len(v) for v in deps.values()) and doc["producer_count"] == len(deps)
    for g in doc["producers"]:
        assert g["count"] == len(g["entries"])
        for e in g["entries"]:
            other = rows[e["index"]]
            assert (e["lakefs_commit"], e["created_at"], e["lakefs_branch"], e["producer"]) == (
                other.lakefs_commit, other.created_at, other.lakefs_branch, other.producer,
            )
            assert e["links"] and all(as_label(a) in introduced for a in e["links"])
    for inh in doc["inherited"]:
        assert inh["first_index"] < index


def test_impact_text_and_artifact(base: Path, rows: list[Row]) -> None:
    r = kfm("impact", "--ledger", str(base), "--commit", rows[0].lakefs_commit, "--limit", "2")
    lines = r.stdout.splitlines()
    first = rows[0]
    assert lines[0] == f"entry 0 {first.lakefs_commit} ({first.created_at}, {first.lakefs_branch}, {first.producer})"
    assert lines[1].startswith("introduced: model focus-transformer@3.0.0")
    assert lines[-1].endswith(f"producer(s) (tree size {ROWS})")
    model = rows[100].models[0]
    r = kfm("impact", "--ledger", str(base), "--model", f"{model.name}@{model.version}", "--json")
    doc = json.loads(r.stdout)
    users = [
        i for i, row in enumerate(rows) if any((m.name, m.version) == (model.name, model.version) for m in row.models)
    ]
    assert sorted(e["index"] for g in doc["producers"] for e in g["entries"]) == users
    assert doc["subject"] == {
        "kind": "artifact", "artifact": {"kind": "model", "name": model.name, "version": model.version},
    }


def test_impact_errors(base: Path, rows: list[Row]) -> None:
    d = str(base)
    r = kfm("impact", "--ledger", d, "--commit", "no-such-commit")
    assert r.exit_code == 1 and "no row for lakeFS commit" in r.stderr
    prefix = rows[0].lakefs_commit[0]
    r = kfm("impact", "--ledger", d, "--commit", prefix)
    assert r.exit_code == 1 and "ambiguous" in r.stderr and rows[0].lakefs_commit in r.stderr
    assert kfm("impact", "--ledger", d).exit_code == 2
    r = kfm("impact", "--ledger", d, "--model", "m", "--config", "c")
    assert r.exit_code == 2 and "exactly one of" in r.stderr
    assert kfm("impact", "--ledger", d, "--model", "m@").exit_code == 2


# ------------------------------------------------------------ real processes


def test_real_processes(scratch: Path, rows: list[Row]) -> None:
    env = {**os.environ, "KFM_LEDGER": str(scratch)}

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "kfm_ledger", *args], capture_output=True, env=env, check=False)

    out = run("mirror", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["rows"] == ROWS and doc["sha256"] == hashlib.sha256((scratch / MIRROR_KEY).read_bytes()).hexdigest()
    out = run("mirror", "--check")
    assert out.returncode == 0 and out.stdout.startswith(b"mirror OK")
    out = run("report", "energy", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["totals"]["rows"] == ROWS
    out = run("impact", "--commit", rows[10].lakefs_commit[:12], "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["subject"]["index"] == 10
    out = run("query", "SELECT max(leaf_index) AS last FROM rollback_index", "--csv")
    assert out.returncode == 0 and out.stdout == f"last\n{ROWS - 1}\n".encode()
    out = run("query", "SELECT 1", "--json", "--csv")
    assert out.returncode == 2
