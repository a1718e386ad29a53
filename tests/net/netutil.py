"""Helpers for the network tests: real servers on 127.0.0.1 (free ports), ledgers with entry
bundles, and hand-built static logs that can be made to lie.

``ServerThread`` runs an ASGI app under uvicorn in a thread of the test process (always stopped
on exit); ``StaticLog`` builds a complete c2sp.org/tlog-tiles log (checkpoint, hash tiles, entry
bundles) from any entries with any key, so tests can serve forks, rollbacks, bad rows and
tampered tiles that the ledger itself would refuse to write.  Ledgers built by the tests write
their own entry bundles (``log/entries.py``); :func:`bundles_of` lists them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.entry_bundle import encode_entry_bundle
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.signed_checkpoint import sign_checkpoint
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl

ORIGIN = "net.kfm.test/log"


def sample_lines(count: int, start: int = 0, seed: int = 0) -> list[bytes]:
    return sample_jsonl(count, start=start, seed=seed).splitlines()


def bundles_of(led: Ledger) -> dict[str, bytes]:
    """The entry bundles ``led`` stored itself (``tile/entries/...`` key -> bytes)."""
    return {k: led.storage.read(k) for k in led.storage.list("tile/entries/")}


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1:<free port> in a thread, configured as
    ``kfm serve`` configures it (net/serve.py ``uvicorn_options``); a context manager."""

    def __init__(self, app: Any, *, lifespan: str = "auto") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from kfm_ledger.net.serve import uvicorn_options

        config = uvicorn.Config(app, lifespan=lifespan, **{**uvicorn_options(), "log_level": "error"})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StaticLog:
    """A whole tiled log in memory: ``files`` maps each tlog-tiles path (``checkpoint``,
    ``tile/...``, ``tile/entries/...``) to its bytes; ``lookup`` maps commits to indexes."""

    def __init__(self, entries: list[bytes], signer: Signer, *, origin: str = ORIGIN) -> None:
        self.entries = list(entries)
        self.signer = signer
        self.origin = origin
        tree = merkle.MemoryTree(merkle.leaf_hash(e) for e in entries)
        size = len(entries)
        self.size = size
        self.root = tree.root()
        self.files: dict[str, bytes] = {}
        for level, index, width in tiles.tiles_for_size(size):
            nodes = [(8 * level, index * 256 + i) for i in range(width)]
            self.files[tiles.tile_path(level, index, width)] = b"".join(tree.read_node_hashes(nodes))
        for n in range(0, (size + 255) // 256):
            chunk = entries[n * 256 : (n + 1) * 256]
            self.files[tiles.entries_path(n, len(chunk))] = encode_entry_bundle(chunk)
        self.note = sign_checkpoint(Checkpoint(origin, size, self.root), signer)
        self.files["checkpoint"] = self.note
        self.lookup: dict[str, int] = {}
        for i, e in enumerate(entries):
            try:
                self.lookup.setdefault(json.loads(e)["lakefs_commit"], i)
            except (ValueError, KeyError, TypeError):
                pass

    def app(self) -> StaticApp:
        return StaticApp(self)


class StaticApp:
    """Serves a :class:`StaticLog` (its ``files`` may be changed between requests) plus
    ``/lookup/<commit>`` answering ``{"index": i}`` by exact commit or unique prefix."""

    def __init__(self, log: StaticLog) -> None:
        self.log = log
        self.requests: list[str] = []

    def answer(self, path: str) -> tuple[int, bytes]:
        self.requests.append(path)
        key = path.lstrip("/")
        if key in self.log.files:
            return 200, self.log.files[key]
        if key.startswith("lookup/"):
            prefix = key[len("lookup/") :]
            found = [i for c, i in self.log.lookup.items() if c.startswith(prefix)]
            if len(found) == 1:
                return 200, json.dumps({"index": found[0]}).encode()
        return 404, b'{"error":{"status":404,"type":"NotFound","message":"not here"}}'

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        status, body = self.answer(scope["path"])
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
