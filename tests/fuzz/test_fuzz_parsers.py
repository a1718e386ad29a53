"""Fuzzing every parser of outside input (hypothesis, a bounded number of examples each).

Each target gets random bytes and structured mutations of a valid input (bytes
flipped, inserted, deleted, the input cut short or repeated).  Malformed input must
come out as a :class:`~kfm_ledger.errors.KfmError` (or the documented exception of
an API that says so), never another exception, a hang or a crash.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfm_ledger import schema
from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.note import open_note, parse_note
from kfm_ledger.core.signed_checkpoint import open_checkpoint, parse_unverified
from kfm_ledger.core.tlogproof import format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from kfm_ledger.errors import KfmError
from kfm_ledger.log.expansions import levels_from_record
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import CHECKPOINT_KEY, PENDING_KEY, SKEY_KEY, VKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.recovery import PendingAppend, read_pending
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.storage import MemoryStorage

ORIGIN = "fuzz.kfm.example/log"
EXAMPLES = 150  # per target and strategy: the whole directory stays well under 30 s
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- valid inputs, made once --------------------------------------------------
_STORAGE = MemoryStorage()
_LED = Ledger.init(_STORAGE, origin=ORIGIN)
_SIGNER = load_signer(_STORAGE.read(SKEY_KEY))
_LED.append(sample_jsonl(300), signer=_SIGNER)
VERIFIER = _LED.verifier
NOTE = _STORAGE.read(CHECKPOINT_KEY)
BODY = NOTE.split(b"\n\n", 1)[0] + b"\n"
VKEY = _STORAGE.read(VKEY_KEY)
SKEY = _STORAGE.read(SKEY_KEY)
PROOF = format_tlog_proof(_LED.tlog_proof(7))
ENTRY7 = _LED.entry(7).line
ROW = sample_jsonl(1)
BATCH = sample_jsonl(3)
FULL_TILE = _LED.read_tile(0, 0, 256)
PARTIAL_TILE = _LED.read_tile(0, 1, 44)
RECORD = _LED.read_expansion_record(0)
assert RECORD is not None
PENDING = PendingAppend(old_size=1, old_end=100, new_size=3, new_end=300).to_json()
CONSISTENCY = _LED.consistency_proof(100, 300)
ROOT_100 = _LED.stored_checkpoint(100).checkpoint.root if 100 in _LED.checkpoint_sizes() else None


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few random edits (the structured half of every fuzzer)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "repeat", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 10, 32, 43, 45, 47, 61, 0x80, 0xC3, 0xE2, 0xFF, ord("\\"), ord('"')]))
        elif op == "insert":
            special = st.sampled_from([b"\n", b"\n\n", b" ", b"\xe2\x80\x94"])
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | special)
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "cut":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "splice" and data:
            end = draw(st.integers(at, len(data)))
            data[at:end] = draw(st.binary(max_size=16))
    return bytes(data)


def inputs(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(seed))


def only_kfm_errors(fn: Callable[[], Any], *allowed: type[BaseException]) -> None:
    try:
        fn()
    except KfmError:
        pass
    except allowed:
        pass


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# -- notes and checkpoints ----------------------------------------------------
@FUZZ
@given(inputs(NOTE))
def test_parse_note(data: bytes) -> None:
    only_kfm_errors(lambda: parse_note(data))


@FUZZ
@given(inputs(NOTE))
def test_open_note(data: bytes) -> None:
    only_kfm_errors(lambda: open_note(data, [VERIFIER]))


@FUZZ
@given(inputs(NOTE))
def test_open_checkpoint(data: bytes) -> None:
    only_kfm_errors(lambda: open_checkpoint(data, [VERIFIER], origin=ORIGIN))
    only_kfm_errors(lambda: parse_unverified(data))


@FUZZ
@given(inputs(BODY))
def test_checkpoint_body(data: bytes) -> None:
    only_kfm_errors(lambda: Checkpoint.parse(text(data)))


# -- keys -----------------------------------------------------------------------
@FUZZ
@given(inputs(VKEY))
def test_verifier_key(data: bytes) -> None:
    only_kfm_errors(lambda: Verifier.from_vkey(text(data).strip()))


@FUZZ
@given(inputs(SKEY))
def test_signer_key(data: bytes) -> None:
    only_kfm_errors(lambda: load_signer(data))
    only_kfm_errors(lambda: Signer.from_private_key_text(text(data).strip()))


# -- proofs -----------------------------------------------------------------------
@FUZZ
@given(inputs(PROOF))
def test_tlog_proof(data: bytes) -> None:
    only_kfm_errors(lambda: parse_tlog_proof(data))
    only_kfm_errors(lambda: verify_tlog_proof(data, ENTRY7, [VERIFIER], origin=ORIGIN))


_HASH_LINE = st.one_of(
    st.sampled_from([base64.b64encode(h).decode() for h in CONSISTENCY]),
    st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=50),
)


@FUZZ
@given(
    st.integers(-2, 400),
    st.integers(-2, 400),
    st.lists(_HASH_LINE, max_size=12),
)
def test_consistency_proof_lines(old: int, new: int, lines: list[str]) -> None:
    """A consistency proof as the CLI prints it (one base64 hash a line), decoded and checked."""

    def check() -> None:
        proof = [base64.b64decode(line, validate=True) for line in lines]
        merkle.verify_consistency(old, new, ROOT_100 or bytes(32), _LED.root, proof)

    only_kfm_errors(check, ValueError)  # ValueError: base64 decoding, before the parser


# -- tiles and expansion records ---------------------------------------------------
@FUZZ
@given(st.one_of(inputs(FULL_TILE[:96]), mutated(FULL_TILE), mutated(PARTIAL_TILE)))
def test_tiles(data: bytes) -> None:
    only_kfm_errors(lambda: tiles.hashes_of_tile(data))
    only_kfm_errors(lambda: tiles.expand_tile(data))


@FUZZ
@given(
    st.one_of(
        st.text(max_size=40),
        mutated(b"tile/0/x001/234.p/17").map(text),
        mutated(b"tile/8/000").map(text),
        mutated(b"tile/entries/x123/067").map(text),
    )
)
def test_tile_path(path: str) -> None:
    only_kfm_errors(lambda: tiles.parse_tile_path(path))
    only_kfm_errors(lambda: tiles.parse_entries_path(path))


@FUZZ
@given(st.one_of(mutated(RECORD), st.binary(max_size=64)), st.one_of(st.just(FULL_TILE), mutated(FULL_TILE)))
def test_expansion_record(record: bytes, tile: bytes) -> None:
    """A record that does not match its tile is refused (None), never an exception."""
    levels = levels_from_record(tile, record)
    if levels is not None:
        assert levels[0] == tile and record == RECORD and tile == FULL_TILE


# -- the pending-append record -----------------------------------------------------
_PENDING_STORAGE = MemoryStorage()
_PENDING_LED = Ledger.init(_PENDING_STORAGE, origin=ORIGIN)


@FUZZ
@given(st.one_of(inputs(PENDING), st.just(b'{"old_size": ' + b"9" * 5000 + b"}")))
def test_pending_append_record(data: bytes) -> None:
    """read_pending: an unreadable record is CorruptLedgerError (from_json: ValueError, KeyError, TypeError)."""
    only_kfm_errors(lambda: PendingAppend.from_json(data), ValueError, KeyError, TypeError)
    _PENDING_STORAGE.objects[PENDING_KEY] = data
    only_kfm_errors(lambda: read_pending(_PENDING_LED))


@pytest.mark.parametrize("depth", [4000, 100_000])  # under and over the record's 4 KiB bound
def test_pending_append_record_nested_deeply(depth: int) -> None:
    _PENDING_STORAGE.objects[PENDING_KEY] = b"[" * depth
    try:
        only_kfm_errors(lambda: read_pending(_PENDING_LED))
    finally:
        del _PENDING_STORAGE.objects[PENDING_KEY]


# -- rows ------------------------------------------------------------------------------
@FUZZ
@given(inputs(ROW))
def test_decode_row(data: bytes) -> None:
    only_kfm_errors(lambda: schema.decode_row(data))
    only_kfm_errors(lambda: schema.decode_canonical_line(data.rstrip(b"\n")))


@FUZZ
@given(st.one_of(inputs(BATCH), mutated(b"[" + BATCH.replace(b"\n", b",").rstrip(b",") + b"]")))
def test_check_batch(data: bytes) -> None:
    """check_batch never raises: every problem is a RowProblem."""
    only_kfm_errors(lambda: schema.check_batch(data))


# -- the index meta ----------------------------------------------------------------------
_META_VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "-1", "1e3", "0x10", " 5", "300", "999999999999999999999", "nan"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["size", "end_offset", "schema_version"]), _META_VALUES)
def test_index_meta(tmp_path_factory: pytest.TempPathFactory, key: str, value: str) -> None:
    """A damaged index meta value: the ledger opens, catches up or rebuilds, or says what is wrong."""
    d: Path = tmp_path_factory.mktemp("meta") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    led.append(sample_jsonl(5), signer=load_signer((d / SKEY_KEY).read_bytes()))
    led.close()
    conn = sqlite3.connect(d / "index.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    conn.commit()
    conn.close()

    def use() -> None:
        with Ledger.open(d) as again:
            again.get(sample_row(4).lakefs_commit)

    only_kfm_errors(use)


@pytest.mark.parametrize("value", [":", "", "-1", "1e3", " 5", "99999999999999999999999"])
def test_a_damaged_index_meta_value_is_rebuilt_from_the_rows(tmp_path: Path, value: str) -> None:
    """Found by test_index_meta: ``int()`` of a damaged high-water mark raised ValueError (index.py)."""
    d = tmp_path / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    led.append(sample_jsonl(5), signer=load_signer((d / SKEY_KEY).read_bytes()))
    led.close()
    conn = sqlite3.connect(d / "index.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'size'", (value,))
    conn.commit()
    conn.close()
    with Ledger.open(d) as again:
        assert again.get(sample_row(4).lakefs_commit).line == sample_jsonl(5).splitlines()[4]
        assert again.index.size() == 5
