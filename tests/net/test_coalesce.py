"""net/coalesce.py: a response's writes go out as one, in order, and nothing is lost or held
(the transport on its own, then ``kfm serve``'s uvicorn configuration over a real socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from netutil import ServerThread

from kfm_ledger.net.coalesce import CoalescingHttpToolsProtocol, CoalescingTransport
from kfm_ledger.net.serve import http_protocol, uvicorn_options


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_turn_are_one_write() -> None:
    async def main() -> None:
        inner = FakeTransport()
        t = CoalescingTransport(inner, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")
        t.writelines([b"body", memoryview(b"!")])
        assert inner.writes == [] and t.get_write_buffer_size() == 24
        await asyncio.sleep(0)
        assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody!"]
        t.write(b"next")
        await asyncio.sleep(0)
        assert inner.writes[-1] == b"next" and len(inner.writes) == 2
        t.write(b"last")
        t.close()  # the pending bytes first, then the close
        assert inner.writes[-1] == b"last" and inner.closed
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)

    asyncio.run(main())


def test_abort_drops_and_a_closed_transport_is_not_written() -> None:
    async def main() -> None:
        inner = FakeTransport()
        t = CoalescingTransport(inner, asyncio.get_running_loop())
        t.write(b"x")
        t.abort()
        await asyncio.sleep(0)
        assert inner.writes == [] and inner.aborted
        inner2 = FakeTransport()
        t2 = CoalescingTransport(inner2, asyncio.get_running_loop())
        t2.write(b"y")
        inner2.closed = True  # the peer went away meanwhile
        await asyncio.sleep(0)
        assert inner2.writes == []

    asyncio.run(main())


async def _echo_app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    body = scope["path"].encode() * 3
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_kfm_serve_uses_the_coalescing_protocol() -> None:
    assert http_protocol() is CoalescingHttpToolsProtocol
    assert uvicorn_options()["http"] is CoalescingHttpToolsProtocol


def test_pipelined_requests_are_answered_in_order() -> None:
    with ServerThread(_echo_app, lifespan="off") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /bb HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /ccc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = _read_all(sock)
    responses = data.split(b"HTTP/1.1 200 OK\r\n")
    assert responses[0] == b"" and len(responses) == 4
    assert responses[1].endswith(b"\r\n\r\n/a/a/a")
    assert responses[2].endswith(b"content-length: 9\r\n\r\n")  # HEAD: the GET's length, no body
    assert responses[3].endswith(b"\r\n\r\n/ccc/ccc/ccc") and b"connection: close" in responses[3]


def test_a_large_body_arrives_whole() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: more than the transport's write buffer limit

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(big)).encode())]})
        await send({"type": "http.response.body", "body": big})

    with ServerThread(app, lifespan="off") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = _read_all(sock)
    assert data.split(b"\r\n\r\n", 1)[1] == big
