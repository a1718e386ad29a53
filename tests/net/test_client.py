"""The trustless client against honest and lying servers on 127.0.0.1.

Honest: ``kfm serve``'s app over a real ledger.  Lying: :class:`netutil.StaticLog` logs built by
hand (a tampered tile, a wrong entry, a checkpoint by another key, a fork with the right key, a
rolled-back checkpoint, a lookup naming another row, missing witness cosignatures); each must be
detected, and forks must leave an evidence file that proves them.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
from netutil import ORIGIN, ServerThread, StaticLog, sample_lines

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.note import add_signatures
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.core.tlogproof import verify_tlog_proof
from kfm_ledger.errors import (
    BadSignatureError,
    ForkError,
    FormatError,
    NetworkError,
    QuorumError,
    RemoteDataError,
    RollbackError,
    UnknownKeyError,
)
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.net.client import ClientOptions, check, prove
from kfm_ledger.net.server import LogApp
from kfm_ledger.net.state import OriginState
from kfm_ledger.sample import sample_commit, sample_jsonl

from conftest import trickling_server


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate(ORIGIN)


def options(url: str, signer: Signer, state: Path, **more) -> ClientOptions:
    return ClientOptions(url=url, vkey=signer.verifier(), state_dir=state, timeout=5, **more)


# ------------------------------------------------------------------ honest server


def test_prove_and_check_against_kfm_serve(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    key = load_signer((d / "log.key").read_bytes())
    led.append(sample_jsonl(300), signer=key)
    app = LogApp(d)
    state = tmp_path / "state"
    with ServerThread(app) as server:
        opts = ClientOptions(url=server.url, vkey=led.verifier, state_dir=state, timeout=5)
        first = check(opts)
        assert first.reconciled.previous is None and first.checkpoint.checkpoint.size == 300
        result = prove(opts, sample_commit(257)[:16])
        assert (result.index, result.lakefs_commit) == (257, sample_commit(257))
        assert result.line == led.entry(257).line
        cp, index = verify_tlog_proof(result.tlog_proof, result.line, [led.verifier], origin=ORIGIN)
        assert (cp.size, index) == (300, 257)
        assert result.check.reconciled.previous_size == 300
        # The log grows: the next fetch proves consistency 300 -> 340 from the tiles.
        led.append(sample_jsonl(40, start=300), signer=key)
        grown = check(opts)
        assert grown.reconciled.previous_size == 300 and grown.checkpoint.checkpoint.size == 340
        merkle.verify_consistency(300, 340, first.checkpoint.checkpoint.root, led.root, grown.reconciled.proof)
        assert prove(opts, sample_commit(339)).index == 339
        doc = grown.to_json()
        assert doc["tree_size"] == 340 and doc["previous_size"] == 300 and doc["ok"] is True
    app.close()
    led.close()
    stored = (state / "net.kfm.test%2Flog" / "checkpoint").read_bytes()
    assert open_checkpoint(stored, [led.verifier]).checkpoint.size == 340


def test_prove_falls_back_to_full_tiles_and_bundles(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(300), signer)
    # A log MAY delete partial tiles once full tiles exist: serve the size-300 tree from a bigger log's full tiles.
    bigger = StaticLog(sample_lines(512), signer)
    for path in [p for p in log.files if ".p/" in p and p.startswith(("tile/0/", "tile/entries/"))]:
        del log.files[path]
    log.files["tile/0/001"] = bigger.files["tile/0/001"]
    log.files["tile/entries/001"] = bigger.files["tile/entries/001"]
    app = log.app()
    with ServerThread(app) as server:
        result = prove(options(server.url, signer, tmp_path), sample_commit(299))
    assert result.index == 299
    assert "/tile/0/001.p/44" in app.requests and "/tile/0/001" in app.requests
    assert "/tile/entries/001.p/44" in app.requests and "/tile/entries/001" in app.requests


# ------------------------------------------------------------------ lying servers


def test_tampered_tile_is_detected(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(300), signer)
    tile = bytearray(log.files["tile/0/000"])
    tile[5 * 32] ^= 1  # the leaf hash of entry 5
    log.files["tile/0/000"] = bytes(tile)
    with ServerThread(log.app()) as server:
        check(options(server.url, signer, tmp_path))  # the checkpoint itself is fine
        with pytest.raises(RemoteDataError) as err:
            prove(options(server.url, signer, tmp_path), sample_commit(4))  # 5 is 4's sibling
    assert err.value.what == "tile" and "tampered tile" in str(err.value)


def test_wrong_entry_is_detected(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(300)
    log = StaticLog(lines, signer)
    forged = lines[:256]
    forged[9] = lines[9].replace(b'"prod"', b'"prox"').replace(b'"dev"', b'"dex"').replace(b'"staging"', b'"stagin"')
    assert forged[9] != lines[9]
    log.files["tile/entries/000"] = StaticLog(forged, signer).files["tile/entries/000"]
    with ServerThread(log.app()) as server, pytest.raises(RemoteDataError) as err:
        prove(options(server.url, signer, tmp_path), sample_commit(9))
    assert err.value.what == "entry" and "wrong entry" in str(err.value)
    assert err.value.url.endswith("/tile/entries/000")


def test_lookup_naming_another_row_is_detected(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(50), signer)
    log.lookup = {sample_commit(3): 4}
    with ServerThread(log.app()) as server, pytest.raises(RemoteDataError) as err:
        prove(options(server.url, signer, tmp_path), sample_commit(3))
    assert err.value.what == "lookup" and sample_commit(4) in str(err.value)


def test_checkpoint_by_another_key_is_refused(tmp_path: Path, signer: Signer) -> None:
    impostor = Signer.generate(ORIGIN)  # same name, another key
    log = StaticLog(sample_lines(20), impostor)
    with ServerThread(log.app()) as server, pytest.raises(UnknownKeyError):
        check(options(server.url, signer, tmp_path))
    assert not (tmp_path / "net.kfm.test%2Flog" / "checkpoint").exists()


def test_checkpoint_with_a_bad_signature_is_refused(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(20), signer)
    note = log.files["checkpoint"]
    log.files["checkpoint"] = note.replace(b"\n20\n", b"\n21\n", 1)
    with ServerThread(log.app()) as server, pytest.raises(BadSignatureError):
        check(options(server.url, signer, tmp_path))


def _fork_logs(signer: Signer) -> tuple[StaticLog, StaticLog]:
    honest = StaticLog(sample_lines(300), signer)
    other = sample_lines(300)
    other[100] = sample_lines(1, start=100, seed=7)[0]  # another row 100, signed with the right key
    return honest, StaticLog(other + sample_lines(20, start=300), signer)


def _check_evidence(path: Path, signer: Signer, small: int, big: int) -> dict:
    doc = json.loads(path.read_text())
    assert doc["format"] == "kfm-fork-evidence/v1" and doc["origin"] == ORIGIN
    notes = {c["size"]: open_checkpoint(c["note"].encode(), [signer.verifier()]) for c in doc["checkpoints"]}
    assert set(notes) == {small, big} or small == big
    if doc["proof"] is not None:
        proof = doc["proof"]
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        prefix_root = base64.b64decode(proof["old_root_from_proof"])
        # Anyone can check: the proof ties prefix_root to the signed big root ...
        merkle.verify_consistency(small, big, prefix_root, notes[big].checkpoint.root, hashes)
        # ... and it is not the root the log signed for the small size.
        assert prefix_root != notes[small].checkpoint.root
        with pytest.raises(merkle.RootMismatchError):
            merkle.verify_consistency(small, big, notes[small].checkpoint.root, notes[big].checkpoint.root, hashes)
    return doc


def test_fork_with_the_right_key_is_detected_with_evidence(tmp_path: Path, signer: Signer) -> None:
    honest, forked = _fork_logs(signer)
    with ServerThread(honest.app()) as server:
        check(options(server.url, signer, tmp_path))
    with ServerThread(forked.app()) as server:
        with pytest.raises(ForkError) as err:
            prove(options(server.url, signer, tmp_path), sample_commit(310))
    path = Path(err.value.evidence_path)
    assert path.parent == tmp_path / "net.kfm.test%2Flog" / "evidence" and err.value.old_size == 300
    doc = _check_evidence(path, signer, 300, 320)
    assert doc["reason"] == "inconsistent"
    # The state still holds the honest checkpoint.
    stored = OriginState(tmp_path, ORIGIN).load(lambda n: open_checkpoint(n, [signer.verifier()]))
    assert stored is not None and stored.checkpoint.root == honest.root


def test_same_size_different_root_is_a_fork(tmp_path: Path, signer: Signer) -> None:
    honest = StaticLog(sample_lines(30), signer)
    other = sample_lines(30)
    other[0] = sample_lines(1, seed=3)[0]
    forked = StaticLog(other, signer)
    with ServerThread(honest.app()) as server:
        check(options(server.url, signer, tmp_path))
    with ServerThread(forked.app()) as server, pytest.raises(ForkError) as err:
        check(options(server.url, signer, tmp_path))
    doc = _check_evidence(Path(err.value.evidence_path), signer, 30, 30)
    assert doc["reason"] == "same-size-different-root" and doc["proof"] is None
    assert [c["source"] for c in doc["checkpoints"]] == ["stored", "served"]


def test_rolled_back_checkpoint_is_refused(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(320)
    new, old = StaticLog(lines, signer), StaticLog(lines[:300], signer)
    with ServerThread(new.app()) as server:
        check(options(server.url, signer, tmp_path))
    with ServerThread(old.app()) as server, pytest.raises(RollbackError) as err:
        check(options(server.url, signer, tmp_path))
    assert (err.value.stored_size, err.value.served_size) == (320, 300)
    # Serving the old checkpoint with the new tiles: still a rollback (consistent), not a fork.
    new.files["checkpoint"] = old.files["checkpoint"]
    with ServerThread(new.app()) as server, pytest.raises(RollbackError):
        check(options(server.url, signer, tmp_path))
    assert not (tmp_path / "net.kfm.test%2Flog" / "evidence").exists()


def test_rollback_to_a_forked_smaller_tree_is_a_fork(tmp_path: Path, signer: Signer) -> None:
    honest, forked = _fork_logs(signer)  # honest: 300 rows; forked: 320 with row 100 changed
    with ServerThread(forked.app()) as server:
        check(options(server.url, signer, tmp_path))  # the client saw size 320 first
    honest.files.update({k: v for k, v in forked.files.items() if k.startswith("tile/") and k not in honest.files})
    for k in list(honest.files):
        if k.startswith("tile/") and k in forked.files:
            honest.files[k] = forked.files[k]
    with ServerThread(honest.app()) as server, pytest.raises(ForkError) as err:
        check(options(server.url, signer, tmp_path))
    _check_evidence(Path(err.value.evidence_path), signer, 300, 320)


def test_tampered_tile_is_not_mistaken_for_a_fork(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(320)
    old, new = StaticLog(lines[:300], signer), StaticLog(lines, signer)
    with ServerThread(old.app()) as server:
        check(options(server.url, signer, tmp_path))
    tile = bytearray(new.files["tile/0/001.p/64"])
    tile[0] ^= 0xFF  # the leaf hash of entry 256, inside the old tree: the proof needs it
    new.files["tile/0/001.p/64"] = bytes(tile)
    with ServerThread(new.app()) as server, pytest.raises(RemoteDataError) as err:
        check(options(server.url, signer, tmp_path))
    assert err.value.what == "tile"
    assert not (tmp_path / "net.kfm.test%2Flog" / "evidence").exists()


def test_malformed_answers_are_clear_errors(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(300), signer)
    log.files["tile/entries/000"] = b"\x00\x05abc"
    log.files["tile/0/000"] = log.files["tile/0/000"][:100]
    with ServerThread(log.app()) as server:
        with pytest.raises(FormatError):
            prove(options(server.url, signer, tmp_path), sample_commit(1))
        log.files["tile/entries/000"] = StaticLog(sample_lines(300), signer).files["tile/entries/000"]
        with pytest.raises(RemoteDataError, match="malformed"):
            prove(options(server.url, signer, tmp_path), sample_commit(1))
        log.files["checkpoint"] = b"not a checkpoint"
        with pytest.raises(FormatError):
            check(options(server.url, signer, tmp_path / "other"))
        log.files["lookup/x"] = b"[]"
        with pytest.raises(RemoteDataError, match="lookup"):
            log.files["checkpoint"] = log.note
            prove(options(server.url, signer, tmp_path), "x")


def test_unreachable_and_error_statuses(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(5), signer)
    with ServerThread(log.app()) as server:
        url = server.url
        with pytest.raises(NetworkError) as err:
            prove(options(url, signer, tmp_path), "nosuch")
        assert err.value.status == 404 and "server says: not here" in str(err.value)
    with pytest.raises(NetworkError) as err:
        check(options(url, signer, tmp_path))
    assert err.value.status is None


def test_oversized_answers_are_refused(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(5), signer)
    log.files["checkpoint"] = log.note + b"x" * (70 * 1024)
    with ServerThread(log.app()) as server, pytest.raises(NetworkError, match="more than the 65536"):
        check(options(server.url, signer, tmp_path))


# ------------------------------------------------------------------ witnesses


def test_witness_quorum(tmp_path: Path, signer: Signer) -> None:
    w1, w2, w3 = (CosignatureSigner.generate(f"witness.test/w{i}") for i in (1, 2, 3))
    log = StaticLog(sample_lines(10), signer)
    body = open_checkpoint(log.note, [signer.verifier()]).checkpoint.body()
    now = int(time.time())
    log.files["checkpoint"] = add_signatures(log.note, [w1.cosign(body, now), w2.cosign(body, now)])
    keys = (w1.verifier(), w2.verifier(), w3.verifier())
    with ServerThread(log.app()) as server:
        ok = check(options(server.url, signer, tmp_path, witnesses=keys, quorum=2))
        assert ok.witnesses == ["witness.test/w1", "witness.test/w2"]
        with pytest.raises(QuorumError) as err:
            check(options(server.url, signer, tmp_path, witnesses=keys))  # default: all three
        assert err.value.required == 3 and err.value.found == ["witness.test/w1", "witness.test/w2"]
        # A forged cosignature (a bit flipped) is refused outright.
        bad = bytearray(log.files["checkpoint"])
        bad[-3] = ord("A") if bad[-3] != ord("A") else ord("B")
        log.files["checkpoint"] = bytes(bad)
        with pytest.raises(BadSignatureError):
            check(options(server.url, signer, tmp_path, witnesses=keys, quorum=1))
    with pytest.raises(FormatError, match="quorum"):
        options("http://127.0.0.1:1", signer, tmp_path, witnesses=keys[:1], quorum=2).policy()
    with pytest.raises(FormatError, match="0x04"):
        options("http://127.0.0.1:1", signer, tmp_path, witnesses=(signer.verifier(),)).policy()


def test_state_file_that_does_not_verify_is_named(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(5), signer)
    state = OriginState(tmp_path, ORIGIN)
    state.dir.mkdir(parents=True)
    state.checkpoint_path.write_bytes(StaticLog(sample_lines(5), Signer.generate(ORIGIN)).note)
    with ServerThread(log.app()) as server, pytest.raises(FormatError) as err:
        check(options(server.url, signer, tmp_path))
    assert str(state.checkpoint_path) in str(err.value)


def test_bad_urls_are_refused(tmp_path: Path, signer: Signer) -> None:
    for url in ("ftp://x/", "http://", "http://h:99999", "http://h/?q=1", "http://u:p@h/"):
        with pytest.raises(FormatError):
            check(options(url, signer, tmp_path))


def test_prefix_urls(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(5), signer)
    log.files = {f"log/{k}": v for k, v in log.files.items()}
    log.lookup = {}
    with ServerThread(log.app()) as server:
        assert check(options(server.url + "/log/", signer, tmp_path)).checkpoint.checkpoint.size == 5


def test_state_is_per_origin(tmp_path: Path, signer: Signer) -> None:
    other = Signer.generate("other.test/log")
    a, b = StaticLog(sample_lines(5), signer), StaticLog(sample_lines(7), other, origin="other.test/log")
    with ServerThread(a.app()) as sa, ServerThread(b.app()) as sb:
        check(options(sa.url, signer, tmp_path))
        check(options(sb.url, other, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.kfm.test%2Flog", "other.test%2Flog"]
    assert shutil.which("true") is not None and tiles.TILE_WIDTH == 256


def test_entry_that_is_not_a_row_is_refused(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog([b"[1]", b'{"lakefs_commit": 5}'], signer)
    log.lookup = {"abc": 0, "abd": 1}
    with ServerThread(log.app()) as server:
        for commit in ("abc", "abd"):
            with pytest.raises(RemoteDataError, match="not a ledger row"):
                prove(options(server.url, signer, tmp_path), commit)


def test_a_trickling_server_cannot_hold_the_client(tmp_path: Path, signer: Signer) -> None:
    started = time.monotonic()
    with trickling_server() as url:
        # A read timeout (1 s) far above the trickle's 50 ms pauses, so that only the total bound
        # (3 x the timeout) can end the read, even when a loaded machine stalls the trickling thread.
        with pytest.raises(NetworkError, match="not complete after"):
            check(ClientOptions(url=url, vkey=signer.verifier(), state_dir=tmp_path, timeout=1.0))
    assert time.monotonic() - started < 10  # bounded by 3 x the timeout, not 1000 x 0.05 s


def test_prove_by_index_needs_no_lookup_api(tmp_path: Path, signer: Signer) -> None:
    log = StaticLog(sample_lines(300), signer)
    log.lookup = {}
    app = log.app()
    with ServerThread(app) as server:
        result = prove(options(server.url, signer, tmp_path), index=299)
        assert (result.index, result.lakefs_commit) == (299, sample_commit(299))
        assert not [p for p in app.requests if p.startswith("/lookup/")]
        from kfm_ledger.errors import IndexOutOfRangeError

        with pytest.raises(IndexOutOfRangeError):
            prove(options(server.url, signer, tmp_path), index=300)
    with pytest.raises(ValueError):
        prove(options("http://127.0.0.1:1", signer, tmp_path))
