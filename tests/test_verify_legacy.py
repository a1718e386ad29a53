"""`kfm verify` notes stored rows whose commit or created_at is spelled as only an earlier
version accepted (hardening issue, item 3): a note, not a failure."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_row
from kfm_ledger.schema import checked, codec, problems, rules
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, signer_of


def legacy_ledger(tmp_path: Path, changes: dict[int, dict[str, str]], n: int = 8) -> Ledger:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    rows = []
    for i in range(n):
        row = msgspec.structs.replace(sample_row(i), **changes.get(i, {}))
        uri = row.artifact_uri.rsplit("/", 1)[0] + f"/{row.lakefs_commit}.tar.zst"
        rows.append(msgspec.structs.replace(row, artifact_uri=uri))
    with pytest.MonkeyPatch.context() as mp:  # appended with the rules stored rows are read with
        mp.setattr(codec, "ROW_SHAPE", checked.STORED_ROW_SHAPE)
        mp.setattr(codec, "_CHECKED_DECODER", codec._STORED_CHECKED_DECODER)
        stored = {name: re.compile(rule.pattern) for name, rule in rules.STORED_STRING_RULES.items()}
        mp.setattr(problems, "_COMPILED", stored)
        led.append(rows, signer=signer_of(led))
    return led


def legacy_notes(led: Ledger) -> list[str]:
    report = verify_ledger(led, check_mirror=False)
    assert report.ok, report.failures
    return [n for n in report.notes if "stored row(s) spell" in n]


def test_a_ledger_in_todays_spellings_has_no_such_note(tmp_path: Path) -> None:
    assert legacy_notes(legacy_ledger(tmp_path, {})) == []


def test_legacy_spellings_are_counted_and_the_first_named(tmp_path: Path) -> None:
    row3, row5 = sample_row(3), sample_row(5)
    created = row3.created_at[:19] + ".500Z"  # a trailing zero: today's spelling is .5
    led = legacy_ledger(
        tmp_path, {3: {"created_at": created}, 5: {"lakefs_commit": row5.lakefs_commit.upper()}}
    )
    (note,) = legacy_notes(led)
    assert note.startswith("2 stored row(s)")
    assert "first at line 4" in note and repr(created) in note and ".5Z" in note


def test_an_upper_case_commit_alone_is_noted(tmp_path: Path) -> None:
    commit = sample_row(0).lakefs_commit.upper()
    (note,) = legacy_notes(legacy_ledger(tmp_path, {0: {"lakefs_commit": commit}}))
    assert note.startswith("1 stored row(s)") and "first at line 1" in note and "not lower-case" in note


def test_the_note_comes_from_the_parallel_path_too(tmp_path: Path, monkeypatch) -> None:
    from kfm_ledger.log import bulk

    led = legacy_ledger(tmp_path, {6: {"lakefs_commit": sample_row(6).lakefs_commit.upper()}})
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 4096)
    (note,) = legacy_notes(led)
    assert "first at line 7" in note
