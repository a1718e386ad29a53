"""Progress (docs/cli.md, "Progress"): lines on a non-terminal stderr for the long commands,
none with --quiet, stdout's --json untouched; the library's callbacks rise to their total."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kfm_ledger.log import bulk
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.mirror import build_mirror, write_mirror
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of

ROWS = 3000

# The CLI in a subprocess (stderr a pipe, not a terminal), with the bulk path's thresholds
# lowered so that a few thousand rows take the streamed append_file path in many chunks.
SMALL_CHUNKS = (
    "import sys\n"
    "from kfm_ledger.log import bulk\n"
    "bulk.PARALLEL_THRESHOLD = 1\n"
    "bulk.CHUNK_BYTES = 64 << 10\n"
    "from kfm_ledger.cli import main\n"
    "main(sys.argv[1:])\n"
)
LINE = re.compile(r"^kfm (?P<cmd>[a-z :-]+?): (?:(?P<done>[\d,.]+) of (?P<total>[\d,.]+) (?P<unit>MB|rows) "
                  r"\((?P<pct>\d+)%\), [\d,.]+ (?:MB|rows)/s|(?P<pct2>\d+)% after [\d,.]+ s)$")


def kfm(*args: str, interval: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KFM_PROGRESS_INTERVAL": interval}
    return subprocess.run(
        [sys.executable, "-c", SMALL_CHUNKS, *args], capture_output=True, text=True, env=env, timeout=120
    )


def progress_lines(stderr: str, command: str) -> list[int]:
    """The percentages of ``kfm COMMAND:`` progress lines, in order."""
    found = []
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m and m["cmd"] == command:
            found.append(int(m["pct"] or m["pct2"]))
    return found


@pytest.fixture(scope="module")
def appended(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    d = tmp_path_factory.mktemp("progress")
    ledger = d / "ledger"
    assert kfm("init", "--origin", ORIGIN, "--ledger", str(ledger)).returncode == 0
    rows = d / "rows.jsonl"
    rows.write_bytes(sample_jsonl(ROWS))
    return ledger, kfm("append", str(rows), "--ledger", str(ledger), "--json")


def test_a_long_append_prints_progress_lines_on_a_non_terminal_stderr(appended) -> None:
    _, r = appended
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["appended"] == ROWS  # stdout holds the JSON document alone
    pcts = progress_lines(r.stderr, "append")
    # Many lines: the streamed path (append_file, pass 1 per chunk), not the in-memory one.
    assert len(pcts) >= 10, r.stderr
    assert pcts == sorted(pcts) and pcts[-1] == 100
    assert all(LINE.match(line) for line in r.stderr.splitlines()), r.stderr  # nothing else on stderr


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["verify"], "verify"),
        (["rebuild"], "rebuild"),
        (["mirror"], "mirror"),
        (["mirror", "--check"], "mirror --check"),
        (["report", "energy", "--source", "jsonl"], "report energy"),
        (["impact", "--model", "focus-transformer", "--source", "jsonl"], "impact"),
    ],
)
def test_verify_rebuild_mirror_print_progress_lines(appended, args: list[str], command: str) -> None:
    ledger, _ = appended
    r = kfm(*args, "--ledger", str(ledger), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    pcts = progress_lines(r.stderr, command)
    assert pcts and pcts == sorted(pcts) and pcts[-1] == 100, r.stderr
    if command in ("verify", "rebuild"):
        assert len(pcts) >= 5  # per chunk


@pytest.mark.parametrize("args", [["verify"], ["rebuild"], ["mirror"]])
def test_quiet_prints_no_progress(appended, args: list[str]) -> None:
    ledger, _ = appended
    r = kfm(*args, "--ledger", str(ledger), "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_quiet_append_and_the_default_interval_print_nothing_for_a_fast_run(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    assert kfm("init", "--origin", ORIGIN, "--ledger", str(ledger)).returncode == 0
    (tmp_path / "a.jsonl").write_bytes(sample_jsonl(300))
    (tmp_path / "b.jsonl").write_bytes(sample_jsonl(300, start=300))
    r = kfm("append", str(tmp_path / "a.jsonl"), "--ledger", str(ledger), "--quiet", "--mirror")
    assert r.returncode == 0 and r.stderr == ""
    # Without KFM_PROGRESS_INTERVAL: one line every 5 s, the first after 5 s: none here.
    r = kfm("append", str(tmp_path / "b.jsonl"), "--ledger", str(ledger), interval="5")
    assert r.returncode == 0 and r.stderr == ""


# ------------------------------------------------------------------ the library's callbacks


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    def check(self, total: int, at_least: int = 1) -> None:
        assert len(self.calls) >= at_least, self.calls
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones)
        assert {t for _, t in self.calls} == {total}
        assert self.calls[-1] == (total, total)


def test_the_callbacks_rise_to_their_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    fill(led, 10)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(sample_jsonl(800, start=10))

    append_calls = Calls()
    led.append_file(rows, signer=signer_of(led), workers=2, progress=append_calls)
    append_calls.check(rows.stat().st_size, at_least=10)  # bytes of the input, per chunk

    jsonl_size = (tmp_path / "ledger" / "rollback-index.jsonl").stat().st_size
    verify_calls = Calls()
    assert verify_ledger(led, progress=verify_calls).ok
    verify_calls.check(jsonl_size, at_least=10)  # bytes of the JSONL

    rebuild_calls = Calls()
    led.rebuild(progress=rebuild_calls)
    rebuild_calls.check(3 * jsonl_size, at_least=3)  # bytes over three passes

    mirror_calls = Calls()
    write_mirror(led, progress=mirror_calls)
    mirror_calls.check(led.size)  # rows
    build_calls = Calls()
    build_mirror(led, progress=build_calls)
    build_calls.check(led.size)


def test_an_in_memory_append_file_reports_its_end(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    rows = tmp_path / "rows.json"
    rows.write_bytes(b"[" + b",".join(sample_jsonl(3).splitlines()) + b"]")
    calls = Calls()
    led.append_file(rows, signer=signer_of(led), progress=calls)
    calls.check(rows.stat().st_size)
