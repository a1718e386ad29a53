"""The S3 client layer (kfm_ledger.s3.client) against a real S3 server (SeaweedFS, weed mini)."""

from __future__ import annotations

import threading

import pytest

from kfm_ledger.errors import (
    ObjectNotFoundError,
    ObjectTooLargeError,
    PreconditionFailedError,
    StorageError,
)
from kfm_ledger.s3 import S3Client, S3Connection, S3Location, open_client, parse_s3_url


@pytest.fixture
def client(s3_server, s3_location: str) -> S3Client:
    return s3_server.client(parse_s3_url(s3_location).prefix)


def test_put_get_head_list_delete(client: S3Client) -> None:
    assert client.head("a/b") is None and not client.exists("a/b")
    etag = client.put("a/b", b"hello")
    assert etag
    assert client.get("a/b") == b"hello"
    info = client.head("a/b")
    assert info is not None and info.size == 5 and info.etag == etag and info.key == "a/b"
    client.put("a/c", b"x")
    client.put("z", b"y")
    assert sorted(i.key for i in client.list("a/")) == ["a/b", "a/c"]
    assert sorted(i.key for i in client.list("")) == ["a/b", "a/c", "z"]
    client.delete("a/b")
    client.delete("a/b")  # absent: no error
    assert not client.exists("a/b")
    with pytest.raises(ObjectNotFoundError) as info_nf:
        client.get("a/b")
    assert info_nf.value.key == "a/b"


def test_list_stays_inside_the_prefix(s3_server, s3_location: str) -> None:
    loc = parse_s3_url(s3_location)
    s3_server.client(loc.prefix).put("k", b"1")
    s3_server.client(loc.prefix + "x").put("k", b"2")  # a sibling prefix sharing the text
    assert [i.key for i in s3_server.client(loc.prefix).list()] == ["k"]


def test_put_if_absent_is_honoured_by_the_server(client: S3Client) -> None:
    client.put_if_absent("once", b"first")
    with pytest.raises(PreconditionFailedError) as info:
        client.put_if_absent("once", b"second")
    assert info.value.key == "once" and info.value.expected is None
    assert client.get("once") == b"first"


def test_put_if_match_is_honoured_by_the_server(client: S3Client) -> None:
    etag = client.put_if_absent("cp", b"v1")
    assert etag is not None
    data, seen = client.get_with_etag("cp")
    assert (data, seen) == (b"v1", etag)
    etag2 = client.put_if_match("cp", b"v2", etag)
    assert etag2 and etag2 != etag
    with pytest.raises(PreconditionFailedError) as info:  # a stale ETag: lost the race
        client.put_if_match("cp", b"v3", etag)
    assert info.value.expected == etag
    assert client.get("cp") == b"v2"
    with pytest.raises(PreconditionFailedError):  # gone (404) is a lost race too
        client.put_if_match("missing", b"v", etag)
    assert not client.exists("missing")


def test_only_one_of_many_racing_creates_and_swaps_wins(client: S3Client) -> None:
    etag = client.put_if_absent("race", b"base")
    assert etag is not None
    wins: list[bytes] = []
    creates: list[bytes] = []
    barrier = threading.Barrier(8)

    def racer(n: int) -> None:
        barrier.wait()
        try:
            client.put_if_match("race", b"w%d" % n, etag)
            wins.append(b"w%d" % n)
        except PreconditionFailedError:
            pass
        try:
            client.put_if_absent("new", b"c%d" % n)
            creates.append(b"c%d" % n)
        except PreconditionFailedError:
            pass

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and client.get("race") == wins[0]
    assert len(creates) == 1 and client.get("new") == creates[0]


def test_size_caps_for_get_and_stream(client: S3Client) -> None:
    client.put("big", b"x" * 5000)
    assert client.get("big", max_bytes=5000) == b"x" * 5000
    with pytest.raises(ObjectTooLargeError) as info:
        client.get("big", max_bytes=4999)
    assert (info.value.limit, info.value.size, info.value.key) == (4999, 5000, "big")
    assert b"".join(client.iter_get("big", chunk_size=1024)) == b"x" * 5000
    with pytest.raises(ObjectTooLargeError):
        list(client.iter_get("big", max_bytes=100))
    with pytest.raises(ObjectNotFoundError):
        list(client.iter_get("nothing"))


def test_get_range(client: S3Client) -> None:
    client.put("r", bytes(range(100)))
    assert client.get_range("r", 10, 5) == bytes(range(10, 15))
    assert client.get_range("r", 0, 0) == b""
    with pytest.raises(StorageError):
        client.get_range("r", 95, 10)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a\\b", "a\x00b"])
def test_unsafe_keys_are_refused_before_any_request(client: S3Client, key: str) -> None:
    with pytest.raises(StorageError) as info:
        client.put(key, b"x")
    assert info.value.key == key


def test_wrong_credentials_are_a_storage_error_without_the_secret(s3_server) -> None:
    good = s3_server.connection()
    bad = S3Connection(
        endpoint_url=good.endpoint_url, allow_http=True, access_key_id="nobody", secret_access_key="wrong-secret-1"
    )
    client = S3Client(S3Location(s3_server.bucket, "denied"), bad, max_retries=0)
    with pytest.raises(StorageError) as info:
        client.put("x", b"1")
    assert "wrong-secret-1" not in str(info.value)
    assert info.value.key == "x"


def test_an_unreachable_endpoint_fails_after_bounded_retries() -> None:
    from s3.seaweed import free_ports

    (port,) = free_ports(1)
    conn = S3Connection(endpoint_url=f"http://127.0.0.1:{port}", allow_http=True, access_key_id="a",
                        secret_access_key="b")
    client = S3Client(S3Location("kfm-test", "x"), conn, timeout=2.0, connect_timeout=1.0, max_retries=1)
    with pytest.raises(StorageError) as info:
        client.get("checkpoint")
    assert "127.0.0.1" in str(info.value) and info.value.key == "checkpoint"


def test_open_client_reads_the_environment(s3_server, s3_location: str) -> None:
    client = open_client(s3_location, environ=s3_server.env())
    client.put_if_absent("via-env", b"1")
    assert client.get("via-env") == b"1"
