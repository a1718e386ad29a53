"""End to end, as a shell runs it: closed pipes, the documented query snippets, --version,
help text, exit codes (docs/cli.md "Conventions")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfm_ledger.cli import app
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "e2e.kfm.example/conventions"
runner = CliRunner()


def kfm(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def env(ledger: Path) -> dict[str, str]:
    return {**os.environ, "KFM_LEDGER": str(ledger), "PYTHONPATH": str(ROOT / "src")}


KFM = f"{sys.executable} -m kfm_ledger"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("conventions") / "ledger"
    with Ledger.init(d, origin=ORIGIN) as led:
        signer = load_signer(led.storage.read(SKEY_KEY))
        led.append(sample_jsonl(150), signer=signer)
        led.append(sample_jsonl(150, start=150), signer=signer)
    assert kfm("mirror", "--ledger", str(d)).exit_code == 0
    return d


# --------------------------------------------------------------- closed pipes

LARGE = [
    ["query", "SELECT * FROM rollback_index"],
    ["query", "--json", "SELECT * FROM rollback_index"],
    ["query", "--csv", "SELECT * FROM rollback_index"],
    ["impact", "--json", "--config", "configs/model.yaml"],
]


@pytest.mark.parametrize("args", LARGE, ids=lambda a: " ".join(a[:2]))
def test_a_pipe_closed_early_exits_1_quietly(ledger: Path, args: list[str]) -> None:
    """One large write that the closed pipe cuts at 64 KiB still ends in exit 1 (docs/cli.md)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfm_ledger", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(ledger),
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert err == b""  # quiet: no traceback, no "Exception ignored"


def test_head_in_a_shell_pipeline_exits_1(ledger: Path) -> None:
    cmd = f'{KFM} query "SELECT * FROM rollback_index" | head -2 >/dev/null; echo "${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env(ledger), check=True)
    assert done.stdout.strip() == "1"
    cmd = f'{KFM} impact --json --config configs/model.yaml | head -1 >/dev/null; echo "${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env(ledger), check=True)
    assert done.stdout.strip() == "1"


def test_output_read_to_the_end_exits_0(ledger: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "query", "--json", "SELECT * FROM rollback_index"],
        capture_output=True,
        env=env(ledger),
    )
    assert done.returncode == 0 and done.stdout.endswith(b"}\n") and len(done.stdout) > 1 << 17


# ------------------------------------------------------ query: the docs' snippets


def _doc_audits() -> list[str]:
    text = (ROOT / "docs" / "analytics.md").read_text()
    return re.findall(r"```sql\n(-- audit: .*?)```", text, re.DOTALL)


def _doc_shell_lines() -> list[str]:
    """The commands docs/analytics.md shows for running a saved audit (``q1.sql``)."""
    text = (ROOT / "docs" / "analytics.md").read_text()
    block = re.search(r"<!-- query-snippets -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert block, "docs/analytics.md lost its query snippets block"
    return [line for line in block.group(1).splitlines() if line.startswith("kfm query")]


def test_the_docs_have_the_snippets() -> None:
    assert len(_doc_audits()) == 4
    lines = _doc_shell_lines()
    assert any('"$(cat q1.sql)"' in line for line in lines)
    assert any("--file q1.sql" in line for line in lines)
    assert any("kfm query - < q1.sql" in line for line in lines)


@pytest.mark.parametrize("audit", range(4))
def test_doc_query_snippets_run_as_written(ledger: Path, tmp_path: Path, audit: int) -> None:
    sql = _doc_audits()[audit]
    (tmp_path / "q1.sql").write_text(sql)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kfm").write_text(f'#!/bin/sh\nexec {sys.executable} -m kfm_ledger "$@"\n')
    (bindir / "kfm").chmod(0o755)
    outputs = set()
    for line in _doc_shell_lines():
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**env(ledger), "PATH": f"{bindir}:{os.environ['PATH']}"},
        )
        assert done.returncode == 0, (line, done.stderr)
        if "--json" not in line and "--csv" not in line:
            outputs.add(done.stdout)
    assert len(outputs) == 1 and "row" in outputs.pop()


def test_query_usage_errors(ledger: Path) -> None:
    assert kfm("query", "--ledger", str(ledger)).exit_code == 2
    assert kfm("query", "--ledger", str(ledger), "--jsn").exit_code == 2
    r = kfm("query", "--ledger", str(ledger), "--file", "x.sql", "SELECT 1")
    assert r.exit_code == 2


# ------------------------------------------------------------ CLI conventions


def test_version() -> None:
    from kfm_ledger import __version__

    r = kfm("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"kfm {__version__}"


def test_completion_is_offered() -> None:
    r = kfm("--help")
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


def test_flags_are_shown_without_a_type() -> None:
    for cmd in (["get"], ["verify"], ["rollback"], ["query"], ["report", "energy"]):
        r = kfm(*cmd, "--help")
        assert r.exit_code == 0
        assert "<bool>" not in r.stdout, cmd


def test_a_held_lock_has_its_own_exit_code(ledger: Path, tmp_path: Path) -> None:
    from kfm_ledger.cli import EXIT_LOCKED, handle_errors
    from kfm_ledger.errors import LockedError

    @handle_errors
    def locked(json_out: bool = False, *, out: object) -> None:
        raise LockedError("the ledger is locked by another writer", key="lock")

    import typer

    with pytest.raises(typer.Exit) as e:
        locked()
    assert e.value.exit_code == EXIT_LOCKED == 3
