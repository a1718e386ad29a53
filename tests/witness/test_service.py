"""The witness's decisions (every status code of c2sp.org/tlog-witness §add-checkpoint), its
cosignatures (c2sp.org/tlog-cosignature) and its SQLite state, without HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from wit_support import FakeLog

from kfm_ledger.core import merkle
from kfm_ledger.core.cosignature import CosignatureSigner, verify_cosignature
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.note import open_note, parse_note
from kfm_ledger.witness.check import LogState
from kfm_ledger.witness.protocol import format_add_checkpoint, parse_signature_lines
from kfm_ledger.witness.service import WitnessService, origin_hash
from kfm_ledger.witness.state import MAX_REFUSALS_PER_ORIGIN, WitnessState

NOW = 1_800_000_000


@pytest.fixture
def log() -> FakeLog:
    return FakeLog("log.test/a")


@pytest.fixture
def cosigner() -> CosignatureSigner:
    return CosignatureSigner.generate("witness.test/unit")


@pytest.fixture
def service(tmp_path: Path, log: FakeLog, cosigner: CosignatureSigner):
    state = WitnessState(tmp_path / "state")
    svc = WitnessService(cosigner, {log.origin: [log.signer.verifier()]}, state, clock=lambda: NOW)
    yield svc
    state.close()


def _ok(service: WitnessService, body: bytes) -> bytes:
    answer = service.add_checkpoint(body)
    assert answer.status == 200, answer.body
    return answer.body


def test_first_checkpoint_is_cosigned_and_stored(service: WitnessService, log: FakeLog,
                                                  cosigner: CosignatureSigner) -> None:
    body = _ok(service, log.request(0, 10))
    (sig,) = parse_signature_lines(body)
    text = parse_note(log.checkpoint(10)).text
    assert verify_cosignature(cosigner.verifier(), text, sig) == NOW
    state = service.state.load(log.origin)
    assert state is not None and (state.size, state.root) == (10, log.root(10))
    # The stored note: the log's signature and the witness's cosignature, both verifying.
    opened = open_note(state.note, [log.signer.verifier(), cosigner.verifier()])
    assert len(opened.verified) == 2 and not opened.unverified


def test_extending_with_a_proof(service: WitnessService, log: FakeLog) -> None:
    _ok(service, log.request(0, 10))
    _ok(service, log.request(10, 37))
    _ok(service, log.request(37, 37))  # the same checkpoint again: cosigned again
    _ok(service, log.request(37, 256))
    assert service.state.load(log.origin).size == 256  # type: ignore[union-attr]


def test_409_names_the_stored_size(service: WitnessService, log: FakeLog) -> None:
    _ok(service, log.request(0, 10))
    for old in (0, 5, 9):
        answer = service.add_checkpoint(log.request(old, 20))
        assert (answer.status, answer.content_type, answer.body) == (409, "text/x.tlog.size", b"10\n")
    assert service.state.load(log.origin).size == 10  # type: ignore[union-attr]


def test_409_for_a_never_seen_log_is_zero(service: WitnessService, log: FakeLog) -> None:
    answer = service.add_checkpoint(log.request(4, 10))
    assert (answer.status, answer.body) == (409, b"0\n")


def test_400_old_size_above_checkpoint(service: WitnessService, log: FakeLog) -> None:
    answer = service.add_checkpoint(format_add_checkpoint(11, [], log.checkpoint(10)))
    assert answer.status == 400 and b"above" in answer.body


def test_400_malformed(service: WitnessService) -> None:
    answer = service.add_checkpoint(b"old x\n\n")
    assert answer.status == 400 and b"line 1" in answer.body


def test_404_unknown_origin(service: WitnessService) -> None:
    other = FakeLog("log.test/unknown")
    answer = service.add_checkpoint(other.request(0, 3))
    assert answer.status == 404 and b"log.test/unknown" in answer.body


def test_403_no_trusted_signature(service: WitnessService, log: FakeLog) -> None:
    impostor = Signer.generate(log.origin)  # same name, another key: unknown, ignored
    answer = service.add_checkpoint(format_add_checkpoint(0, [], log.checkpoint(5, signer=impostor)))
    assert answer.status == 403
    assert service.state.load(log.origin) is None


def test_403_trusted_signature_that_fails(service: WitnessService, log: FakeLog) -> None:
    note = bytearray(log.checkpoint(5))
    sig_start = note.index("\u2014 ".encode()) + len("\u2014 log.test/a ".encode())
    note[sig_start + 10] ^= 1 if note[sig_start + 10] != ord("A") else 2
    note_b = bytes(note).replace(b"\n\n", b"\n\n", 1)
    answer = service.add_checkpoint(format_add_checkpoint(0, [], note_b))
    assert answer.status in (400, 403)  # 400 only if the flip broke canonical base64
    note2 = log.checkpoint(5).replace(b"\n5\n", b"\n6\n")  # the text changed under the signature
    answer = service.add_checkpoint(format_add_checkpoint(0, [], note2))
    assert answer.status == 403


def test_unknown_signatures_are_ignored(service: WitnessService, log: FakeLog) -> None:
    other = Signer.generate("someone.else/key")
    note = log.checkpoint(5)
    text = parse_note(note).text
    from kfm_ledger.core.note import NoteSignature, add_signatures

    extra = NoteSignature(other.name, other.key_id, other.sign(text.encode()))
    garbage = NoteSignature("witness.test/unit", b"\0\0\0\0", b"x" * 72)  # same name, other key ID
    _ok(service, format_add_checkpoint(0, [], add_signatures(note, [extra, garbage])))


def test_422_size_zero_with_a_root_that_is_not_empty(service: WitnessService, log: FakeLog) -> None:
    answer = service.add_checkpoint(format_add_checkpoint(0, [], log.checkpoint(0, root=b"\1" * 32)))
    assert answer.status == 422
    _ok(service, format_add_checkpoint(0, [], log.checkpoint(0)))
    assert log.root(0) == merkle.EMPTY_ROOT


def test_422_proof_given_with_old_size_zero(service: WitnessService, log: FakeLog) -> None:
    answer = service.add_checkpoint(format_add_checkpoint(0, [b"\1" * 32], log.checkpoint(5)))
    assert answer.status == 422


def test_422_bad_consistency_proof(service: WitnessService, log: FakeLog) -> None:
    _ok(service, log.request(0, 10))
    proof = log.proof(10, 20)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    answer = service.add_checkpoint(format_add_checkpoint(10, bad, log.checkpoint(20)))
    assert answer.status == 422 and b"does not verify" in answer.body
    answer = service.add_checkpoint(format_add_checkpoint(10, proof[:-1], log.checkpoint(20)))
    assert answer.status == 422
    # A fork: a validly signed checkpoint of another tree, with that tree's own proof.
    fork = FakeLog(log.origin)
    fork.signer = log.signer
    fork.tree.append(merkle.leaf_hash(b"other"))
    answer = service.add_checkpoint(format_add_checkpoint(10, fork.proof(10, 20), fork.checkpoint(20)))
    assert answer.status == 422
    assert service.state.load(log.origin).size == 10  # type: ignore[union-attr]
    refused = service.state.refusals(log.origin)
    assert [r[0] for r in refused] == [422, 422, 422] and refused[-1][2].startswith(b"old 10\n")


def test_422_same_size_other_root(service: WitnessService, log: FakeLog) -> None:
    _ok(service, log.request(0, 10))
    answer = service.add_checkpoint(format_add_checkpoint(10, [], log.checkpoint(10, root=b"\2" * 32)))
    assert answer.status == 422 and b"same size" in answer.body


def test_refusals_are_capped(tmp_path: Path) -> None:
    state = WitnessState(tmp_path)
    for i in range(MAX_REFUSALS_PER_ORIGIN + 5):
        state.record_refusal("o", 422, f"r{i}", b"x")
    kept = state.refusals("o")
    assert len(kept) == MAX_REFUSALS_PER_ORIGIN and kept[-1][1] == f"r{MAX_REFUSALS_PER_ORIGIN + 4}"
    state.close()


def test_state_compare_and_swap_and_reopen(tmp_path: Path) -> None:
    state = WitnessState(tmp_path / "s")
    a = LogState("o", 5, b"\1" * 32, b"note5")
    assert state.compare_and_swap(0, a)
    assert not state.compare_and_swap(0, LogState("o", 3, b"\2" * 32, b"note3"))
    assert not state.compare_and_swap(4, LogState("o", 9, b"\2" * 32, b"note9"))
    assert state.compare_and_swap(5, LogState("o", 9, b"\3" * 32, b"note9"))
    state.close()
    again = WitnessState(tmp_path / "s")
    assert again.load("o") == LogState("o", 9, b"\3" * 32, b"note9")
    assert [s.origin for s in again.origins()] == ["o"]
    assert (tmp_path / "s" / "witness.sqlite").exists()
    mode = again._connect().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_lost_race_with_another_process_answers_409(service: WitnessService, log: FakeLog) -> None:
    """Between the check and the store another process moves the log: no cosignature, no rollback."""
    _ok(service, log.request(0, 10))
    real_load = service.state.load

    def load_then_other_process_writes(origin: str):  # type: ignore[no-untyped-def]
        seen = real_load(origin)
        other = WitnessState(service.state.directory)
        other.compare_and_swap(10, LogState(origin, 50, log.root(50), b"by another process"))
        other.close()
        return seen

    service.state.load = load_then_other_process_writes  # type: ignore[method-assign]
    answer = service.add_checkpoint(log.request(10, 20))
    service.state.load = real_load  # type: ignore[method-assign]
    assert (answer.status, answer.body) == (409, b"50\n")
    assert service.state.load(log.origin).size == 50  # type: ignore[union-attr]


def test_concurrent_requests_never_regress(service: WitnessService, log: FakeLog) -> None:
    """Many threads, each pushing its own size with the 409 retry loop of a client: every size
    that got a 200 was stored at the moment it was cosigned; the final state is the largest."""
    sizes = list(range(1, 121))
    log.grow(121)
    accepted: list[int] = []
    lock = threading.Lock()
    observed: list[int] = []

    def push(size: int) -> None:
        old = 0
        for _ in range(200):
            if old > size:
                return
            answer = service.add_checkpoint(format_add_checkpoint(old, log.proof(old, size), log.checkpoint(size)))
            if answer.status == 409:
                old = int(answer.body)
                continue
            assert answer.status == 200, answer.body
            with lock:
                accepted.append(size)
                observed.append(service.state.load(log.origin).size)  # type: ignore[union-attr]
            return

    threads = [threading.Thread(target=push, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = service.state.load(log.origin)
    assert final is not None and final.size == max(accepted) == 120
    # The stored size only ever grew while requests raced.
    assert observed == sorted(observed)


def test_monitoring_checkpoint(service: WitnessService, log: FakeLog, cosigner: CosignatureSigner) -> None:
    assert service.monitoring_checkpoint(origin_hash(log.origin)).status == 404
    _ok(service, log.request(0, 7))
    answer = service.monitoring_checkpoint(origin_hash(log.origin))
    assert answer.status == 200
    opened = open_note(answer.body, [log.signer.verifier(), cosigner.verifier()])
    assert len(opened.verified) == 2
    assert service.monitoring_checkpoint("0" * 64).status == 404


def test_service_refuses_a_log_without_a_log_key(tmp_path: Path, cosigner: CosignatureSigner) -> None:
    state = WitnessState(tmp_path)
    with pytest.raises(ValueError):
        WitnessService(cosigner, {"log.test/x": [Signer.generate("other").verifier()]}, state)
    state.close()


def test_timestamps_never_go_backwards(tmp_path: Path, log: FakeLog, cosigner: CosignatureSigner) -> None:
    clock = [NOW]
    state = WitnessState(tmp_path / "clock")
    svc = WitnessService(cosigner, {log.origin: [log.signer.verifier()]}, state, clock=lambda: clock[0])
    text = parse_note(log.checkpoint(5)).text
    (sig,) = parse_signature_lines(_ok(svc, log.request(0, 5)))
    assert verify_cosignature(cosigner.verifier(), text, sig) == NOW
    clock[0] = NOW - 3600  # the clock stepped back an hour
    (sig,) = parse_signature_lines(_ok(svc, log.request(5, 9)))
    assert verify_cosignature(cosigner.verifier(), parse_note(log.checkpoint(9)).text, sig) == NOW
    clock[0] = 0.4  # a broken clock: the timestamp is still never zero, nor older
    (sig,) = parse_signature_lines(_ok(svc, log.request(9, 9)))
    assert verify_cosignature(cosigner.verifier(), parse_note(log.checkpoint(9)).text, sig) == NOW
    state.close()


def test_state_that_cannot_be_opened(tmp_path: Path) -> None:
    from kfm_ledger.errors import StorageError

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "witness.sqlite").write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StorageError, match="cannot open the witness state"):
        WitnessState(tmp_path / "s")


def test_a_log_with_two_keys(tmp_path: Path, log: FakeLog, cosigner: CosignatureSigner) -> None:
    """tlog-witness: "The submitted checkpoint MAY include multiple signatures"; a log may have
    several trusted keys: any one verifying is enough, but every trusted one present must verify."""
    from kfm_ledger.core.note import NoteSignature, add_signatures

    second = Signer.generate(log.origin)
    state = WitnessState(tmp_path / "two")
    svc = WitnessService(cosigner, {log.origin: [log.signer.verifier(), second.verifier()]}, state,
                         clock=lambda: NOW)
    text = parse_note(log.checkpoint(4)).text
    both = add_signatures(log.checkpoint(4), [NoteSignature(second.name, second.key_id, second.sign(text.encode()))])
    _ok(svc, format_add_checkpoint(0, [], both))
    stored = svc.state.load(log.origin)
    assert stored is not None
    assert [s.key_id for s in parse_note(stored.note).signatures] == [log.signer.key_id, second.key_id,
                                                                      cosigner.key_id]
    _ok(svc, format_add_checkpoint(4, log.proof(4, 8), log.checkpoint(8, signer=second)))  # the second key alone
    text9 = parse_note(log.checkpoint(9)).text
    broken = add_signatures(log.checkpoint(9), [NoteSignature(second.name, second.key_id, bytes(64))])
    assert svc.add_checkpoint(format_add_checkpoint(8, log.proof(8, 9), broken)).status == 403
    assert text9.startswith(log.origin)
    state.close()
