"""Entry bundles read by a second reading and checked by Go's reference implementation.

The bundles of a ledger (signed sizes 100, 157, 300, 600) are decoded with ``struct`` (not the
codec under test); the entries of every signed size, joined with newlines, must give Go's
tree root for that checkpoint (``gocheck root``: RFC 6962 over records), and an entry taken
from a bundle must pass Go's inclusion check (``gocheck incl``) with kfm's proof.  An edited
entry must make Go fail, so the checks can fail.
"""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import pytest

from kfm_ledger.core import tiles
from kfm_ledger.log.ledger import Ledger

from conftest import ORIGIN, fill, gocheck_path

pytestmark = pytest.mark.interop

SIZES = (100, 157, 300, 600)


def read_bundle_struct(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    assert pos == len(data)
    return out


def entries_at(d: Path, size: int) -> list[bytes]:
    """The entries of the tree of ``size`` from the stored bundles (full ones, then the partial
    one for that size, or the full bundle as the spec's fallback)."""
    out: list[bytes] = []
    for index in range(-(-size // 256)):
        width = min(256, size - index * 256)
        p = d / tiles.entries_path(index, width if width < 256 else None)
        if not p.exists():
            p = d / tiles.entries_path(index)
        out += read_bundle_struct(p)[:width]
    return out


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("interop-entries") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    try:
        fill(led, 100, 57, 143, 300)
        assert led.checkpoint_sizes() == [0, *SIZES]
    finally:
        led.close()
    return d


def gocheck(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([gocheck_path(), *map(str, args)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("size", SIZES)
def test_go_computes_the_signed_root_from_the_bundles(ledger_dir: Path, tmp_path: Path, size: int) -> None:
    led = Ledger.open(ledger_dir)
    try:
        want = base64.b64encode(led.stored_checkpoint(size).checkpoint.root).decode()
    finally:
        led.close()
    records = tmp_path / "records"
    records.write_bytes(b"".join(e + b"\n" for e in entries_at(ledger_dir, size)))
    res = gocheck("root", records)
    assert res.returncode == 0, res.stderr
    assert f"size {size}" in res.stdout and f"root {want}" in res.stdout


def test_go_verifies_an_entry_from_a_bundle_with_kfms_proof(ledger_dir: Path, tmp_path: Path) -> None:
    led = Ledger.open(ledger_dir)
    try:
        index = 400
        proof = [base64.b64encode(h).decode() for h in led.inclusion_proof(index)]
        root = base64.b64encode(led.root).decode()
        entry = entries_at(ledger_dir, led.size)[index]
        assert entry == led.entry(index).line
        leaf = tmp_path / "leaf"
        leaf.write_bytes(entry)
        res = gocheck("incl", led.size, index, root, leaf, *proof)
        assert res.returncode == 0, res.stderr
        leaf.write_bytes(entry.replace(b"sha256", b"sha512", 1))  # an edited entry: Go refuses it
        assert gocheck("incl", led.size, index, root, leaf, *proof).returncode == 1
    finally:
        led.close()


def test_an_edited_bundle_no_longer_gives_the_root(ledger_dir: Path, tmp_path: Path) -> None:
    found = entries_at(ledger_dir, 300)
    found[200] = found[200].replace(b"sha256", b"sha512", 1)
    records = tmp_path / "records"
    records.write_bytes(b"".join(e + b"\n" for e in found))
    led = Ledger.open(ledger_dir)
    try:
        want = base64.b64encode(led.stored_checkpoint(300).checkpoint.root).decode()
    finally:
        led.close()
    res = gocheck("root", records)
    assert res.returncode == 0 and f"root {want}" not in res.stdout
