"""Resolvers: prefix mappings, local files, HTTP with retries and timeouts, the content cache."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from kfm_ledger.config import parse_config
from kfm_ledger.errors import ResolveError
from kfm_ledger.resolve import ContentCache, Resolver


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_longest_prefix_wins_and_uri_targets_chain(tmp_path: Path) -> None:
    cfg = parse_config(
        b'[resolve]\n"s3://b/" = "s3://mirror/b/"\n"s3://mirror/" = "/srv/m/"\n"s3://b/special/" = "/x/"\n',
        tmp_path / "kfm.toml",
    )
    r = Resolver(cfg)
    assert r.locate("s3://b/a/c.tar.zst") == "/srv/m/b/a/c.tar.zst"
    assert r.locate("s3://b/special/k") == "/x/k"
    assert r.locate("s3://other/k") == "s3://other/k"


def test_a_mapping_loop_is_an_error() -> None:
    r = Resolver(mappings={"s3://a/": "s3://b/", "s3://b/": "s3://a/"})
    with pytest.raises(ResolveError, match="loop"):
        r.locate("s3://a/x")


def test_local_digest_streams_and_names_location(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "art.tar.zst").write_bytes(data)
    r = Resolver(mappings={"s3://kfm/": f"{tmp_path}/"})
    d = r.digest("s3://kfm/art.tar.zst")
    assert (d.sha256, d.size, d.path) == (_sha(data), len(data), tmp_path / "art.tar.zst")
    assert r.digest(f"file://{tmp_path}/art.tar.zst").sha256 == _sha(data)
    assert r.digest(str(tmp_path / "art.tar.zst")).sha256 == _sha(data)


def test_missing_file_and_size_cap_and_dotdot(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 5000)
    r = Resolver(mappings={"s3://kfm/": f"{tmp_path}/"})
    with pytest.raises(ResolveError, match="no such file") as info:
        r.digest("s3://kfm/nope")
    assert info.value.location == f"{tmp_path}/nope"
    with pytest.raises(ResolveError, match="larger than the limit of 4,096"):
        r.digest("s3://kfm/big", max_bytes=4096)
    with pytest.raises(ResolveError, match="larger than the limit"):
        r.read("s3://kfm/big", max_bytes=10)
    with pytest.raises(ResolveError, match=r"'\.\.' segment"):
        r.digest("s3://kfm/../etc/passwd")


def test_non_regular_files_are_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = Resolver(mappings={"s3://kfm/": f"{tmp_path}/"})
    with pytest.raises(ResolveError, match="not a regular file"):
        r.digest("s3://kfm/fifo")  # would block forever if it were opened for reading normally
    with pytest.raises(ResolveError):
        r.digest("s3://kfm/")  # the directory itself
    with pytest.raises(ResolveError, match="not a regular file"):
        Resolver().read("/dev/zero")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ResolveError, match=r"no resolver for gs://"):
        Resolver().digest("gs://bucket/key")


# ------------------------------------------------------------------ HTTP


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    fail_first: ClassVar[dict[str, int]] = {}
    hits: ClassVar[dict[str, int]] = {}
    slow: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        path = self.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if self.fail_first.get(path, 0) >= self.hits[path]:
            self.send_response(503)
            self.end_headers()
            return
        if path in self.slow:
            threading.Event().wait(1.0)
        body = self.files.get(path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"files": {}, "fail_first": {}, "hits": {}, "slow": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_digest_retries_transient_errors(http_server: tuple[str, type[_Handler]]) -> None:
    base, h = http_server
    h.files["/a"] = b"hello" * 1000
    h.fail_first["/a"] = 2
    r = Resolver(mappings={"s3://kfm/": f"{base}/"}, backoff=0.01, retries=3)
    assert r.digest("s3://kfm/a").sha256 == _sha(b"hello" * 1000)
    assert h.hits["/a"] == 3


def test_http_gives_up_after_the_retries(http_server: tuple[str, type[_Handler]]) -> None:
    base, h = http_server
    h.files["/a"] = b"x"
    h.fail_first["/a"] = 10
    r = Resolver(mappings={"s3://kfm/": f"{base}/"}, backoff=0.01, retries=2)
    with pytest.raises(ResolveError, match=r"HTTP 503 .*gave up after 3 attempts"):
        r.read("s3://kfm/a")
    assert h.hits["/a"] == 3


def test_http_404_is_final(http_server: tuple[str, type[_Handler]]) -> None:
    base, h = http_server
    r = Resolver(mappings={"s3://kfm/": f"{base}/"}, backoff=0.01)
    with pytest.raises(ResolveError, match=r"not found \(HTTP 404\)"):
        r.read("s3://kfm/missing")
    assert h.hits["/missing"] == 1


def test_http_timeout_is_retried_then_reported(http_server: tuple[str, type[_Handler]]) -> None:
    base, h = http_server
    h.files["/slow"] = b"late"
    h.slow.add("/slow")
    r = Resolver(mappings={"s3://kfm/": f"{base}/"}, timeout=0.2, retries=1, backoff=0.01)
    with pytest.raises(ResolveError, match="gave up after 2 attempts"):
        r.read("s3://kfm/slow")
    # The server counts a request in its own thread, which a loaded machine may run after the
    # client gave up on it: wait (boundedly) for the count to catch up.
    deadline = time.monotonic() + 5
    while h.hits.get("/slow", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.hits["/slow"] == 2


def test_cache_serves_a_known_digest_without_refetching(
    http_server: tuple[str, type[_Handler]], tmp_path: Path
) -> None:
    base, h = http_server
    data = os.urandom(2_000_000)
    h.files["/art"] = data
    r = Resolver(mappings={"s3://kfm/": f"{base}/"}, cache_dir=tmp_path / "cache")
    first = r.digest("s3://kfm/art", expected=_sha(data))
    assert not first.cached and first.path is not None and first.path.read_bytes() == data
    again = r.digest("s3://kfm/art", expected=_sha(data))
    assert again.cached and again.sha256 == _sha(data)
    assert h.hits["/art"] == 1
    # A damaged entry is not trusted: removed and fetched again.
    first.path.write_bytes(b"tampered")
    third = r.digest("s3://kfm/art", expected=_sha(data))
    assert not third.cached and third.sha256 == _sha(data)
    assert h.hits["/art"] == 2


def test_cache_lookup_rejects_a_wrong_entry(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    digest = _sha(b"right")
    p = cache.path_for(digest)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"wrong")
    assert cache.lookup(digest, 100) is None
    assert not p.exists()
    with pytest.raises(ValueError):
        cache.path_for("../../etc")


def test_fetch_downloads_remote_into_a_directory(http_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    base, h = http_server
    h.files["/b/c.tar.zst"] = b"bundle"
    r = Resolver(mappings={"s3://kfm/": f"{base}/"})
    d = r.fetch("s3://kfm/b/c.tar.zst", tmp_path)
    assert d.path == tmp_path / "c.tar.zst" and d.path.read_bytes() == b"bundle" and d.sha256 == _sha(b"bundle")


def test_read_at_exactly_the_cap(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"a" * 100)
    r = Resolver()
    assert r.read(str(tmp_path / "f"), max_bytes=100) == b"a" * 100
    with pytest.raises(ResolveError, match="larger than the limit of 99 bytes"):
        r.read(str(tmp_path / "f"), max_bytes=99)
    (tmp_path / "empty").write_bytes(b"")
    assert r.read(str(tmp_path / "empty")) == b""
