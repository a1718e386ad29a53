"""The log side over real sockets: ``kfm witness-push`` and ``kfm append --witness`` against a
``kfm witness serve`` process; the cosignatures stored with the checkpoints; every reader of a
checkpoint still accepting it; ``kfm verify`` checking them; 409 retries, a witness ahead of the
ledger, a fork refused."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from wit_support import WitnessProcess, write_witness_key

from kfm_ledger.cli import app
from kfm_ledger.config import WitnessEndpoint
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.note import NoteSignature, open_note, parse_note
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof
from kfm_ledger.errors import BadSignatureError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.witness import client as witness_client
from kfm_ledger.witness import push as push_module
from kfm_ledger.witness.push import last_cosigned_size, push_checkpoint, store_cosignatures

from conftest import ORIGIN, fill, trickling_server

runner = CliRunner()


def kfm(*args: object, input: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("push-template") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    fill(led, 100, 57, 143)  # checkpoints 0, 100, 157, 300
    led.close()
    return d


class Setup:
    def __init__(self, tmp: Path, template: Path) -> None:
        self.tmp = tmp
        self.ledger = tmp / "ledger"
        shutil.copytree(template, self.ledger)
        self.key, self.cosigner = write_witness_key(tmp)
        self.vkey = tmp / "witness.vkey"
        self.witness = WitnessProcess(tmp / "state", self.key, [(ORIGIN, self.ledger / "log.vkey")])
        self.config(self.witness.url)

    def config(self, url: str, vkey: Path | None = None, ledger: Path | None = None) -> None:
        (ledger or self.ledger).joinpath("kfm.toml").write_text(
            f'[[witness]]\nurl = "{url}"\nvkey = "{vkey or self.vkey}"\n'
        )

    def copy(self, name: str) -> Path:
        other = self.tmp / name
        shutil.copytree(self.ledger, other)
        return other


@pytest.fixture
def s(tmp_path: Path, template: Path) -> Iterator[Setup]:
    setup = Setup(tmp_path, template)
    yield setup
    setup.witness.stop()


def _cosigs(note: bytes, cosigner: CosignatureSigner) -> list[NoteSignature]:
    v = cosigner.verifier()
    return [x for x in parse_note(note).signatures if (x.name, x.key_id) == (v.name, v.key_id)]


def test_push_stores_cosignatures_every_reader_accepts(s: Setup) -> None:
    before = (s.ledger / "checkpoint").read_bytes()
    res = kfm("witness-push", "--ledger", s.ledger)
    assert res.exit_code == 0, res.output
    assert "cosigned tree size 300 (proof from size 0)" in res.output
    after = (s.ledger / "checkpoint").read_bytes()
    kept = (s.ledger / "checkpoints" / "300").read_bytes()
    # Same text and log signature, byte for byte; one more signature line: the cosignature.
    assert after.startswith(before) and kept == after
    (cosig,) = _cosigs(after, s.cosigner)
    assert after[len(before):] == cosig.line().encode()
    opened = open_note(after, [Verifier.from_vkey((s.ledger / "log.vkey").read_text()), s.cosigner.verifier()])
    assert len(opened.verified) == 2
    # The readers: open, stored checkpoints, proofs (the tlog-proof carries the cosignature), rebuild.
    led = Ledger.open(s.ledger)
    assert led.size == 300 and led.checkpoint.note == after
    assert led.stored_checkpoint(300).note == after
    proof = led.tlog_proof(42)
    assert cosig.line().encode() in proof.checkpoint
    line = led.entry(42).line
    checkpoint, index = verify_tlog_proof(format_tlog_proof(proof), line, [led.verifier])
    assert (checkpoint.size, index) == (300, 42)
    assert led.consistency_proof(100, 300)
    led.rebuild()
    led.close()
    res = kfm("verify", "--ledger", s.ledger)
    assert res.exit_code == 0, res.output
    assert "witness cosignatures verified: witness.test/w1" in res.output
    for args in (("prove", "--index", 7), ("checkpoint",), ("recover",), ("rebuild",)):
        res = kfm(*args, "--ledger", s.ledger)
        assert res.exit_code == 0, (args, res.output)
    # The saved cosigned checkpoint works as --since after more appends.
    (s.tmp / "since").write_bytes(after)
    assert kfm("append", s.tmp / "rows.jsonl", "--ledger", s.ledger).exit_code != 0  # no such file
    (s.tmp / "rows.jsonl").write_bytes(sample_jsonl(20, start=300))
    assert kfm("append", s.tmp / "rows.jsonl", "--ledger", s.ledger).exit_code == 0
    res = kfm("verify", "--ledger", s.ledger, "--since", s.tmp / "since")
    assert res.exit_code == 0, res.output


def test_append_witness_pushes_with_a_proof_from_the_last_cosigned_size(s: Setup) -> None:
    assert kfm("witness-push", "--ledger", s.ledger).exit_code == 0
    (s.tmp / "rows.jsonl").write_bytes(sample_jsonl(25, start=300))
    res = kfm("append", s.tmp / "rows.jsonl", "--ledger", s.ledger, "--witness", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] and doc["witnesses"][0]["ok"] and doc["witnesses"][0]["old_size"] == 300
    assert doc["checkpoint"]["tree_size"] == 325 and "witness.test/w1" in doc["checkpoint"]["note"]
    assert len(_cosigs((s.ledger / "checkpoints" / "325").read_bytes(), s.cosigner)) == 1
    assert len(_cosigs((s.ledger / "checkpoint").read_bytes(), s.cosigner)) == 1
    led = Ledger.open(s.ledger)
    assert last_cosigned_size(led, s.cosigner.verifier()) == 325
    led.close()


def test_409_answer_is_followed(s: Setup) -> None:
    clone = s.copy("clone")  # the same log, before any cosignature
    assert kfm("witness-push", "--ledger", s.ledger).exit_code == 0
    s.config(s.witness.url, ledger=clone)
    res = kfm("witness-push", "--ledger", clone, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)  # the --json envelope (docs/cli.md)
    assert doc["ok"] is True and doc["tree_size"] == 300
    assert doc["witnesses"][0]["old_size"] == 300 and doc["witnesses"][0]["ok"] is True


def test_witness_ahead_of_the_ledger_is_reported(s: Setup) -> None:
    behind = s.copy("behind")
    (s.tmp / "rows.jsonl").write_bytes(sample_jsonl(50, start=300))
    assert kfm("append", s.tmp / "rows.jsonl", "--ledger", s.ledger, "--witness").exit_code == 0
    res = kfm("witness-push", "--ledger", behind)
    assert res.exit_code == 1
    assert "cosigned size 350 of this log, more than the ledger's 300" in res.output


def test_a_fork_is_refused(s: Setup) -> None:
    fork = s.copy("fork")
    (s.tmp / "a.jsonl").write_bytes(sample_jsonl(50, start=300))
    (s.tmp / "b.jsonl").write_bytes(sample_jsonl(50, start=1000))
    assert kfm("append", s.tmp / "a.jsonl", "--ledger", s.ledger, "--witness").exit_code == 0
    assert kfm("append", s.tmp / "b.jsonl", "--ledger", fork).exit_code == 0
    res = kfm("witness-push", "--ledger", fork, "--json")
    assert res.exit_code == 1
    assert json.loads(res.output)["ok"] is False
    (result,) = json.loads(res.output)["witnesses"]
    assert result["status"] == 422 and "same size 350" in result["error"]
    assert not _cosigs((fork / "checkpoint").read_bytes(), s.cosigner)


def test_verify_checks_cosignatures_against_configured_keys(s: Setup) -> None:
    assert kfm("witness-push", "--ledger", s.ledger).exit_code == 0
    kept = s.ledger / "checkpoints" / "300"
    note = kept.read_bytes()
    (cosig,) = _cosigs(note, s.cosigner)
    broken = NoteSignature(cosig.name, cosig.key_id, cosig.signature[:-1] + bytes([cosig.signature[-1] ^ 1]))
    kept.unlink()  # a hard link shared with `checkpoint` must not be written through
    kept.write_bytes(note.replace(cosig.line().encode(), broken.line().encode()))
    res = kfm("verify", "--ledger", s.ledger, "--json")
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert [f["where"] for f in doc["failures"]] == ["checkpoint 300"]
    assert "witness.test/w1" in doc["failures"][0]["message"]
    # Without the witness configured, the same line is an unknown key: noted, not failed.
    (s.ledger / "kfm.toml").write_text("")
    res = kfm("verify", "--ledger", s.ledger)
    assert res.exit_code == 0, res.output
    assert "not configured witnesses were not checked: witness.test/w1+" in res.output


def test_append_witness_without_configuration_appends_nothing(s: Setup) -> None:
    (s.ledger / "kfm.toml").write_text("")
    (s.tmp / "rows.jsonl").write_bytes(sample_jsonl(5, start=300))
    res = kfm("append", s.tmp / "rows.jsonl", "--ledger", s.ledger, "--witness")
    assert res.exit_code == 2 and "no [[witness]] entries" in res.output
    assert Ledger.open(s.ledger).size == 300
    assert kfm("witness-push", "--ledger", s.ledger).exit_code == 2


def test_unreachable_witness(s: Setup) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    s.config(f"http://127.0.0.1:{port}")
    (s.tmp / "rows.jsonl").write_bytes(sample_jsonl(5, start=300))
    res = kfm("append", s.tmp / "rows.jsonl", "--ledger", s.ledger, "--witness")
    assert res.exit_code == 1
    assert "cannot reach witness" in res.output and "rows ARE appended" in res.output
    assert Ledger.open(s.ledger).size == 305


def test_wrong_witness_key_configured(s: Setup) -> None:
    other = CosignatureSigner.generate("witness.test/w1")
    (s.tmp / "other.vkey").write_text(other.verifier().vkey_text())
    s.config(s.witness.url, vkey=s.tmp / "other.vkey")
    res = kfm("witness-push", "--ledger", s.ledger)
    assert res.exit_code == 1 and "no cosignature is from its key" in res.output
    assert not _cosigs((s.ledger / "checkpoint").read_bytes(), s.cosigner)
    # A log key where a witness key belongs.
    s.config(s.witness.url, vkey=s.ledger / "log.vkey")
    res = kfm("witness-push", "--ledger", s.ledger)
    assert res.exit_code == 1 and "not a cosignature/v1 key" in res.output


def test_store_cosignatures_refuses_a_bad_one(s: Setup, template: Path) -> None:
    led = Ledger.open(s.ledger)
    text = parse_note(led.checkpoint.note).text
    good = s.cosigner.cosign(text, 1_800_000_000)
    bad = NoteSignature(good.name, good.key_id, good.signature[:8] + bytes(64))
    before = (s.ledger / "checkpoint").read_bytes()
    with pytest.raises(BadSignatureError):
        store_cosignatures(led, 300, s.cosigner.verifier(), [bad])
    assert (s.ledger / "checkpoint").read_bytes() == before
    assert store_cosignatures(led, 300, s.cosigner.verifier(), [good])
    assert not store_cosignatures(led, 300, s.cosigner.verifier(), [good])  # nothing new
    # A newer cosignature from the same key: the note keeps the first (only ever more lines).
    newer = s.cosigner.cosign(text, 1_800_000_100)
    assert not store_cosignatures(led, 300, s.cosigner.verifier(), [newer])
    assert _cosigs((s.ledger / "checkpoint").read_bytes(), s.cosigner) == [good]
    # A line from the witness's key that does not verify is replaced by a good one.
    note = (s.ledger / "checkpoint").read_bytes()
    (s.ledger / "checkpoint").write_bytes(note.replace(good.line().encode(), bad.line().encode()))
    assert store_cosignatures(led, 300, s.cosigner.verifier(), [newer])
    assert _cosigs((s.ledger / "checkpoint").read_bytes(), s.cosigner) == [newer]
    assert _cosigs((s.ledger / "checkpoints" / "300").read_bytes(), s.cosigner) == [good]
    # An older size: only checkpoints/<size> changes.
    old_text = parse_note((s.ledger / "checkpoints" / "157").read_bytes()).text
    assert store_cosignatures(led, 157, s.cosigner.verifier(), [s.cosigner.cosign(old_text, 1_800_000_000)])
    assert _cosigs((s.ledger / "checkpoints" / "157").read_bytes(), s.cosigner)
    assert _cosigs((s.ledger / "checkpoint").read_bytes(), s.cosigner) == [newer]
    led.close()


def test_last_cosigned_size_reads_only_the_latest_checkpoints(tmp_path: Path) -> None:
    from kfm_ledger.witness.push import MAX_SCANNED_CHECKPOINTS

    led = Ledger.init(tmp_path / "many", origin=ORIGIN)
    fill(led, *([1] * (MAX_SCANNED_CHECKPOINTS + 6)))  # checkpoints 0 .. 70
    cosigner = CosignatureSigner.generate("witness.test/scan")
    v = cosigner.verifier()

    def cosign(size: int) -> None:
        text = parse_note((tmp_path / "many" / "checkpoints" / str(size)).read_bytes()).text
        store_cosignatures(led, size, v, [cosigner.cosign(text, 1_800_000_000)])

    assert last_cosigned_size(led, v) == 0
    cosign(3)  # older than the window: not looked at (a 409 would name it)
    assert last_cosigned_size(led, v) == 0
    cosign(60)
    assert last_cosigned_size(led, v) == 60
    cosign(led.size)
    assert last_cosigned_size(led, v) == led.size
    led.close()


def test_two_witnesses_one_down(s: Setup) -> None:
    """Each witness is tried; the one that answers has its cosignature stored, the one that is down
    is reported, and the exit code says not every witness cosigned."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    down = sock.getsockname()[1]
    sock.close()
    other_key = CosignatureSigner.generate("witness.test/down")
    (s.tmp / "down.vkey").write_text(other_key.verifier().vkey_text())
    (s.ledger / "kfm.toml").write_text(
        f'[[witness]]\nurl = "http://127.0.0.1:{down}"\nvkey = "{s.tmp / "down.vkey"}"\n\n'
        f'[[witness]]\nurl = "{s.witness.url}"\nvkey = "{s.vkey}"\n'
    )
    res = kfm("witness-push", "--ledger", s.ledger, "--json")
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert [w["ok"] for w in doc["witnesses"]] == [False, True] and doc["ok"] is False
    assert "cannot reach" in doc["witnesses"][0]["error"]
    assert len(_cosigs((s.ledger / "checkpoint").read_bytes(), s.cosigner)) == 1


def test_witnesses_are_asked_at_the_same_time(s: Setup) -> None:
    """Two witnesses: each request waits until the other witness's request has been made too, which
    only a push asking them at the same time gets past (one asked after the other, the first would
    wait in vain and the barrier break).  Both cosignatures are stored, in the witnesses' order."""
    second_dir = s.tmp / "second"
    second_dir.mkdir()
    second_key, second_cosigner = write_witness_key(second_dir, "witness.test/second")
    second = WitnessProcess(second_dir / "state", second_key, [(ORIGIN, s.ledger / "log.vkey")])
    try:
        both_asked = threading.Barrier(2, timeout=20)
        real = witness_client.WitnessClient.add_checkpoint
        waited: list[str] = []

        def add_checkpoint(self, old_size, proof, note):  # type: ignore[no-untyped-def]
            waited.append(self.url)
            both_asked.wait()  # BrokenBarrierError if the other witness is not being asked meanwhile
            return real(self, old_size, proof, note)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(witness_client.WitnessClient, "add_checkpoint", add_checkpoint)
            led = Ledger.open(s.ledger)
            try:
                results = push_checkpoint(led, [
                    WitnessEndpoint(url=s.witness.url, vkey=s.vkey.read_text().strip()),
                    WitnessEndpoint(url=second.url, vkey=(second_dir / "witness.vkey").read_text().strip()),
                ])
            finally:
                led.close()
        assert sorted(waited) == sorted(f"{url}/add-checkpoint" for url in (s.witness.url, second.url))
        assert [(r.url, r.ok, r.error) for r in results] == [(s.witness.url, True, None), (second.url, True, None)]
        stored = (s.ledger / "checkpoint").read_bytes()
        assert len(_cosigs(stored, s.cosigner)) == 1 and len(_cosigs(stored, second_cosigner)) == 1
        assert stored == (s.ledger / "checkpoints" / "300").read_bytes()
    finally:
        second.stop()


def test_an_interrupted_push_does_not_wait_for_a_silent_witness(s: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (here raised while the answering witness's cosignature is stored) ends the push at
    once: the request to a witness that accepted the connection and never answers is cut off,
    not waited for until its 60 s timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    other_key = CosignatureSigner.generate("witness.test/silent")

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 20
        while not accepted and time.monotonic() < deadline:  # the silent witness's request is out
            time.sleep(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(push_module, "store_cosignatures", interrupted)
    led = Ledger.open(s.ledger)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
            push_module.push_checkpoint(led, [
                WitnessEndpoint(url=silent_url, vkey=other_key.verifier().vkey_text()),
                WitnessEndpoint(url=s.witness.url, vkey=s.vkey.read_text().strip()),
            ], timeout=60)
        assert accepted and time.monotonic() - started < 30  # not the silent witness's 60 s
    finally:
        led.close()
        for conn in accepted:
            conn.close()
        silent.close()


def test_a_trickling_witness_cannot_hold_the_push(s: Setup) -> None:
    """A witness sending its answer a byte at a time is given up after 3 x the timeout in all
    (the timeout bounds each read only), reported as not complete; the other witness cosigns."""
    other_key = CosignatureSigner.generate("witness.test/trickle")
    led = Ledger.open(s.ledger)
    started = time.monotonic()
    try:
        with trickling_server() as url:
            results = push_checkpoint(led, [
                WitnessEndpoint(url=url, vkey=other_key.verifier().vkey_text()),
                WitnessEndpoint(url=s.witness.url, vkey=s.vkey.read_text().strip()),
            ], timeout=1.0)
    finally:
        led.close()
    assert time.monotonic() - started < 10  # 3 x 1 s, not 1,000 x 50 ms
    assert [r.ok for r in results] == [False, True]
    assert results[0].error == f"witness {url}/add-checkpoint: answer not complete after 3 s"
