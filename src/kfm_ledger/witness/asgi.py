"""The witness's HTTP interface as a plain ASGI application (c2sp.org/tlog-witness §HTTP Interface).

Routes (the submission and monitoring prefixes are both ``prefix``, "" by default):

* ``POST <prefix>/add-checkpoint``: :meth:`WitnessService.add_checkpoint`.  The body is read
  up to :data:`~.protocol.MAX_REQUEST_BYTES` (a longer one, or a ``Content-Length`` above it,
  is answered 413 without reading on).  Other methods: 405.
* ``GET|HEAD <prefix>/<sha256 of origin, lowercase hex>/checkpoint``: the latest cosigned
  checkpoint (tlog-witness §Monitor Retrieval Mechanism).
* Anything else: 404.

The checks, the signing and the SQLite commit run on a small thread pool, so the event loop
keeps accepting connections; requests for one log are serialised by the service's lock.
An unexpected exception is answered 500 with no detail (and logged), never a traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .check import TEXT, Answer
from .protocol import ADD_CHECKPOINT_PATH, MAX_REQUEST_BYTES
from .service import WitnessService

__all__ = ["WitnessApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger("kfm.witness")
_MONITOR_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")


class WitnessApp:
    """ASGI 3 application serving one :class:`WitnessService`."""

    def __init__(
        self, service: WitnessService, *, prefix: str = "", max_body: int = MAX_REQUEST_BYTES, threads: int = 4
    ) -> None:
        self.service = service
        self.prefix = prefix.rstrip("/")
        self.max_body = max_body
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kfm-witness")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # pragma: no cover - websockets are not offered
            return
        try:
            answer = await self._route(scope, receive)
        except Exception:  # never a traceback to the client
            _log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            answer = Answer.text(500, "internal error")
        await _send(send, answer, head=scope.get("method") == "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive) -> Answer:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "")
        if not path.startswith(self.prefix):
            return Answer.text(404, "not found")
        path = path[len(self.prefix) :]
        if path == ADD_CHECKPOINT_PATH:
            if method != "POST":
                return Answer(405, b"add-checkpoint takes POST\n", TEXT)
            body = await self._read_body(scope, receive)
            if body is None:
                return Answer.text(413, f"request body larger than {self.max_body} bytes")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self.service.add_checkpoint, body)
        match = _MONITOR_PATH.fullmatch(path)
        if match is not None:
            if method not in ("GET", "HEAD"):
                return Answer(405, b"the checkpoint takes GET or HEAD\n", TEXT)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self.service.monitoring_checkpoint, match.group(1))
        return Answer.text(404, "not found")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request body, or None when it is longer than ``max_body`` (not read further)."""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                text = value.decode("latin-1").strip()
                if not text.isdigit() or int(text) > self.max_body:
                    return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _send(send: Send, answer: Answer, *, head: bool = False) -> None:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if answer.status == 405:
        headers.append((b"allow", b"POST" if answer.body.startswith(b"add-checkpoint") else b"GET, HEAD"))
    if answer.status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})
