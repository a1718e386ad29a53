"""s3://bucket/prefix parsing (kfm_ledger.s3.location) and connection settings (kfm_ledger.s3.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.config import S3Settings
from kfm_ledger.errors import KfmError, S3LocationError
from kfm_ledger.s3 import S3Location, is_s3_url, parse_s3_url, resolve_connection


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/ledgers/prod", "my-bucket", "ledgers/prod"),
        ("s3://my-bucket/ledgers/prod/", "my-bucket", "ledgers/prod"),
        ("S3://a.b-c/x", "a.b-c", "x"),
    ],
)
def test_parse_accepts_bucket_and_prefix(url: str, bucket: str, prefix: str) -> None:
    loc = parse_s3_url(url)
    assert (loc.bucket, loc.prefix) == (bucket, prefix)
    assert parse_s3_url(loc.url()) == loc


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("s3://", "bucket"),
        ("s3:///prefix", "bucket"),
        ("s3://ab/x", "bucket"),
        ("s3://Upper/x", "bucket"),
        ("s3://-bad/x", "bucket"),
        ("s3://a..b/x", "bucket"),
        ("s3://192.168.1.1/x", "bucket"),
        ("s3://b" + "x" * 63, "bucket"),
        ("s3://bucket//x", "prefix"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/./b", "prefix"),
        ("s3://bucket/a\\b", "prefix"),
        ("s3://bucket/a\nb", "prefix"),
        ("s3://bucket/" + "p" * 600, "prefix"),
        ("s3://bucket/x?versionId=1", "url"),
        ("s3://bucket/x#frag", "url"),
        ("s3://key:secret@bucket/x", "url"),
    ],
)
def test_parse_refuses_bad_locations_naming_the_part(url: str, field: str) -> None:
    with pytest.raises(S3LocationError) as info:
        parse_s3_url(url)
    assert info.value.field == field
    assert info.value.location == url
    assert info.value.exit_code == 2


def test_not_an_s3_url() -> None:
    assert not is_s3_url("/srv/ledger")
    assert not is_s3_url(None)
    with pytest.raises(S3LocationError):
        parse_s3_url("https://bucket/x")


def test_keys_are_joined_under_the_prefix_and_back() -> None:
    loc = S3Location("b-1", "led/ger")
    assert loc.key("tile/0/000") == "led/ger/tile/0/000"
    assert loc.relative("led/ger/tile/0/000") == "tile/0/000"
    assert loc.relative("led/gerx/tile") is None
    assert S3Location("b-1").key("checkpoint") == "checkpoint"
    assert loc.child("sub/").prefix == "led/ger/sub"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_parse_never_raises_anything_but_a_kfm_error(tail: str) -> None:
    try:
        loc = parse_s3_url("s3://" + tail)
    except KfmError:
        return
    assert parse_s3_url(loc.url()) == loc
    assert all(seg not in ("", ".", "..") for seg in loc.prefix.split("/")) or loc.prefix == ""


# -- connection settings ---------------------------------------------------------------------
def test_settings_come_from_config_then_environment(tmp_path: Path) -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://env:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "AKIDENV",
        "AWS_SECRET_ACCESS_KEY": "secretenv",
    }
    conn = resolve_connection(None, env, home=tmp_path)
    assert (conn.endpoint_url, conn.region, conn.allow_http) == ("http://env:9000", "eu-west-1", True)
    assert conn.access_key_id == "AKIDENV"
    conn = resolve_connection(
        S3Settings(endpoint_url="https://cfg.example/", region="us-west-2", allow_http=False), env, home=tmp_path
    )
    assert (conn.endpoint_url, conn.region, conn.allow_http) == ("https://cfg.example", "us-west-2", False)
    assert "secretenv" not in repr(conn) and "AKIDENV" not in repr(conn)


def test_defaults_without_anything(tmp_path: Path) -> None:
    conn = resolve_connection(None, {}, home=tmp_path)
    assert conn.endpoint_url is None and conn.region == "us-east-1" and not conn.allow_http
    assert conn.access_key_id is None


def test_aws_shared_files_of_the_profile(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = s1\n"
        "[ci]\naws_access_key_id = AKIDCI\naws_secret_access_key = s2\naws_session_token = t2\n"
    )
    (aws / "config").write_text("[profile ci]\nregion = ap-south-1\nendpoint_url = https://minio.example\n")
    conn = resolve_connection(None, {"AWS_PROFILE": "ci"}, home=tmp_path)
    assert (conn.access_key_id, conn.secret_access_key, conn.session_token) == ("AKIDCI", "s2", "t2")
    assert (conn.region, conn.endpoint_url) == ("ap-south-1", "https://minio.example")
    assert resolve_connection(None, {}, home=tmp_path).access_key_id == "AKIDDEF"
    # the environment's pair wins over the profile's, never mixed
    env = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "senv"}
    assert resolve_connection(None, env, home=tmp_path).session_token is None


def test_a_broken_aws_file_is_ignored(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("not an ini file [[[")
    assert resolve_connection(None, {}, home=tmp_path).access_key_id is None


def test_plain_http_needs_allow_http(tmp_path: Path) -> None:
    with pytest.raises(S3LocationError) as info:
        resolve_connection(None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, home=tmp_path)
    assert info.value.field == "allow_http" and "AWS_ALLOW_HTTP=true" in str(info.value)
    with pytest.raises(S3LocationError) as info:
        resolve_connection(S3Settings(endpoint_url="ftp://x"), {}, home=tmp_path)
    assert info.value.field == "endpoint_url"
    with pytest.raises(S3LocationError) as info:
        resolve_connection(None, {"AWS_ALLOW_HTTP": "maybe"}, home=tmp_path)
    assert info.value.field == "allow_http"
    conn = resolve_connection(S3Settings(endpoint_url="http://h:1", allow_http=True), {}, home=tmp_path)
    assert conn.allow_http


def test_importing_the_s3_layer_does_not_import_obstore() -> None:
    import subprocess
    import sys

    code = "import sys, kfm_ledger.s3, kfm_ledger.s3.client; print('obstore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
