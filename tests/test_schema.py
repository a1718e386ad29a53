"""Tests for kfm_ledger.schema: the row, its rules and messages, canonical bytes, batches."""

from __future__ import annotations

import copy
import datetime
import json
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.errors import InputRejected, KfmError, RowProblem, SchemaError
from kfm_ledger.schema import (
    MAX_LINE_BYTES,
    Checksums,
    Config,
    DataSnapshot,
    EnergyCarbon,
    Entry,
    Model,
    Row,
    Signatures,
    canonicalize,
    created_at_datetime,
    decode_canonical_line,
    decode_row,
    encode_row,
    parse_batch,
    parse_created_at,
    parse_rows,
    row_json_schema,
    row_problems,
)

HEX_A = "a" * 64
HEX_B = "b" * 64


def make_row(i: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid row as a dict (the spec's example, made concrete); ``i`` varies commit and time."""
    commit = f"abc{i:04d}"
    row: dict[str, Any] = {
        "lakefs_repo": "kfm-main",
        "lakefs_branch": "prod",
        "lakefs_commit": commit,
        "created_at": f"2025-11-30T12:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "producer": "airflow:dag=kfm-promote",
        "openlineage_run_id": "uuid-0001",
        "otel_trace_id": "trace-0001",
        "artifact_uri": f"s3://kfm-registry/rollback/artifacts/{commit}.tar.zst",
        "data_snapshot": [
            {"stac": "s3://kfm-stac/landsat/collection.json", "lakefs_ref": f"lakefs://kfm@{commit}/path"}
        ],
        "models": [
            {"name": "focus-transformer", "version": "3.1.0", "uri": "s3://models/focus-transformer/3.1.0.bin"}
        ],
        "configs": [{"path": "configs/pipeline.yaml", "sha256": HEX_A}],
        "checksums": {"artifact_sha256": HEX_B},
        "signatures": {"in_toto": f"s3://kfm-registry/slsa/{commit}.attestation.json"},
        "energy_carbon": {"kwh": 1.72, "co2e_kg": 0.81},
    }
    row.update(changes)
    return row


def dumps(row: Any) -> bytes:
    return json.dumps(row).encode()


def with_value(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (default make_row()) with the value at ``$.a.b[0].c`` replaced."""
    row = copy.deepcopy(base if base is not None else make_row())
    steps = re.findall(r"\.(\w+)|\[(\d+)\]", path)
    node: Any = row
    for name, index in steps[:-1]:
        node = node[name] if name else node[int(index)]
    name, index = steps[-1]
    node[name if name else int(index)] = value
    return row


def without(path: str) -> dict[str, Any]:
    row = make_row()
    steps = re.findall(r"\.(\w+)|\[(\d+)\]", path)
    node: Any = row
    for name, index in steps[:-1]:
        node = node[name] if name else node[int(index)]
    del node[steps[-1][0]]
    return row


def shown(value: str) -> str:
    """A found string as messages show it: quoted, cut to 80 characters."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def schema_error(data: bytes | str) -> SchemaError:
    # canonicalize: the rules for new rows (decode_row also reads older stored spellings).
    with pytest.raises(SchemaError) as info:
        canonicalize(data)
    return info.value


SPEC_EXAMPLE_CANONICAL = (
    b'{"lakefs_repo":"kfm-main","lakefs_branch":"prod","lakefs_commit":"abc0000",'
    b'"created_at":"2025-11-30T12:00:00Z","producer":"airflow:dag=kfm-promote",'
    b'"openlineage_run_id":"uuid-0001","otel_trace_id":"trace-0001",'
    b'"artifact_uri":"s3://kfm-registry/rollback/artifacts/abc0000.tar.zst",'
    b'"data_snapshot":[{"stac":"s3://kfm-stac/landsat/collection.json","lakefs_ref":"lakefs://kfm@abc0000/path"}],'
    b'"models":[{"name":"focus-transformer","version":"3.1.0","uri":"s3://models/focus-transformer/3.1.0.bin"}],'
    b'"configs":[{"path":"configs/pipeline.yaml","sha256":"' + HEX_A.encode() + b'"}],'
    b'"checksums":{"artifact_sha256":"' + HEX_B.encode() + b'"},'
    b'"signatures":{"in_toto":"s3://kfm-registry/slsa/abc0000.attestation.json"},'
    b'"energy_carbon":{"kwh":1.72,"co2e_kg":0.81}}'
)


# ------------------------------------------------------------- valid rows


def test_valid_row_decodes_to_structs() -> None:
    row = decode_row(dumps(make_row()))
    assert row.lakefs_commit == "abc0000"
    assert row.data_snapshot == [
        DataSnapshot(stac="s3://kfm-stac/landsat/collection.json", lakefs_ref="lakefs://kfm@abc0000/path")
    ]
    assert row.models[0] == Model(
        name="focus-transformer", version="3.1.0", uri="s3://models/focus-transformer/3.1.0.bin"
    )
    assert row.configs == [Config(path="configs/pipeline.yaml", sha256=HEX_A)]
    assert row.checksums == Checksums(artifact_sha256=HEX_B)
    assert row.signatures == Signatures(in_toto="s3://kfm-registry/slsa/abc0000.attestation.json")
    assert row.energy_carbon == EnergyCarbon(kwh=1.72, co2e_kg=0.81)
    assert [f for f in Row.__struct_fields__] == [
        "lakefs_repo", "lakefs_branch", "lakefs_commit", "created_at", "producer",
        "openlineage_run_id", "otel_trace_id", "artifact_uri", "data_snapshot", "models",
        "configs", "checksums", "signatures", "energy_carbon",
    ]  # fmt: skip


def test_canonical_bytes_are_exact() -> None:
    assert canonicalize(dumps(make_row())) == SPEC_EXAMPLE_CANONICAL
    assert canonicalize(json.dumps(make_row())) == SPEC_EXAMPLE_CANONICAL  # str input too
    assert encode_row(decode_row(SPEC_EXAMPLE_CANONICAL)) == SPEC_EXAMPLE_CANONICAL
    assert not SPEC_EXAMPLE_CANONICAL.endswith(b"\n")


def test_decode_canonical_line() -> None:
    assert decode_canonical_line(SPEC_EXAMPLE_CANONICAL) == decode_row(SPEC_EXAMPLE_CANONICAL)
    spaced = json.dumps(make_row(), indent=1).encode()
    decode_row(spaced)  # valid...
    with pytest.raises(SchemaError, match=r"^\$: not in canonical form"):
        decode_canonical_line(spaced)  # ...but not canonical
    with pytest.raises(SchemaError, match="not in canonical form"):
        decode_canonical_line(SPEC_EXAMPLE_CANONICAL + b"\n")
    with pytest.raises(SchemaError, match=r"\$\.checksums\.artifact_sha256"):
        decode_canonical_line(SPEC_EXAMPLE_CANONICAL.replace(HEX_B.encode(), b"B" * 64))


def _shuffled(node: Any, rng: random.Random) -> Any:
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(node, list):
        return [_shuffled(v, rng) for v in node]
    return node


@pytest.mark.parametrize("seed", range(5))
def test_key_order_and_spacing_do_not_change_the_bytes(seed: int) -> None:
    rng = random.Random(seed)
    text = json.dumps(_shuffled(make_row(), rng), indent=rng.choice([None, 1, 4, "\t"]), ensure_ascii=bool(seed % 2))
    assert canonicalize("\n  " + text + " \r\n") == SPEC_EXAMPLE_CANONICAL


@pytest.mark.parametrize(
    ("number", "written"),
    [
        ("2", b"2.0"),
        ("0", b"0.0"),
        ("-0.0", b"0.0"),
        ("-0", b"0.0"),
        ("1.720", b"1.72"),
        ("1e-05", b"0.00001"),
        ("1E20", b"1e20"),
        ("100000000000000000000", b"1e20"),
        ("0.30000000000000004", b"0.30000000000000004"),
        ("1.7976931348623157e308", b"1.7976931348623157e308"),
    ],
)
def test_numbers_are_written_one_way(number: str, written: bytes) -> None:
    text = dumps(make_row()).replace(b'"kwh": 1.72', b'"kwh": ' + number.encode())
    assert b'"kwh":' + written + b"," in canonicalize(text)


def test_empty_lists_are_allowed() -> None:
    row = decode_row(dumps(make_row(data_snapshot=[], models=[], configs=[])))
    assert (row.data_snapshot, row.models, row.configs) == ([], [], [])
    assert b'"data_snapshot":[],"models":[],"configs":[]' in encode_row(row)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$.lakefs_branch", "release/v1.2"),
        ("$.lakefs_branch", "_tmp-x"),
        ("$.lakefs_commit", "a" * 128),
        ("$.lakefs_commit", "v1.0-rc_2"),
        ("$.created_at", "2024-02-29T23:59:59.123456Z"),
        ("$.created_at", "2025-11-30T12:00:00.5Z"),
        ("$.producer", "Bärbel's dag \"x\" \\ ü"),
        ("$.models[0].version", "3.1.0+build.7"),
        ("$.data_snapshot[0].stac", "https://stac.example.org:8443/collections/landsat.json"),
        ("$.data_snapshot[0].lakefs_ref", "lakefs://kfm@main~2"),
        ("$.data_snapshot[0].lakefs_ref", "lakefs://kfm-main@abc123/"),
        ("$.models[0].uri", "s3://my.bucket-1/a/b/c d".replace(" ", "%20")),
        ("$.energy_carbon.kwh", 0),
        ("$.energy_carbon.co2e_kg", 12345678901234567890),
    ],
)
def test_accepted_values(path: str, value: Any) -> None:
    row = with_value(path, value)
    if path == "$.lakefs_commit":
        row["artifact_uri"] = f"s3://kfm-registry/rollback/artifacts/{value}.tar.zst"
    decoded = json.loads(encode_row(decode_row(dumps(row))))
    if path.startswith("$.energy_carbon"):
        value = float(value)
    assert with_value(path, value, decoded) == decoded  # the value came back unchanged (as a float for numbers)


# ------------------------------------------------------------- the rules

RULES: list[tuple[Callable[[], Any], str, str]] = [
    # (row, expected path, expected message)
    (lambda: without("$.producer"), "$", "missing required field 'producer'"),
    (lambda: without("$.models[0].version"), "$.models[0]", "missing required field 'version'"),
    (lambda: without("$.energy_carbon.kwh"), "$.energy_carbon", "missing required field 'kwh'"),
    (lambda: make_row(extra=1), "$", "unknown field 'extra'"),
    (lambda: with_value("$.energy_carbon.joules", 1), "$.energy_carbon", "unknown field 'joules'"),
    (lambda: with_value("$.configs[0].mode", "x"), "$.configs[0]", "unknown field 'mode'"),
    (lambda: with_value("$.lakefs_repo", 5), "$.lakefs_repo", "expected a string, found 5"),
    (lambda: with_value("$.lakefs_repo", None), "$.lakefs_repo", "expected a string, found null"),
    (lambda: with_value("$.energy_carbon.kwh", "1.5"), "$.energy_carbon.kwh", "expected a number, found '1.5'"),
    (lambda: with_value("$.energy_carbon.kwh", True), "$.energy_carbon.kwh", "expected a number, found true"),
    (lambda: with_value("$.models", {}), "$.models", "expected an array, found an object"),
    (lambda: with_value("$.checksums", []), "$.checksums", "expected a JSON object, found an array"),
    (lambda: with_value("$.models[0]", "m"), "$.models[0]", "expected a JSON object, found 'm'"),
    # lakefs_commit
    *[
        (
            (lambda c=c: make_row(lakefs_commit=c)),
            "$.lakefs_commit",
            "expected a lakeFS commit id: 1 to 128 lower-case letters, digits, '-', '_' or '.' "
            f"(not '.' or '..'), found {shown(c)}",
        )
        for c in ["", ".", "..", "a/b", "a" * 129, "abc ", "abc\n", "ab:c", "abç", "ABC", "aBc", "A" * 64]
    ],
    # created_at
    *[
        (
            (lambda t=t: make_row(created_at=t)),
            "$.created_at",
            "expected an RFC 3339 UTC timestamp ending in 'Z' in its one spelling "
            "(YYYY-MM-DDTHH:MM:SS[.ffffff]Z: no fraction when it is zero, "
            f"else 1 to 6 fractional digits without trailing zeros), found {t!r}",
        )
        for t in [
            "2025-11-30T12:00:00+00:00",
            "2025-11-30T12:00:00",
            "2025-11-30T12:00:00z",
            "2025-11-30t12:00:00Z",
            "2025-11-30 12:00:00Z",
            "2025-11-30T12:00:00.1234567Z",
            "2025-11-30T12:00Z",
            "2025-11-30T12:00:00.Z",
            "2025-11-30T12:00:00Z\n",
            "20251130T120000Z",
            "２０２５-11-30T12:00:00Z",
            # one spelling per instant: these are 12:00:00Z and 12:00:00.25Z
            "2025-11-30T12:00:00.0Z",
            "2025-11-30T12:00:00.000000Z",
            "2025-11-30T12:00:00.250000Z",
            "2025-11-30T12:00:00.20Z",
        ]
    ],
    (lambda: make_row(created_at="2025-02-30T12:00:00Z"), "$.created_at",
     "not a real UTC date and time (day is out of range for month), found '2025-02-30T12:00:00Z'"),
    (lambda: make_row(created_at="2025-11-30T24:00:00Z"), "$.created_at",
     "not a real UTC date and time (hour must be in 0..23), found '2025-11-30T24:00:00Z'"),
    (lambda: make_row(created_at="2016-12-31T23:59:60Z"), "$.created_at",
     "not a real UTC date and time (second must be in 0..59), found '2016-12-31T23:59:60Z'"),
    (lambda: make_row(created_at="0000-01-01T00:00:00Z"), "$.created_at",
     "not a real UTC date and time (year 0 is out of range), found '0000-01-01T00:00:00Z'"),
    # sha256
    *[
        ((lambda p=p, h=h: with_value(p, h)), p, f"expected 64 lowercase hex digits, found {h!r}")
        for p in ["$.checksums.artifact_sha256", "$.configs[0].sha256"]
        for h in ["ABC", "A" * 64, "a" * 63, "a" * 65, "a" * 64 + "\n", "g" * 64, ""]
    ],
    # s3 URIs
    *[
        ((lambda p=p, u=u: with_value(p, u)), p, f"expected an s3://<bucket>/<key> URI, found {u!r}")
        for p in ["$.models[0].uri", "$.signatures.in_toto", "$.artifact_uri"]
        for u in [
            "https://kfm-registry/x",
            "s3://",
            "s3://kfm-registry",
            "s3://kfm-registry/",
            "s3://Kfm-Registry/x",
            "s3://Kfm-registry/x",
            "s3://ab/x",
            "s3://-bucket/x",
            "s3://kfm-registry//x",
            "s3://kfm-registry/a b",
            "S3://kfm-registry/x",
            "s3://kfm-registry/x\n",
        ]
    ],
    *[
        (
            (lambda u=u: with_value("$.data_snapshot[0].stac", u)),
            "$.data_snapshot[0].stac",
            f"expected an s3://<bucket>/<key> or https://<host>/<path> URI, found {u!r}",
        )
        for u in ["http://stac.example.org/c.json", "ftp://x/y", "https://stac.example.org", "https:///c.json",
                  "collection.json", "s3://.../collection.json"]
    ],
    *[
        (
            (lambda u=u: with_value("$.data_snapshot[0].lakefs_ref", u)),
            "$.data_snapshot[0].lakefs_ref",
            f"expected a lakefs://<repo>@<ref>[/<path>] URI, found {u!r}",
        )
        for u in ["lakefs://kfm/abc123/path", "s3://kfm/abc", "lakefs://@abc/path", "lakefs://kfm@/path",
                  "lakefs://kfm@abc 1/path", "lakefs://kfm@abc/pa th"]
    ],
    # artifact_uri names the bundle
    (lambda: make_row(artifact_uri="s3://kfm-registry/rollback/artifacts/other.tar.zst"), "$.artifact_uri",
     "last path segment must be 'abc0000.tar.zst' (the bundle for lakefs_commit 'abc0000'), found 'other.tar.zst'"),
    (lambda: make_row(artifact_uri="s3://kfm-registry/rollback/artifacts/xabc0000.tar.zst"), "$.artifact_uri",
     "last path segment must be 'abc0000.tar.zst' (the bundle for lakefs_commit 'abc0000'), found 'xabc0000.tar.zst'"),
    (lambda: make_row(artifact_uri="s3://kfm-registry/abc0000.tar.zst/x"), "$.artifact_uri",
     "last path segment must be 'abc0000.tar.zst' (the bundle for lakefs_commit 'abc0000'), found 'x'"),
    # energy
    (lambda: with_value("$.energy_carbon.kwh", -1), "$.energy_carbon.kwh", "expected a finite number >= 0, found -1"),
    (lambda: with_value("$.energy_carbon.co2e_kg", -0.5), "$.energy_carbon.co2e_kg",
     "expected a finite number >= 0, found -0.5"),
    (lambda: dumps(make_row()).replace(b"1.72", b"1e400"), "$.energy_carbon.kwh",
     "expected a finite number >= 0, found a number out of range for a 64-bit float"),
    (lambda: dumps(make_row()).replace(b"0.81", b"-1e999"), "$.energy_carbon.co2e_kg",
     "expected a finite number >= 0, found a number out of range for a 64-bit float"),
    # text fields
    *[
        (
            (lambda p=p, t=t: with_value(p, t)),
            p,
            "expected non-empty text without control characters or leading/trailing whitespace, "
            f"found {t!r}",
        )
        for p in ["$.lakefs_repo", "$.producer", "$.openlineage_run_id", "$.otel_trace_id",
                  "$.models[0].name", "$.models[0].version", "$.configs[0].path"]
        for t in ["", " ", "x ", " x", "a\nb", "a\x00b", "a\x7fb", "a\x85b", "x\t", "\u3000x"]
    ],
    *[
        (
            (lambda b=b: make_row(lakefs_branch=b)),
            "$.lakefs_branch",
            "expected a lakeFS branch name (letters, digits, '_', '-', '.', '/'; starting with a letter, "
            f"digit or '_'; at most 256 characters), found {shown(b)}",
        )
        for b in ["", "-prod", ".prod", "/prod", "pr od", "prod\n", "a" * 257, "prød", "a:b"]
    ],
    # duplicate keys
    (lambda: dumps(make_row()).replace(b'{"lakefs_repo": "kfm-main",',
                                       b'{"lakefs_repo": "x", "lakefs_repo": "kfm-main",'),
     "$", "duplicate key 'lakefs_repo'"),
    (lambda: dumps(make_row()).replace(b'"kwh": 1.72', b'"kwh": -5, "kwh": 1.72'),
     "$.energy_carbon", "duplicate key 'kwh'"),
    (lambda: dumps(make_row()).replace(b'"version": "3.1.0"', b'"version": "3.1.0", "version": "3.1.0"'),
     "$.models[0]", "duplicate key 'version'"),
    (lambda: dumps(make_row()).replace(b'{"lakefs_repo": "kfm-main",',
                                       b'{"lakefs_repo": "x", "lakefs\\u005frepo": "kfm-main",'),
     "$", "duplicate key 'lakefs_repo'"),
    # not a row at all
    (lambda: b"5", "$", "expected a JSON object, found 5"),
    (lambda: b"[]", "$", "expected a JSON object, found an array"),
    (lambda: b'{"lakefs_repo": ', "$", "invalid JSON: input data was truncated"),
    # msgspec's offset for trailing characters is one past the first of them
    (lambda: dumps(make_row()) + b" {}", "$",
     f"invalid JSON: trailing characters (byte {len(dumps(make_row())) + 2})"),
    (lambda: b"", "$", "invalid JSON: input data was truncated"),
    (lambda: dumps(make_row()).replace(b"kfm-main", b"kfm-\xffmain"), "$", "invalid UTF-8 at byte 21"),
    (lambda: dumps(make_row()).replace(b"0.81", b"NaN"), "$",
     f"invalid JSON: invalid character (byte {dumps(make_row()).index(b'0.81')})"),
]


@pytest.mark.parametrize(("make", "path", "message"), RULES)
def test_rule_messages(make: Callable[[], Any], path: str, message: str) -> None:
    data = make()
    error = schema_error(data if isinstance(data, bytes) else dumps(data))
    assert error.path == path
    assert error.message == message
    assert str(error) == f"{path}: {error.message}"
    assert isinstance(error, KfmError)


@pytest.mark.parametrize(("make", "path", "message"), RULES)
def test_every_problem_pass_names_the_first_problem_itself(make: Callable[[], Any], path: str, message: str) -> None:
    """The second pass over a refused row agrees with the fast decoder on each rule's message."""
    data = make()
    raw = data if isinstance(data, bytes) else dumps(data)
    error = schema_error(raw)
    found = row_problems(raw, SchemaError("$", "a placeholder the pass must not need"))
    if error.message.startswith(("invalid JSON", "invalid UTF-8", "nested more than")):
        assert [(p.path, p.message) for p in found] == [("$", "a placeholder the pass must not need")]
    else:
        assert (error.path, error.message) in [(p.path, p.message) for p in found]


def test_a_row_with_six_mistakes_lists_six_problems() -> None:
    row = make_row(extra=1)
    row["lakefs_branch"] = "-bad"
    row["producer"] = " padded"
    row["models"][0]["uri"] = "http://not-s3/x"
    row["checksums"]["artifact_sha256"] = "ABC"
    row["energy_carbon"]["kwh"] = -1
    with pytest.raises(InputRejected) as e:
        parse_batch(dumps(make_row(1)) + b"\n" + dumps(row))
    assert [(p.line, p.path) for p in e.value.problems] == [
        (2, "$"),
        (2, "$.lakefs_branch"),
        (2, "$.producer"),
        (2, "$.models[0].uri"),
        (2, "$.checksums.artifact_sha256"),
        (2, "$.energy_carbon.kwh"),
    ]
    assert e.value.problems[0].message == "unknown field 'extra'"
    assert e.value.problems[-1].message == "expected a finite number >= 0, found -1"
    assert e.value.total == 6


def test_every_problem_pass_covers_missing_duplicate_cross_field_and_calendar() -> None:
    row = without("$.producer")
    row["created_at"] = "2025-02-30T00:00:00Z"
    row["artifact_uri"] = "s3://kfm-registry/rollback/artifacts/other.tar.zst"
    row["energy_carbon"]["co2e_kg"] = 1e400
    raw = dumps(row).replace(b'"lakefs_repo": "kfm-main"', b'"lakefs_repo": "x", "lakefs_repo": "kfm-main"')
    raw = raw.replace(b"Infinity", b"1e400")
    found = [(p.path, p.message.split(" (", 1)[0].split(",", 1)[0]) for p in row_problems(raw, schema_error(raw))]
    assert found == [
        ("$", "duplicate key 'lakefs_repo'"),
        ("$.created_at", "not a real UTC date and time"),
        ("$", "missing required field 'producer'"),
        ("$.energy_carbon.co2e_kg", "expected a finite number >= 0"),
        ("$.artifact_uri", "last path segment must be 'abc0000.tar.zst'"),
    ]


def test_found_value_is_truncated() -> None:
    long = "Z" * 500
    error = schema_error(dumps(make_row(lakefs_commit=long)))
    assert error.message.endswith("found '" + "Z" * 77 + "...'")
    assert len(error.message) < 250


def test_duplicate_key_screen_does_not_flag_escaped_quotes() -> None:
    # '\"' inside values and '\u' escapes without duplicates are fine.
    row = make_row(producer='dag "x" \\ y \u00e9')
    assert decode_row(json.dumps(row, ensure_ascii=True)).producer == 'dag "x" \\ y \u00e9'
    assert decode_row(json.dumps(row, ensure_ascii=False)).producer == 'dag "x" \\ y \u00e9'


# ------------------------------------------------------------- encode_row


def _row_obj(**energy: Any) -> Row:
    base = decode_row(dumps(make_row()))
    import msgspec

    return msgspec.structs.replace(base, energy_carbon=EnergyCarbon(**{"kwh": 1.72, "co2e_kg": 0.81, **energy}))


def test_encode_row_normalises_rows_built_in_python() -> None:
    line = encode_row(_row_obj(kwh=2, co2e_kg=-0.0))
    assert line.endswith(b'"energy_carbon":{"kwh":2.0,"co2e_kg":0.0}}')
    assert decode_row(line) == _row_obj(kwh=2.0, co2e_kg=0.0)


@pytest.mark.parametrize(
    ("energy", "path", "message"),
    [
        ({"kwh": float("inf")}, "$.energy_carbon.kwh", "expected a number, found null"),
        ({"kwh": float("nan")}, "$.energy_carbon.kwh", "expected a number, found null"),
        ({"kwh": -1.0}, "$.energy_carbon.kwh", "expected a finite number >= 0, found -1.0"),
        ({"kwh": "1"}, "$.energy_carbon.kwh", "expected a number, found '1'"),
    ],
)
def test_encode_row_validates(energy: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SchemaError) as info:
        encode_row(_row_obj(**energy))
    assert (info.value.path, info.value.message) == (path, message)


def test_encode_row_rejects_bad_rows() -> None:
    import msgspec

    base = decode_row(dumps(make_row()))
    with pytest.raises(SchemaError, match=r"^\$\.checksums\.artifact_sha256: expected 64 lowercase hex"):
        encode_row(msgspec.structs.replace(base, checksums=Checksums(artifact_sha256="ABC")))
    with pytest.raises(SchemaError, match=r"^\$\.artifact_uri: last path segment"):
        encode_row(msgspec.structs.replace(base, lakefs_commit="other"))
    with pytest.raises(SchemaError, match=r"^\$: cannot encode"):
        encode_row(msgspec.structs.replace(base, producer=object()))  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match=r"^\$: expected a Row, found dict"):
        encode_row(make_row())  # type: ignore[arg-type]


# ------------------------------------------------------------- size limit


def _row_of_canonical_size(size: int) -> dict[str, Any]:
    base = len(canonicalize(dumps(make_row())))
    return make_row(producer="p" * (len("airflow:dag=kfm-promote") + size - base))


def test_size_limit_boundary() -> None:
    assert len(canonicalize(dumps(_row_of_canonical_size(MAX_LINE_BYTES)))) == MAX_LINE_BYTES
    with pytest.raises(SchemaError) as info:
        canonicalize(dumps(_row_of_canonical_size(MAX_LINE_BYTES + 1)))
    assert info.value.path == "$"
    assert info.value.message.startswith("canonical row is 65536 bytes, over the 65535-byte limit")
    decode_row(dumps(_row_of_canonical_size(MAX_LINE_BYTES + 1)))  # a valid row, just not storable


def test_size_limit_counts_canonical_not_input_bytes() -> None:
    # Lots of whitespace in the input does not matter.
    text = json.dumps(_row_of_canonical_size(MAX_LINE_BYTES), indent=200)
    assert len(text) > MAX_LINE_BYTES
    assert len(canonicalize(text)) == MAX_LINE_BYTES


# ------------------------------------------------------------- created_at


def test_created_at_datetime() -> None:
    row = decode_row(dumps(make_row(created_at="2025-11-30T12:00:00.25Z")))
    assert created_at_datetime(row) == datetime.datetime(2025, 11, 30, 12, 0, 0, 250000, tzinfo=datetime.UTC)
    assert created_at_datetime(row).utcoffset() == datetime.timedelta(0)
    assert parse_created_at("2025-11-30T12:00:00Z") < parse_created_at("2025-11-30T12:00:00.000001Z")
    # String order is wrong with fractions; datetime order is right.
    assert "2025-11-30T12:00:00Z" > "2025-11-30T12:00:00.5Z"
    assert parse_created_at("2025-11-30T12:00:00Z") < parse_created_at("2025-11-30T12:00:00.5Z")
    with pytest.raises(SchemaError, match=r"^\$\.created_at: expected an RFC 3339 UTC timestamp"):
        parse_created_at("2025-11-30T12:00:00+00:00")
    with pytest.raises(SchemaError, match=r"^\$\.created_at: not a real UTC date"):
        parse_created_at("2025-02-29T00:00:00Z")


# ------------------------------------------------------------- batches


def _jsonl(*rows: Any) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else dumps(r) for r in rows)


def _problems(data: bytes | str) -> list[str]:
    with pytest.raises(InputRejected) as info:
        parse_batch(data)
    return [str(p) for p in info.value.problems]


def test_jsonl_batch_returns_lines_rows_and_canonical_bytes() -> None:
    data = b"\n" + _jsonl(make_row(0), make_row(1)) + b"\n\n  \n" + dumps(make_row(2)) + b"\n"
    result = parse_batch(data)
    assert [line for line, _, _ in result] == [2, 3, 6]
    assert [row.lakefs_commit for _, row, _ in result] == ["abc0000", "abc0001", "abc0002"]
    assert result[0][2] == SPEC_EXAMPLE_CANONICAL
    assert all(canonical == encode_row(row) for _, row, canonical in result)


def test_jsonl_batch_reports_every_bad_row() -> None:
    data = _jsonl(
        make_row(0),
        with_value("$.models[0]", {"name": "m", "uri": "s3://models/m.bin"}, make_row(1)),
        with_value("$.checksums.artifact_sha256", "ABC", make_row(2)),
        make_row(3),
        make_row(4, extra=True),
        b"{not json",
        make_row(6),
    )
    assert _problems(data) == [
        "line 2: $.models[0]: missing required field 'version'",
        "line 3: $.checksums.artifact_sha256: expected 64 lowercase hex digits, found 'ABC'",
        "line 5: $: unknown field 'extra'",
        "line 6: $: invalid JSON: object keys must be strings (byte 1)",
    ]


def test_jsonl_lines_that_are_not_objects() -> None:
    data = b"5\n" + dumps(make_row(1)) + b'\n"row"\n[1]\n' + dumps(make_row(4))
    assert _problems(data) == [
        "line 1: $: expected a JSON object, found 5",
        "line 3: $: expected a JSON object, found 'row'",
        "line 4: $: expected a JSON object, found an array",
    ]
    assert _problems(b"[" + dumps(make_row(0)) + b"] x") == ["line 1: $: invalid JSON: trailing characters (byte 880)"]


def test_crlf_and_bom_and_str_input() -> None:
    data = b"\xef\xbb\xbf" + dumps(make_row(0)) + b"\r\n\r\n" + dumps(make_row(1)) + b"\r\n"
    assert next((line, c) for line, _, c in parse_batch(data)) == (1, SPEC_EXAMPLE_CANONICAL)
    assert [line for line, _, _ in parse_batch(data)] == [1, 3]
    assert [line for line, _, _ in parse_batch(data.decode("utf-8-sig"))] == [1, 3]
    assert _problems(b"\xef\xbb\xbf" + dumps(make_row(0, extra=1))) == ["line 1: $: unknown field 'extra'"]


def test_empty_input_is_no_rows() -> None:
    assert parse_batch(b"") == []
    assert parse_batch(b" \n\n\t\r\n") == []
    assert parse_batch(b"[]") == []
    assert parse_batch(b"\xef\xbb\xbf") == []


def test_json_array_reports_the_line_each_element_starts_on() -> None:
    bad_sha = with_value("$.checksums.artifact_sha256", "ABC", make_row(1))
    bad_commit = make_row(3, lakefs_commit="a/b")
    text = (
        "\n[\n"
        + json.dumps(make_row(0), indent=2)  # lines 3..
        + ",\n"
        + json.dumps(bad_sha)  # one line
        + ", "
        + json.dumps(make_row(2))  # same line as the previous element
        + ",\n\n"
        + json.dumps(bad_commit, indent=1)
        + "\n, 7\n]\n"
    )
    lines = text.split("\n")
    sha_line = next(i for i, text_line in enumerate(lines, 1) if '"ABC"' in text_line)
    commit_line = next(i for i, text_line in enumerate(lines, 1) if text_line.startswith("{") and i > sha_line)
    seven_line = next(i for i, text_line in enumerate(lines, 1) if text_line == ", 7")
    assert _problems(text.encode()) == [
        f"line {sha_line}: $.checksums.artifact_sha256: expected 64 lowercase hex digits, found 'ABC'",
        f"line {commit_line}: $.lakefs_commit: expected a lakeFS commit id: 1 to 128 lower-case letters, digits, "
        "'-', '_' or '.' (not '.' or '..'), found 'a/b'",
        f"line {seven_line}: $: expected a JSON object, found 7",
    ]
    good = "[" + json.dumps(make_row(0), indent=2) + ",\n" + json.dumps(make_row(1)) + "]"
    result = parse_batch(good.encode())
    assert [line for line, _, _ in result] == [1, good.split("\n").index(json.dumps(make_row(1)) + "]") + 1]
    assert result[0][2] == SPEC_EXAMPLE_CANONICAL


def test_json_array_identical_elements_get_their_own_lines() -> None:
    row = json.dumps(make_row(0))
    problems = _problems(f"[{row},\n{row},\n\n{row}]".encode())
    assert problems == [
        "line 2: $.lakefs_commit: duplicate lakefs_commit 'abc0000': also on line 1 (one row per lakeFS commit)",
        "line 4: $.lakefs_commit: duplicate lakefs_commit 'abc0000': also on line 1 (one row per lakeFS commit)",
    ]


def test_malformed_json_array_is_one_problem_with_its_line() -> None:
    text = "[\n" + json.dumps(make_row(0)) + ",\n" + json.dumps(make_row(1)) + ",\n]"
    [problem] = _problems(text.encode())
    assert problem.startswith("line 4: $: invalid JSON: ") and "trailing comma" in problem
    [problem] = _problems(b"[\n\n{\"a\": \xff}]")
    assert problem == "line 3: $: invalid JSON: invalid character (byte 9)"
    # Bad UTF-8 inside a string is found when the element is decoded: byte counted in the element.
    element = dumps(make_row()).replace(b"kfm-main", b"kfm-\xffmain")
    [problem] = _problems(b"[\n\n" + element + b"]")
    assert problem == "line 3: $: invalid UTF-8 at byte 21"


def test_single_object_batch() -> None:
    pretty = "\n\n" + json.dumps(make_row(0), indent=2) + "\n"
    [(line, _row, canonical)] = parse_batch(pretty.encode())
    assert (line, canonical) == (3, SPEC_EXAMPLE_CANONICAL)
    bad = json.dumps(make_row(0, lakefs_commit=".."), indent=2)
    assert _problems(bad) == [
        "line 1: $.lakefs_commit: expected a lakeFS commit id: 1 to 128 lower-case letters, digits, '-', '_' or '.' "
        "(not '.' or '..'), found '..'"
    ]
    # A malformed pretty-printed object: one problem, on the line of the syntax error.
    broken = json.dumps(make_row(0), indent=2).replace('"prod",', '"prod"')
    [problem] = _problems(broken)
    broken_line = broken.split("\n").index('  "lakefs_branch": "prod"') + 2
    assert problem.startswith(f"line {broken_line}: $: invalid JSON: ")


def test_duplicate_commit_within_batch() -> None:
    data = _jsonl(make_row(0), make_row(1), make_row(2), make_row(3, lakefs_commit="abc0001",
                                                                  artifact_uri="s3://b-b/abc0001.tar.zst"))
    assert _problems(data) == [
        "line 4: $.lakefs_commit: duplicate lakefs_commit 'abc0001': also on line 2 (one row per lakeFS commit)"
    ]


def test_created_at_backwards_within_batch() -> None:
    rows = [
        make_row(0, created_at="2025-11-30T12:00:00Z"),
        make_row(1, created_at="2025-11-30T12:00:00Z"),  # equal: fine
        make_row(2, created_at="2025-11-30T12:00:00.5Z"),  # later, though it sorts earlier as text
        make_row(3, created_at="2025-11-30T12:00:00.25Z"),  # backwards
        make_row(4, created_at="2025-11-30T13:00:00Z"),
        make_row(5, created_at="2024-01-01T00:00:00Z"),  # backwards
    ]
    assert _problems(_jsonl(*rows)) == [
        "line 4: $.created_at: created_at goes backwards: '2025-11-30T12:00:00.25Z' is earlier than "
        "'2025-11-30T12:00:00.5Z' on line 3",
        "line 6: $.created_at: created_at goes backwards: '2024-01-01T00:00:00Z' is earlier than "
        "'2025-11-30T13:00:00Z' on line 5",
    ]
    assert len(parse_batch(_jsonl(*rows[:3]))) == 3


def test_oversize_line_in_batch() -> None:
    data = _jsonl(make_row(0), _row_of_canonical_size(MAX_LINE_BYTES + 10) | {"lakefs_commit": "abc0000"}, make_row(2))
    problems = _problems(data)
    assert problems == [
        "line 2: $: canonical row is 65545 bytes, over the 65535-byte limit of a stored line "
        "(c2sp.org/tlog-tiles entry bundles use a uint16 length)"
    ]


def test_input_rejected_lists_everything() -> None:
    data = _jsonl(*[make_row(i, extra=i) for i in range(5)])
    with pytest.raises(InputRejected) as info:
        parse_batch(data)
    error = info.value
    assert [p.line for p in error.problems] == [1, 2, 3, 4, 5]
    assert all(isinstance(p, RowProblem) and p.path == "$" for p in error.problems)
    assert "(and 2 more)" in str(error)
    assert error.diagnostics().splitlines()[1:] == [f"  line {i + 1}: $: unknown field 'extra'" for i in range(5)]


def test_parse_rows() -> None:
    rows = [decode_row(dumps(make_row(i))) for i in range(3)]
    result = parse_rows(rows)
    assert next((line, c) for line, _, c in result) == (1, SPEC_EXAMPLE_CANONICAL)
    assert [line for line, _, _ in result] == [1, 2, 3]
    with pytest.raises(InputRejected) as info:
        parse_rows([rows[0], rows[0], make_row(2)])  # type: ignore[list-item]
    assert [str(p) for p in info.value.problems] == [
        "line 2: $.lakefs_commit: duplicate lakefs_commit 'abc0000': also on line 1 (one row per lakeFS commit)",
        "line 3: $: expected a Row, found dict",
    ]


def test_large_jsonl_batch() -> None:
    data = _jsonl(*[make_row(i) for i in range(3000)])
    result = parse_batch(data)
    assert len(result) == 3000
    assert result[-1][0] == 3000
    assert b"\n".join(c for _, _, c in result) == b"\n".join(canonicalize(line) for line in data.split(b"\n"))


def test_entry() -> None:
    row = decode_row(SPEC_EXAMPLE_CANONICAL)
    entry = Entry(7, SPEC_EXAMPLE_CANONICAL, row)
    assert entry.index == 7 and entry.line is SPEC_EXAMPLE_CANONICAL and entry.row is row
    index, line, same_row = entry
    assert (index, line, same_row) == (7, SPEC_EXAMPLE_CANONICAL, row)


# ------------------------------------------------------------- JSON Schema


def _validate(node: dict[str, Any], value: Any, root: dict[str, Any]) -> bool:
    """A small validator for the JSON Schema keywords row_json_schema uses."""
    if "$ref" in node:
        assert node["$ref"].startswith("#/$defs/")
        return _validate(root["$defs"][node["$ref"][len("#/$defs/"):]], value, root)
    kind = node["type"]
    if kind == "object":
        if not isinstance(value, dict) or not set(node["required"]) <= value.keys():
            return False
        if node.get("additionalProperties") is False and not value.keys() <= node["properties"].keys():
            return False
        return all(_validate(node["properties"][k], v, root) for k, v in value.items())
    if kind == "array":
        return isinstance(value, list) and all(_validate(node["items"], v, root) for v in value)
    if kind == "string":
        # ECMA-262 "$" is end of input: Python spells it \\Z.
        return isinstance(value, str) and re.search(node.get("pattern", "").replace("$", r"\Z"), value) is not None
    if kind == "number":
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value >= node.get("minimum", float("-inf"))
        )
    raise AssertionError(f"keyword not handled: {kind}")


def test_json_schema_structure() -> None:
    doc = row_json_schema()
    text = json.dumps(doc)
    assert json.loads(text) == doc
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"].startswith("urn:kfm:")
    assert doc["title"]
    assert doc["required"] == list(Row.__struct_fields__)
    assert list(doc["properties"]) == list(Row.__struct_fields__)
    assert doc["additionalProperties"] is False
    for name in ["DataSnapshot", "Model", "Config", "Checksums", "Signatures", "EnergyCarbon"]:
        sub = doc["$defs"][name]
        assert sub["additionalProperties"] is False
        assert sub["required"] == list(sub["properties"])
    assert doc["$defs"]["Config"]["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"
    assert doc["properties"]["created_at"]["format"] == "date-time"
    assert doc["$defs"]["EnergyCarbon"]["properties"]["kwh"]["minimum"] == 0
    assert r"\Z" not in text  # ECMA-262 patterns
    patterns = re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', text)
    assert len(patterns) == 17


def test_json_schema_accepts_valid_rows() -> None:
    doc = row_json_schema()
    assert _validate(doc, make_row(), doc)
    assert _validate(doc, make_row(data_snapshot=[], models=[], configs=[]), doc)
    assert _validate(doc, json.loads(SPEC_EXAMPLE_CANONICAL), doc)


def _schema_can_state(make: Callable[[], Any], message: str) -> bool:
    """Rules JSON Schema cannot express: syntax, duplicate keys, out-of-range literals
    (all given as bytes), calendar validity, the artifact_uri/commit cross-check."""
    return not isinstance(make(), bytes) and not message.startswith(("not a real", "last path segment"))


@pytest.mark.parametrize(("make", "path", "message"), [r for r in RULES if _schema_can_state(r[0], r[2])])
def test_json_schema_rejects_what_decode_rejects(make: Callable[[], Any], path: str, message: str) -> None:
    doc = row_json_schema()
    assert not _validate(doc, json.loads(json.dumps(make())), doc)


def test_json_schema_with_jsonschema_if_installed() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = row_json_schema()
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    validator.validate(make_row())
    assert not validator.is_valid(with_value("$.checksums.artifact_sha256", "ABC"))
    assert not validator.is_valid(make_row(extra=1))


# ------------------------------------------------------------- property


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20
).filter(lambda s: not s[0].isspace() and not s[-1].isspace())
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
commits = st.text(alphabet="abcdefxyz0123456789-_.", min_size=1, max_size=40).filter(lambda c: c not in (".", ".."))
keys = st.text(alphabet="abcXYZ019-_./=+%", min_size=1, max_size=20).filter(lambda k: not k.startswith("/"))
buckets = st.sampled_from(["kfm-registry", "models", "a.b-c", "abc"])
s3 = st.builds(lambda b, k: f"s3://{b}/{k}", buckets, keys)
numbers = st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False), st.integers(min_value=0, max_value=10**20)
)
timestamps = st.builds(
    lambda dt, digits: f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}"
    + (f".{dt.microsecond:06d}"[: digits + 1].rstrip("0").rstrip(".") if digits else "")
    + "Z",
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)),
    st.integers(0, 6),
)


@st.composite
def valid_rows(draw: st.DrawFn) -> dict[str, Any]:
    commit = draw(commits)
    return {
        "lakefs_repo": draw(texts),
        "lakefs_branch": draw(st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_./-]{0,30}\Z")),
        "lakefs_commit": commit,
        "created_at": draw(timestamps),
        "producer": draw(texts),
        "openlineage_run_id": draw(texts),
        "otel_trace_id": draw(texts),
        "artifact_uri": draw(st.builds(lambda b, k: f"s3://{b}/{k}/{commit}.tar.zst", buckets, keys)),
        "data_snapshot": draw(st.lists(st.fixed_dictionaries({
            "stac": st.one_of(s3, st.builds(lambda k: f"https://stac.example.org/{k}", keys)),
            "lakefs_ref": st.builds(lambda r, p: f"lakefs://kfm@{r}/{p}", commits, keys),
        }), max_size=3)),
        "models": draw(st.lists(st.fixed_dictionaries({"name": texts, "version": texts, "uri": s3}), max_size=3)),
        "configs": draw(st.lists(st.fixed_dictionaries({"path": texts, "sha256": hex64}), max_size=3)),
        "checksums": {"artifact_sha256": draw(hex64)},
        "signatures": {"in_toto": draw(s3)},
        "energy_carbon": {"kwh": draw(numbers), "co2e_kg": draw(numbers)},
    }


@settings(max_examples=150, deadline=None)
@given(valid_rows(), st.randoms(use_true_random=False), st.booleans())
def test_random_valid_rows_round_trip(row: dict[str, Any], rng: random.Random, ascii_only: bool) -> None:
    canonical = canonicalize(dumps(row))
    again = canonicalize(json.dumps(_shuffled(row, rng), indent=rng.choice([None, 2]), ensure_ascii=ascii_only))
    assert again == canonical
    decoded = decode_row(canonical)
    assert encode_row(decoded) == canonical
    assert decode_canonical_line(canonical) == decoded
    assert json.loads(canonical) == json.loads(json.dumps(row)) | {
        "energy_carbon": {k: float(v) for k, v in row["energy_carbon"].items()}
    }
    assert list(json.loads(canonical)) == list(Row.__struct_fields__)
    assert [line for line, _, _ in parse_batch(canonical)] == [1]
    doc = row_json_schema()
    assert _validate(doc, json.loads(canonical), doc)


STRING_PATHS = [
    "$.lakefs_repo", "$.lakefs_branch", "$.producer", "$.openlineage_run_id", "$.otel_trace_id",
    "$.data_snapshot[0].stac", "$.data_snapshot[0].lakefs_ref", "$.models[0].name", "$.models[0].version",
    "$.models[0].uri", "$.configs[0].path", "$.configs[0].sha256", "$.checksums.artifact_sha256",
    "$.signatures.in_toto",
]  # fmt: skip
field_values = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="ab/:.@-_ \n\x00\x85\u3000Z0f", max_size=12),
    st.sampled_from(["s3://abc/", "s3://abc/x", "lakefs://a@b", "lakefs://a@b/ c", "https://h/x", "a" * 64]),
    st.builds(lambda s: "s3://kfm-registry/" + s, st.text(max_size=6)),
    st.builds(lambda s: "lakefs://kfm@" + s, st.text(max_size=6)),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STRING_PATHS), field_values)
def test_decoder_and_json_schema_agree_on_every_string(path: str, value: str) -> None:
    # The fast path (one combined regex) and the JSON Schema (each field's pattern)
    # accept exactly the same values; a rejection names the field.
    row = with_value(path, value)
    doc = row_json_schema()
    try:
        decode_row(dumps(row))
        accepted = True
    except SchemaError as e:
        accepted = False
        assert e.path == path, str(e)
        assert e.message.startswith("expected ") and e.message.endswith(f"found {shown(value)}")
    assert accepted == _validate(doc, row, doc)
