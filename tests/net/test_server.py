"""``kfm serve``'s application over real sockets: every endpoint and status, content types and
caching, partial-tile fallback, traversal and oversize attempts, appends seen without a restart."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import ORIGIN, ServerThread, bundles_of

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.entry_bundle import decode_entry_bundle
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.net.server import CACHE_IMMUTABLE, MAX_PATH_BYTES, LogApp
from kfm_ledger.sample import sample_commit, sample_jsonl


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger signed at sizes 0, 300, 320, with entry bundles."""
    d = tmp_path_factory.mktemp("served") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    signer = load_signer((d / "log.key").read_bytes())
    led.append(sample_jsonl(300), signer=signer)
    led.append(sample_jsonl(20, start=300), signer=signer)
    led.close()
    return d


@pytest.fixture
def served(template: Path, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    d = tmp_path / "ledger"
    shutil.copytree(template, d)
    app = LogApp(d)
    with ServerThread(app) as server:
        yield server, d
    app.close()


def request(server: ServerThread, path: str, method: str = "GET", headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def error_of(body: bytes) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error"} and isinstance(doc["error"]["message"], str)
    return doc["error"]


def test_checkpoint(served) -> None:
    server, d = served
    status, headers, body = request(server, "/checkpoint")
    assert status == 200 and body == (d / "checkpoint").read_bytes()
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert "max-age=2" in headers["cache-control"] and "immutable" not in headers["cache-control"]
    assert body.startswith(f"{ORIGIN}\n320\n".encode())


def test_full_and_partial_tiles(served) -> None:
    server, d = served
    status, headers, body = request(server, "/tile/0/000")
    assert status == 200 and body == (d / "tile/0/000").read_bytes() and len(body) == 8192
    assert headers["content-type"] == "application/octet-stream"
    assert headers["cache-control"] == CACHE_IMMUTABLE.decode()
    status, _, part = request(server, "/tile/0/001.p/64")
    assert status == 200 and len(part) == 64 * 32
    # The width-44 partial (size 300) is gone (a log MAY delete it): the first 44 hashes of a wider one.
    kept = (d / "tile/0/001.p/44").read_bytes()
    (d / "tile/0/001.p/44").unlink()
    status, headers, narrow = request(server, "/tile/0/001.p/44")
    assert status == 200 and narrow == part[: 44 * 32] == kept and headers["cache-control"] == CACHE_IMMUTABLE.decode()
    status, _, top = request(server, "/tile/1/000.p/1")
    assert (status == 200 and top == merkle.leaf_hash(b"")) or len(top) == 32
    assert top == (d / "tile/1/000.p/1").read_bytes()


def test_tiles_fold_to_the_signed_root(served) -> None:
    server, d = served
    led = Ledger.open(d)

    def fetch(level: int, index: int, width: int) -> bytes:
        return request(server, "/" + tiles.tile_path(level, index, width))[2]

    reader = tiles.TileHashReader(320, fetch)
    assert merkle.tree_root(320, reader) == led.root
    led.close()


@pytest.mark.parametrize(
    "path",
    ["/tile/0/001", "/tile/0/001.p/65", "/tile/0/002.p/1", "/tile/1/000", "/tile/2/000.p/1", "/tile/entries/001",
     "/tile/entries/001.p/65", "/tile/entries/x001/000"],
)
def test_beyond_the_signed_tree_is_404(served, path: str) -> None:
    server, _ = served
    status, headers, body = request(server, path)
    assert status == 404 and headers["content-type"] == "application/json"
    assert "not part of the signed tree" in error_of(body)["message"]


def test_entry_bundles(served) -> None:
    server, d = served
    led = Ledger.open(d)
    lines = list(led.iter_lines())
    # The ledger wrote its own bundles (log/entries.py): the full one and the partials of sizes 300 and 320.
    assert sorted(bundles_of(led)) == ["tile/entries/000", "tile/entries/001.p/44", "tile/entries/001.p/64"]
    status, headers, body = request(server, "/tile/entries/000")
    assert status == 200 and decode_entry_bundle(body, 256) == lines[:256]
    assert headers["cache-control"] == CACHE_IMMUTABLE.decode() and "content-encoding" not in headers
    status, headers, body = request(server, "/tile/entries/001.p/64", headers={"Accept-Encoding": "gzip, identity"})
    assert status == 200 and headers["content-encoding"] == "gzip" and headers["vary"] == "accept-encoding"
    assert decode_entry_bundle(gzip.decompress(body), 64) == lines[256:320]
    # A partial bundle whose file is gone: the first entries of the wider one.
    (d / "tile/entries/001.p/44").unlink(missing_ok=True)
    status, _, body = request(server, "/tile/entries/001.p/44")
    assert status == 200 and decode_entry_bundle(body, 44) == lines[256:300]
    status, _, body = request(server, "/tile/entries/001.p/10", headers={"Accept-Encoding": "gzip;q=0"})
    assert status == 200 and decode_entry_bundle(body, 10) == lines[256:266]
    led.close()


def test_missing_bundle_is_404(served) -> None:
    server, d = served
    shutil.rmtree(d / "tile/entries")
    status, _, body = request(server, "/tile/entries/000")
    assert status == 404 and "tile/entries/000" in error_of(body)["message"]


def test_lookup_and_proof(served) -> None:
    server, d = served
    commit = sample_commit(7)
    status, headers, body = request(server, f"/lookup/{commit[:10]}")
    assert status == 200 and headers["content-type"] == "application/json" and headers["cache-control"] == "no-cache"
    doc = json.loads(body)
    assert list(doc)[:4] == ["index", "lakefs_commit", "row", "tlog_proof"]
    assert doc["index"] == 7 and doc["lakefs_commit"] == commit and doc["row"]["lakefs_commit"] == commit
    led = Ledger.open(d)
    cp, index = verify_tlog_proof(doc["tlog_proof"].encode(), led.entry(7).line, [led.verifier], origin=ORIGIN)
    assert (cp.size, index) == (320, 7)
    status, headers, proof = request(server, f"/proof/{commit}")
    assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
    assert proof == doc["tlog_proof"].encode()
    led.close()


def test_lookup_statuses(served) -> None:
    server, _ = served
    status, _, body = request(server, "/lookup/nosuchcommit")
    assert status == 404 and error_of(body)["type"] == "CommitNotFoundError"
    status, _, body = request(server, "/proof/nosuchcommit")
    assert status == 404
    status, _, body = request(server, "/lookup/a")
    err = error_of(body)
    assert status == 409 and err["type"] == "AmbiguousCommitError"
    assert len(err["candidates"]) >= 2
    assert all(c["lakefs_commit"].startswith("a") and isinstance(c["index"], int) for c in err["candidates"])
    for bad in ("/lookup/has%20space", "/lookup/" + "a" * 129, "/lookup/%C3%A9", "/lookup/..", "/proof/x*y"):
        status, _, body = request(server, bad)
        assert status == 400, bad
        assert error_of(body)["type"] == "FormatError"
    status, _, _ = request(server, "/lookup/")
    assert status == 400


def test_kept_checkpoints(served) -> None:
    server, d = served
    for size in (0, 300, 320):
        status, headers, body = request(server, f"/checkpoints/{size}")
        assert status == 200 and body == (d / "checkpoints" / str(size)).read_bytes()
        assert headers["content-type"] == "text/plain; charset=utf-8"
    status, _, body = request(server, "/checkpoints/301")
    assert status == 404 and "never signed" in error_of(body)["message"]
    for bad in ("/checkpoints/01", "/checkpoints/-1", "/checkpoints/1e3", "/checkpoints/" + "9" * 21):
        status, _, _ = request(server, bad)
        assert status == 400, bad
    status, _, _ = request(server, "/checkpoints/" + "9" * 20)
    assert status == 404


def test_head_and_methods(served) -> None:
    server, _ = served
    status, headers, body = request(server, "/tile/0/000", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "8192"
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, headers, body = request(server, "/checkpoint", method=method)
        assert status == 405 and headers["allow"] == "GET, HEAD" and error_of(body)["status"] == 405


@pytest.mark.parametrize(
    "path",
    [
        "/log.key", "/tile/../log.key", "/tile/0/../../log.key", "/tile/0/%2e%2e/%2e%2e/log.key",
        "/tile/entries/../../log.key", "/tile/0/000/../../../log.key", "/checkpoints/../log.key",
        "/rollback-index.jsonl", "/index.sqlite", "/tile//0/000", "/tile/0/000%00", "/lookup/../log.key",
        "/tile/0/000.p/0", "/tile/64/000", "/tile/01/000", "/tile/0/x999/x999/x999/x999/x999/x999/x999/000",
        "//checkpoint", "/checkpoint/", "/CHECKPOINT",
    ],
)
def test_traversal_and_odd_paths_never_reach_a_file(served, path: str) -> None:
    server, d = served
    status, _, body = request(server, path)
    assert status in (400, 404), (path, status)
    err = error_of(body)
    assert err["status"] == status
    assert b"PRIVATE" not in body and (d / "log.key").read_bytes() not in body


def test_oversize_path_is_414(served) -> None:
    server, _ = served
    status, _, body = request(server, "/lookup/" + "a" * MAX_PATH_BYTES)
    assert status == 414 and error_of(body)["type"] == "URITooLong"
    status, _, _ = request(server, "/tile/0/" + "x001/" * 200 + "000")
    assert status == 414


def test_appends_are_served_without_a_restart(served) -> None:
    server, d = served
    led = Ledger.open(d)
    signer = load_signer((d / "log.key").read_bytes())
    assert request(server, "/tile/0/001")[0] == 404
    led.append(sample_jsonl(10, start=320), signer=signer)
    status, _, body = request(server, "/checkpoint")
    assert status == 200 and body.split(b"\n")[1] == b"330"
    status, _, body = request(server, f"/lookup/{sample_commit(325)}")
    assert status == 200 and json.loads(body)["index"] == 325
    assert json.loads(body)["tlog_proof"].count("\n330\n") == 1
    assert request(server, "/tile/0/001.p/74")[0] == 200
    assert request(server, "/checkpoints/330")[0] == 200
    led.close()


def test_a_corrupt_row_is_a_500_not_a_wrong_answer(served) -> None:
    server, d = served
    jsonl = d / "rollback-index.jsonl"
    data = jsonl.read_bytes()
    commit = sample_commit(3)
    start = data.index(commit.encode())
    jsonl.write_bytes(data[: start + 70] + b"X" + data[start + 71 :])  # a byte of row 3 changed
    status, _, body = request(server, f"/lookup/{commit}")
    err = error_of(body)
    assert status == 500 and err["type"] == "CorruptLedgerError"


def test_empty_ledger(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    Ledger.init(d, origin=ORIGIN).close()
    app = LogApp(d)
    with ServerThread(app) as server:
        status, _, body = request(server, "/checkpoint")
        assert status == 200 and body.split(b"\n")[1:3] == [b"0", base64.b64encode(merkle.EMPTY_ROOT)]
        assert request(server, "/tile/0/000.p/1")[0] == 404
        assert request(server, "/lookup/abc")[0] == 404
    app.close()


def test_not_a_ledger_fails_at_startup(tmp_path: Path) -> None:
    app = LogApp(tmp_path)
    assert app.handle("GET", "/checkpoint").status == 500
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="critical"))
    with pytest.raises(SystemExit):
        server.run(sockets=[])


def test_parse_listen() -> None:
    from kfm_ledger.errors import FormatError
    from kfm_ledger.net.serve import parse_listen

    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ("8080", "host:", ":80", "host:port", "host:65536", "host:-1"):
        with pytest.raises(FormatError):
            parse_listen(bad)


def test_head_of_a_lookup_has_the_get_headers(served) -> None:
    server, _ = served
    path = f"/lookup/{sample_commit(11)}"
    _, get_headers, body = request(server, path)
    status, headers, empty = request(server, path, method="HEAD")
    assert (status, empty) == (200, b"")
    assert headers["content-length"] == get_headers["content-length"] == str(len(body))


def test_gzipped_bundles_are_compressed_once(served) -> None:
    server, d = served
    gz = {"Accept-Encoding": "gzip"}
    status, _, first = request(server, "/tile/entries/000", headers=gz)
    assert status == 200
    (d / "tile/entries/000").rename(d / "moved")  # a second answer can only come from the cache
    status, headers, again = request(server, "/tile/entries/000", headers=gz)
    assert status == 200 and again == first and headers["content-encoding"] == "gzip"
    status, _, _ = request(server, "/tile/entries/000")  # identity: read from storage, which lost it
    assert status == 404
    (d / "moved").rename(d / "tile/entries/000")


def test_the_python_example_of_network_md_runs(served, tmp_path: Path, monkeypatch) -> None:
    """docs/network.md's "From Python" block, run as written against a live server (only the
    URL and the commit are this test's; sample_commit(5) starts with 5c97dc429e)."""
    server, d = served
    text = (Path(__file__).parents[2] / "docs" / "network.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "5c97dc429e" in block and sample_commit(5).startswith("5c97dc429e")
    shutil.copy(d / "log.vkey", tmp_path / "log.vkey")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(block.replace("http://127.0.0.1:8080", server.url), scope)
    assert scope["result"].index == 5 and [e.kind for e in scope["events"]] == ["checkpoint", "rows"]


def _lookup_doc(server: ServerThread, commit: str) -> dict:
    status, _, body = request(server, f"/lookup/{commit}")
    assert status == 200, body
    return json.loads(body)


def test_lookup_proofs_are_the_ledgers_own(served) -> None:
    """Rows of the full tile 0 (the first proves the tile's upper path, the next reuse it) and of
    the partial tile 1: every answer is byte for byte the ledger's own tlog-proof, and the JSON
    is the compact encoding of the documented object."""
    server, d = served
    led = Ledger.open(d)
    for i in (7, 8, 255, 0, 7, 300, 319):
        status, _, body = request(server, f"/lookup/{sample_commit(i)}")
        assert status == 200
        proof = format_tlog_proof(led.tlog_proof(i))
        doc = {"index": i, "lakefs_commit": sample_commit(i), "row": "ROW", "tlog_proof": proof.decode(),
               "tree_size": 320}
        want = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        assert body == want.replace(b'"ROW"', led.entry(i).line)
        assert request(server, f"/proof/{sample_commit(i)[:12]}")[2] == proof
    led.close()


def test_a_new_checkpoint_is_seen_by_the_next_lookup(served) -> None:
    """What was proven under one checkpoint is not reused under the next: an append by another
    writer, and the next lookup of a row of an already proven tile answers under the new tree."""
    server, d = served
    assert _lookup_doc(server, sample_commit(7))["tree_size"] == 320
    assert _lookup_doc(server, sample_commit(9))["tree_size"] == 320
    led = Ledger.open(d)
    led.append(sample_jsonl(10, start=320), signer=load_signer((d / "log.key").read_bytes()))
    for i in (9, 7, 325):
        doc = _lookup_doc(server, sample_commit(i))
        assert doc["tree_size"] == 330 and doc["tlog_proof"].encode() == format_tlog_proof(led.tlog_proof(i))
        cp, index = verify_tlog_proof(doc["tlog_proof"].encode(), led.entry(i).line, [led.verifier], origin=ORIGIN)
        assert (cp.size, index) == (330, i)
    led.close()


def test_a_row_changed_after_its_tile_was_proven_is_a_500(served) -> None:
    server, d = served
    _lookup_doc(server, sample_commit(3))  # tile 0's upper path proven
    jsonl = d / "rollback-index.jsonl"
    data = jsonl.read_bytes()
    at = data.index(b'"producer":"', data.index(sample_commit(4).encode())) + 12
    jsonl.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])  # same length: row 4 only
    status, _, body = request(server, f"/lookup/{sample_commit(4)}")
    err = error_of(body)
    assert status == 500 and err["type"] == "CorruptLedgerError" and "row 4 " in err["message"]
    assert _lookup_doc(server, sample_commit(5))["index"] == 5


def test_a_wrong_cached_tile_never_answers(served) -> None:
    """A cached tile expansion that disagrees with the proven tile root is not served: the full
    path is taken again (the cache cleared, the tiles re-read)."""
    _, d = served
    app = LogApp(d)
    good = app.handle("GET", f"/proof/{sample_commit(5)}").body
    assert app.handle("GET", f"/proof/{sample_commit(6)}").status == 200  # tile 0's upper path proven
    cache = app.ledger().prover.tile_cache
    levels = cache.get((0, 0, tiles.TILE_WIDTH))
    assert levels is not None
    cache.clear()
    # Node (2, 0), the level-2 sibling on leaf 5's path, replaced in the cached expansion.
    cache.put((0, 0, tiles.TILE_WIDTH), (*levels[:2], bytes(32) + levels[2][32:], *levels[3:]))
    assert app.handle("GET", f"/proof/{sample_commit(5)}").body == good
    assert cache.get((0, 0, tiles.TILE_WIDTH)) == levels  # expanded again from the stored tile
    app.close()


def test_an_index_pointing_at_another_row_is_a_500(served) -> None:
    import sqlite3

    server, d = served
    a, b = sample_commit(2), sample_commit(3)
    with sqlite3.connect(d / "index.sqlite") as db:
        db.execute("UPDATE entries SET lakefs_commit = 'x' WHERE leaf = 2")
        db.execute(f"UPDATE entries SET lakefs_commit = '{a}' WHERE leaf = 3")
        db.execute(f"UPDATE entries SET lakefs_commit = '{b}' WHERE leaf = 2")
    status, _, body = request(server, f"/lookup/{a}")
    err = error_of(body)
    assert status == 500 and err["type"] == "CorruptLedgerError" and b in err["message"]


def test_the_proven_tile_memo_is_bounded(served, monkeypatch) -> None:
    from kfm_ledger.net import lookup

    _, d = served
    monkeypatch.setattr(lookup, "MEMO_TILES", 2)
    led = Ledger.open(d)
    head = lookup._Head(led.checkpoint)
    for k in range(5):
        head.remember(k, bytes(32), b"")
    assert sorted(head.tiles) == [3, 4]
    led.close()


def test_the_served_index_has_a_large_page_cache(served) -> None:
    from kfm_ledger.net.server import INDEX_CACHE_KIB, ServedIndexLocation

    _, d = served
    app = LogApp(d)
    led = app.ledger()
    assert isinstance(led.index_location, ServedIndexLocation)
    idx = led.stored_index()
    assert idx is not None and idx._conn.execute("PRAGMA cache_size").fetchone() == (-INDEX_CACHE_KIB,)
    assert app.handle("GET", f"/lookup/{sample_commit(9)}").status == 200
    app.close()
    led.index_location.discard()  # the ledger's own index: gone, and rebuilt on the next use
    assert not (d / "index.sqlite").exists()
    assert app.handle("GET", f"/lookup/{sample_commit(9)}").status == 200
    assert (d / "index.sqlite").exists()
    app.close()
