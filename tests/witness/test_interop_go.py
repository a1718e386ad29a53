"""Interop with Go's reference signed-note code: checkpoints that kfm's witness cosigned, as the
ledger stores them, open with ``golang.org/x/mod/sumdb/note``.

* ``gocheck note`` (../shared/tools/gocheck; found through ``GOCHECK``): the log's signature
  verifies and the cosignature line is an unknown key's, ignored (c2sp.org/signed-note);
* ``gocosig`` (tests/witness/gocosig, built here in GOPATH mode like gocheck): Go's ``note.Open``
  with the log key and a cosignature/v1 verifier written from c2sp.org/tlog-cosignature alone
  verifies both; a changed cosignature makes it fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from wit_support import write_witness_key

from kfm_ledger.core.note import NoteSignature, parse_note
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.witness.service import WitnessService
from kfm_ledger.witness.state import WitnessState

from conftest import ORIGIN, fill, gocheck_path

pytestmark = pytest.mark.interop

GOPATH = "/usr/share/gocode"


@pytest.fixture(scope="module")
def gocosig(tmp_path_factory: pytest.TempPathFactory) -> str:
    go = shutil.which("go")
    if go is None or not Path(GOPATH, "src/golang.org/x/mod/sumdb/note").is_dir():
        gocheck_path()  # skips (or fails under KFM_REQUIRE_GOCHECK=1) with the usual message
        pytest.skip("Go or Debian's golang-golang-x-mod-dev is missing")
    out = tmp_path_factory.mktemp("gocosig") / "gocosig"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": "",
           "GOCACHE": os.environ.get("GOCACHE", "/tmp/gocheck-gocache")}
    subprocess.run([go, "build", "-trimpath", "-o", str(out), "."], cwd=Path(__file__).parent / "gocosig",
                   env=env, check=True, capture_output=True, timeout=300)
    return str(out)


@pytest.fixture
def cosigned(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A ledger whose checkpoints 40 and 100 a witness (the service, no HTTP) cosigned."""
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    fill(led, 40)
    _, cosigner = write_witness_key(tmp_path)
    state = WitnessState(tmp_path / "state")
    service = WitnessService(cosigner, {ORIGIN: [led.verifier]}, state)
    from kfm_ledger.witness.protocol import format_add_checkpoint, parse_signature_lines
    from kfm_ledger.witness.push import store_cosignatures

    old = 0
    for more in (0, 60):
        if more:
            fill(led, more)
        answer = service.add_checkpoint(format_add_checkpoint(old, led.consistency_proof(old) if old else [],
                                                              led.checkpoint.note))
        assert answer.status == 200, answer.body
        store_cosignatures(led, led.size, cosigner.verifier(), parse_signature_lines(answer.body))
        old = led.size
    state.close()
    led.close()
    yield tmp_path / "ledger", tmp_path / "witness.vkey"


def test_gocheck_opens_cosigned_checkpoints(cosigned: tuple[Path, Path]) -> None:
    ledger, _ = cosigned
    go = gocheck_path()
    for name in ("checkpoint", "checkpoints/40", "checkpoints/100"):
        res = subprocess.run([go, "note", str(ledger / name), str(ledger / "log.vkey")], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert f"signer {ORIGIN}" in res.stdout and "unverified witness.test/w1" in res.stdout


def test_go_note_open_verifies_the_cosignatures(cosigned: tuple[Path, Path], gocosig: str, tmp_path: Path) -> None:
    ledger, wvkey = cosigned
    for name in ("checkpoint", "checkpoints/40"):
        res = subprocess.run([gocosig, str(ledger / name), str(ledger / "log.vkey"), str(wvkey)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert f"verified {ORIGIN}" in res.stdout and "verified witness.test/w1" in res.stdout
        assert "timestamp witness.test/w1 " in res.stdout
    # A cosignature with one bit changed: Go's note.Open refuses the note.
    note = (ledger / "checkpoint").read_bytes()
    sig = next(s for s in parse_note(note).signatures if s.name == "witness.test/w1")
    changed = sig.signature[:20] + bytes([sig.signature[20] ^ 1]) + sig.signature[21:]
    flipped = NoteSignature(sig.name, sig.key_id, changed)
    bad = tmp_path / "bad"
    bad.write_bytes(note.replace(sig.line().encode(), flipped.line().encode()))
    res = subprocess.run([gocosig, str(bad), str(ledger / "log.vkey"), str(wvkey)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1, res.stdout
    # The cosignature is over the body: moved onto another checkpoint it fails too.
    sig40 = next(s for s in parse_note((ledger / "checkpoints/40").read_bytes()).signatures if s.name == sig.name)
    bad.write_bytes(note.replace(sig.line().encode(), sig40.line().encode()))
    res = subprocess.run([gocosig, str(bad), str(ledger / "log.vkey"), str(wvkey)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1, res.stdout
