"""Append's "one row per lakeFS commit" check is sound when the commit index is edited
(hardening issue, item 1): the index's seal (kfm_ledger.index_seal, log/index_guard) binds
keyed per-bucket sums of its entries to the signed tree; any edit is found before a dedup
decision and the index rebuilt from the proven rows, on the one-row and the bulk path."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.errors import InputRejected
from kfm_ledger.index import CommitIndex
from kfm_ledger.index_seal import (
    BUCKETS,
    MODULUS,
    TABLE_BYTES,
    SealTable,
    bucket_of,
    bucket_sum,
    chunk_sums,
    hkdf_sha256,
    place_chunk_sums,
    seal_key,
    seal_mac,
    term,
    utf8_buckets_of,
)
from kfm_ledger.log import bulk
from kfm_ledger.log.index_guard import check_seal
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, fill, signer_of

# -- the primitives -----------------------------------------------------------------


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_sha256(ikm, salt=salt, info=info, length=42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_the_seal_key_is_the_signers_and_differs_between_keys(tmp_path: Path) -> None:
    a = Ledger.init(tmp_path / "a", origin=ORIGIN)
    b = Ledger.init(tmp_path / "b", origin=ORIGIN)
    assert seal_key(signer_of(a)) == seal_key(signer_of(a))
    assert seal_key(signer_of(a)) != seal_key(signer_of(b))


def test_terms_bind_every_field_and_the_encoding_is_injective() -> None:
    key = b"k" * 32
    base = term(key, 1, "abc", "2025-01-01T00:00:00Z")
    assert base != term(key, 2, "abc", "2025-01-01T00:00:00Z")
    assert base != term(key, 1, "abd", "2025-01-01T00:00:00Z")
    assert base != term(key, 1, "abc", "2025-01-01T00:00:01Z")
    assert term(key, 1, "ab", "c2025") != term(key, 1, "abc", "2025")  # field boundaries count
    assert base != term(b"j" * 32, 1, "abc", "2025-01-01T00:00:00Z")


def test_the_table_sums_are_order_independent_and_per_bucket() -> None:
    key = b"k" * 32
    entries = [(i, f"{i:064x}", "2025-01-01T00:00:00Z") for i in range(50)]
    a, b = SealTable(), SealTable()
    a.add(key, entries)
    b.add(key, reversed(entries))
    assert a.data == b.data and len(a.data) == TABLE_BYTES
    bucket = bucket_of(entries[7][1])
    assert a.get(bucket) == bucket_sum(key, [e for e in entries if bucket_of(e[1]) == bucket])
    assert all(0 <= bucket_of(e[1]) < BUCKETS for e in entries)
    with pytest.raises(ValueError, match="expected"):
        SealTable(b"\x00" * 5)


def test_a_term_is_h1_plus_leaf_times_h2_modulo_the_prime() -> None:
    """The definition, recomputed from keyed BLAKE2b-256 (RFC 7693) here."""
    import hashlib

    key = b"k" * 32
    digest = hashlib.blake2b(b"abc\x002025-01-01T00:00:00Z", key=key, digest_size=32).digest()
    h1, h2 = int.from_bytes(digest[:16], "big"), int.from_bytes(digest[16:], "big")
    assert MODULUS == 2**127 - 1
    assert term(key, 7, "abc", "2025-01-01T00:00:00Z") == (h1 + 7 * h2) % MODULUS


@pytest.mark.parametrize("leaf", [-1, 2**63, 2**63 + 5, 1.0, "1", None])
def test_a_term_refuses_a_leaf_no_index_row_can_hold(leaf: object) -> None:
    """An index edited to hold a REAL, TEXT, NULL or out-of-range leaf: its terms never sum
    (the check reports the bucket as changed), so no leaf can alias another modulo the prime."""
    with pytest.raises((TypeError, ValueError)):
        term(b"k" * 32, leaf, "abc", "2025-01-01T00:00:00Z")  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        bucket_sum(b"k" * 32, [(leaf, "abc", "2025-01-01T00:00:00Z")])  # type: ignore[list-item]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**40), min_size=1, max_size=60, unique=True),
    st.integers(0, 2**62),
    st.lists(st.integers(1, 20), min_size=1, max_size=8),
)
def test_chunk_sums_placed_at_their_base_equal_the_terms_of_each_entry(
    ids: list[int], base: int, cuts: list[int]
) -> None:
    """What a bulk append's workers compute before they know their rows' leaves (per-bucket A and
    B of a run), placed at the run's first leaf, is the sum of each entry's own term."""
    key = b"w" * 32
    commits = [f"{i:016x}" for i in ids]
    created = [f"2025-01-01T00:00:{i % 60:02d}Z" for i in ids]
    expected: dict[int, int] = {}
    for j, (commit, at) in enumerate(zip(commits, created)):
        b = bucket_of(commit)
        expected[b] = (expected.get(b, 0) + term(key, base + j, commit, at)) % MODULUS
    placed: dict[int, int] = {}
    start = 0
    for cut in [*cuts, len(commits)]:  # the entries split into runs, each placed at its own base
        end = min(len(commits), start + cut)
        run_commits, run_created = commits[start:end], created[start:end]
        utf8_commits = [c.encode() for c in run_commits]
        touched, a, b_sums = chunk_sums(
            key, utf8_commits, [c.encode() for c in run_created], utf8_buckets_of(utf8_commits)
        )
        assert list(touched) == sorted(set(map(bucket_of, run_commits)))
        place_chunk_sums(placed, base + start, touched, a, b_sums)
        start = end
        if start == len(commits):
            break
    assert {b: v % MODULUS for b, v in placed.items()} == expected
    table = SealTable()
    table.add(key, [(base + j, c, t) for j, (c, t) in enumerate(zip(commits, created))])
    assert all(table.get(b) == v for b, v in expected.items())


def test_moving_an_entry_to_another_leaf_changes_its_bucket_sum() -> None:
    """Linear in the leaf, yet bound to it: the same commit at another leaf, or two entries that
    swap leaves, give other sums (the swap case is what a leaf-free term would miss)."""
    key = b"k" * 32
    a, b = ("abc", "2025-01-01T00:00:00Z"), ("abd", "2025-01-01T00:00:01Z")
    honest = bucket_sum(key, [(1, *a), (5, *b)])
    assert bucket_sum(key, [(5, *a), (1, *b)]) != honest
    assert bucket_sum(key, [(2, *a), (4, *b)]) != honest
    assert bucket_sum(key, [(1, *a), (6, *b)]) != honest


def test_the_mac_binds_size_root_and_table() -> None:
    key, root, table = b"k" * 32, b"r" * 32, bytes(TABLE_BYTES)
    mac = seal_mac(key, 5, root, table)
    assert mac != seal_mac(key, 6, root, table)
    assert mac != seal_mac(key, 5, b"s" * 32, table)
    assert mac != seal_mac(key, 5, root, b"\x01" + table[1:])


# -- edits of the index never let a repeated commit in --------------------------------

N = 12


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    led = fill(Ledger.init(tmp_path / "l", origin=ORIGIN), N)
    led.close()
    return tmp_path / "l"


def sql(ledger: Path, *statements: str) -> None:
    with sqlite3.connect(ledger / "index.sqlite") as db:
        for statement in statements:
            db.execute(statement)


def commit_at(ledger: Path, leaf: int) -> str:
    with Ledger.open(ledger) as led:
        return led.entry(leaf).row.lakefs_commit


def swap(ledger: Path) -> None:
    a, b = commit_at(ledger, 2), commit_at(ledger, 3)
    sql(
        ledger,
        "UPDATE entries SET lakefs_commit = 'x' WHERE leaf = 2",
        f"UPDATE entries SET lakefs_commit = '{a}' WHERE leaf = 3",
        f"UPDATE entries SET lakefs_commit = '{b}' WHERE leaf = 2",
    )


def rename(ledger: Path) -> None:
    # Its bucket column too, so that nothing but the seal's sums can tell.
    sql(ledger, "UPDATE entries SET lakefs_commit = lakefs_commit || '0' WHERE leaf = 5")


def delete(ledger: Path) -> None:
    sql(ledger, "DELETE FROM entries WHERE leaf = 5")


def lower_size(ledger: Path) -> None:
    sql(ledger, "DELETE FROM entries WHERE leaf >= 5", "UPDATE meta SET value = '5' WHERE key = 'size'")


def drop_file(ledger: Path) -> None:
    for p in ledger.glob("index.sqlite*"):
        p.unlink()


def edit_table(ledger: Path) -> None:
    sql(ledger, "UPDATE seal SET sums = zeroblob(length(sums))")


def edit_mac(ledger: Path) -> None:
    sql(ledger, "UPDATE seal SET mac = zeroblob(32)")


def drop_seal(ledger: Path) -> None:
    sql(ledger, "DELETE FROM seal")


def move_bucket(ledger: Path) -> None:
    sql(ledger, "UPDATE entries SET bucket = (bucket + 1) % 4096 WHERE leaf = 5")


def renamed_with_bucket(ledger: Path) -> None:
    # Renamed to a commit in the same bucket would need a search; renaming and moving the
    # entry to the new name's bucket is what an attacker who knows the bucket rule does.
    with Ledger.open(ledger) as led:
        new = led.entry(5).row.lakefs_commit[:-1] + "f"
    sql(ledger, f"UPDATE entries SET lakefs_commit = '{new}', bucket = {bucket_of(new)} WHERE leaf = 5")


def entries_a_view(ledger: Path) -> None:
    # A view in place of the table (over a renamed copy with one entry renamed).
    sql(
        ledger,
        "ALTER TABLE entries RENAME TO e2",
        "UPDATE e2 SET lakefs_commit = lakefs_commit || '0' WHERE leaf = 5",
        "CREATE VIEW entries AS SELECT * FROM e2",
    )


EDITS: dict[str, Callable[[Path], None]] = {
    "view": entries_a_view,
    "swap": swap,
    "rename": rename,
    "rename-and-rebucket": renamed_with_bucket,
    "delete": delete,
    "lower-size": lower_size,
    "drop-file": drop_file,
    "edit-table": edit_table,
    "edit-mac": edit_mac,
    "drop-seal": drop_seal,
    "move-bucket": move_bucket,
}


def repeat_of(leaf: int) -> bytes:
    return sample_jsonl(1, start=leaf)  # the very row stored at ``leaf`` (same commit)


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
@pytest.mark.parametrize("leaf", [2, 3, 5])
def test_an_edited_index_never_lets_a_stored_commit_in_again(ledger: Path, edit, leaf: int) -> None:
    edit(ledger)
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected, match=f"already in the ledger at index {leaf}"):
        led.append(repeat_of(leaf), signer=signer_of(led))
    assert led.size == N
    # And a new commit is still accepted; the index is whole and checked again.
    led.append(sample_jsonl(1, start=N), signer=signer_of(led))
    # An edit in a bucket no decision read is left for `kfm verify` to name (it checks every entry).
    report = verify_ledger(Ledger.open(ledger))
    assert report.ok or {f.where for f in report.failures} == {"index"}, report.failures


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_edited_index_never_lets_a_stored_commit_in_on_the_bulk_path(
    ledger: Path, edit, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    edit(ledger)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(sample_jsonl(40, start=N) + repeat_of(5))
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected, match="already in the ledger at index 5"):
        led.append_file(rows, signer=signer_of(led), workers=2)
    assert led.size == N
    rows.write_bytes(sample_jsonl(40, start=N))
    assert led.append_file(rows, signer=signer_of(led), workers=2).count == 40
    report = verify_ledger(Ledger.open(ledger))
    assert report.ok or {f.where for f in report.failures} == {"index"}, report.failures


def test_an_old_copy_of_the_index_restored_after_an_append_is_caught(ledger: Path, tmp_path: Path) -> None:
    old = tmp_path / "old-index"
    old.mkdir()
    for p in ledger.glob("index.sqlite*"):
        shutil.copy(p, old / p.name)
    led = Ledger.open(ledger)
    led.append(sample_jsonl(3, start=N), signer=signer_of(led))
    led.close()
    drop_file(ledger)
    for p in old.iterdir():
        shutil.copy(p, ledger / p.name)
    # The old copy's seal is valid but describes size N: rebuilt before the dedup decision.
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected, match=f"already in the ledger at index {N + 1}"):
        led.append(repeat_of(N + 1), signer=signer_of(led))


def test_the_old_copy_with_its_size_meta_raised_and_new_entries_faked_is_caught(ledger: Path, tmp_path: Path) -> None:
    # An attacker who copies the seal of an old index into today's index, after renaming an entry.
    with sqlite3.connect(ledger / "index.sqlite") as db:
        old_seal = db.execute("SELECT size, root, sums, mac FROM seal").fetchone()
    led = Ledger.open(ledger)
    led.append(sample_jsonl(1, start=N), signer=signer_of(led))
    led.close()
    rename(ledger)
    sql(ledger, "DELETE FROM seal")
    with sqlite3.connect(ledger / "index.sqlite") as db:
        db.execute("INSERT INTO seal VALUES (0, ?, ?, ?, ?)", old_seal)
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected, match="already in the ledger at index 5"):
        led.append(repeat_of(5), signer=signer_of(led))


def test_appends_keep_the_seal_current_without_a_rebuild(ledger: Path, monkeypatch) -> None:
    from kfm_ledger.log import index_guard

    def no_reseal(*_a, **_k):
        raise AssertionError("resealed")

    led = Ledger.open(ledger)
    monkeypatch.setattr(index_guard, "reseal", no_reseal)
    for k in range(3):
        led.append(sample_jsonl(2, start=N + 2 * k), signer=signer_of(led))
    sealed = check_seal(led, led._raw_index(), signer_of(led))
    assert sealed is not None and sealed.size == N + 6
    assert sealed.stored([led.entry(N + 5).row.lakefs_commit]) == {led.entry(N + 5).row.lakefs_commit: N + 5}


def test_a_seal_made_with_another_key_is_not_trusted(ledger: Path, tmp_path: Path) -> None:
    other = Ledger.init(tmp_path / "other", origin=ORIGIN)
    led = Ledger.open(ledger)
    assert check_seal(led, led._raw_index(), signer_of(led)) is not None
    assert check_seal(led, led._raw_index(), signer_of(other)) is None


def test_an_index_rebuilt_without_the_key_is_sealed_by_the_next_append(ledger: Path) -> None:
    led = Ledger.open(ledger)
    led.rebuild()
    assert check_seal(led, led._raw_index(), signer_of(led)) is None
    led.append(sample_jsonl(1, start=N), signer=signer_of(led))
    assert check_seal(led, led._raw_index(), signer_of(led)) is not None


def test_a_rejected_batch_only_names_stored_commits_from_a_checked_index(ledger: Path) -> None:
    # A batch with a schema problem is checked read-only: from a sealed index it names the
    # stored commit; from an edited one it adds nothing (the schema problems are the answer).
    bad = b'{"nope": 1}\n' + repeat_of(5)
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected) as caught:
        led.append(bad, signer=signer_of(led))
    assert any("already in the ledger at index 5" in p.message for p in caught.value.problems)
    led.close()
    rename(ledger)
    led = Ledger.open(ledger)
    with pytest.raises(InputRejected) as caught:
        led.append(bad, signer=signer_of(led))
    assert caught.value.problems and not any("already in the ledger" in p.message for p in caught.value.problems)


def test_the_index_file_keeps_a_bucket_per_entry(ledger: Path) -> None:
    with sqlite3.connect(ledger / "index.sqlite", isolation_level=None) as conn:
        idx = CommitIndex(conn)
        rows = list(idx.bucketed_entries(below=N))
        assert len(rows) == N and all(b == bucket_of(c) for b, _, c, _ in rows)


@pytest.mark.parametrize(
    ("statement", "shown"),
    [
        ("UPDATE entries SET created_at = '1970-01-01T00:00:00Z' WHERE leaf = 4", "created_at '1970-01-01T00:00:00Z'"),
        ("UPDATE entries SET bucket = (bucket + 1) % 4096 WHERE leaf = 4", "bucket"),
    ],
    ids=["created_at", "bucket"],
)
def test_verify_checks_the_created_at_and_bucket_columns(ledger: Path, statement: str, shown: str) -> None:
    sql(ledger, statement)
    report = verify_ledger(Ledger.open(ledger))
    assert not report.ok and [f.where for f in report.failures] == ["index"]
    assert "at index 4" in report.failures[0].message and shown in report.failures[0].message


def renamed_to_a_new_commit(ledger: Path) -> str:
    """Leaf 5's entry renamed to a commit that is not stored, left in leaf 5's bucket: the
    index claims that commit is stored (and its UNIQUE column would refuse the insert)."""
    new = sample_jsonl(1, start=N)
    commit = commit_of(new)
    sql(ledger, f"UPDATE entries SET lakefs_commit = '{commit}' WHERE leaf = 5")
    return commit


def commit_of(line: bytes) -> str:
    from kfm_ledger.schema import decode_row

    return decode_row(line.rstrip(b"\n")).lakefs_commit


def test_an_entry_claiming_a_new_commit_never_refuses_it(ledger: Path) -> None:
    renamed_to_a_new_commit(ledger)
    led = Ledger.open(ledger)
    result = led.append(sample_jsonl(1, start=N), signer=signer_of(led))  # healed, then accepted
    assert result.first_index == N and verify_ledger(Ledger.open(ledger)).ok


@pytest.mark.parametrize("rows", [3, 60], ids=["row-by-row-unique", "deferred-unique"])
def test_an_entry_claiming_a_new_commit_never_refuses_it_on_the_bulk_path(
    ledger: Path, tmp_path: Path, monkeypatch, rows: int
) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 32 << 10)
    renamed_to_a_new_commit(ledger)
    (tmp_path / "rows.jsonl").write_bytes(sample_jsonl(rows, start=N))
    led = Ledger.open(ledger)
    assert led.append_file(tmp_path / "rows.jsonl", signer=signer_of(led), workers=2).count == rows
    assert verify_ledger(Ledger.open(ledger)).ok


@pytest.mark.parametrize(
    "statement",
    [
        None,
        "UPDATE entries SET offset = offset + 1 WHERE leaf = 4",
        "UPDATE entries SET length = length - 1 WHERE leaf = 4",
        "UPDATE entries SET created_at = '2001-01-01T00:00:00Z' WHERE leaf = 4",
        "UPDATE entries SET bucket = (bucket + 1) % 4096 WHERE leaf = 4",
        "UPDATE entries SET lakefs_commit = upper(lakefs_commit) WHERE leaf = 4",
        "UPDATE entries SET offset = 'x' || offset WHERE leaf = 4",
        "UPDATE entries SET offset = offset + 0.5 WHERE leaf = 4",
        "UPDATE entries SET created_at = CAST(created_at AS BLOB) WHERE leaf = 4",
        "DELETE FROM entries WHERE leaf = 11",
        "UPDATE entries SET leaf = 40 WHERE leaf = 11",
    ],
)
def test_the_column_comparison_of_a_chunk_agrees_with_the_row_by_row_one(ledger: Path, statement: str | None) -> None:
    """verify/index_check.CommitChecker.check_consecutive (a chunk of valid rows compared with the
    index column by column) finds what check() of the same rows finds, row by row, whatever one
    entry of the index was changed to (its values, their types, its leaf)."""
    from kfm_ledger.log.layout import JSONL_KEY
    from kfm_ledger.schema import decode_row
    from kfm_ledger.verify.context import Run
    from kfm_ledger.verify.index_check import CommitChecker
    from kfm_ledger.verify.report import VerifyReport

    lines = (ledger / JSONL_KEY).read_bytes().split(b"\n")[:N]
    commits = [decode_row(line).lakefs_commit for line in lines]
    created = [decode_row(line).created_at for line in lines]
    lengths = [len(line) for line in lines]
    offsets = [sum(lengths[:k]) + k for k in range(N)]
    if statement is not None:
        sql(ledger, statement)
    with Ledger.open(ledger) as led:
        found = []
        for how in ("columns", "rows"):
            run = Run(led, VerifyReport(origin=led.origin, size=led.size, root=led.root), 10)
            checker = CommitChecker(run, led.stored_index())
            if how == "columns":
                checker.check_consecutive(0, commits, offsets, lengths, created)
            else:
                checker.check(list(zip(commits, range(N), offsets, lengths, created)))
            checker.finish()
            checker.close()
            found.append((checker.mismatches, checker.first_mismatch, checker.unique_by_index, run.report.failures))
    assert found[0] == found[1]
    assert (found[0][0] == 0) == (statement is None)
