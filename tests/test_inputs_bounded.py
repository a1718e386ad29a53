"""Files a user names are bounded and must be regular files (issue part 4): a FIFO or a
device is refused unread (never a hang), input over its limit is refused naming the path
and the limit, and a bundle's hashing stops at the restore's --max-bytes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfm_ledger.errors import BundleError, BundleLimitError
from kfm_ledger.inputs import InputFileError, open_regular, read_bounded
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.ops.bundle import extract_bundle, verify_bundle_sha256

from conftest import ORIGIN, fill

ZERO = "0" * 64


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    fill(led, 2)
    led.close()
    return d


def kfm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "kfm_ledger", *args], capture_output=True, text=True, env=env, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_read_bounded_refuses_fifos_devices_and_large_files(fifo: str, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="FIFO"):
        read_bounded(fifo, 100, "checkpoint file")
    with pytest.raises(InputFileError, match="device"):
        read_bounded("/dev/zero", 100, "checkpoint file")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(InputFileError, match="limit of 100 bytes") as e:
        read_bounded(big, 100, "checkpoint file")
    assert e.value.path == str(big) and e.value.limit == 100
    assert read_bounded(big, 101, "x") == b"x" * 101
    assert read_bounded("-", 5, "x", stdin=io.BytesIO(b"hello")) == b"hello"
    with pytest.raises(InputFileError, match="standard input is larger"):
        read_bounded("-", 4, "x", stdin=io.BytesIO(b"hello"))
    with pytest.raises(IsADirectoryError):
        open_regular(tmp_path, "x")


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--since", "{fifo}"],
        ["verify", "--vkey", "{fifo}"],
        ["verify", "--since", "/dev/zero"],
        ["append", "{fifo}"],
        ["append", "/dev/zero"],
        ["query", "--file", "{fifo}"],
        ["verify-proof", "{fifo}", "--vkey", "{vkey}", "--entry", "{vkey}"],
        ["verify-proof", "{vkey}", "--vkey", "{vkey}", "--entry", "/dev/zero"],
    ],
)
def test_cli_refuses_a_fifo_or_device_at_once(args: list[str], fifo: str, ledger: Path) -> None:
    vkey = str(ledger / "log.vkey")
    argv = [a.format(fifo=fifo, vkey=vkey) for a in args]
    if argv[0] != "verify-proof":
        argv += ["--ledger", str(ledger)]
    r = kfm(*argv)
    assert r.returncode != 0
    assert "FIFO" in r.stderr or "device" in r.stderr, r.stderr


def test_verify_since_too_large(tmp_path: Path, ledger: Path) -> None:
    big = tmp_path / "big.cp"
    big.write_bytes(b"x" * ((1 << 20) + 1))
    r = kfm("verify", "--since", str(big), "--ledger", str(ledger))
    assert r.returncode == 1 and "larger than the limit of 1,048,576 bytes" in r.stderr


def test_bundle_hashing_refuses_devices_and_fifos(fifo: str, tmp_path: Path) -> None:
    for path in ("/dev/zero", fifo):
        with pytest.raises(BundleError, match=r"FIFO|device"):
            verify_bundle_sha256(path, ZERO)
        with pytest.raises(BundleError, match=r"FIFO|device"):
            extract_bundle(path, tmp_path / "dest", expected_sha256=ZERO)


def test_bundle_hashing_stops_at_max_bytes(tmp_path: Path) -> None:
    big = tmp_path / "big.tar.zst"
    with big.open("wb") as f:
        f.truncate(8 << 20)  # sparse: 8 MiB
    with pytest.raises(BundleLimitError, match="larger than"):
        extract_bundle(big, tmp_path / "dest", expected_sha256=ZERO, max_bytes=1000, max_files=10)
    assert not (tmp_path / "dest").exists()
    with pytest.raises(BundleLimitError, match="larger than"):
        verify_bundle_sha256(big, ZERO, max_bytes=1000, max_files=10)


def test_rollback_bundle_dev_zero_stops(ledger: Path, fifo: str) -> None:
    for bundle in ("/dev/zero", fifo):
        r = kfm("rollback", "--index", "0", "--bundle", bundle, "--ledger", str(ledger))
        assert r.returncode != 0
        assert "device" in r.stdout + r.stderr or "FIFO" in r.stdout + r.stderr, r.stdout + r.stderr
