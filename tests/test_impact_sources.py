"""`kfm impact` reads the Parquet mirror when it is current and gives exactly the JSONL scan's answer.

A 400-row ledger on disk (sample rows, some with fractional created_at written with
trailing zeros, which the mirror's timestamp column cannot tell apart: rows an earlier
version appended, before created_at had one spelling per instant) and its mirror;
every selector kind and --commit, through the library and the CLI, must give the same
JSON from ``--source mirror``, ``--source jsonl`` and ``--source auto``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from kfm_ledger import mirror
from kfm_ledger.cli import app
from kfm_ledger.errors import CorruptLedgerError, EnergySourceError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.ops import impact
from kfm_ledger.sample import sample_commit, sample_rows

from conftest import ORIGIN, copy_ledger, signer_of

ROWS = 400
JSONL = "rollback-index.jsonl"


def _rows() -> list[Any]:
    out = []
    for i, r in enumerate(sample_rows(ROWS)):
        if i % 7 == 3:  # same instant as the mirror sees it, other text: only the JSONL has the text
            r = msgspec.structs.replace(r, created_at=r.created_at[:-1] + ".250Z")
        elif i % 7 == 5:
            r = msgspec.structs.replace(r, created_at=r.created_at[:-1] + ".0Z")
        out.append(r)
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("impact-sources") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    rows = _rows()
    signer = signer_of(led)
    # The rows an earlier version accepted: append them with the rules stored rows are read with.
    from kfm_ledger.schema import checked, codec

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "ROW_SHAPE", checked.STORED_ROW_SHAPE)
        for a in range(0, ROWS, 150):
            led.append(rows[a : a + 150], signer=signer)
    saved = mirror.layout.ROW_GROUP_BYTES
    mirror.layout.ROW_GROUP_BYTES = 60_000  # several row groups: matches are found group by group
    try:
        mirror.write_mirror(led)
    finally:
        mirror.layout.ROW_GROUP_BYTES = saved
    led.close()
    return d


SELECTORS = [
    ("model", "focus-transformer"),
    ("model", "focus-transformer@3.1.0"),
    ("model", "hydro-lstm@2.0.1"),
    ("model", "no-such-model"),
    ("config", "configs/model.yaml"),
    ("config", "configs/stac.yaml"),
    ("dataset", "s3://kfm-stac/landsat-c2/7/collection.json"),
    ("dataset", "s3://kfm-stac/kansas-hydro/30/collection.json"),
]


def _commits(d: Path) -> list[str]:
    return [json.loads(line)["lakefs_commit"] for line in (d / JSONL).read_bytes().splitlines()]


@pytest.fixture(autouse=True, params=["mirror reads every match", "scan past one in 8"])
def read_limit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the mirror path reading each match (limit 0: never fall back) and
    with the default fallback to the proven scan when many rows match, so both paths are
    checked against the JSONL scan."""
    if request.param == "mirror reads every match":
        monkeypatch.setattr(impact, "SCAN_WHEN_MORE_THAN_ONE_IN", 0)
    return str(request.param)


def test_many_matches_take_the_scan_few_take_the_mirror(template: Path, read_limit: str, monkeypatch) -> None:
    calls: list[int] = []
    real = impact._mirror_lines
    monkeypatch.setattr(impact, "_mirror_lines", lambda led, idx, h: calls.append(len(idx)) or real(led, idx, h))
    with Ledger.open(template) as led:
        selector = impact.parse_selector("model", "focus-transformer")
        report = impact.impact_of_artifact(led, selector, source="mirror")
        matched = sum(len(g.entries) for g in report.groups)
        assert matched * 8 > led.size  # most rows use the sample's model
    assert calls == ([] if read_limit == "scan past one in 8" else [matched])


def test_the_mirror_has_several_row_groups(template: Path) -> None:
    import pyarrow.parquet as pq

    assert pq.ParquetFile(template / "rollback-index.parquet").num_row_groups > 3


def test_created_at_text_is_not_what_the_mirror_stores(template: Path) -> None:
    lines = (template / JSONL).read_bytes().splitlines()
    assert b'.250Z"' in lines[3] and b'.0Z"' in lines[5]


@pytest.mark.parametrize(("kind", "text"), SELECTORS)
def test_artifact_sources_agree(template: Path, kind: str, text: str) -> None:
    with Ledger.open(template) as led:
        sel = impact.parse_selector(kind, text)  # type: ignore[arg-type]
        docs = {s: impact.impact_of_artifact(led, sel, source=s).to_json() for s in ("mirror", "jsonl", "auto")}
    assert docs["mirror"] == docs["jsonl"] == docs["auto"]
    if text != "no-such-model":
        assert docs["jsonl"]["entry_count"] > 0


def test_config_with_hash_and_every_commit_agree(template: Path) -> None:
    with Ledger.open(template) as led:
        e = led.entry(60)
        config = e.row.configs[0]
        sel = impact.Artifact("config", config.path, config.sha256)
        assert impact.impact_of_artifact(led, sel, source="mirror").to_json() == \
            impact.impact_of_artifact(led, sel, source="jsonl").to_json()
        introduced = 0
        for i in range(0, ROWS, 3):
            entry = led.entry(i)
            m = impact.impact_of_entry(led, entry, source="mirror").to_json()
            j = impact.impact_of_entry(led, entry, source="jsonl").to_json()
            assert m == j, i
            introduced += m["entry_count"] > 0 and bool(m["inherited"])
        assert introduced > 0  # some entries both inherit and introduce


@pytest.mark.parametrize(
    "args",
    [["--commit", "C"], ["--index", "200"], *(["--" + k, t] for k, t in SELECTORS[:6:2])],
)
def test_cli_sources_give_the_same_json(template: Path, args: list[str]) -> None:
    args = [a if a != "C" else sample_commit(42)[:12] for a in args]
    out = {}
    for source in ("auto", "mirror", "jsonl"):
        r = CliRunner().invoke(app, ["impact", *args, "--ledger", str(template), "--json", "--source", source])
        assert r.exit_code == 0, r.output + r.stderr
        out[source] = r.stdout
    assert out["auto"] == out["mirror"] == out["jsonl"]
    text = {
        s: CliRunner().invoke(app, ["impact", *args, "--ledger", str(template), "--source", s]).stdout
        for s in ("mirror", "jsonl")
    }
    assert text["mirror"] == text["jsonl"]


def test_auto_falls_back_to_the_proven_scan_when_the_mirror_is_stale(template: Path, tmp_path: Path) -> None:
    d = copy_ledger(template, tmp_path)
    with Ledger.open(d) as led:
        led.append(list(sample_rows(1, start=ROWS)), signer=signer_of(led))
        sel = impact.parse_selector("model", "focus-transformer")
        auto = impact.impact_of_artifact(led, sel).to_json()
        assert auto == impact.impact_of_artifact(led, sel, source="jsonl").to_json()
        assert auto["tree_size"] == ROWS + 1
        with pytest.raises(EnergySourceError, match=r"stale.*run `kfm mirror` or use --source jsonl"):
            impact.impact_of_artifact(led, sel, source="mirror")
    r = CliRunner().invoke(app, ["impact", "--model", "focus-transformer", "--ledger", str(d), "--source", "mirror"])
    assert r.exit_code == 1 and "kfm mirror" in r.stderr
    r = CliRunner().invoke(app, ["impact", "--model", "x", "--ledger", str(d), "--source", "parquet"])
    assert r.exit_code == 2 and "--source must be auto, mirror or jsonl" in r.stderr


def _edit_row(d: Path, index: int) -> None:
    lines = (d / JSONL).read_bytes().split(b"\n")
    lines[index] = lines[index].replace(b'"kwh":', b'"kwh":1', 1)
    (d / JSONL).write_bytes(b"\n".join(lines))


def test_mirror_path_checks_the_rows_it_reports(template: Path, tmp_path: Path) -> None:
    d = copy_ledger(template, tmp_path)
    with Ledger.open(d) as led:
        sel = impact.parse_selector("model", "focus-transformer")
        used = [e.index for g in impact.impact_of_artifact(led, sel, source="jsonl").groups for e in g.entries]
    bad = used[len(used) // 2]
    _edit_row(d, bad)
    with Ledger.open(d) as led, pytest.raises(CorruptLedgerError, match=rf"row {bad} \(line {bad + 1} "):
        impact.impact_of_artifact(led, sel, source="mirror")
    r = CliRunner().invoke(app, ["impact", "--model", "focus-transformer", "--ledger", str(d)])
    assert r.exit_code == 1 and f"row {bad} (line {bad + 1} " in r.stderr
