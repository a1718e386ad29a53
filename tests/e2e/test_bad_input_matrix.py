"""The bad-input matrix: `kfm append` on a real on-disk ledger refuses every kind of bad input.

Each case asserts (a) exit code 1, (b) the message names the input line, the field path and
why, and (c) every file in the ledger directory is byte-for-byte unchanged (the SQLite commit
index and the lock file excepted: they are derived / scratch files).  The ledger is made with
`kfm init` and a first `kfm append` of sample rows 0..9; bad batches build on sample rows 10+.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kfm_ledger.cli import app
from kfm_ledger.sample import sample_commit, sample_jsonl, sample_row
from kfm_ledger.schema import MAX_LINE_BYTES, encode_row

from conftest import copy_ledger

ORIGIN = "matrix.kfm.example/rollback-index"
FIRST_ROWS = 10  # sample rows 0..9 are in the ledger
runner = CliRunner()


def kfm(*args: str, input: bytes | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def snapshot(ledger: Path) -> dict[str, bytes]:
    """Every file of the ledger (path -> bytes), except the commit index and the lock."""
    return {
        p.relative_to(ledger).as_posix(): p.read_bytes()
        for p in sorted(ledger.rglob("*"))
        if p.is_file() and not p.name.startswith("index.sqlite") and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("template") / "ledger"
    assert kfm("init", "--origin", ORIGIN, "--ledger", str(d)).exit_code == 0
    rows = d.parent / "first.jsonl"
    rows.write_bytes(sample_jsonl(FIRST_ROWS))
    r = kfm("append", str(rows), "--ledger", str(d))
    assert r.exit_code == 0, r.output
    return d


@pytest.fixture
def ledger(template: Path, tmp_path: Path) -> Path:
    return copy_ledger(template, tmp_path)


# ------------------------------------------------------------------ input makers


def row(i: int = FIRST_ROWS, **top: Any) -> dict[str, Any]:
    """Sample row ``i`` as a JSON object (dict), top-level fields replaced by ``top``."""
    d = json.loads(encode_row(sample_row(i)))
    d.update(top)
    return d


def edit(i: int, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    d = row(i)
    change(d)
    return d


def jsonl(*rows: dict[str, Any] | bytes) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def line(i: int = FIRST_ROWS) -> bytes:
    return json.dumps(row(i)).encode()


def number(i: int, field: str, literal: bytes) -> bytes:
    """Row ``i`` as a JSON line with the number ``field`` written as ``literal`` (NaN, 1e400...)."""
    out, n = re.subn(rb'"' + field.encode() + rb'": [-0-9.e]+', b'"' + field.encode() + b'": ' + literal, line(i))
    assert n == 1
    return out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets ``a.b[0].c`` (a dotted path with list indexes) to ``value``."""

    def change(d: dict[str, Any]) -> None:
        *parents, last = path.replace("]", "").replace("[", ".").split(".")
        node: Any = d
        for step in parents:
            node = node[int(step)] if step.isdigit() else node[step]
        node[int(last) if last.isdigit() else last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for step in parents:
            node = node[step]
        del node[last]

    return change


def bad(path: str, value: Any, i: int = FIRST_ROWS) -> bytes:
    """JSONL of one good row (i) then row i+1 with ``path`` set to ``value``: the problem is on line 2."""
    return jsonl(row(i), edit(i + 1, _set(path, value)))


def oversize_row() -> dict[str, Any]:
    models = [
        {"name": f"model-{k}", "version": "1.0.0", "uri": f"s3://kfm-models/model-{k}/1.0.0/weights.bin"}
        for k in range(1000)
    ]
    return row(FIRST_ROWS, models=models)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


C10, C11 = sample_commit(FIRST_ROWS), sample_commit(FIRST_ROWS + 1)
TEXT = "expected non-empty text without control characters or leading/trailing whitespace"
S3 = "expected an s3://<bucket>/<key> URI"
HEX = "expected 64 lowercase hex digits"
NUMBER = "expected a finite number >= 0"
LAST_CREATED = sample_row(FIRST_ROWS - 1).created_at

# (id, input bytes, every text the message must contain)
CASES = [
    # --- malformed JSON, bad encodings
    ("truncated-object", jsonl(row(10)) + line(11)[:40] + b"\n",
     ["line 2: $: invalid JSON: input data was truncated"]),
    ("trailing-comma", jsonl(line(10)[:-1] + b",}"),
     ["line 1: $: invalid JSON: trailing comma in object (byte "]),
    ("NaN", jsonl(row(10), number(11, "kwh", b"NaN")),
     ["line 2: $: invalid JSON: invalid character (byte "]),
    ("Infinity", jsonl(number(10, "co2e_kg", b"Infinity")),
     ["line 1: $: invalid JSON: invalid character (byte "]),
    ("number-too-large", jsonl(number(10, "kwh", b"1e400")),
     ["line 1: $.energy_carbon.kwh: expected a finite number >= 0, found a number out of range"]),
    ("non-utf8", jsonl(row(10), line(11).replace(b"kfm-main", b"kfm-m\xffain", 1)),
     ["line 2: $: invalid UTF-8 at byte "]),
    ("utf16-with-bom", line(10).decode().encode("utf-16"),
     ["line 1: $: invalid JSON: invalid character (byte 0)"]),
    ("utf16-le-no-bom", line(10).decode().encode("utf-16-le"),
     ["line 1: $: invalid JSON: object keys must be strings (byte 1)"]),
    ("lone-surrogate-escape", jsonl(line(10).replace(b'"producer": "', b'"producer": "\\ud800', 1)),
     ["line 1: $: invalid JSON: unexpected end of escaped utf-16 surrogate pair"]),
    ("duplicate-key", jsonl(line(10).replace(b'"producer": ', b'"producer": "x", "producer": ', 1)),
     ["line 1: $: duplicate key 'producer'"]),
    # --- not a row at all
    ("scalar", b"42\n", ["line 1: $: expected a JSON object, found 42"]),
    ("string", b'"rollback"\n', ["line 1: $: expected a JSON object, found 'rollback'"]),
    ("null", b"null", ["line 1: $: expected a JSON object, found null"]),
    ("array-of-scalars", b"[\n1,\n2]", ["line 2: $: expected a JSON object, found 1",
                                          "line 3: $: expected a JSON object, found 2"]),
    # --- empty input
    ("empty-0-bytes", b"", ["line 1: $: no rows in the input"]),
    ("only-whitespace", b"  \n\n\t\r\n", ["line 1: $: no rows in the input"]),
    ("empty-array", b"[]\n", ["line 1: $: no rows in the input"]),
    ("only-bom", b"\xef\xbb\xbf\n", ["line 1: $: no rows in the input"]),
    # --- missing, extra and mistyped fields
    ("missing-field", jsonl(row(10), edit(11, _delete("producer"))),
     ["line 2: $: missing required field 'producer'"]),
    ("missing-nested-field", jsonl(edit(10, _delete("energy_carbon.co2e_kg"))),
     ["line 1: $.energy_carbon: missing required field 'co2e_kg'"]),
    ("extra-field-top", jsonl(row(10, rollback_of="abc")), ["line 1: $: unknown field 'rollback_of'"]),
    ("extra-field-nested", bad("models[0].sha256", HEX),
     ["line 2: $.models[0]: unknown field 'sha256'"]),
    ("string-for-number", bad("energy_carbon.kwh", "1.5"),
     ["line 2: $.energy_carbon.kwh: expected a number, found '1.5'"]),
    ("number-for-string", bad("producer", 5), ["line 2: $.producer: expected a string, found 5"]),
    ("list-for-object", bad("checksums", []), ["line 2: $.checksums: expected a JSON object, found an array"]),
    ("object-for-list", bad("configs", {}), ["line 2: $.configs: expected an array, found an object"]),
    ("bool-for-number", bad("energy_carbon.co2e_kg", True),
     ["line 2: $.energy_carbon.co2e_kg: expected a number, found true"]),
    ("null-for-string", bad("otel_trace_id", None), ["line 2: $.otel_trace_id: expected a string, found null"]),
    # --- every field rule
    ("text-empty", bad("openlineage_run_id", ""), [f"line 2: $.openlineage_run_id: {TEXT}, found ''"]),
    ("text-leading-space", bad("models[0].version", " 1.0"), [f"line 2: $.models[0].version: {TEXT}, found ' 1.0'"]),
    ("text-control-char", bad("lakefs_repo", "kfm\tmain"), [f"line 2: $.lakefs_repo: {TEXT}, found 'kfm\\tmain'"]),
    ("branch", bad("lakefs_branch", "-prod"),
     ["line 2: $.lakefs_branch: expected a lakeFS branch name", "found '-prod'"]),
    ("commit-chars", bad("lakefs_commit", "abc/def"),
     ["line 2: $.lakefs_commit: expected a lakeFS commit id: 1 to 128 lower-case letters", "found 'abc/def'"]),
    ("commit-dotdot", bad("lakefs_commit", ".."),
     ["line 2: $.lakefs_commit: expected a lakeFS commit id", "found '..'"]),
    ("created_at-offset", bad("created_at", "2025-01-01T06:10:00+00:00"),
     ["line 2: $.created_at: expected an RFC 3339 UTC timestamp ending in 'Z'", "found '2025-01-01T06:10:00+00:00'"]),
    ("created_at-lowercase", bad("created_at", "2025-01-01t06:10:00z"),
     ["line 2: $.created_at: expected an RFC 3339 UTC timestamp", "found '2025-01-01t06:10:00z'"]),
    ("created_at-7-digits", bad("created_at", "2025-01-01T06:10:00.1234567Z"),
     ["line 2: $.created_at: expected an RFC 3339 UTC timestamp", "1 to 6 fractional digits without trailing zeros"]),
    ("created_at-not-a-date", bad("created_at", "2025-02-30T06:10:00Z"),
     ["line 2: $.created_at: not a real UTC date and time", "found '2025-02-30T06:10:00Z'"]),
    ("created_at-leap-second", bad("created_at", "2025-06-30T23:59:60Z"),
     ["line 2: $.created_at: not a real UTC date and time"]),
    ("config-sha256-uppercase", bad("configs[0].sha256", "AB" * 32),
     [f"line 2: $.configs[0].sha256: {HEX}, found '{'AB' * 32}'"]),
    ("artifact-sha256-short", bad("checksums.artifact_sha256", "a" * 63),
     [f"line 2: $.checksums.artifact_sha256: {HEX}, found '{'a' * 63}'"]),
    ("artifact-uri-scheme", bad("artifact_uri", f"https://kfm-registry/{C11}.tar.zst"),
     [f"line 2: $.artifact_uri: {S3}, found 'https://kfm-registry/"]),
    ("artifact-uri-bucket", bad("artifact_uri", f"s3://KFM/{C11}.tar.zst"), [f"line 2: $.artifact_uri: {S3}"]),
    ("model-uri", bad("models[0].uri", "gs://kfm-models/x.bin"),
     [f"line 2: $.models[0].uri: {S3}, found 'gs://kfm-models/x.bin'"]),
    ("in-toto-uri", bad("signatures.in_toto", "s3://kfm-registry/"),
     [f"line 2: $.signatures.in_toto: {S3}, found 's3://kfm-registry/'"]),
    ("stac-uri", bad("data_snapshot[0].stac", "ftp://kfm-stac/c.json"),
     ["line 2: $.data_snapshot[0].stac: expected an s3://<bucket>/<key> or https://<host>/<path> URI",
      "found 'ftp://kfm-stac/c.json'"]),
    ("lakefs-ref", bad("data_snapshot[0].lakefs_ref", "lakefs://kfm-main/stac"),
     ["line 2: $.data_snapshot[0].lakefs_ref: expected a lakefs://<repo>@<ref>[/<path>] URI",
      "found 'lakefs://kfm-main/stac'"]),
    ("artifact-uri-other-commit", bad("artifact_uri", f"s3://kfm-registry/rollback-registry/artifacts/{C10}.tar.zst"),
     [f"line 2: $.artifact_uri: last path segment must be '{C11}.tar.zst' (the bundle for lakefs_commit '{C11}'), "
      f"found '{C10}.tar.zst'"]),
    ("negative-kwh", bad("energy_carbon.kwh", -0.5), [f"line 2: $.energy_carbon.kwh: {NUMBER}, found -0.5"]),
    ("negative-co2e", bad("energy_carbon.co2e_kg", -1), [f"line 2: $.energy_carbon.co2e_kg: {NUMBER}, found -1"]),
    # --- batch rules
    ("duplicate-commit-in-batch",
     jsonl(row(10), row(11), row(12, lakefs_commit=C10, artifact_uri=row(10)["artifact_uri"])),
     [f"line 3: $.lakefs_commit: duplicate lakefs_commit '{C10}': also on line 1 (one row per lakeFS commit)"]),
    ("created_at-backwards-in-batch", jsonl(row(11), row(10)),
     [f"line 2: $.created_at: created_at goes backwards: '{sample_row(10).created_at}' is earlier than "
      f"'{sample_row(11).created_at}' on line 1"]),
    ("oversize-row", jsonl(row(10), oversize_row()),
     ["line 2: $: canonical row is ", f"bytes, over the {MAX_LINE_BYTES}-byte limit"]),
    # --- rules that need the ledger
    ("duplicate-commit-in-ledger", jsonl(row(3, created_at=row(10)["created_at"])),
     [f"line 1: $.lakefs_commit: commit '{sample_commit(3)}' is already in the ledger at index 3",
      "one row per lakeFS commit"]),
    ("duplicate-identical-row", jsonl(row(9)),
     [f"line 1: $.lakefs_commit: commit '{sample_commit(9)}' is already in the ledger at index 9 "
      "with identical bytes"]),
    ("created_at-before-ledger", jsonl(row(10, created_at="2024-12-31T23:59:59Z"), row(11)),
     [f"line 1: $.created_at: 2024-12-31T23:59:59Z is earlier than the last row's created_at {LAST_CREATED}"]),
    # --- shapes: arrays, pretty-printed objects, only row 2 of 3 bad
    ("array-element-bad",
     b"[\n" + line(10) + b",\n" + json.dumps(edit(11, _set("models[0].uri", "x"))).encode() + b"\n]",
     [f"line 3: $.models[0].uri: {S3}, found 'x'"]),
    ("pretty-object-bad", json.dumps(row(10, producer=""), indent=2).encode(),
     [f"line 1: $.producer: {TEXT}, found ''"]),
    ("3-rows-row-2-bad", jsonl(row(10), edit(11, _set("checksums.artifact_sha256", "nope")), row(12)),
     ["1 problem(s); nothing was written", f"line 2: $.checksums.artifact_sha256: {HEX}, found 'nope'"]),
    ("every-problem-listed", jsonl(row(10, producer=""), row(11, otel_trace_id=7), row(12, extra=1)),
     ["3 problem(s)", "line 1: $.producer", "line 2: $.otel_trace_id", "line 3: $: unknown field 'extra'"]),
    # --- nesting deeper than the decoder follows
    ("deep-array", (deep(3000) + "\n").encode(), ["line 1: $: nested more than 64 levels deep (byte 64)"]),
    ("deep-field", jsonl(row(10), b'{"lakefs_repo": ' + deep(3000).encode() + b"}"),
     ["line 2: $: nested more than 64 levels deep (byte 79)"]),
    ("deep-pretty-object", b'{\n  "lakefs_repo":\n' + deep(3000).encode() + b"\n}\n",
     ["line 3: $: nested more than 64 levels deep"]),
]


@pytest.mark.parametrize("data, expected", [pytest.param(d, e, id=i) for i, d, e in CASES])
def test_bad_input_is_refused_naming_line_field_and_why(
    ledger: Path, tmp_path: Path, data: bytes, expected: list[str]
) -> None:
    before = snapshot(ledger)
    source = tmp_path / "input.jsonl"
    source.write_bytes(data)
    r = kfm("append", str(source), "--ledger", str(ledger))
    assert r.exit_code == 1, r.output
    assert r.stdout == ""
    assert r.stderr.startswith("kfm: error: input refused: ")
    assert "nothing was written" in r.stderr
    for text in expected:
        assert text in r.stderr, f"{text!r} not in:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    assert snapshot(ledger) == before


def test_the_ledger_refuses_with_only_the_problem_rows(ledger: Path, tmp_path: Path) -> None:
    """Row 2 of 3 bad: the two good rows are not named, and nothing is written."""
    before = snapshot(ledger)
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl(row(10), row(11, kwh=1), row(12)))
    r = kfm("append", str(source), "--ledger", str(ledger))
    assert r.exit_code == 1
    problems = [ln.strip() for ln in r.stderr.splitlines()[1:]]
    assert problems == ["line 2: $: unknown field 'kwh'"]
    assert snapshot(ledger) == before
    # The same rows without the bad field are accepted: the refusal was about that field only.
    source.write_bytes(jsonl(row(10), row(11), row(12)))
    assert kfm("append", str(source), "--ledger", str(ledger)).exit_code == 0
    assert snapshot(ledger) != before


def test_bad_input_on_stdin(ledger: Path) -> None:
    before = snapshot(ledger)
    r = kfm("append", "-", "--ledger", str(ledger), input=bad("energy_carbon.kwh", -2))
    assert r.exit_code == 1
    assert f"line 2: $.energy_carbon.kwh: {NUMBER}, found -2" in r.stderr
    assert snapshot(ledger) == before


def test_bom_prefixed_input_is_accepted_and_stored_without_the_bom(ledger: Path, tmp_path: Path) -> None:
    """A UTF-8 byte order mark before valid input is not bad input: it is ignored."""
    source = tmp_path / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + jsonl(row(10), row(11)))
    r = kfm("append", str(source), "--ledger", str(ledger), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["appended"] == 2
    stored = (ledger / "rollback-index.jsonl").read_bytes().splitlines()
    assert stored[-2:] == [encode_row(sample_row(10)), encode_row(sample_row(11))]
    assert kfm("verify", "--ledger", str(ledger)).exit_code == 0


def test_unreadable_input_files_are_one_line_errors(ledger: Path, tmp_path: Path) -> None:
    before = snapshot(ledger)
    r = kfm("append", str(tmp_path / "nonexist.jsonl"), "--ledger", str(ledger))
    assert r.exit_code == 1
    assert r.stderr == f"kfm: error: cannot access {tmp_path / 'nonexist.jsonl'}: No such file or directory\n"
    r = kfm("append", str(tmp_path), "--ledger", str(ledger))
    assert r.exit_code == 1
    assert r.stderr == f"kfm: error: cannot access {tmp_path}: Is a directory\n"
    assert snapshot(ledger) == before


# ------------------------------------------------------------ real processes


def run_kfm(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "kfm_ledger", *args], input=input, capture_output=True, env=env, timeout=60
    )


def test_real_process_stdin_non_utf8_and_deep_nesting(ledger: Path) -> None:
    """The installed program, not the test runner: the same messages, exit 1, no traceback."""
    before = snapshot(ledger)
    cases = [
        (jsonl(row(10), line(11).replace(b"kfm-main", b"kfm-m\xffain", 1)), "line 2: $: invalid UTF-8 at byte "),
        (jsonl(row(10, lakefs_repo=json.loads(deep(100)))), "line 1: $.lakefs_repo: expected a string, found an array"),
        (b'{"lakefs_repo": ' + deep(5000).encode() + b"}\n", "line 1: $: nested more than 64 levels deep (byte 79)"),
        (b"", "line 1: $: no rows in the input"),
    ]
    for data, expected in cases:
        r = run_kfm("append", "-", "--ledger", str(ledger), input=data)
        stderr = r.stderr.decode()
        assert r.returncode == 1, stderr
        assert expected in stderr and "Traceback" not in stderr, stderr
        assert r.stdout == b""
    assert snapshot(ledger) == before


def test_real_process_file_input_rejected_then_accepted(ledger: Path, tmp_path: Path) -> None:
    before = snapshot(ledger)
    source = tmp_path / "rows.jsonl"
    source.write_bytes(jsonl(row(10), row(11, created_at="2025-01-01T00:00:00Z")))
    r = run_kfm("append", str(source), "--ledger", str(ledger))
    assert r.returncode == 1
    assert "line 2: $.created_at: created_at goes backwards" in r.stderr.decode()
    assert snapshot(ledger) == before


def test_deep_nesting_is_a_schema_error_for_single_rows_too() -> None:
    """decode_row / canonicalize (used outside batches) say the same, as a SchemaError at $."""
    from kfm_ledger.errors import SchemaError
    from kfm_ledger.schema import canonicalize, decode_row

    data = b'{"lakefs_repo": ' + deep(5000).encode() + b"}"
    for fn in (decode_row, canonicalize):
        with pytest.raises(SchemaError) as e:
            fn(data)
        assert (e.value.path, e.value.message) == ("$", "nested more than 64 levels deep (byte 79)")
    # Just deep enough to decode, not too deep to report: the ordinary type error.
    with pytest.raises(SchemaError, match=r"^\$\.lakefs_repo: expected a string, found an array$"):
        decode_row(b'{"lakefs_repo": ' + deep(200).encode() + b"}")
