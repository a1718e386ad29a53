"""The Parquet mirror: contents, determinism, drift detection (kfm_ledger.mirror)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfm_ledger import mirror
from kfm_ledger.core import merkle
from kfm_ledger.errors import CorruptLedgerError
from kfm_ledger.log.layout import JSONL_KEY, MIRROR_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.schema import (
    Checksums,
    Config,
    DataSnapshot,
    EnergyCarbon,
    Model,
    Row,
    Signatures,
    created_at_datetime,
    encode_row,
)
from kfm_ledger.storage import MemoryStorage, local_path_of

from conftest import ORIGIN, fill, signer_of


def odd_row(i: int, created_at: str, **over: object) -> Row:
    """A row with the awkward values: fractions of seconds, escapes, extreme floats."""
    commit = f"odd-{i:04d}"
    fields: dict[str, object] = dict(
        lakefs_repo="kfm-main",
        lakefs_branch="release/v1",
        lakefs_commit=commit,
        created_at=created_at,
        producer='airflow:dag="quoted" \\ back é ☃',
        openlineage_run_id=f"run-{i}",
        otel_trace_id=f"trace-{i}",
        artifact_uri=f"s3://kfm-registry/rollback/artifacts/{commit}.tar.zst",
        data_snapshot=[],
        models=[Model(name="m", version=f"1.{i}", uri="s3://kfm-models/m.bin")],
        configs=[Config(path="configs/a.yaml", sha256="ab" * 32), Config(path="configs/b.yaml", sha256="cd" * 32)],
        checksums=Checksums(artifact_sha256=hashlib.sha256(commit.encode()).hexdigest()),
        signatures=Signatures(in_toto=f"s3://kfm-registry/slsa/{commit}.json"),
        energy_carbon=EnergyCarbon(kwh=0.1, co2e_kg=0.0),
    )
    fields.update(over)
    return Row(**fields)  # type: ignore[arg-type]


ODD_ROWS = [
    odd_row(0, "2026-01-01T00:00:00Z", energy_carbon=EnergyCarbon(kwh=1e20, co2e_kg=5e-324)),
    odd_row(1, "2026-01-01T00:00:00.123456Z", energy_carbon=EnergyCarbon(kwh=1.7976931348623157e308, co2e_kg=0.1)),
    odd_row(
        2,
        "2026-01-01T00:00:00.5Z",
        data_snapshot=[
            DataSnapshot(stac="https://stac.example:8443/c/collection.json", lakefs_ref="lakefs://kfm@main/p"),
            DataSnapshot(stac="s3://kfm-stac/x/collection.json", lakefs_ref="lakefs://kfm@abc~1"),
        ],
        models=[],
    ),
    odd_row(3, "2026-02-28T23:59:59.000001Z", configs=[]),
]


def mirror_rows(data: bytes) -> list[dict[str, object]]:
    return pq.read_table(pa.BufferReader(data)).to_pylist()


# ---------------------------------------------------------------- contents


def test_columns_types_and_metadata(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 20)
    data = mirror.build_mirror(mem_ledger)
    f = pq.ParquetFile(pa.BufferReader(data))
    schema = f.schema_arrow
    assert schema.names == [
        "lakefs_repo", "lakefs_branch", "lakefs_commit", "created_at", "producer", "openlineage_run_id",
        "otel_trace_id", "artifact_uri", "data_snapshot", "models", "configs", "checksums", "signatures",
        "energy_carbon", "leaf_index", "leaf_hash",
    ]
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("leaf_index").type == pa.int64()
    assert schema.field("leaf_hash").type == pa.binary(32)
    models = schema.field("models").type
    assert pa.types.is_list(models) and models.value_type == pa.struct(
        [pa.field(n, pa.string(), nullable=False) for n in ("name", "version", "uri")]
    )
    assert schema.field("energy_carbon").type.field("kwh").type == pa.float64()
    assert all(not schema.field(n).nullable for n in schema.names)
    meta = f.metadata.metadata
    assert meta[b"kfm.mirror.format"] == b"1"
    assert meta[b"kfm.origin"] == ORIGIN.encode()
    assert meta[b"kfm.tree_size"] == b"20"
    assert base64.b64decode(meta[b"kfm.root_hash"]) == mem_ledger.root
    assert meta[b"kfm.row_schema"] == b"urn:kfm:schemas:rollback-registry-index:row:v11.2.2"
    assert f.metadata.num_rows == 20


def test_every_value_round_trips(mem_ledger: Ledger) -> None:
    """Each mirror row, turned back into a Row, encodes to the stored line exactly."""
    signer = signer_of(mem_ledger)
    mem_ledger.append(sample_jsonl(5), signer=signer)
    mem_ledger.append(ODD_ROWS, signer=signer)
    rows = mirror_rows(mirror.build_mirror(mem_ledger))
    entries = list(mem_ledger.iter_entries())
    assert len(rows) == len(entries) == 9
    for got, entry in zip(rows, entries):
        got = dict(got)
        assert got.pop("leaf_index") == entry.index
        assert got.pop("leaf_hash") == merkle.leaf_hash(entry.line)
        created = got.pop("created_at")
        assert created == created_at_datetime(entry.row) and created.utcoffset() == datetime.timedelta(0)
        rebuilt = Row(created_at=entry.row.created_at, **_as_struct_fields(got))  # type: ignore[arg-type]
        assert rebuilt == entry.row
        assert encode_row(rebuilt) == entry.line
    # fractions of a second survive exactly, to the microsecond
    odd = rows[5:]
    assert [r["created_at"] for r in odd] == [
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=datetime.UTC),
        datetime.datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=datetime.UTC),
        datetime.datetime(2026, 2, 28, 23, 59, 59, 1, tzinfo=datetime.UTC),
    ]
    assert odd[0]["energy_carbon"] == {"kwh": 1e20, "co2e_kg": 5e-324}
    assert odd[1]["energy_carbon"]["kwh"] == 1.7976931348623157e308
    assert odd[0]["producer"] == 'airflow:dag="quoted" \\ back é ☃'
    assert odd[2]["models"] == [] and len(odd[2]["data_snapshot"]) == 2


def _as_struct_fields(d: dict[str, object]) -> dict[str, object]:
    out = dict(d)
    out["data_snapshot"] = [DataSnapshot(**x) for x in d["data_snapshot"]]  # type: ignore[union-attr]
    out["models"] = [Model(**x) for x in d["models"]]  # type: ignore[union-attr]
    out["configs"] = [Config(**x) for x in d["configs"]]  # type: ignore[union-attr]
    out["checksums"] = Checksums(**d["checksums"])  # type: ignore[arg-type]
    out["signatures"] = Signatures(**d["signatures"])  # type: ignore[arg-type]
    out["energy_carbon"] = EnergyCarbon(**d["energy_carbon"])  # type: ignore[arg-type]
    return out


def test_empty_ledger(mem_ledger: Ledger) -> None:
    data = mirror.build_mirror(mem_ledger)
    f = pq.ParquetFile(pa.BufferReader(data))
    assert f.metadata.num_rows == 0 and f.metadata.num_row_groups == 0
    assert f.metadata.metadata[b"kfm.tree_size"] == b"0"
    assert base64.b64decode(f.metadata.metadata[b"kfm.root_hash"]) == merkle.EMPTY_ROOT
    mirror.write_mirror(mem_ledger)
    assert mirror.check_mirror(mem_ledger).state == "ok"


def test_only_signed_rows_are_mirrored(disk_ledger: Ledger) -> None:
    """Complete rows after the signed size (a crash after the fsync) are not in the mirror."""
    fill(disk_ledger, 12)
    before = mirror.build_mirror(disk_ledger)
    path = Path(disk_ledger.jsonl_path or "")
    with path.open("ab") as f:
        f.write(sample_jsonl(3, start=12))
        f.write(b'{"torn": ')
    reopened = Ledger.open(disk_ledger.storage)
    assert reopened.size == 12
    assert mirror.build_mirror(reopened) == before


def test_changed_rows_are_refused(disk_ledger: Ledger) -> None:
    """The lines must hash to the signed root: a mirror never vouches for unsigned rows."""
    fill(disk_ledger, 10)
    path = Path(disk_ledger.jsonl_path or "")
    raw = path.read_bytes()
    assert b'"producer":"airflow:' in raw
    path.write_bytes(raw.replace(b'"producer":"airflow:', b'"producer":"airflaw:', 1))  # same length
    with pytest.raises(CorruptLedgerError, match="does not match the signed checkpoint"):
        mirror.build_mirror(Ledger.open(disk_ledger.storage))
    path.write_bytes(raw.replace(b'"kwh":', b'"kwh":9', 1))  # a longer line: the lines move
    with pytest.raises(CorruptLedgerError, match=r"run `kfm (verify|rebuild)`"):
        mirror.build_mirror(Ledger.open(disk_ledger.storage))


# ------------------------------------------------------------ line blocks


@pytest.mark.parametrize("max_bytes", [1, 700, 3000, 1 << 20])
def test_line_blocks_cover_the_signed_lines(disk_ledger: Ledger, max_bytes: int) -> None:
    fill(disk_ledger, 25)
    lines = list(disk_ledger.iter_lines())
    mem = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(mem, 25)
    local_blocks = list(mirror.iter_line_blocks(disk_ledger, max_bytes=max_bytes))
    mem_blocks = list(mirror.iter_line_blocks(mem, max_bytes=max_bytes))
    assert local_blocks == mem_blocks  # the cut depends on the lines alone
    assert b"".join(b.data for b in local_blocks) == b"".join(line + b"\n" for line in lines)
    first = 0
    for b in local_blocks:
        assert b.first_index == first and b.count == b.data.count(b"\n")
        assert len(b.data) <= max_bytes or b.count == 1
        first += b.count
    assert first == 25


def test_line_blocks_detect_a_short_jsonl(disk_ledger: Ledger) -> None:
    fill(disk_ledger, 6)
    path = Path(disk_ledger.jsonl_path or "")
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.rfind(b"\n", 0, len(raw) - 1) + 1])
    with pytest.raises(CorruptLedgerError, match=r"row 5 \(line 6 "):
        list(mirror.iter_line_blocks(disk_ledger))
    mem = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(mem, 3)
    log = mem.storage.append_log(JSONL_KEY)
    log.truncate(log.size() - 700)  # the last line cut short
    with pytest.raises(CorruptLedgerError, match=r"^row 2 \(line 3 of rollback-index\.jsonl\) does not match"):
        list(mirror.iter_line_blocks(Ledger.open(mem.storage)))


# ------------------------------------------------------------ determinism


def test_deterministic_in_process_and_across_backends(disk_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror.layout, "ROW_GROUP_BYTES", 4000)  # several row groups (read when building)
    fill(disk_ledger, 30, 7)
    first = mirror.build_mirror(disk_ledger)
    assert mirror.build_mirror(disk_ledger) == first
    assert pq.ParquetFile(pa.BufferReader(first)).metadata.num_row_groups > 3
    mem = Ledger.init(MemoryStorage(), origin=ORIGIN)  # another key, same rows: same mirror
    fill(mem, 37)
    assert mirror.build_mirror(mem) == first


def test_deterministic_in_a_fresh_process(disk_ledger: Ledger) -> None:
    fill(disk_ledger, 40)
    info = mirror.write_mirror(disk_ledger)
    stored = Path(info.path or "").read_bytes()
    code = (
        "import hashlib, sys\n"
        "from kfm_ledger.log.ledger import Ledger\n"
        "from kfm_ledger.mirror import build_mirror\n"
        "print(hashlib.sha256(build_mirror(Ledger.open(sys.argv[1]))).hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(disk_ledger.storage.root)],  # type: ignore[attr-defined]
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == hashlib.sha256(stored).hexdigest() == info.sha256.hex()


def test_write_mirror_info(disk_ledger: Ledger) -> None:
    fill(disk_ledger, 15)
    info = mirror.write_mirror(disk_ledger)
    data = Path(info.path or "").read_bytes()
    assert info.key == MIRROR_KEY and info.path.endswith(MIRROR_KEY)  # type: ignore[union-attr]
    assert (info.rows, info.tree_size, info.origin, info.root) == (15, 15, ORIGIN, disk_ledger.root)
    assert info.file_size == len(data) and info.sha256 == hashlib.sha256(data).digest()
    j = info.to_json()
    assert j["root"] == base64.b64encode(disk_ledger.root).decode() and j["sha256"] == info.sha256.hex()
    assert j["bytes"] == len(data) and j["rows"] == 15
    assert "rows       15" in info.render_text()


# ------------------------------------------------------------ drift


@pytest.fixture
def mirrored(disk_ledger: Ledger) -> Ledger:
    fill(disk_ledger, 30)
    mirror.write_mirror(disk_ledger)
    return disk_ledger


def _path(ledger: Ledger) -> Path:
    return Path(local_path_of(ledger.storage, MIRROR_KEY) or "")


def test_ok(mirrored: Ledger) -> None:
    status = mirror.check_mirror(mirrored)
    assert status.state == "ok" and status.ok and status.regenerated and status.problems == ()
    assert (status.mirror_size, status.mirror_root) == (30, mirrored.root)
    assert mirror.verify_mirror(mirrored) == []
    status.raise_for_status()


def test_missing(mirrored: Ledger) -> None:
    _path(mirrored).unlink()
    status = mirror.check_mirror(mirrored)
    assert status.state == "missing" and "does not exist" in status.problems[0]
    with pytest.raises(mirror.MirrorDriftError) as e:
        status.raise_for_status()
    assert "MISSING" in e.value.diagnostics() and "kfm mirror" in e.value.diagnostics()


def test_stale_after_append(mirrored: Ledger) -> None:
    old_root = mirrored.root
    fill(mirrored, 10)
    status = mirror.check_mirror(mirrored)
    assert status.state == "stale" and not status.regenerated
    assert (status.mirror_size, status.mirror_root, status.ledger_size) == (30, old_root, 40)
    text = status.problems[0]
    assert "tree size 30" in text and "tree size 40" in text and "10 signed row(s)" in text
    assert base64.b64encode(old_root).decode() in text
    assert mirror.verify_mirror(mirrored) == [f"{MIRROR_KEY} stale: {text}"]
    mirror.write_mirror(mirrored)
    assert mirror.check_mirror(mirrored).ok


def _rewrite(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the mirror with kfm's own writer options and metadata, after ``change(table)``."""
    f = pq.ParquetFile(path)
    table = change(f.read())
    with pq.ParquetWriter(path, table.schema, **mirror.WRITER_OPTIONS) as w:
        w.write_table(table, row_group_size=len(table))


def test_modified_value_is_named(mirrored: Ledger) -> None:
    def change(t: pa.Table) -> pa.Table:
        producers = t.column("producer").to_pylist()
        producers[7] = "hand-edited"
        i = t.schema.get_field_index("producer")
        return t.set_column(i, t.schema.field(i), pa.array(producers, pa.string()))

    _rewrite(_path(mirrored), change)
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified" and status.regenerated
    assert status.problems[0].startswith("its bytes differ from a regeneration")
    last = status.problems[-1]
    commit = mirrored.entry(7).row.lakefs_commit
    assert "row 7" in last and "'producer'" in last and "'hand-edited'" in last and commit in last
    assert any("row 7" in p for p in mirror.verify_mirror(mirrored))


def test_modified_nested_value_is_named(mirrored: Ledger) -> None:
    def change(t: pa.Table) -> pa.Table:
        kwh = pa.compute.struct_field(t.column("energy_carbon"), "kwh").to_pylist()
        co2 = pa.compute.struct_field(t.column("energy_carbon"), "co2e_kg").to_pylist()
        kwh[21] = 0.0
        i = t.schema.get_field_index("energy_carbon")
        arr = pa.StructArray.from_arrays([pa.array(kwh), pa.array(co2)], fields=list(t.schema.field(i).type))
        return t.set_column(i, t.schema.field(i), arr)

    _rewrite(_path(mirrored), change)
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified"
    assert "row 21" in status.problems[-1] and "'energy_carbon'" in status.problems[-1]


def test_flipped_byte_is_modified(mirrored: Ledger) -> None:
    path = _path(mirrored)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x55  # inside a data page
    path.write_bytes(bytes(data))
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified" and status.problems[0].startswith("its bytes differ")
    assert len(status.problems) >= 2  # and names what else it could tell
    assert any("column '" in p for p in status.problems[1:]), status.problems


def test_not_parquet(mirrored: Ledger) -> None:
    _path(mirrored).write_bytes(b"hello, not parquet")
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified" and "not a readable Parquet file" in status.problems[0]


def test_removed_rows(mirrored: Ledger) -> None:
    _rewrite(_path(mirrored), lambda t: t.slice(0, 29))
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified" and "it has 29 rows, the ledger 30" in status.problems


def test_metadata_edits(mirrored: Ledger) -> None:
    path = _path(mirrored)
    original = path.read_bytes()

    def with_meta(**kv: str) -> mirror.MirrorStatus:
        def change(t: pa.Table) -> pa.Table:
            meta = dict(t.schema.metadata)
            for k, v in kv.items():
                meta[getattr(mirror, k).encode()] = v.encode()
            return t.replace_schema_metadata(meta)

        path.write_bytes(original)
        _rewrite(path, change)
        return mirror.check_mirror(mirrored)

    other_root = base64.b64encode(b"\x07" * 32).decode()
    s = with_meta(META_ROOT=other_root)
    assert s.state == "modified" and "differs from the signed root" in s.problems[0] and s.mirror_root == b"\x07" * 32
    s = with_meta(META_TREE_SIZE="20", META_ROOT=other_root)
    assert s.state == "modified" and "is not the log's root at that size" in s.problems[0]
    s = with_meta(META_TREE_SIZE="31")
    assert s.state == "modified" and "beyond the ledger's signed size 30" in s.problems[0]
    s = with_meta(META_TREE_SIZE="030")
    assert s.state == "modified" and "not a canonical decimal" in s.problems[0]
    s = with_meta(META_ORIGIN="other.example/log")
    assert s.state == "modified" and "'other.example/log'" in s.problems[0]
    s = with_meta(META_FORMAT="0")
    assert s.state == "stale" and "mirror format '0'" in s.problems[0]
    # an older size whose root the log confirms: stale, not modified
    small = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(small, 20)
    s = with_meta(META_TREE_SIZE="20", META_ROOT=base64.b64encode(small.root).decode())
    assert s.state == "stale" and "tree size 20" in s.problems[0]


def test_same_rows_other_encoding(mirrored: Ledger) -> None:
    path = _path(mirrored)
    table = pq.read_table(path)
    pq.write_table(table, path, compression="snappy")
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified"
    assert status.problems[-1] == "the rows are equal; only the encoding differs (written with other writer options?)"


def test_cheap_check_trusts_consistent_metadata(mirrored: Ledger) -> None:
    """regenerate=False reads the footer only (documented): a hand edit behind it needs the full check."""
    _rewrite(_path(mirrored), lambda t: t.set_column(0, t.schema.field(0), pa.array(["x"] * 30, pa.string())))
    assert mirror.check_mirror(mirrored, regenerate=False).state == "ok"
    status = mirror.check_mirror(mirrored)
    assert status.state == "modified"
    assert "row 0" in status.problems[-1] and "column 'lakefs_repo': found 'x'" in status.problems[-1]


def test_status_json_and_text(mirrored: Ledger) -> None:
    fill(mirrored, 1)
    status = mirror.check_mirror(mirrored)
    j = status.to_json()
    assert j["state"] == "stale" and j["ok"] is False and j["ledger_size"] == 31 and j["mirror_size"] == 30
    assert j["ledger_root"] == base64.b64encode(mirrored.root).decode() and j["regenerated"] is False
    assert j["problems"] == list(status.problems) and j["path"].endswith(MIRROR_KEY)
    assert status.render_text().startswith(f"mirror STALE: {j['path']}")


def test_memory_storage(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 9)
    info = mirror.write_mirror(mem_ledger)
    assert info.path is None and mem_ledger.storage.read(MIRROR_KEY) == mirror.build_mirror(mem_ledger)
    assert mirror.check_mirror(mem_ledger).ok
    mem_ledger.storage.write_atomic(MIRROR_KEY, b"PAR1junk")
    status = mirror.check_mirror(mem_ledger)
    assert status.state == "modified"
    assert status.problems[0].startswith(f"{MIRROR_KEY} is not a readable Parquet file")
