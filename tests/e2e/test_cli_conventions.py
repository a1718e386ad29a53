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
    """A real writer lock held by this process: `kfm append` in another process exits 3, says
    so, and the library error carries the same exit code."""
    import json as json_mod
    import shutil

    from kfm_ledger.cli import EXIT_LOCKED
    from kfm_ledger.errors import LockedError

    copy = tmp_path / "ledger"
    shutil.copytree(ledger, copy)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(sample_jsonl(1, start=900))
    with Ledger.open(copy) as led, led.writer_lock(wait=0):
        done = subprocess.run(
            [sys.executable, "-m", "kfm_ledger", "append", str(rows), "--ledger", str(copy), "--wait", "0", "--json"],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == EXIT_LOCKED == LockedError.exit_code == 3, done.stderr
    assert "another writer" in done.stderr
    assert json_mod.loads(done.stdout)["error"]["exit_code"] == 3
    with Ledger.open(copy) as led:
        assert led.size == Ledger.open(ledger).size  # nothing appended


# ------------------------------------------------------------- --json envelope


size_root = {"tree_size", "root"}


def _envelope_cases(ledger: Path, tmp: Path) -> list[tuple[list[str], set[str]]]:
    with Ledger.open(ledger) as led:
        c3, c9 = led.entry(3).row.lakefs_commit, led.entry(9).row.lakefs_commit
    proof, entry = tmp / "p.tlog-proof", tmp / "e.json"
    proof.write_bytes(kfm("prove", "--ledger", str(ledger), "--index", "3").stdout_bytes)
    entry.write_bytes(kfm("get", "--ledger", str(ledger), "--index", "3").stdout_bytes)
    size_root = {"tree_size", "root"}
    rows = tmp / "rows.jsonl"
    rows.write_bytes(sample_jsonl(2, start=300))
    return [
        (["init", "--ledger", str(tmp / "new"), "--origin", "x.example/log"], set()),
        (["keygen", "x.example/k", "--key-file", str(tmp / "k"), "--vkey-file", str(tmp / "k.pub")], set()),
        (["get", "--index", "3"], {"index", "lakefs_commit"}),
        (["prove", "--index", "3"], {"index", "lakefs_commit"} | size_root),
        (["prove", "--from", "150"], size_root),
        (["verify-proof", str(proof), "--vkey", str(ledger / "log.vkey"), "--entry", str(entry)],
         {"index"} | size_root),
        (["verify"], size_root),
        (["checkpoint"], size_root),
        (["rebuild"], size_root),
        (["recover"], {"tree_size"}),
        (["export", "--to", str(tmp / "export.jsonl")], {"rows"} | size_root),
        (["rollback", "--index", "3"], {"index", "lakefs_commit"}),
        (["diff", "--from", c3, "--to", c9], set()),
        (["explain", "--commit", c9], set()),
        (["mirror", "--check"], size_root),
        (["query", "SELECT 1 AS x"], size_root),
        (["impact", "--index", "3"], size_root),
        (["report", "energy"], size_root),
        (["append", str(rows)], set()),  # last: it makes the mirror stale
    ]


def test_json_envelope_across_every_command(ledger: Path, tmp_path: Path) -> None:
    """Every command's --json document has "ok" and the canonical names (docs/cli.md)."""
    from kfm_ledger.cli import app as the_app

    led_copy = tmp_path / "ledger"
    import shutil

    shutil.copytree(ledger, led_copy)
    cases = _envelope_cases(led_copy, tmp_path)
    commands = {c.name for c in the_app.registered_commands} | {"report energy"}
    covered = {" ".join(args[:2]) if args[0] == "report" else args[0] for args, _ in cases}
    # schema (a JSON Schema) and lineage (JSON-LD) print standard documents, not envelopes;
    # demo is covered by tests/e2e/test_demo.py; witness-push (it needs a witness server) by
    # tests/witness/test_push.py; serve (a server, no document) and monitor (a stream of JSON
    # event lines) by tests/net/test_cli_net.py.
    assert commands - covered - {"report", None} == {"schema", "lineage", "demo", "witness-push", "serve", "monitor"}
    for args, keys in cases:
        extra = [] if args[0] in ("init", "keygen", "verify-proof") else ["--ledger", str(led_copy)]
        r = kfm(*args, "--json", *extra)
        assert r.exit_code == 0, (args, r.output)
        doc = __import__("json").loads(r.stdout)
        assert doc["ok"] is True, args
        assert keys <= set(doc), (args, keys - set(doc))
        if "checkpoint" in doc:
            assert size_root <= set(doc["checkpoint"]), args
    err = kfm("get", "--ledger", str(led_copy), "--commit", "ffffffffff", "--json")
    assert err.exit_code == 1 and __import__("json").loads(err.stdout)["ok"] is False


def test_one_row_options(ledger: Path) -> None:
    d = str(ledger)
    with Ledger.open(ledger) as led:
        c3, c9 = led.entry(3).row.lakefs_commit, led.entry(9).row.lakefs_commit
    by_pos = kfm("diff", "--ledger", d, c3[:12], c9, "--json").stdout
    assert kfm("diff", "--ledger", d, "--from", c3, "--to", c9, "--json").stdout == by_pos
    assert kfm("diff", "--ledger", d, "--from-index", "3", "--to-index", "9", "--json").stdout == by_pos
    assert kfm("diff", "--ledger", d, c3, "--to-index", "9", "--json").stdout == by_pos
    assert kfm("diff", "--ledger", d, c3).exit_code == 2
    assert kfm("diff", "--ledger", d, c3, "--from", c3, "--to", c9).exit_code == 2
    for cmd in ("rollback", "lineage", "explain", "impact"):
        by_index = kfm(cmd, "--ledger", d, "--index", "3", "--json")
        by_commit = kfm(cmd, "--ledger", d, "--commit", c3, "--json")
        assert by_index.exit_code == 0 and by_index.stdout == by_commit.stdout, cmd
        assert kfm(cmd, "--ledger", d).exit_code == 2, cmd
        assert kfm(cmd, "--ledger", d, "--index", "3", "--commit", c3).exit_code == 2, cmd


def test_rollback_withholds_the_destructive_action_when_a_check_fails(ledger: Path, tmp_path: Path) -> None:
    d = str(ledger)
    ok = kfm("rollback", "--ledger", d, "--index", "3")
    assert ok.exit_code == 0 and "lakectl branch move-to-commit" in ok.stdout and "WITHHELD" not in ok.stdout
    wrong = tmp_path / "bundle.tar.zst"
    wrong.write_bytes(b"not the bundle")
    r = kfm("rollback", "--ledger", d, "--index", "3", "--bundle", str(wrong))
    assert r.exit_code == 1
    assert "move-to-commit" not in r.stdout and "[restore, DESTRUCTIVE] WITHHELD, do not run it: " in r.stdout
    assert "NOT READY: " in r.stdout and "lakectl branch create" in r.stdout  # the safe action stays
    import json

    doc = json.loads(kfm("rollback", "--ledger", d, "--index", "3", "--bundle", str(wrong), "--json").stdout)
    restore = next(a for a in doc["actions"] if a["id"] == "restore")
    assert doc["ok"] is False and restore["command"] is None and restore["api"] is None and restore["withheld"]
    r = kfm("rollback", "--ledger", d, "--index", "3", "--bundle", str(wrong), "--restore-to", "out", "--json")
    doc = json.loads(r.stdout)
    assert doc["restore"]["dest"] == str(Path("out").resolve())
    assert doc["bundle_check"]["found_sha256"] is not None


def test_every_command_has_working_help() -> None:
    """`--help` of every command and subcommand prints its options (help texts are literal, so
    "http://HOST:PORT[/PREFIX]" is shown as written, not taken for markup)."""
    import typer.main

    from kfm_ledger.cli import app

    def walk(group: object, prefix: list[str]) -> list[list[str]]:
        found = []
        for name, cmd in getattr(group, "commands", {}).items():
            found.append([*prefix, name])
            found += walk(cmd, [*prefix, name])
        return found

    paths = walk(typer.main.get_command(app), [])
    assert ["client", "prove"] in paths and ["witness", "serve"] in paths
    for path in paths:
        r = kfm(*path, "--help")
        assert r.exit_code == 0, (path, r.stdout, r.stderr)
        assert "Usage:" in r.stdout, path
    r = kfm("client", "prove", "--help")
    assert "[/PREFIX]" in r.stdout
