"""kfm.toml parsing: every section, defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_ledger.config import KfmConfig, load_config, parse_config, resolve_config_path
from kfm_ledger.errors import ConfigFileError

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "kfm.example.toml"


def test_example_file_parses(tmp_path: Path) -> None:
    (tmp_path / "witness.vkey").write_text("w1+01234567+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n")
    cfg = parse_config(EXAMPLE.read_bytes(), tmp_path / "kfm.toml")
    assert cfg.resolve == {"s3://kfm-registry/": "/srv/mirror/kfm-registry/"}
    assert cfg.s3.endpoint_url == "http://127.0.0.1:8333" and cfg.s3.allow_http is True
    assert cfg.attestation.trusted_root == tmp_path / "trusted_root.json"
    assert cfg.attestation.identities[0].issuer == "https://token.actions.githubusercontent.com"
    assert cfg.attestation.keys[0].path == tmp_path / "keys/ci.pub"
    assert cfg.energy.co2e_per_kwh == (0.0, 1.5)
    assert cfg.witnesses[0].vkey.startswith("w1+") and cfg.witnesses[0].vkey_path == tmp_path / "witness.vkey"


def test_defaults() -> None:
    assert load_config(None) == KfmConfig()
    assert parse_config(b"") == KfmConfig()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[nope]\n", "nope"),
        ("[s3]\nendpoint = 'x'\n", "s3.endpoint"),
        ("[s3]\nallow_http = 'yes'\n", "s3.allow_http"),
        ("[[attestation.identity]]\nsan = 'x'\n", "attestation.identity[0].issuer"),
        ("[[attestation.identity]]\nissuer = 'i'\n", "attestation.identity[0]"),
        ("[[attestation.identity]]\nissuer = 'i'\nsan_regex = '('\n", "attestation.identity[0].san_regex"),
        ("[energy]\nco2e_per_kwh = [2.0, 1.0]\n", "energy.co2e_per_kwh"),
        ("[[witness]]\nurl = 'ftp://x'\nvkey = 'a+b+c'\n", "witness[0].url"),
        ("[[witness]]\nurl = 'http://x'\nvkey = 'missing.vkey'\n", "witness[0].vkey"),
        ("[resolve]\n'file:///a/' = 3\n", "resolve.file:///a/"),
    ],
)
def test_errors_name_the_key(text: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text.encode(), tmp_path / "kfm.toml")
    assert info.value.key == key
    assert info.value.exit_code == 2


def test_not_toml_and_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        parse_config(b"[s3\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        parse_config(b"\xff")
    with pytest.raises(ConfigFileError):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigFileError):
        load_config(tmp_path)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFM_CONFIG", raising=False)
    assert resolve_config_path(None, tmp_path) is None
    (tmp_path / "kfm.toml").write_text("")
    assert resolve_config_path(None, tmp_path) == tmp_path / "kfm.toml"
    monkeypatch.setenv("KFM_CONFIG", "/etc/kfm.toml")
    assert resolve_config_path(None, tmp_path) == Path("/etc/kfm.toml")
    assert resolve_config_path("x.toml", tmp_path) == Path("x.toml")
