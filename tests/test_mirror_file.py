"""The mirror in a local file named by the user (``Ledger.mirror_file``: ``kfm mirror --out FILE``,
``--mirror-file FILE``; the only mirror an S3 ledger has, tests/s3/test_s3_analytics.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kfm_ledger import mirror
from kfm_ledger.errors import EnergySourceError, MirrorDriftError
from kfm_ledger.log.layout import MIRROR_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.ops.energy import energy_report
from kfm_ledger.ops.query import run_query

from conftest import ORIGIN, fill


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    ledger = fill(Ledger.init(tmp_path / "ledger", origin=ORIGIN), 40, 300)
    yield ledger
    ledger.close()


def test_write_and_check_a_named_file_leaving_the_ledgers_mirror_alone(led: Ledger, tmp_path: Path) -> None:
    own = mirror.write_mirror(led)
    target = tmp_path / "elsewhere" / "copy.parquet"
    target.parent.mkdir()
    led.mirror_file = target
    assert mirror.check_mirror(led, regenerate=False).state == "missing"
    assert str(target) in mirror.check_mirror(led, regenerate=False).problems[0]
    info = mirror.write_mirror(led)
    assert info.path == str(target) and info.rows == 340 and info.sha256 == own.sha256
    assert target.read_bytes() == led.storage.read(MIRROR_KEY)
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.parquet"]  # no temporary file left
    status = mirror.check_mirror(led)
    assert status.ok and status.regenerated and status.path == str(target)
    led.mirror_file = None
    assert mirror.check_mirror(led).ok


def test_readers_use_the_named_file_and_refuse_it_when_stale(led: Ledger, tmp_path: Path) -> None:
    target = tmp_path / "m.parquet"
    led.mirror_file = target
    with pytest.raises(EnergySourceError, match="missing"):
        energy_report(led, source="mirror")
    mirror.write_mirror(led)
    assert not led.storage.exists(MIRROR_KEY)  # the ledger's own mirror was never written
    assert energy_report(led).source == "mirror"
    assert energy_report(led).to_json() | {"source": "x"} == energy_report(led, source="jsonl").to_json() | {
        "source": "x"
    }
    pytest.importorskip("duckdb")
    assert run_query(led, "SELECT count(*) FROM rollback_index").rows == ((340,),)
    fill(led, 5)
    with pytest.raises(MirrorDriftError, match="stale"):
        run_query(led, "SELECT count(*) FROM rollback_index")
    assert energy_report(led).source == "jsonl"  # auto: the proven scan
    target.write_bytes(b"not parquet")
    status = mirror.check_mirror(led, regenerate=False)
    # The messages name the file checked, not the ledger's own (never written here).
    assert status.state == "modified" and status.problems[0].startswith(f"{target} is ")
    assert mirror.verify_mirror(led)[0].startswith(f"{target} modified: {target} is ")
    assert f"run `kfm mirror --out {target}` to regenerate it" in status.render_text()
    led.mirror_file = None
    assert "run `kfm mirror` to create it" in mirror.check_mirror(led, regenerate=False).render_text()


def test_cli_out_and_mirror_file_on_a_local_ledger(led: Ledger, tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    target = tmp_path / "out.parquet"

    def kfm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kfm_ledger", *args, "--ledger", str(tmp_path / "ledger")],
                              capture_output=True, text=True, timeout=120)

    res = kfm("mirror", "--out", str(target), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["path"] == str(target) and target.exists()
    assert kfm("mirror", "--check", "--out", str(target)).returncode == 0
    res = kfm("query", "SELECT count(*) AS n FROM rollback_index", "--json")
    assert res.returncode == 1 and "missing" in res.stderr.lower()  # the ledger's own mirror was not written
    res = kfm("query", "SELECT count(*) AS n FROM rollback_index", "--json", "--mirror-file", str(target))
    assert res.returncode == 0 and json.loads(res.stdout)["rows"] == [[340]]
    res = kfm("report", "energy", "--json", "--mirror-file", str(target))
    assert res.returncode == 0 and json.loads(res.stdout)["source"] == "mirror"
