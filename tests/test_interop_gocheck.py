"""A ledger written by the ``kfm`` command line, checked by Go's reference implementation.

gocheck (``/work/shared/tools/gocheck``: Go's ``golang.org/x/mod/sumdb/{tlog,note}``) is found
through the environment variable ``GOCHECK``; without it these tests are skipped.  One ledger
of 300 sample rows is built in three appends (checkpoints at sizes 0, 100, 157, 300), then Go
checks the JSONL's tree root, every stored checkpoint's signature, the tile directory at every
checkpoint size, inclusion proofs from ``kfm prove`` and consistency proofs from
``kfm prove --from --to``.  Tampered copies must make Go fail, so the checks can fail.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kfm_ledger.sample import sample_jsonl

from conftest import gocheck_path

pytestmark = pytest.mark.interop

ORIGIN = "kfm.test/interop-gocheck"
BATCHES = (100, 57, 143)  # checkpoint sizes 0, 100, 157, 300
SIZES = (0, 100, 157, 300)


@dataclass
class Go:
    path: str

    def run(self, *args: object, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.path, *map(str, args)], input=stdin.decode(), capture_output=True, text=True, check=False
        )

    def ok(self, *args: object, stdin: bytes = b"") -> dict[str, list[str]]:
        """Run gocheck, require exit 0, return its ``key value`` facts (bare lines under "")."""
        res = self.run(*args, stdin=stdin)
        assert res.returncode == 0, f"gocheck {' '.join(map(str, args))}: exit {res.returncode}: {res.stderr}"
        facts: dict[str, list[str]] = {}
        for line in res.stdout.splitlines():
            key, sep, value = line.partition(" ")
            facts.setdefault(key if sep else "", []).append(value if sep else line)
        return facts

    def fails(self, *args: object, stdin: bytes = b"") -> str:
        """Run gocheck, require exit 1 (verification failure), return its message."""
        res = self.run(*args, stdin=stdin)
        assert res.returncode == 1, (
            f"gocheck {' '.join(map(str, args))} should fail with exit 1, got {res.returncode}: "
            f"{res.stdout}{res.stderr}"
        )
        return res.stderr


def kfm(ledger: Path, *args: object) -> bytes:
    res = subprocess.run(
        [sys.executable, "-m", "kfm_ledger", *map(str, args), "--ledger", str(ledger)],
        capture_output=True,
        check=False,
    )
    assert res.returncode == 0, f"kfm {' '.join(map(str, args))}: exit {res.returncode}: {res.stderr.decode()}"
    return res.stdout


@dataclass
class Built:
    go: Go
    ledger: Path
    work: Path
    checkpoints: dict[int, Path]  # size -> a file holding the signed checkpoint for that size
    roots: dict[int, str]  # size -> base64 root, as Go read it from the signed checkpoint


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    go = Go(gocheck_path())
    work = tmp_path_factory.mktemp("interop")
    ledger = work / "ledger"
    kfm(ledger, "init", "--origin", ORIGIN)
    start = 0
    for count in BATCHES:
        rows = work / f"rows-{start}.jsonl"
        rows.write_bytes(sample_jsonl(count, start=start))
        kfm(ledger, "append", rows)
        start += count
    checkpoints: dict[int, Path] = {}
    roots: dict[int, str] = {}
    for size in SIZES:
        path = work / f"checkpoint-{size}"
        path.write_bytes(kfm(ledger, "checkpoint", "--size", size))
        facts = go.ok("note", path, ledger / "log.vkey")
        assert facts["origin"] == [ORIGIN] and facts["size"] == [str(size)]
        assert facts["signer"] == [ORIGIN]
        checkpoints[size] = path
        roots[size] = facts["root"][0]
    return Built(go, ledger, work, checkpoints, roots)


def jsonl_prefix(b: Built, size: int) -> Path:
    """A file with the first ``size`` lines of the ledger's JSONL, for gocheck root/prove."""
    lines = (b.ledger / "rollback-index.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == SIZES[-1]
    path = b.work / f"prefix-{size}.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines[:size]))
    return path


def flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_jsonl_root_equals_signed_checkpoint_root(built: Built) -> None:
    facts = built.go.ok("root", built.ledger / "rollback-index.jsonl")
    assert facts["size"] == [str(SIZES[-1])]
    assert facts["root"] == [built.roots[SIZES[-1]]]
    for size in SIZES[:-1]:
        assert built.go.ok("root", jsonl_prefix(built, size))["root"] == [built.roots[size]]


def test_latest_checkpoint_file_verifies(built: Built) -> None:
    facts = built.go.ok("note", built.ledger / "checkpoint", built.ledger / "log.vkey")
    assert facts["origin"] == [ORIGIN]
    assert facts["size"] == [str(SIZES[-1])] and facts["root"] == [built.roots[SIZES[-1]]]
    assert (built.ledger / "checkpoint").read_bytes() == built.checkpoints[SIZES[-1]].read_bytes()


def test_tampered_checkpoint_fails(built: Built) -> None:
    """Negative: one changed byte in the body breaks Go's signature check."""
    data = built.checkpoints[157].read_bytes().replace(b"\n157\n", b"\n158\n", 1)
    bad = built.work / "checkpoint-tampered"
    bad.write_bytes(data)
    assert "invalid signature" in built.go.fails("note", bad, built.ledger / "log.vkey")


@pytest.mark.parametrize("size", SIZES)
def test_tiles_verify_at_every_checkpoint(built: Built, size: int) -> None:
    facts = built.go.ok("tiles", built.ledger, size, built.roots[size])
    assert facts["ok"] == ["tiles"]


def test_tiles_with_a_wrong_root_fail(built: Built) -> None:
    built.go.fails("tiles", built.ledger, SIZES[-1], flip(built.roots[SIZES[-1]]))


def parse_tlog_proof(data: bytes) -> tuple[int, list[str], bytes]:
    """(index, proof hashes, checkpoint note) of a c2sp.org/tlog-proof file."""
    head, sep, note = data.partition(b"\n\n")
    assert sep, "tlog-proof has no blank line before the checkpoint"
    lines = head.decode().split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("index ")
    index = int(lines[1].removeprefix("index "))
    hashes = [line for line in lines[2:] if not line.startswith("extra ")]
    return index, hashes, note


@pytest.mark.parametrize(("index", "size"), [(0, 300), (123, 300), (299, 300), (255, 300), (99, 100), (156, 157)])
def test_kfm_inclusion_proof_verifies_with_go(built: Built, index: int, size: int) -> None:
    tlog_proof = kfm(built.ledger, "prove", "--index", index, "--size", size)
    got_index, hashes, note = parse_tlog_proof(tlog_proof)
    assert got_index == index
    # The checkpoint inside the proof is the stored one for that size, and verifies.
    note_file = built.work / f"proof-note-{index}-{size}"
    note_file.write_bytes(note)
    facts = built.go.ok("note", note_file, built.ledger / "log.vkey")
    assert facts["size"] == [str(size)] and facts["root"] == [built.roots[size]]
    # The entry: `kfm get` prints the stored line, equal to the JSONL's line `index`.
    line = kfm(built.ledger, "get", "--index", index)
    assert line.endswith(b"\n")
    line = line[:-1]
    assert line == (built.ledger / "rollback-index.jsonl").read_bytes().split(b"\n")[index]
    entry = built.work / f"entry-{index}"
    entry.write_bytes(line)
    facts = built.go.ok("incl", size, index, built.roots[size], entry, *hashes)
    assert facts["ok"] == [f"incl size {size} index {index}"]
    # Byte-identical to Go's own proof.
    go_proof = built.go.ok("prove", jsonl_prefix(built, size), index, size)
    assert go_proof.get("", []) == hashes
    # Negatives: a flipped proof hash, the neighbouring index.
    built.go.fails("incl", size, index, built.roots[size], entry, flip(hashes[0]), *hashes[1:])
    built.go.fails("incl", size, index ^ 1, built.roots[size], entry, *hashes)


@pytest.mark.parametrize(("old", "new"), [(100, 300), (157, 300), (100, 157), (300, 300)])
def test_kfm_consistency_proof_verifies_with_go(built: Built, old: int, new: int) -> None:
    hashes = kfm(built.ledger, "prove", "--from", old, "--to", new).decode().split()
    facts = built.go.ok("cons", old, built.roots[old], new, built.roots[new], "-", stdin=" ".join(hashes).encode())
    assert facts["ok"] == [f"cons {old} -> {new}"]
    go_proof = built.go.ok("proveCons", jsonl_prefix(built, new), old, new)
    assert go_proof.get("", []) == hashes
    if hashes:
        built.go.fails("cons", old, built.roots[old], new, built.roots[new], *hashes[:-1], flip(hashes[-1]))
        built.go.fails("cons", old, built.roots[old], new, built.roots[new], *hashes[:-1])
    built.go.fails("cons", old, flip(built.roots[old]), new, built.roots[new], *hashes)
