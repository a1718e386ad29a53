"""s3:// resolution against a real S3 server (SeaweedFS, started by the tests; tests/s3/seaweed.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kfm_ledger.config import parse_config
from kfm_ledger.errors import ResolveError
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.resolve import Resolver
from kfm_ledger.s3 import parse_s3_url

from .world import make_world
from conftest import ORIGIN, signer_of


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _config(tmp_path: Path, mappings: str = "") -> object:
    return parse_config(f"[resolve]\n{mappings}\n".encode(), tmp_path / "kfm.toml")


def test_s3_digest_read_and_missing(s3_server, s3_location: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    loc = parse_s3_url(s3_location)
    client = s3_server.client(loc.prefix)
    data = os.urandom(3 * 1024 * 1024 + 5)
    client.put("art/a.tar.zst", data)
    r = Resolver(_config(tmp_path))
    d = r.digest(f"{s3_location}/art/a.tar.zst")
    assert (d.sha256, d.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert r.read(f"{s3_location}/art/a.tar.zst", max_bytes=len(data)) == data
    with pytest.raises(ResolveError, match="larger than the limit"):
        r.read(f"{s3_location}/art/a.tar.zst", max_bytes=1000)
    with pytest.raises(ResolveError, match="not found"):
        r.digest(f"{s3_location}/art/missing")


def test_s3_uri_prefix_mapping_and_cache(s3_server, s3_location: str, s3_env: dict[str, str],
                                         tmp_path: Path) -> None:
    loc = parse_s3_url(s3_location)
    s3_server.client(loc.prefix).put("registry/x.tar.zst", b"bundle bytes")
    cfg = _config(tmp_path, f'"s3://kfm-registry/" = "{s3_location}/registry/"')
    r = Resolver(cfg, cache_dir=tmp_path / "cache")
    sha = hashlib.sha256(b"bundle bytes").hexdigest()
    first = r.digest("s3://kfm-registry/x.tar.zst", expected=sha)
    assert first.sha256 == sha and not first.cached and first.location == f"{s3_location}/registry/x.tar.zst"
    s3_server.client(loc.prefix).delete("registry/x.tar.zst")
    again = r.digest("s3://kfm-registry/x.tar.zst", expected=sha)  # served by the cache
    assert again.cached and again.sha256 == sha


def test_verify_deep_over_s3_end_to_end(s3_server, s3_location: str, s3_env: dict[str, str],
                                        tmp_path: Path) -> None:
    """Rows point at s3://kfm-registry/...; kfm.toml maps that to the S3 server's bucket."""
    world = make_world(tmp_path / "world")
    rows = [world.row(i) for i in range(3)]
    loc = parse_s3_url(s3_location)
    client = s3_server.client(loc.prefix)
    registry = world.mirror / "registry"
    for p in registry.rglob("*"):
        if p.is_file():
            client.put("registry/" + p.relative_to(registry).as_posix(), p.read_bytes())
    cfg = world.config_path.read_text().replace(f'"{world.mirror}/registry/"', f'"{s3_location}/registry/"')
    world.config_path.write_text(cfg + f'[s3]\nendpoint_url = "{s3_server.endpoint}"\nallow_http = true\n')
    led = Ledger.init(tmp_path / "ledger", origin=ORIGIN)
    led.append(rows, signer=signer_of(led))
    led.close()
    env = {**os.environ, **s3_env}
    env.pop("AWS_ENDPOINT_URL", None)  # the [s3] section says where the server is
    p = subprocess.run([sys.executable, "-m", "kfm_ledger", "verify", "--deep", "--ledger", str(tmp_path / "ledger"),
                        "--config", str(world.config_path), "--json"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["summary"]["failed"] == 0
    client.put(f"registry/rollback-registry/artifacts/{rows[2].lakefs_commit}.tar.zst", b"replaced")
    p = subprocess.run([sys.executable, "-m", "kfm_ledger", "verify", "--deep", "--ledger", str(tmp_path / "ledger"),
                        "--config", str(world.config_path), "--json"], capture_output=True, text=True, env=env,
                       timeout=120)
    doc = json.loads(p.stdout)
    assert p.returncode == 1 and [r["index"] for r in doc["rows"]] == [2]
    assert hashlib.sha256(b"replaced").hexdigest() in doc["rows"][0]["checks"][0]["message"]
