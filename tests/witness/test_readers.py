"""Every reader of a stored checkpoint accepts the extra signature lines that cosignatures are
(c2sp.org/signed-note: signatures from unknown keys are ignored), on the in-memory storage
backend that enforces the storage contract: open, refresh, stored checkpoints, tlog-proofs,
the kfm-previous-size chain, recovery, appends after, verify (with and without witness keys)."""

from __future__ import annotations

import pytest

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.note import NoteSignature, add_signatures, parse_note
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof
from kfm_ledger.errors import BadSignatureError, UnknownKeyError
from kfm_ledger.log.checkpoint_chain import previous_signed_size
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.storage import MemoryStorage
from kfm_ledger.verify import verify_ledger
from kfm_ledger.witness.push import store_cosignatures

from conftest import ORIGIN, fill

W1 = CosignatureSigner.generate("witness.test/r1")
W2 = CosignatureSigner.generate("witness.test/r2")


def _cosign(led: Ledger, size: int, signer: CosignatureSigner, ts: int = 1_800_000_000) -> None:
    text = parse_note(led.storage.read(f"checkpoints/{size}")).text
    assert store_cosignatures(led, size, signer.verifier(), [signer.cosign(text, ts)])


@pytest.fixture
def led() -> Ledger:
    ledger = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(ledger, 30, 12)  # checkpoints 0, 30, 42
    _cosign(ledger, 30, W1)
    _cosign(ledger, 42, W1)
    _cosign(ledger, 42, W2)
    return ledger


def test_stored_notes_carry_both_witnesses(led: Ledger) -> None:
    for key in ("checkpoint", "checkpoints/42"):
        names = [s.name for s in parse_note(led.storage.read(key)).signatures]
        assert names == [ORIGIN, "witness.test/r1", "witness.test/r2"], key
    assert [s.name for s in parse_note(led.storage.read("checkpoints/30")).signatures] == [ORIGIN, "witness.test/r1"]


def test_readers_accept_cosigned_checkpoints(led: Ledger) -> None:
    again = Ledger.open(led.storage)
    assert again.size == 42 and again.checkpoint.note == led.storage.read("checkpoint")
    assert previous_signed_size(again.checkpoint.checkpoint) == 30
    assert again.stored_checkpoint(30).checkpoint.size == 30
    proof = again.tlog_proof(5, 30)
    assert b"witness.test/r1" in proof.checkpoint
    checkpoint, index = verify_tlog_proof(format_tlog_proof(proof), again.entry(5).line, [again.verifier])
    assert (checkpoint.size, index) == (30, 5)
    again.refresh()
    assert again.recover().size == 42
    report = verify_ledger(again, witnesses=[W1.verifier(), W2.verifier()])
    assert report.ok, report.failures
    assert any("witness.test/r1 (3 checkpoint(s))" in n for n in report.notes)
    fill(again, 5)  # appends after a cosigned checkpoint
    assert again.size == 47 and previous_signed_size(again.checkpoint.checkpoint) == 42
    assert verify_ledger(again, witnesses=[W1.verifier()]).ok


def test_open_checkpoint_with_witness_keys(led: Ledger) -> None:
    note = led.storage.read("checkpoint")
    opened = open_checkpoint(note, [led.verifier, W1.verifier()], origin=ORIGIN)
    assert [s.name for s in opened.verified] == [ORIGIN, "witness.test/r1"]
    assert [s.name for s in opened.unverified] == ["witness.test/r2"]
    sig = next(s for s in parse_note(note).signatures if s.name == "witness.test/r1")
    bad = NoteSignature(sig.name, sig.key_id, sig.signature[:8] + bytes(64))
    tampered = add_signatures(note, [bad])
    assert open_checkpoint(tampered, [led.verifier]).checkpoint.size == 42  # not given W1: ignored
    with pytest.raises(BadSignatureError):
        open_checkpoint(tampered, [led.verifier, W1.verifier()])


def test_verify_fails_a_bad_cosignature_and_notes_unknown_keys(led: Ledger) -> None:
    note = led.storage.read("checkpoints/30")
    sig = next(s for s in parse_note(note).signatures if s.name == "witness.test/r1")
    bad = NoteSignature(sig.name, sig.key_id, sig.signature[:8] + bytes(64))
    led.storage.write_atomic("checkpoints/30", add_signatures(note, [bad]))
    report = verify_ledger(led, witnesses=[W1.verifier()])
    assert [f.where for f in report.failures] == ["checkpoint 30"]
    assert any("witness.test/r2+" in n and "not checked" in n for n in report.notes)
    report = verify_ledger(led)
    assert report.ok and any("witness.test/r1+" in n for n in report.notes)
    report = verify_ledger(led, witnesses=[led.verifier])  # a log key where a witness key belongs
    assert not report.ok and "not a cosignature/v1" in report.failures[0].message


def test_storing_refuses_a_note_that_is_not_the_logs(led: Ledger) -> None:
    other = Ledger.init(MemoryStorage(), origin=ORIGIN)  # same origin, another key
    led.storage.write_atomic("checkpoints/0", other.storage.read("checkpoints/0"))
    planted = led.storage.read("checkpoints/0")
    text = parse_note(planted).text
    with pytest.raises(UnknownKeyError):
        store_cosignatures(led, 0, W1.verifier(), [W1.cosign(text, 5)])
    assert led.storage.read("checkpoints/0") == planted  # never rewritten
