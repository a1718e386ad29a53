"""``[[witness]]`` entries of kfm.toml as the log side reads them: the verifier key given inline
(key names are usually URL paths with ``/``, base64 holds ``+`` and ``/``) or as a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_ledger.config import parse_config
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Verifier
from kfm_ledger.errors import ConfigFileError


def _vkey_with(chars: str) -> str:
    """A cosigner verifier key whose base64 holds every character of ``chars``."""
    for n in range(2000):
        vkey = CosignatureSigner.generate(f"witness.example/w{n}").verifier().vkey_text()
        if all(c in vkey.split("+", 2)[2] for c in chars):
            return vkey
    raise AssertionError("no such key found")


@pytest.mark.parametrize("chars", ["+", "/", "+/"])
def test_inline_vkey_with_slashes_and_pluses(chars: str) -> None:
    vkey = _vkey_with(chars)
    cfg = parse_config(f'[[witness]]\nurl = "http://127.0.0.1:1"\nvkey = "{vkey}"\n'.encode())
    (w,) = cfg.witnesses
    assert w.vkey == vkey and w.vkey_path is None
    assert Verifier.from_vkey(w.vkey).name.startswith("witness.example/w")


def test_vkey_file_relative_to_the_config(tmp_path: Path) -> None:
    vkey = _vkey_with("+")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "w.vkey").write_text(vkey + "\n")
    cfg = parse_config(b'[[witness]]\nurl = "https://w.example"\nvkey = "keys/w.vkey"\n', tmp_path / "kfm.toml")
    (w,) = cfg.witnesses
    assert w.vkey == vkey and w.vkey_path == tmp_path / "keys" / "w.vkey"


def test_missing_vkey_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="witness"):
        parse_config(b'[[witness]]\nurl = "https://w.example"\nvkey = "nope+x"\n', tmp_path / "kfm.toml")
