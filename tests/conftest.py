"""Shared fixtures: ledgers in memory and on disk, filled with sample rows."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage import MemoryStorage

ORIGIN = "test.kfm.example/rollback-index"


def gocheck_path() -> str:
    """The Go checker's path; skip without it, or fail when KFM_REQUIRE_GOCHECK=1 says it must be there.

    ``.ci/run`` builds it from ``../shared/tools/gocheck`` and sets ``KFM_REQUIRE_GOCHECK=1``
    unless the caller set ``KFM_REQUIRE_GOCHECK=0``.
    """
    path = os.environ.get("GOCHECK")
    if not path:
        problem = (
            "GOCHECK is not set: build ../shared/tools/gocheck (build.sh) and export GOCHECK=<binary> "
            "to cross-check with Go"
        )
    elif not (os.path.isfile(path) and os.access(path, os.X_OK)):
        problem = f"GOCHECK={path} is not an executable file"
    else:
        return path
    if os.environ.get("KFM_REQUIRE_GOCHECK") == "1":
        pytest.fail(f"KFM_REQUIRE_GOCHECK=1 but the Go checker is missing: {problem}", pytrace=False)
    pytest.skip(problem)


@contextlib.contextmanager
def trickling_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers one request with a 200 promising 1,000 bytes and
    then sends one byte every 50 ms; yields its URL (``http://127.0.0.1:<port>``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.05)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def private_key_secret(text: str) -> str:
    """The base64 key material of ``PRIVATE+KEY+<name>+<key ID>+<base64>``.  Split from the left:
    the base64 itself may hold a "+" (a random key's does, one time in a few)."""
    return text.split("+", 4)[4]


def signer_of(ledger: Ledger):
    return load_signer(ledger.storage.read(SKEY_KEY))


@pytest.fixture
def mem_ledger() -> Ledger:
    return Ledger.init(MemoryStorage(), origin=ORIGIN)


@pytest.fixture
def disk_ledger(tmp_path: Path) -> Ledger:
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    yield led
    led.close()


def copy_ledger(template: Path, parent: Path, name: str = "ledger") -> Path:
    """A fresh copy of a ledger directory built once per module (so each test may damage its own)."""
    d = parent / name
    shutil.copytree(template, d)
    return d


def fill(ledger: Ledger, *batches: int) -> Ledger:
    """Append sample rows in batches of the given sizes."""
    start = ledger.size
    signer = signer_of(ledger)
    for n in batches:
        ledger.append(sample_jsonl(n, start=start), signer=signer)
        start += n
    return ledger


# -- a real S3 server (SeaweedFS), for tests/s3 and any other folder -----------------------
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """One SeaweedFS server per test session (tests/s3/seaweed.py); skips without ``weed``."""
    from s3.seaweed import seaweed_server

    yield from seaweed_server(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture
def s3_location(s3_server, request: pytest.FixtureRequest) -> str:
    """A fresh, empty ``s3://kfm-test/<unique prefix>`` on the session's server."""
    import secrets

    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-") or "test"
    return s3_server.url(f"t/{name}-{secrets.token_hex(4)}")
