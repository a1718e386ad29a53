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
