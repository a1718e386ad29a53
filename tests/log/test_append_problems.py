"""A refused append lists every problem: the schema's and the ledger's."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from kfm_ledger.errors import InputRejected
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_row
from kfm_ledger.schema import encode_row

from conftest import ORIGIN, fill, signer_of


def test_a_refused_batch_lists_the_ledger_problems_too(tmp_path: Path) -> None:
    """Found in an audit: a schema problem hid a commit already in the ledger."""
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 5)
    before = (tmp_path / "l" / "rollback-index.jsonl").read_bytes()
    late = "2040-01-01T00:00:00Z"
    rows = [
        encode_row(msgspec.structs.replace(sample_row(5), created_at=late)),
        encode_row(msgspec.structs.replace(sample_row(6), created_at=late)).replace(
            b'"producer":"', b'"producer":" ', 1
        ),
        encode_row(msgspec.structs.replace(sample_row(2), created_at=late)),  # already in the ledger
    ]
    with pytest.raises(InputRejected) as e:
        led.append(b"\n".join(rows), signer=signer_of(led))
    assert [(p.line, p.path) for p in e.value.problems] == [(2, "$.producer"), (3, "$.lakefs_commit")]
    assert "already in the ledger at index 2" in e.value.problems[1].message
    assert (tmp_path / "l" / "rollback-index.jsonl").read_bytes() == before


def test_a_refused_batch_ignores_index_entries_beyond_the_signed_rows(tmp_path: Path) -> None:
    """Found in review: an index entry of an append not yet signed made a commit look stored."""
    from kfm_ledger.index import IndexedEntry

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 3)
    late = "2040-01-01T00:00:00Z"
    ahead = msgspec.structs.replace(sample_row(3), created_at=late)
    # Another writer between steps 3 and 5: its row is in the index, not yet signed.
    led.index.add([IndexedEntry(3, ahead.lakefs_commit, 10**6, 10, late)], size=4, end_offset=10**6 + 11)
    late_row = encode_row(msgspec.structs.replace(sample_row(4), created_at=late))
    bad = late_row.replace(b'"producer":"', b'"producer":" ', 1)
    with pytest.raises(InputRejected) as e:
        led.append(encode_row(ahead) + b"\n" + bad, signer=signer_of(led))
    assert [(p.line, p.path) for p in e.value.problems] == [(2, "$.producer")]


def test_the_cap_on_listed_problems_keeps_the_true_total_and_lists_only_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in an audit: "1001 problem(s)", the "... and N more" note listed as a problem of a line."""
    from kfm_ledger.log import bulk

    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    lines = [encode_row(sample_row(i)).replace(b'"kwh":', b'"kwh":-', 1) for i in range(30)]
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputRejected) as e:
        led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2, max_problems=10)
    assert (len(e.value.problems), e.value.total, e.value.not_listed) == (10, 30, 20)
    assert all(p.path == "$.energy_carbon.kwh" for p in e.value.problems)
    assert [p.line for p in e.value.problems] == list(range(1, 11))
    assert "showing 10 of 30 problems" in str(e.value)
    text = e.value.diagnostics().splitlines()
    assert text[0] == "input refused: showing 10 of 30 problems; nothing was written"
    assert len(text) == 12 and "20 more problem(s) not listed" in text[-1]
    assert e.value.evidence()["total"] == 30


def test_an_in_memory_batch_is_capped_too(tmp_path: Path) -> None:
    from kfm_ledger.errors import MAX_LISTED_PROBLEMS

    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    bad = encode_row(sample_row(0)).replace(b'"kwh":', b'"kwh":-', 1)
    with pytest.raises(InputRejected) as e:
        led.append(b"\n".join([bad] * (MAX_LISTED_PROBLEMS + 5)), signer=signer_of(led))
    assert len(e.value.problems) == MAX_LISTED_PROBLEMS
    assert e.value.total == MAX_LISTED_PROBLEMS + 5  # a negative kwh on each line
    # The 5 rows past the cap were counted undiagnosed, one problem each: a lower bound, said so.
    assert f"showing 1,000 of at least {e.value.total:,} problems" in str(e.value)
    assert e.value.total_exact is False and e.value.evidence()["total_exact"] is False


def test_a_small_batch_of_many_bad_lines_stops_diagnosing_at_the_cap() -> None:
    # Issue part 4: 6 MB of invalid lines built 3 million messages.  Past the cap each
    # refused row is only counted (one problem at least), never diagnosed or kept.
    import time

    from kfm_ledger.errors import MAX_LISTED_PROBLEMS
    from kfm_ledger.storage.memory import MemoryStorage

    led = Ledger.init(MemoryStorage(), origin=ORIGIN)
    bad = b'{"not": "a row", "x": 1}\n' * 50_000
    start = time.monotonic()
    try:
        led.append(bad, signer=signer_of(led))
    except InputRejected as e:
        assert len(e.problems) <= MAX_LISTED_PROBLEMS + 20
        assert e.total >= 50_000 and e.not_listed == e.total - len(e.problems)
    else:  # pragma: no cover
        raise AssertionError("accepted")
    assert time.monotonic() - start < 20  # was about 8 s of diagnosis alone
    assert led.size == 0
