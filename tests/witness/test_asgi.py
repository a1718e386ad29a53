"""The ASGI application called directly (no server): body limits while streaming, routing, an
unexpected error answered 500 without detail, the lifespan protocol."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from wit_support import FakeLog

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.witness.asgi import WitnessApp
from kfm_ledger.witness.check import Answer
from kfm_ledger.witness.service import WitnessService
from kfm_ledger.witness.state import WitnessState


def _call(app: WitnessApp, method: str, path: str, chunks: list[bytes],
          headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received < len(messages):
            received += 1
            return messages[received - 1]
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    asyncio.run(app(scope, receive, send))
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def _app(tmp_path: Path, **kw: Any) -> tuple[WitnessApp, FakeLog]:
    log = FakeLog("log.test/asgi")
    state = WitnessState(tmp_path)
    service = WitnessService(CosignatureSigner.generate("w.test/asgi"), {log.origin: [log.signer.verifier()]}, state)
    return WitnessApp(service, **kw), log


def test_chunked_body_is_assembled(tmp_path: Path) -> None:
    app, log = _app(tmp_path)
    body = log.request(0, 9)
    status, headers, answer = _call(app, "POST", "/add-checkpoint", [body[:10], body[10:50], body[50:]])
    assert status == 200 and answer.startswith("\u2014 w.test/asgi ".encode())
    assert headers[b"cache-control"] == b"no-store" and headers[b"content-length"] == str(len(answer)).encode()


def test_body_over_the_limit_while_streaming(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, max_body=100)
    status, headers, _ = _call(app, "POST", "/add-checkpoint", [b"x" * 60, b"x" * 60])
    assert status == 413 and headers[b"connection"] == b"close"
    status, _, _ = _call(app, "POST", "/add-checkpoint", [b"x"], headers=[(b"content-length", b"101")])
    assert status == 413


def test_prefix(tmp_path: Path) -> None:
    app, log = _app(tmp_path, prefix="/w/")
    assert _call(app, "POST", "/add-checkpoint", [log.request(0, 1)])[0] == 404
    assert _call(app, "POST", "/w/add-checkpoint", [log.request(0, 1)])[0] == 200


def test_unexpected_error_is_a_500_without_detail(tmp_path: Path) -> None:
    app, log = _app(tmp_path)

    def boom(body: bytes) -> Answer:
        raise RuntimeError("secret detail")

    app.service.add_checkpoint = boom  # type: ignore[method-assign]
    status, _, body = _call(app, "POST", "/add-checkpoint", [log.request(0, 1)])
    assert status == 500 and b"secret" not in body and body == b"internal error\n"


def test_method_not_allowed_names_allow(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    status, headers, _ = _call(app, "DELETE", "/add-checkpoint", [b""])
    assert status == 405 and headers[b"allow"] == b"POST"
    status, headers, _ = _call(app, "POST", "/" + "0" * 64 + "/checkpoint", [b""])
    assert status == 405 and headers[b"allow"] == b"GET, HEAD"


def test_lifespan(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
