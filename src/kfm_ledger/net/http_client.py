"""A small HTTP/1.1 GET client for talking to a log (``kfm client``, ``kfm monitor``): the standard
library's ``http.client`` with one kept-alive connection, timeouts, and bounded responses.

Nothing here trusts what it reads: it only moves bytes, and refuses answers that are larger
than the caller allows (checked before and while reading), gzip bodies that would inflate past
that bound, and error statuses (:class:`~kfm_ledger.errors.NetworkError` with the URL and status).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
import zlib
from dataclasses import dataclass

from kfm_ledger.errors import FormatError, NetworkError

__all__ = ["DEFAULT_TIMEOUT", "Fetcher", "Response", "parse_base_url"]

#: Seconds to wait for a connection or for bytes of an answer.
DEFAULT_TIMEOUT = 10.0
#: A whole answer must arrive within this many timeouts.
TOTAL_TIMEOUT_FACTOR = 3
_USER_AGENT = "kfm-ledger-client"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str


def parse_base_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of an ``http://`` or ``https://`` log URL (the
    tlog-tiles *prefix*; a trailing ``/`` is dropped).  FormatError otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise FormatError(f"log URL {url!r}: {err}", what="URL", found=url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FormatError(f"log URL {url!r}: want http://HOST[:PORT][/PREFIX] or https://...", what="URL", found=url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise FormatError(f"log URL {url!r}: no query, fragment or credentials allowed", what="URL", found=url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default, parts.path.rstrip("/")


class Fetcher:
    """GET requests to one log server over one kept-alive connection (reopened when the server
    closed it).  ``get(path, limit)`` returns the body of a 200 answer of at most ``limit`` bytes."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.scheme, self.host, self.port, self.prefix = parse_base_url(base_url)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        #: Requests sent (for tests and ``--json`` reports).
        self.requests = 0

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, limit: int, *, accept_gzip: bool = False) -> Response:
        """GET ``<prefix>/<path>``.  NetworkError for no answer, a status other than 200
        (``status`` set; the server's JSON error message quoted when it sent one), or a body
        over ``limit`` bytes (after gzip decoding when ``accept_gzip``)."""
        url = self.url(path)
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "gzip, identity" if accept_gzip else "identity"}
        for attempt in (1, 2):  # a kept-alive connection the server closed: reopen once
            conn = self._connection()
            try:
                conn.request("GET", f"{self.prefix}/{path}", headers=headers)
                resp = conn.getresponse()
                body = self._read(resp, url, limit, accept_gzip)
                self.requests += 1
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
                self.close()
                if attempt == 2:
                    raise NetworkError(f"GET {url}: connection closed: {err}", url=url) from None
            except (OSError, http.client.HTTPException) as err:
                self.close()
                why = "timed out" if isinstance(err, socket.timeout) else str(err) or type(err).__name__
                raise NetworkError(f"GET {url}: {why}", url=url) from None
        if resp.status != 200:
            raise NetworkError(
                f"GET {url}: HTTP {resp.status}{_server_message(body)}", url=url, status=resp.status
            )
        return Response(resp.status, body, resp.getheader("Content-Type") or "")

    def _read(self, resp: http.client.HTTPResponse, url: str, limit: int, accept_gzip: bool) -> bytes:
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit and resp.status == 200:
            self.close()
            raise NetworkError(f"GET {url}: answer of {int(length)} bytes, more than the {limit} allowed", url=url)
        raw = read_body_before(resp, limit, time.monotonic() + self.timeout * TOTAL_TIMEOUT_FACTOR)
        if raw is None:
            self.close()
            raise NetworkError(f"GET {url}: answer not complete after {self.timeout * TOTAL_TIMEOUT_FACTOR:g} s",
                               url=url)
        if len(raw) > limit:
            self.close()
            raise NetworkError(f"GET {url}: answer longer than the {limit} bytes allowed", url=url)
        encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding == "identity":
            return raw
        if encoding == "gzip" and accept_gzip:
            return _gunzip(raw, limit, url)
        raise NetworkError(f"GET {url}: unexpected Content-Encoding {encoding[:40]!r}", url=url, status=resp.status)


def read_body_before(resp: http.client.HTTPResponse, limit: int, deadline: float) -> bytes | None:
    """At most ``limit + 1`` bytes of ``resp``'s body, read in pieces; None when it was not
    complete by ``deadline`` (a :func:`time.monotonic` time).  The connection's timeout bounds
    each read only: this bounds them all, so that a server trickling bytes cannot hold a reader
    (use ``TOTAL_TIMEOUT_FACTOR`` times the timeout).  A body within ``limit`` is read to its
    end, so that the connection can carry the next request; a longer one is not (close it)."""
    pieces: list[bytes] = []
    got = 0
    while got <= limit:
        piece = resp.read1(min(65536, limit + 1 - got))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
        if time.monotonic() > deadline:
            return None
    if got <= limit and not resp.isclosed():
        resp.read()  # nothing left (the body ended): completes the response, keeping the connection usable
    return b"".join(pieces)


def _gunzip(raw: bytes, limit: int, url: str) -> bytes:
    """Inflate a gzip body to at most ``limit`` bytes (a bomb stops at the bound)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as err:
        raise NetworkError(f"GET {url}: bad gzip body: {err}", url=url) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise NetworkError(f"GET {url}: gzip body inflates past the {limit} bytes allowed", url=url)
    if not inflater.eof:
        raise NetworkError(f"GET {url}: truncated gzip body", url=url)
    return out


def _server_message(body: bytes) -> str:
    """``: <message>`` from a kfm server's JSON error body (shown, never trusted), else ''."""
    import json

    try:
        doc = json.loads(body[:4096])
        message = doc["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    if not isinstance(message, str):
        return ""
    message = "".join(ch if ch.isprintable() else "?" for ch in message[:300])
    return f" (server says: {message})"
