"""`kfm verify` checks every entry bundle against the JSONL rows and the leaf hashes.

Each case damages a fresh copy of one ledger (signed sizes 10, 310, 320: bundles 000, 001.p/54,
001.p/64) and checks the library report and the real CLI (`python -m kfm_ledger verify --json`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfm_ledger.core.entry_bundle import decode_entry_bundle, encode_entry_bundle
from kfm_ledger.errors import CorruptLedgerError, KfmError
from kfm_ledger.log import entries
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, copy_ledger, fill

BUNDLES = ["tile/entries/000", "tile/entries/001.p/54", "tile/entries/001.p/64"]


@pytest.fixture(scope="module")
def base_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("entries") / "base"
    led = Ledger.init(d, origin=ORIGIN)
    try:
        fill(led, 10, 300, 10)
        assert sorted(led.storage.list("tile/entries/")) == BUNDLES
    finally:
        led.close()
    return d


@pytest.fixture
def copy(base_ledger: Path, tmp_path: Path) -> Path:
    return copy_ledger(base_ledger, tmp_path)


def verify(d: Path):
    led = Ledger.open(d)
    try:
        return verify_ledger(led)
    finally:
        led.close()


def cli_verify(d: Path) -> tuple[int, dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", "verify", "--ledger", str(d), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def failures(report) -> list[str]:
    return [str(f) for f in report.failures]


def test_a_clean_ledger_verifies_its_bundles(copy: Path) -> None:
    report = verify(copy)
    assert report.ok, report.failures
    assert not report.notes
    code, doc = cli_verify(copy)
    assert code == 0 and doc["ok"]


def test_an_edited_entry_is_found(copy: Path) -> None:
    key = copy / "tile/entries/000"
    found = decode_entry_bundle(key.read_bytes())
    found[17] = found[17].replace(b"sha256", b"sha512", 1)
    assert found[17] != decode_entry_bundle(key.read_bytes())[17]
    key.write_bytes(encode_entry_bundle(found))
    report = verify(copy)
    assert failures(report) == [
        "entry bundle tile/entries/000: entry 17 (row 17) differs from line 18 of rollback-index.jsonl and is "
        "not the signed row; run `kfm rebuild` to recreate the entry bundles"
    ]
    code, doc = cli_verify(copy)
    assert code == 1 and doc["failures"][0]["where"] == "entry bundle tile/entries/000"


def test_a_deleted_bundle_is_missing(copy: Path) -> None:
    (copy / "tile/entries/000").unlink()
    assert failures(verify(copy)) == [
        "entry bundle tile/entries/000: missing; run `kfm rebuild` to recreate the entry bundles",
        # and so a client holding the checkpoint of size 10 has nothing to fall back to
        "entry bundle tile/entries/000.p/10: missing (a client with the checkpoint of size 10 needs it); run "
        "`kfm rebuild` to recreate the entry bundles",
    ]


def test_a_deleted_partial_bundle_a_client_needs_is_missing(copy: Path) -> None:
    (copy / "tile/entries/001.p/54").unlink()
    assert failures(verify(copy)) == [
        "entry bundle tile/entries/001.p/54: missing (a client with the checkpoint of size 310 needs it); run "
        "`kfm rebuild` to recreate the entry bundles"
    ]


def test_an_extra_entry_is_a_wrong_width(copy: Path) -> None:
    key = copy / "tile/entries/001.p/54"
    key.write_bytes(key.read_bytes() + b"\x00\x02{}")
    assert failures(verify(copy)) == [
        "entry bundle tile/entries/001.p/54: holds 55 entries, but its width is 54; run `kfm rebuild` to "
        "recreate the entry bundles"
    ]


def test_a_missing_entry_is_a_wrong_width(copy: Path) -> None:
    key = copy / "tile/entries/000"
    key.write_bytes(encode_entry_bundle(decode_entry_bundle(key.read_bytes())[:255]))
    assert "holds 255 entries, but its width is 256" in failures(verify(copy))[0]


def test_a_truncated_bundle_is_malformed(copy: Path) -> None:
    key = copy / "tile/entries/001.p/64"
    key.write_bytes(key.read_bytes()[:-3])
    (msg,) = failures(verify(copy))
    assert msg.startswith("entry bundle tile/entries/001.p/64: malformed: entry bundle is truncated: entry 63")


def test_a_bundle_beyond_the_signed_size_fails(copy: Path) -> None:
    (copy / "tile/entries/001.p/70").write_bytes(b"")
    (copy / "tile/entries/002").write_bytes(b"")
    assert failures(verify(copy)) == [
        "entry bundle tile/entries/001.p/70: lies beyond the signed tree (size 320); run `kfm rebuild` to "
        "recreate the entry bundles",
        "entry bundle tile/entries/002: lies beyond the signed tree (size 320); run `kfm rebuild` to "
        "recreate the entry bundles",
    ]


def test_a_stray_name_under_entries_fails(copy: Path) -> None:
    (copy / "tile/entries/1").write_bytes(b"")
    (msg,) = failures(verify(copy))
    assert msg.startswith("entry bundle tile/entries/1: not an entry bundle path")


def test_a_symlink_planted_at_a_bundle_path_is_refused(copy: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes((copy / "tile/entries/000").read_bytes())  # even with the right bytes
    (copy / "tile/entries/000").unlink()
    (copy / "tile/entries/000").symlink_to(target)
    report = verify(copy)
    assert not report.ok
    assert any(f.where == "entry bundle tile/entries/000" for f in report.failures), report.failures
    led = Ledger.open(copy)
    try:
        with pytest.raises(KfmError):
            entries.read_entries(led, 0, 10)
    finally:
        led.close()
    code, _ = cli_verify(copy)
    assert code == 1


def test_a_changed_row_fails_the_row_not_its_correct_bundle(copy: Path) -> None:
    jsonl = copy / "rollback-index.jsonl"
    data = jsonl.read_bytes()
    lines = data.split(b"\n")
    lines[3] = lines[3].replace(b"sha256", b"sha512", 1)
    jsonl.write_bytes(b"\n".join(lines))
    report = verify(copy)
    assert not report.ok
    assert all(not f.where.startswith("entry bundle") for f in report.failures), report.failures
    assert any(f.where == "line 4" for f in report.failures)


def test_read_entries_refuses_a_bundle_that_matches_an_edited_row(copy: Path) -> None:
    """Bundle and row edited alike: the leaf hash (signed) catches it."""
    jsonl = copy / "rollback-index.jsonl"
    lines = jsonl.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"sha256", b"sha512", 1)
    jsonl.write_bytes(b"\n".join(lines))
    key = copy / "tile/entries/000"
    found = decode_entry_bundle(key.read_bytes())
    found[3] = lines[3]
    key.write_bytes(encode_entry_bundle(found))
    report = verify(copy)
    assert any(f.where == "entry bundle tile/entries/000" for f in report.failures), report.failures
    led = Ledger.open(copy)
    try:
        with pytest.raises(CorruptLedgerError, match="entry 3 of entry bundle tile/entries/000"):
            entries.read_entries(led, 0, 10)
    finally:
        led.close()


def test_no_bundles_at_all_is_a_note_not_a_failure(copy: Path) -> None:
    for key in BUNDLES:
        (copy / key).unlink()
    report = verify(copy)
    assert report.ok, report.failures
    assert report.notes == [
        "no entry bundles (tile/entries/): this ledger was made before kfm wrote them, so its appends write "
        "none either; `kfm rebuild` adds them"
    ]
    code, doc = cli_verify(copy)
    assert code == 0 and doc["notes"] == report.notes


def test_an_append_refuses_a_symlink_at_the_edge_bundle(copy: Path, tmp_path: Path) -> None:
    edge = copy / "tile/entries/001.p/64"
    target = tmp_path / "elsewhere"
    target.write_bytes(edge.read_bytes())
    edge.unlink()
    edge.symlink_to(target)
    led = Ledger.open(copy)
    try:
        with pytest.raises(KfmError, match="symbolic link"):
            fill(led, 5)
        assert led.size == 320
    finally:
        led.close()
    assert sorted(p.name for p in (copy / "tile/entries/001.p").iterdir()) == ["54", "64"]


def test_an_append_refuses_a_symlink_planted_where_its_bundle_goes(copy: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"")
    (copy / "tile/entries/001.p/69").symlink_to(tmp_path / "elsewhere")
    led = Ledger.open(copy)
    try:
        with pytest.raises(CorruptLedgerError, match=r"entry bundle tile/entries/001\.p/69 already exists beyond"):
            fill(led, 5)
        assert led.size == 320
    finally:
        led.close()
