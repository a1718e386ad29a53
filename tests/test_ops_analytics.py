"""SQL audits, the energy report and impact analysis on a hand-built ledger whose answers are known."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest

from kfm_ledger import mirror
from kfm_ledger.errors import AmbiguousCommitError, CommitNotFoundError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.ops import energy, impact, query
from kfm_ledger.schema import Checksums, Config, DataSnapshot, EnergyCarbon, Model, Row, Signatures
from kfm_ledger.storage import MemoryStorage

from conftest import ORIGIN, fill, signer_of

DOCS = Path(__file__).resolve().parents[1] / "docs" / "analytics.md"

A, B, C = "airflow:dag=a", "dagster:job=b", "github-actions:workflow=c"
H1, H2, H3 = "11" * 32, "22" * 32, "33" * 32
S1, R1 = "s3://kfm-stac/s1/collection.json", "lakefs://kfm@r1/stac"
S2, R2 = "https://stac.example/s2/collection.json", "lakefs://kfm@r2"
TRAP = '{"name":"m","version":"1","uri":'  # canonical JSON escapes it: must never match


def row(
    i: int,
    producer: str,
    branch: str,
    created_at: str,
    kwh: float,
    co2e: float,
    models: list[tuple[str, str]],
    configs: list[tuple[str, str]],
    datasets: list[tuple[str, str]],
    run_id: str | None = None,
) -> Row:
    commit = f"c{i}" + hashlib.sha256(str(i).encode()).hexdigest()[:10]
    return Row(
        lakefs_repo="kfm-main",
        lakefs_branch=branch,
        lakefs_commit=commit,
        created_at=created_at,
        producer=producer,
        openlineage_run_id=run_id or f"run-{i}",
        otel_trace_id=f"trace-{i}",
        artifact_uri=f"s3://kfm-registry/rollback/artifacts/{commit}.tar.zst",
        data_snapshot=[DataSnapshot(stac=s, lakefs_ref=r) for s, r in datasets],
        models=[Model(name=n, version=v, uri=f"s3://kfm-models/{n}/{v}.bin") for n, v in models],
        configs=[Config(path=f"configs/{p}", sha256=h) for p, h in configs],
        checksums=Checksums(artifact_sha256=hashlib.sha256(commit.encode()).hexdigest()),
        signatures=Signatures(in_toto=f"s3://kfm-registry/slsa/{commit}.json"),
        energy_carbon=EnergyCarbon(kwh=kwh, co2e_kg=co2e),
    )


ROWS = [
    row(0, A, "prod", "2025-01-05T10:00:00Z", 1.5, 0.75, [("m", "1")], [("c.yaml", H1)], [(S1, R1)]),
    row(1, B, "dev", "2025-01-20T08:30:00.25Z", 2.25, 1.0, [("m", "1")], [("c.yaml", H2)], [(S1, R1)]),
    row(2, C, "prod", "2025-03-01T00:00:00Z", 0.1, 0.2, [("m", "2")], [("c.yaml", H2)], [(S2, R2)]),
    row(3, A, "prod", "2025-03-15T12:00:00Z", 0.2, 0.1, [("m", "2"), ("m-extra", "1")], [("c.yaml", H1)], []),
    row(4, B, "prod", "2025-04-01T00:00:00Z", 3.0, 1.5, [("m", "1")], [("c.yaml", H2)], [(S2, R2)]),
    row(5, C, "dev", "2025-04-30T23:59:59.999999Z", 0.7, 0.35, [("n", "1")], [("d.yaml", H3)], [], run_id=TRAP),
]


@pytest.fixture
def hand(disk_ledger: Ledger) -> Ledger:
    disk_ledger.append(ROWS[:3], signer=signer_of(disk_ledger))
    disk_ledger.append(ROWS[3:], signer=signer_of(disk_ledger))
    return disk_ledger


@pytest.fixture
def hand_mirrored(hand: Ledger) -> Ledger:
    mirror.write_mirror(hand)
    return hand


# ------------------------------------------------------------------ query


def documented_audits() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    audits = {}
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        m = re.match(r"-- audit: ([a-z0-9-]+)\n", block)
        assert m, f"every SQL example in docs/analytics.md is named: {block[:60]!r}"
        audits[m.group(1)] = block
    return audits


EXPECTED_AUDITS = {
    "rows-per-producer-per-month": (
        ["producer", "month", "entries", "kwh"],
        [
            [A, "2025-01", 1, 1.5],
            [A, "2025-03", 1, 0.2],
            [B, "2025-01", 1, 2.25],
            [B, "2025-04", 1, 3.0],
            [C, "2025-03", 1, 0.1],
            [C, "2025-04", 1, 0.7],
        ],
    ),
    "model-versions-in-production": (
        ["model", "version", "first_seen", "last_seen", "entries"],
        [
            ["m", "1", "2025-01-05T10:00:00Z", "2025-04-01T00:00:00Z", 2],
            ["m", "2", "2025-03-01T00:00:00Z", "2025-03-15T12:00:00Z", 2],
            ["m-extra", "1", "2025-03-15T12:00:00Z", "2025-03-15T12:00:00Z", 1],
        ],
    ),
    "costliest-pipelines-by-co2e": (
        ["producer", "runs", "co2e_kg", "co2e_kg_per_run"],
        [[B, 2, 2.5, 1.25], [A, 2, 0.85, 0.425], [C, 2, 0.55, 0.275]],
    ),
    "config-changes": (
        ["lakefs_branch", "path", "sha256", "first_leaf", "first_seen"],
        [
            ["dev", "configs/c.yaml", H2, 1, "2025-01-20T08:30:00.25Z"],
            ["dev", "configs/d.yaml", H3, 5, "2025-04-30T23:59:59.999999Z"],
            ["prod", "configs/c.yaml", H1, 0, "2025-01-05T10:00:00Z"],
            ["prod", "configs/c.yaml", H2, 2, "2025-03-01T00:00:00Z"],
        ],
    ),
}


def test_documented_audits_give_the_known_answers(hand_mirrored: Ledger) -> None:
    audits = documented_audits()
    assert set(audits) == set(EXPECTED_AUDITS)
    for name, sql in audits.items():
        result = query.run_query(hand_mirrored, sql).to_json()
        columns, rows = EXPECTED_AUDITS[name]
        assert [c["name"] for c in result["columns"]] == columns, name
        assert result["rows"] == rows, name
        assert result["row_count"] == len(rows) and result["tree_size"] == 6


def test_query_values_and_renderings(hand_mirrored: Ledger) -> None:
    r = query.run_query(
        hand_mirrored,
        "SELECT leaf_index, leaf_hash, created_at, models, energy_carbon.kwh AS kwh, NULL AS nothing "
        "FROM rollback_index WHERE leaf_index IN (1, 3) ORDER BY leaf_index",
    )
    assert r.types[:3] == ("BIGINT", "BLOB", "TIMESTAMP WITH TIME ZONE")
    j = r.to_json()
    assert j["format"] == "kfm.query/v1"
    first = j["rows"][0]
    import base64

    from kfm_ledger.core.merkle import leaf_hash

    assert first[0] == 1 and base64.b64decode(first[1]) == leaf_hash(hand_mirrored.entry(1).line)
    assert first[2] == "2025-01-20T08:30:00.25Z" and first[4] == 2.25 and first[5] is None
    assert j["rows"][1][3] == [
        {"name": "m", "version": "2", "uri": "s3://kfm-models/m/2.bin"},
        {"name": "m-extra", "version": "1", "uri": "s3://kfm-models/m-extra/1.bin"},
    ]
    text = r.render_text().splitlines()
    assert text[0].split() == ["leaf_index", "leaf_hash", "created_at", "models", "kwh", "nothing"]
    assert text[-1] == "(2 rows)" and "NULL" in text[2] and text[2].lstrip().startswith("1 ")
    csv_lines = r.render_csv().splitlines()
    assert csv_lines[0] == "leaf_index,leaf_hash,created_at,models,kwh,nothing"
    assert csv_lines[1].endswith(",2.25,") and csv_lines[1].startswith("1,")


def test_query_refuses_a_missing_or_stale_mirror(hand: Ledger) -> None:
    with pytest.raises(mirror.MirrorDriftError, match="missing") as e:
        query.run_query(hand, "SELECT 1")
    assert "kfm mirror" in e.value.diagnostics()
    mirror.write_mirror(hand)
    hand.append([row(6, A, "prod", "2025-05-01T00:00:00Z", 1.0, 1.0, [], [], [])], signer=signer_of(hand))
    with pytest.raises(mirror.MirrorDriftError, match="stale"):
        query.run_query(hand, "SELECT 1")


def test_query_is_sandboxed(hand_mirrored: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "leak.csv"
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"COPY (SELECT 1) TO '{out}'",
        "SET enable_external_access = true",
        f"ATTACH '{tmp_path / 'x.db'}'",
    ):
        with pytest.raises(query.QueryError, match=r"the query failed|refused a"):
            query.run_query(hand_mirrored, sql)
    assert not out.exists() and not (tmp_path / "x.db").exists()
    with pytest.raises(query.QueryError, match="rollback_indx"):
        query.run_query(hand_mirrored, "SELECT * FROM rollback_indx")


@pytest.fixture
def doorstep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding what DuckDB's default temp directory would expose."""
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)
    (cwd / ".tmp" / "secret").write_text("topsecret\n")
    (cwd / "data.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(cwd)
    return cwd


# Every statement a sandboxed query must not run, and what it would touch.
_DOORS = (
    "SELECT * FROM read_text('./.tmp/secret')",
    "SELECT * FROM read_text('.tmp/secret')",
    "SELECT * FROM read_text('.tmp/*')",
    "SELECT * FROM read_blob('./.tmp/secret')",
    "SELECT * FROM read_csv('data.csv')",
    "SELECT * FROM read_csv('./.tmp/x.csv')",
    "SELECT * FROM glob('./.tmp/*')",
    "COPY (SELECT 1) TO './.tmp/x.csv'",
    "COPY (SELECT 1) TO 'out.csv'",
    "SELECT 1; COPY (SELECT 1) TO './.tmp/x.csv'",
    "SELECT 1; SELECT 2",
    "ATTACH 'x.db'",
    "ATTACH './.tmp/x.db'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET temp_directory = '.tmp'",
    "SET enable_external_access = true",
    "SET allowed_directories = ['.']",
    "SET threads = 1",
    "RESET temp_directory",
    "PRAGMA threads = 1",
    "PRAGMA enable_external_access",
    "CREATE TABLE t AS SELECT 1",
    "EXPORT DATABASE 'exported'",
    "CALL pragma_version()",
)


@pytest.mark.parametrize("sql", _DOORS)
def test_query_sandbox_has_no_door(hand_mirrored: Ledger, doorstep: Path, sql: str) -> None:
    before = sorted(str(p.relative_to(doorstep)) for p in doorstep.rglob("*"))
    with pytest.raises(query.QueryError) as e:
        query.run_query(hand_mirrored, sql)
    assert "topsecret" not in str(e.value)
    assert sorted(str(p.relative_to(doorstep)) for p in doorstep.rglob("*")) == before


def test_query_sandbox_refuses_reads_even_as_one_select(hand_mirrored: Ledger, doorstep: Path) -> None:
    """The statement check is one wall; DuckDB's own sandbox is the other (no temp dir)."""
    for sql in (
        "SELECT * FROM read_text('./.tmp/secret')",
        "SELECT * FROM read_csv('data.csv')",
        "SELECT * FROM read_text('/etc/hostname')",
    ):
        with pytest.raises(query.QueryError, match=r"the query failed: .*ermission"):
            query.run_query(hand_mirrored, sql)
    r = query.run_query(hand_mirrored, "SELECT current_setting('temp_directory') AS t")
    assert r.rows == (("",),)
    r = query.run_query(hand_mirrored, "SELECT current_setting('allowed_directories') AS d")
    assert r.rows[0][0] in ([], "[]", "")
    # The ordinary audits still run, also as DESCRIBE / EXPLAIN / a trailing semicolon.
    n = query.run_query(hand_mirrored, "SELECT count(*) FROM rollback_index;").rows[0][0]
    assert n == query.run_query(hand_mirrored, "SELECT count(*) FROM rollback_index").rows[0][0] > 0
    query.run_query(hand_mirrored, "DESCRIBE rollback_index")
    query.run_query(hand_mirrored, "EXPLAIN SELECT * FROM rollback_index")


def test_query_on_memory_storage() -> None:
    led = Ledger.init(MemoryStorage(), origin=ORIGIN)
    led.append(ROWS, signer=signer_of(led))
    mirror.write_mirror(led)
    r = query.run_query(led, "SELECT count(*) AS n, sum(energy_carbon.kwh) AS kwh FROM rollback_index")
    assert r.rows == ((6, 7.75),)


def test_query_without_duckdb(hand_mirrored: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(query.MissingExtraError, match=r"pip install 'kfm-ledger\[query\]'"):
        query.run_query(hand_mirrored, "SELECT 1")


# ------------------------------------------------------------------ energy


def test_energy_numbers(hand: Ledger) -> None:
    rep = energy.energy_report(hand)
    assert rep.source == "jsonl" and rep.tree_size == 6 and rep.root == hand.root
    assert (rep.rows, rep.total_kwh, rep.total_co2e_kg) == (6, 7.75, 3.9)
    assert [(g.key, g.rows, g.kwh, g.co2e_kg) for g in rep.by_producer] == [
        (B, 2, 5.25, 2.5),
        (A, 2, 1.7, 0.85),
        (C, 2, 0.8, 0.55),
    ]
    assert [(g.key, g.rows, g.kwh, g.co2e_kg) for g in rep.by_branch] == [
        ("prod", 4, 4.8, 2.55),
        ("dev", 2, 2.95, 1.35),
    ]
    months = [(m.month, m.rows, m.kwh, m.co2e_kg) for m in rep.by_month]
    assert months == [
        ("2025-01", 2, 3.75, 1.75),
        ("2025-02", 0, 0.0, 0.0),  # a month without rows is shown, with zeros
        ("2025-03", 2, 0.3, 0.3),
        ("2025-04", 2, 3.7, 1.85),
    ]
    jan, feb, mar, apr = rep.by_month
    assert (jan.kwh_change, jan.kwh_change_pct, jan.co2e_kg_change, jan.co2e_kg_change_pct) == (None,) * 4
    assert (feb.kwh_change, feb.kwh_change_pct, feb.co2e_kg_change, feb.co2e_kg_change_pct) == (
        -3.75, -100.0, -1.75, -100.0,
    )
    assert (mar.kwh_change, mar.kwh_change_pct) == (0.3, None)  # from 0: no percentage
    assert apr.kwh_change == 3.4 and apr.kwh_change_pct == round((3.7 - 0.3) / 0.3 * 100, 9)
    assert apr.co2e_kg_change == 1.55 and apr.co2e_kg_change_pct == round((1.85 - 0.3) / 0.3 * 100, 9)
    # least squares over x = 0..3: slope = sum((x - 1.5) * y) / 5
    assert rep.trend.months == 4
    assert rep.trend.kwh_per_month == round((-1.5 * 3.75 + 0.5 * 0.3 + 1.5 * 3.7) / 5, 9) == 0.015
    assert rep.trend.co2e_kg_per_month == 0.06


def test_energy_sources_agree(hand_mirrored: Ledger) -> None:
    from_mirror = energy.energy_report(hand_mirrored)
    from_jsonl = energy.energy_report(hand_mirrored, source="jsonl")
    assert from_mirror.source == "mirror" and from_jsonl.source == "jsonl"
    a, b = from_mirror.to_json(), from_jsonl.to_json()
    assert a.pop("source") == "mirror" and b.pop("source") == "jsonl"
    assert a == b


def test_energy_sources_agree_on_sample_rows(mem_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(mem_ledger, 300, 200)
    monkeypatch.setattr(mirror, "BLOCK_BYTES", 5000)
    mirror.write_mirror(mem_ledger)
    a = energy.energy_report(mem_ledger, source="mirror").to_json()
    b = energy.energy_report(mem_ledger, source="jsonl").to_json()
    a.pop("source"), b.pop("source")
    assert a == b
    import math

    rows = [e.row for e in mem_ledger.iter_entries()]
    assert a["totals"]["kwh"] == round(math.fsum(r.energy_carbon.kwh for r in rows), 9)
    assert [m["month"] for m in a["by_month"]] == ["2025-01"]  # 500 rows, 37 minutes apart


def test_energy_source_choice(hand: Ledger) -> None:
    with pytest.raises(energy.EnergySourceError, match="missing"):
        energy.energy_report(hand, source="mirror")
    mirror.write_mirror(hand)
    assert energy.energy_report(hand).source == "mirror"
    hand.append([row(6, A, "prod", "2025-05-01T00:00:00Z", 1.0, 1.0, [], [], [])], signer=signer_of(hand))
    rep = energy.energy_report(hand)  # stale mirror: auto falls back to the JSONL
    assert rep.source == "jsonl" and rep.rows == 7
    with pytest.raises(energy.EnergySourceError, match="stale"):
        energy.energy_report(hand, source="mirror")


def test_energy_empty(mem_ledger: Ledger) -> None:
    rep = energy.energy_report(mem_ledger)
    assert (rep.rows, rep.total_kwh, rep.by_month, rep.trend.kwh_per_month) == (0, 0.0, (), None)
    assert "n/a" in rep.render_text()


def test_energy_renderings(hand: Ledger) -> None:
    rep = energy.energy_report(hand)
    j = rep.to_json()
    assert j["format"] == "kfm.energy/v1" and j["totals"] == {"rows": 6, "kwh": 7.75, "co2e_kg": 3.9}
    assert j["by_producer"][0] == {"producer": B, "rows": 2, "kwh": 5.25, "co2e_kg": 2.5}
    assert j["by_branch"][1] == {"branch": "dev", "rows": 2, "kwh": 2.95, "co2e_kg": 1.35}
    assert j["by_month"][1]["kwh_change_pct"] == -100.0 and j["trend"]["kwh_slope_per_month"] == 0.015
    csv_lines = rep.render_csv().splitlines()
    assert csv_lines[0] == "section,key,rows,kwh,co2e_kg,kwh_change,kwh_change_pct,co2e_kg_change,co2e_kg_change_pct"
    assert csv_lines[1] == f"producer,{B},2,5.25,2.5,,,,"
    assert "month,2025-02,0,0.0,0.0,-3.75,-100.0,-1.75,-100.0" in csv_lines
    assert csv_lines[-2:] == ["total,,6,7.75,3.9,,,,", "trend,slope_per_month,4,0.015,0.06,,,,"]
    text = rep.render_text()
    assert "2025-02     0" in text and "-100.0%" in text
    assert "trend  +0.015 kWh/month, +0.060 kg CO2e/month (least-squares slope over 4 calendar months)" in text


def test_energy_plot(hand: Ledger) -> None:
    pytest.importorskip("matplotlib")
    png = energy.plot_energy(energy.energy_report(hand))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def _monthly_cells(n: int) -> tuple[energy.Cells, str]:
    cells: energy.Cells = {}
    y, m = 2012, 1
    month = ""
    for i in range(n):
        month = f"{y:04d}-{m:02d}"
        kwh = 2.0 if i == n - 1 else 10 + i * 0.5
        cells[("p", month, "prod")] = ([kwh], [kwh * 0.4])
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return cells, month


@pytest.mark.parametrize(("months", "unit"), [(8, "month"), (60, "quarter"), (169, "year")])
def test_energy_plot_has_one_size_whatever_the_span(months: int, unit: str) -> None:
    """Found in an audit: 169 months drew an 8,650 px wide chart; the trend had no unit."""
    pytest.importorskip("matplotlib")
    import datetime
    import io

    from PIL import Image

    cells, last = _monthly_cells(months)
    rep = energy.summarize(cells, tree_size=months, root=bytes(32), source="jsonl")
    in_progress = datetime.datetime(int(last[:4]), int(last[5:7]), 15, tzinfo=datetime.UTC)
    png = energy.plot_energy(rep, as_of=in_progress)
    assert Image.open(io.BytesIO(png)).size == (1000, 600)
    assert energy._periods(rep.by_month, last)[0] == unit
    # The month in progress is marked and left out of the chart's trend; a finished one is kept.
    periods = energy._periods(rep.by_month, last)[1]
    assert periods[-1].partial
    assert energy._in_progress_month(rep, in_progress) == last
    assert energy._in_progress_month(rep, in_progress + datetime.timedelta(days=31)) is None


def test_energy_plot_of_no_rows_says_so(mem_ledger: Ledger) -> None:
    pytest.importorskip("matplotlib")
    png = energy.plot_energy(energy.energy_report(mem_ledger))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    assert image.size == (1000, 600)
    # Text only: no axes frame (a drawn axis would put dark pixels near the image's edges).
    dark = [(x, y) for x in range(0, 1000, 2) for y in range(0, 600, 2) if image.getpixel((x, y)) < 128]
    assert dark and all(200 < x < 800 and 250 < y < 350 for x, y in dark)


def test_energy_plot_without_matplotlib(hand: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    rep = energy.energy_report(hand)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(query.MissingExtraError, match=r"kfm-ledger\[plot\]"):
        energy.plot_energy(rep)


# ------------------------------------------------------------------ impact


def tree(rep: impact.ImpactReport) -> dict[str, list[tuple[int, list[str]]]]:
    return {g.producer: [(e.index, [a.label() for a in e.links]) for e in g.entries] for g in rep.groups}


@pytest.mark.parametrize("block_bytes", [1, 1500, 8 << 20])
def test_impact_of_commits(hand: Ledger, monkeypatch: pytest.MonkeyPatch, block_bytes: int) -> None:
    monkeypatch.setattr(mirror, "BLOCK_BYTES", block_bytes)
    e = [hand.entry(i) for i in range(6)]

    r0 = impact.impact_of_entry(hand, e[0])
    assert [a.label() for a in r0.introduced] == [
        "model m@1", "config configs/c.yaml@111111111111", f"dataset {S1}@{R1}",
    ]
    assert r0.inherited == ()
    assert tree(r0) == {
        A: [(3, ["config configs/c.yaml@111111111111"])],
        B: [(1, ["model m@1", f"dataset {S1}@{R1}"]), (4, ["model m@1"])],
    }

    r1 = impact.impact_of_entry(hand, e[1])
    assert [a.label() for a in r1.introduced] == ["config configs/c.yaml@222222222222"]
    assert [(i.artifact.label(), i.first_index) for i in r1.inherited] == [("model m@1", 0), (f"dataset {S1}@{R1}", 0)]
    assert tree(r1) == {
        B: [(4, ["config configs/c.yaml@222222222222"])],
        C: [(2, ["config configs/c.yaml@222222222222"])],
    }

    r2 = impact.impact_of_entry(hand, e[2])
    assert [a.label() for a in r2.introduced] == ["model m@2", f"dataset {S2}@{R2}"]
    assert [(i.artifact.label(), i.first_index) for i in r2.inherited] == [("config configs/c.yaml@222222222222", 1)]
    assert tree(r2) == {A: [(3, ["model m@2"])], B: [(4, [f"dataset {S2}@{R2}"])]}

    r3 = impact.impact_of_entry(hand, e[3])
    assert [a.label() for a in r3.introduced] == ["model m-extra@1"] and tree(r3) == {}
    r5 = impact.impact_of_entry(hand, e[5])
    assert [a.label() for a in r5.introduced] == ["model n@1", "config configs/d.yaml@333333333333"]
    assert tree(r5) == {} and r5.entry_count == 0


@pytest.mark.parametrize("block_bytes", [1, 8 << 20])
def test_impact_of_artifacts(hand: Ledger, monkeypatch: pytest.MonkeyPatch, block_bytes: int) -> None:
    monkeypatch.setattr(mirror, "BLOCK_BYTES", block_bytes)

    def indexes(kind: str, text: str) -> list[int]:
        rep = impact.impact_of_artifact(hand, impact.parse_selector(kind, text))  # type: ignore[arg-type]
        return sorted(e.index for g in rep.groups for e in g.entries)

    assert indexes("model", "m") == [0, 1, 2, 3, 4]  # not m-extra's row alone, not the trap row 5
    assert indexes("model", "m@1") == [0, 1, 4]
    assert indexes("model", "m-extra") == [3]
    assert indexes("model", "m@3") == []
    assert indexes("config", f"configs/c.yaml@{H2}") == [1, 2, 4]
    assert indexes("config", "configs/c.yaml") == [0, 1, 2, 3, 4]
    assert indexes("config", "configs/c.yaml@not-a-hash") == []  # read as a path
    assert indexes("dataset", S2) == [2, 4]
    assert indexes("dataset", f"{S1}@{R1}") == [0, 1]
    rep = impact.impact_of_artifact(hand, impact.parse_selector("model", "m"))
    assert tree(rep)[A] == [(0, ["model m@1"]), (3, ["model m@2"])]


def test_impact_renderings(hand: Ledger) -> None:
    rep = impact.impact_of_entry(hand, hand.entry(0))
    j = rep.to_json()
    assert j["format"] == "kfm.impact/v1" and j["tree_size"] == 6
    assert j["root"] == {
        "kind": "entry", "index": 0, "lakefs_commit": ROWS[0].lakefs_commit, "created_at": "2025-01-05T10:00:00Z",
        "lakefs_branch": "prod", "producer": A,
    }
    assert j["introduced"][1] == {"kind": "config", "path": "configs/c.yaml", "sha256": H1}
    assert (j["entry_count"], j["producer_count"]) == (3, 2)
    b = j["producers"][1]
    assert b["producer"] == B and b["count"] == 2
    assert b["entries"][0] == {
        "index": 1, "lakefs_commit": ROWS[1].lakefs_commit, "created_at": "2025-01-20T08:30:00.25Z",
        "lakefs_branch": "dev", "producer": B,
        "links": [{"kind": "model", "name": "m", "version": "1"}, {"kind": "dataset", "stac": S1, "lakefs_ref": R1}],
    }
    text = rep.render_text().splitlines()
    assert text[0] == f"entry 0 {ROWS[0].lakefs_commit} (2025-01-05T10:00:00Z, prod, {A})"
    assert text[2] == f"├── {A} (1 entry)"
    assert text[3].startswith(f"│   └── 3 {ROWS[3].lakefs_commit[:12]} 2025-03-15T12:00:00Z prod  via config")
    assert text[4] == f"└── {B} (2 entries)"
    assert text[-1] == "3 dependent entries across 2 producer(s) (tree size 6)"
    limited = rep.render_text(limit=1).splitlines()
    assert "    └── ... and 1 more (use --limit 0 or --json for all)" in limited
    art = impact.impact_of_artifact(hand, impact.parse_selector("dataset", S2)).to_json()
    assert art["root"] == {"kind": "artifact", "artifact": {"kind": "dataset", "stac": S2, "lakefs_ref": None}}
    assert art["introduced"] == [{"kind": "dataset", "stac": S2, "lakefs_ref": None}] and art["inherited"] == []


def test_parse_selector() -> None:
    p = impact.parse_selector
    assert p("model", "focus@3.1.0") == impact.Artifact("model", "focus", "3.1.0")
    assert p("model", "a@b@1") == impact.Artifact("model", "a@b", "1")
    assert p("model", "focus") == impact.Artifact("model", "focus", None)
    assert p("config", f"configs/x.yaml@{H1}") == impact.Artifact("config", "configs/x.yaml", H1)
    assert p("config", "configs/x@y.yaml") == impact.Artifact("config", "configs/x@y.yaml", None)
    assert p("dataset", f"s3://b/k@v/c.json@{R1}") == impact.Artifact("dataset", "s3://b/k@v/c.json", R1)
    for kind, bad in (("model", "m@"), ("model", "@1"), ("model", ""), ("config", " x")):
        with pytest.raises(impact.SelectorError, match=f"^--{kind}: .*{re.escape(repr(bad))}"):
            p(kind, bad)  # type: ignore[arg-type]


def test_commit_lookup_errors(hand: Ledger) -> None:
    with pytest.raises(CommitNotFoundError, match=r"^no row for lakeFS commit 'zzzz'$"):
        hand.get("zzzz")
    with pytest.raises(AmbiguousCommitError, match=r"^commit prefix 'c' is ambiguous: it matches "):
        hand.get("c")
