"""Helpers for the witness tests: a log made of signed checkpoints over an in-memory tree, and
a ``kfm witness serve`` process on a free 127.0.0.1 port (started and stopped by the tests)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.signed_checkpoint import sign_checkpoint
from kfm_ledger.witness.protocol import format_add_checkpoint

WITNESS_NAME = "witness.test/w1"


@dataclass
class FakeLog:
    """A log: its key, and a tree of leaves ``b"leaf <i>"`` grown on demand."""

    origin: str
    signer: Signer = field(init=False)
    tree: merkle.MemoryTree = field(default_factory=merkle.MemoryTree)

    def __post_init__(self) -> None:
        self.signer = Signer.generate(self.origin)

    def grow(self, size: int) -> None:
        while self.tree.size < size:
            self.tree.append(merkle.leaf_hash(b"leaf %d" % self.tree.size))

    def root(self, size: int) -> bytes:
        self.grow(size)
        return self.tree.root(size)

    def checkpoint(self, size: int, *, signer: Signer | None = None, root: bytes | None = None) -> bytes:
        """The signed checkpoint of the tree of ``size`` leaves (or with another ``root``)."""
        cp = Checkpoint(origin=self.origin, size=size, root=root if root is not None else self.root(size))
        return sign_checkpoint(cp, signer or self.signer)

    def proof(self, old: int, new: int) -> list[bytes]:
        self.grow(new)
        if old == 0 or old == new:
            return []
        return merkle.consistency_proof(old, new, self.tree)

    def request(self, old: int, new: int, **kw: object) -> bytes:
        return format_add_checkpoint(old, self.proof(old, new), self.checkpoint(new, **kw))  # type: ignore[arg-type]

    def write_vkey(self, directory: Path) -> Path:
        path = directory / (self.origin.replace("/", "_") + ".vkey")
        path.write_text(self.signer.verifier().vkey_text() + "\n")
        return path


def write_witness_key(directory: Path, name: str = WITNESS_NAME) -> tuple[Path, CosignatureSigner]:
    signer = CosignatureSigner.generate(name)
    key = directory / "witness.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.private_key_text() + "\n")
    (directory / "witness.vkey").write_text(signer.verifier().vkey_text() + "\n")
    return key, signer


class WitnessProcess:
    """``kfm witness serve --listen 127.0.0.1:0`` in a child process; its URL from the announce line."""

    def __init__(self, state: Path, key: Path, logs: list[tuple[str, Path]]) -> None:
        args = [sys.executable, "-m", "kfm_ledger", "witness", "serve", "--listen", "127.0.0.1:0",
                "--state", str(state), "--key", str(key)]
        for origin, vkey in logs:
            args += ["--log", f"{origin}={vkey}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self._first_line()
        if " listening on " not in line:
            self.stop()
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"witness did not start: {line!r} {err}")
        self.url = line.split(" listening on ")[1].split(" ")[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def _first_line(self) -> str:
        assert self.proc.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        return result[0].decode() if result else ""

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        finally:
            conn.close()

    def post(self, body: bytes) -> tuple[int, str, bytes]:
        return self.request("POST", "/add-checkpoint", body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
