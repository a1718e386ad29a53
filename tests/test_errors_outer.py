"""The raise sites outside core/ and schema/ pass their evidence as fields (errors.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kfm_ledger.core import tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.note import Signer
from kfm_ledger.errors import (
    BundleChecksumError,
    BundleError,
    CorruptLedgerError,
    EnergySourceError,
    FormatError,
    ImmutableObjectError,
    IndexOutOfRangeError,
    KeyFormatError,
    LedgerExistsError,
    LedgerVerificationError,
    LockedError,
    NotALedgerError,
    QueryError,
    SelectorError,
    StorageError,
)
from kfm_ledger.log.checkpoint_chain import previous_signed_size, previous_size_line
from kfm_ledger.log.keys import read_text_key
from kfm_ledger.log.layout import INDEX_FILE, JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.storage import LOCK_KEY, LocalStorage, MemoryStorage

from conftest import ORIGIN, fill

# ------------------------------------------------------------------- log/


def test_a_tampered_row_read_into_the_index_names_key_line_and_index(disk_ledger: Ledger) -> None:
    fill(disk_ledger, 5)
    root = Path(disk_ledger.storage.local_path(JSONL_KEY)).parent
    disk_ledger.close()
    lines = (root / JSONL_KEY).read_bytes().split(b"\n")
    lines[2] = b"this is not a row"
    (root / JSONL_KEY).write_bytes(b"\n".join(lines))
    (root / INDEX_FILE).unlink()  # the index is rebuilt from the rows on first use
    led = Ledger.open(root)
    try:
        with pytest.raises(CorruptLedgerError) as e:
            led.entry(4)
    finally:
        led.close()
    assert e.value.evidence() == {"key": JSONL_KEY, "line": 3, "index": 2}
    assert str(e.value).startswith(f"{JSONL_KEY} line 3: ")


def test_rows_removed_name_the_first_missing_line(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 4)
    mem_ledger._jsonl.truncate(len(b"".join(mem_ledger.iter_lines(0, 2))) + 2)
    with pytest.raises(CorruptLedgerError) as e:
        list(mem_ledger.iter_lines(0))
    assert e.value.evidence() == {"key": JSONL_KEY, "line": 3, "index": 2}


def test_a_missing_tile_is_named(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 5)
    key = tiles.tile_path(0, 0, 5)
    del mem_ledger.storage.objects[key]
    led = Ledger.open(mem_ledger.storage)
    with pytest.raises(CorruptLedgerError) as e:
        led.inclusion_proof(1)
    assert e.value.key == key and e.value.index == 0


def test_out_of_range_proofs_carry_index_and_size(mem_ledger: Ledger) -> None:
    fill(mem_ledger, 3)
    with pytest.raises(IndexOutOfRangeError) as e:
        mem_ledger.inclusion_proof(5)
    assert e.value.evidence() == {"index": 5, "size": 3}
    with pytest.raises(IndexOutOfRangeError) as e:
        mem_ledger.tlog_proof(3)
    assert e.value.evidence() == {"index": 3, "size": 3}
    with pytest.raises(IndexOutOfRangeError) as e:
        mem_ledger.consistency_proof(1, 7)
    assert e.value.evidence() == {"index": 7, "size": 3}
    with pytest.raises(IndexOutOfRangeError) as e:
        mem_ledger.entry(-1)
    assert e.value.evidence() == {"index": -1, "size": 3}


def test_opening_a_non_ledger_names_the_place(tmp_path: Path) -> None:
    """``path`` is the directory itself (not the description the message shows); None in memory."""
    with pytest.raises(NotALedgerError) as e:
        Ledger.open(tmp_path)
    assert e.value.path == str(tmp_path)
    assert str(e.value).startswith(f"no ledger in {LocalStorage(tmp_path).describe()} (no 'checkpoint')")
    with pytest.raises(NotALedgerError) as e:
        Ledger.open(MemoryStorage())
    assert e.value.path is None and e.value.evidence() == {}
    assert str(e.value).startswith("no ledger in memory ")


def test_opening_without_a_vkey_names_the_place(disk_ledger: Ledger) -> None:
    root = Path(disk_ledger.storage.local_path("log.vkey")).parent
    (root / "log.vkey").unlink()
    with pytest.raises(NotALedgerError) as e:
        Ledger.open(root)
    assert e.value.path == str(root)
    assert str(e.value) == f"no log.vkey in {disk_ledger.storage.describe()}; pass --vkey"


def test_init_over_a_ledger_names_the_place(disk_ledger: Ledger) -> None:
    with pytest.raises(LedgerExistsError) as e:
        Ledger.init(disk_ledger.storage, origin=ORIGIN)
    assert e.value.path == str(Path(disk_ledger.storage.local_path("checkpoint")).parent)
    assert str(e.value) == f"a ledger already exists in {disk_ledger.storage.describe()}"
    with pytest.raises(LedgerExistsError) as e:
        Ledger.init(Ledger.init(MemoryStorage(), origin=ORIGIN).storage, origin=ORIGIN)
    assert e.value.path is None and str(e.value) == "a ledger already exists in memory"


def test_rows_without_a_checkpoint_name_the_place(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    log = storage.append_log(JSONL_KEY)
    log.append(b"{}\n")
    log.close()
    with pytest.raises(LedgerExistsError) as e:
        Ledger.init(storage, origin=ORIGIN)
    assert e.value.path == str(tmp_path) and str(e.value).startswith(f"{JSONL_KEY} in local directory {tmp_path} ")


def test_a_missing_signing_key_names_its_file(disk_ledger: Ledger, mem_ledger: Ledger) -> None:
    from kfm_ledger.log.keys import default_signer

    key_file = Path(disk_ledger.storage.local_path("log.key"))
    key_file.unlink()
    with pytest.raises(NotALedgerError, match="no signing key") as e:
        default_signer(disk_ledger.storage)
    assert e.value.path == str(key_file)
    del mem_ledger.storage.objects["log.key"]
    with pytest.raises(NotALedgerError, match="no signing key") as e:
        default_signer(mem_ledger.storage)
    assert e.value.path is None


def test_a_changed_right_edge_tile_is_named(mem_ledger: Ledger) -> None:
    """The append's refusal to build on tiles that do not give the signed root names them."""
    fill(mem_ledger, 5)
    key = tiles.tile_path(0, 0, 5)
    mem_ledger.storage.objects[key] = bytes(32) + mem_ledger.storage.objects[key][32:]
    led = Ledger.open(mem_ledger.storage)  # no right edge remembered: it reads the tiles
    with pytest.raises(CorruptLedgerError, match="do not give the signed root") as e:
        fill(led, 1)
    assert e.value.evidence() == {"key": "tile/", "index": 4}


def test_key_errors_name_the_key_kind_and_never_private_text(mem_ledger: Ledger) -> None:
    other = Signer.generate(ORIGIN)
    with pytest.raises(KeyFormatError) as e:
        mem_ledger._check_signer(other)
    assert e.value.what == "signer key" and e.value.field == "public key"
    assert e.value.found == other.verifier().vkey_text()
    with pytest.raises(KeyFormatError) as e:
        Ledger.init(MemoryStorage(), origin=ORIGIN, signer=Signer.generate("another.example/log"))
    assert e.value.evidence() == {"what": "signer key", "field": "name", "found": "another.example/log"}
    secret = other.private_key_text().encode()
    with pytest.raises(KeyFormatError) as e:
        read_text_key(secret + b"\n" + secret, "log.key", kind="signer key")
    assert e.value.evidence() == {"what": "signer key"}
    assert "PRIVATE" not in repr(e.value.evidence()) and "PRIVATE" not in str(e.value)


def test_a_bad_previous_size_extension_names_its_line() -> None:
    bad = previous_size_line(9)
    cp = Checkpoint(origin=ORIGIN, size=5, root=b"\x00" * 32, extensions=(bad,))
    with pytest.raises(FormatError) as e:
        previous_signed_size(cp)
    assert e.value.evidence() == {"what": "checkpoint", "line": 4, "field": "kfm-previous-size", "found": bad}


# --------------------------------------------------------------- storage/


def test_a_locked_ledger_names_the_lock(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    other = Ledger.open(tmp_path / "ledger")
    try:
        with led.writer_lock(wait=0), pytest.raises(LockedError) as e, other.writer_lock(wait=0):
            pass
    finally:
        led.close()
        other.close()
    assert e.value.evidence() == {"key": LOCK_KEY} == {"key": ".lock"}
    memory = MemoryStorage()
    with memory.lock(), pytest.raises(LockedError) as e, memory.lock():
        pass
    assert e.value.evidence() == {"key": ".lock"}


@pytest.mark.parametrize("make", [MemoryStorage, lambda: LocalStorage(Path.cwd())], ids=["memory", "local"])
def test_storage_errors_name_the_key(make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = make()
    storage.write_once("checkpoints/1", b"one")
    with pytest.raises(ImmutableObjectError) as e:
        storage.write_once("checkpoints/1", b"two")
    assert e.value.key == "checkpoints/1"
    storage.write_private("log.key", b"secret")
    with pytest.raises(StorageError) as e:
        storage.write_private("log.key", b"secret")
    assert e.value.key == "log.key"
    log = storage.append_log("sub/rows.jsonl")
    try:
        log.append(b"abc")
        with pytest.raises(StorageError) as e:
            log.read(1, 5)
    finally:
        log.close()
    assert e.value.key == "sub/rows.jsonl"  # the storage key, not a file path


# ------------------------------------------------------ verify/, mirror/, ops/


def test_a_failed_verification_carries_its_failures(mem_ledger: Ledger) -> None:
    from kfm_ledger.verify import Failure, VerifyReport

    report = VerifyReport(origin=ORIGIN, size=1, root=b"\x00" * 32)
    report.fail("line 1", "the row was changed", limit=1)
    report.fail("line 2", "the row was changed", limit=1)
    with pytest.raises(LedgerVerificationError) as e:
        report.raise_for_status()
    assert e.value.evidence() == {"failures": [Failure("line 1", "the row was changed")], "failures_not_shown": 1}
    assert "... and 1 more" in e.value.diagnostics()


def test_the_energy_report_names_the_mirror_state(mem_ledger: Ledger) -> None:
    from kfm_ledger.ops.energy import energy_report

    fill(mem_ledger, 2)
    with pytest.raises(EnergySourceError) as e:
        energy_report(mem_ledger, source="mirror")
    assert e.value.state == "missing" and e.value.problems


def test_a_failed_query_carries_its_sql(mem_ledger: Ledger) -> None:
    pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    from kfm_ledger import mirror
    from kfm_ledger.ops.query import run_query

    fill(mem_ledger, 2)
    mirror.write_mirror(mem_ledger)
    sql = "SELECT no_such_column FROM rollback_index"
    with pytest.raises(QueryError) as e:
        run_query(mem_ledger, sql)
    assert e.value.sql == sql


def test_a_bad_selector_names_kind_and_value() -> None:
    from kfm_ledger.ops.impact import parse_selector

    with pytest.raises(SelectorError) as e:
        parse_selector("model", "unet@")
    assert e.value.evidence() == {"kind": "model", "value": "unet@"}


def test_a_bundle_checksum_mismatch_gives_expected_and_found(tmp_path: Path) -> None:
    from kfm_ledger.ops.bundle import extract_bundle, verify_bundle_sha256

    path = tmp_path / "b.tar.zst"
    path.write_bytes(b"not the bundle the row names")
    expected = hashlib.sha256(b"the bundle").hexdigest()
    with pytest.raises(BundleChecksumError) as e:
        verify_bundle_sha256(path, expected)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    assert e.value.evidence() == {"path": str(path), "expected": expected, "found": found}
    with pytest.raises(BundleError) as e2:
        verify_bundle_sha256(tmp_path / "missing.tar.zst", expected)
    assert e2.value.path == str(tmp_path / "missing.tar.zst")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    with pytest.raises(BundleError) as e2:
        extract_bundle(path, tmp_path / "full", expected_sha256=expected)
    assert e2.value.path == str(tmp_path / "full")


def test_bundle_option_refusals_name_what_was_given(tmp_path: Path) -> None:
    from kfm_ledger.ops.bundle import extract_bundle, parse_size

    with pytest.raises(BundleError, match="not a size") as e:
        parse_size("ten gigs")
    assert e.value.evidence() == {"found": "ten gigs"}
    with pytest.raises(BundleError, match="max_files must be >= 0") as e:
        extract_bundle(tmp_path / "b.tar.zst", tmp_path / "out", expected_sha256="0" * 64, max_files=-1)
    assert e.value.evidence() == {"field": "max_files", "found": "-1"}
