"""No error message, and no error's evidence, ever echoes private key text.

A private key file passed where a tlog-proof, checkpoint, signed note or verifier key
belongs used to be quoted (the first 60 characters: ~20 base64 characters of the seed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfm_ledger.cli import app
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import Verifier, generate_key
from kfm_ledger.core.note import parse_note
from kfm_ledger.core.redact import HIDDEN_KEY_TEXT, holds_private_key
from kfm_ledger.core.signed_checkpoint import parse_unverified
from kfm_ledger.core.tlogproof import parse_tlog_proof
from kfm_ledger.errors import KfmError
from kfm_ledger.log.ledger import Ledger

from conftest import private_key_secret

ORIGIN = "example.org/no-echo"


def _key_text() -> str:
    text, _ = generate_key(ORIGIN)
    assert text.startswith("PRIVATE+KEY+"), text
    return text


def _secret_pieces(text: str) -> list[str]:
    """Every 6-character piece of the key's base64 part: none may appear anywhere."""
    b64 = private_key_secret(text)
    return [b64[i : i + 6] for i in range(len(b64) - 5)]


def _assert_hidden(error: BaseException, text: str) -> None:
    shown = str(error)
    if isinstance(error, KfmError):
        shown += "\n" + error.diagnostics() + "\n" + json.dumps(error.evidence(), default=str)
    for piece in _secret_pieces(text):
        assert piece not in shown, (piece, shown)
    assert "PRIVATE+KEY+" + ORIGIN not in shown


VARIANTS = [
    lambda t: t,
    lambda t: t + "\n",
    lambda t: " " + t + "\n\nmore\n",
    lambda t: "c2sp.org/tlog-proof@v1\n" + t + "\n",
    lambda t: "c2sp.org/tlog-proof@v1\nindex " + t + "\n",
    lambda t: "origin\n1\n" + t + "\n\n\u2014 " + t + "\n",
    lambda t: t.lower(),
]


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_parsers_never_echo_a_private_key(variant: int) -> None:
    key = _key_text()
    data = VARIANTS[variant](key)
    for parse in (
        lambda: parse_tlog_proof(data.encode()),
        lambda: parse_note(data.encode()),
        lambda: parse_unverified(data.encode()),
        lambda: Checkpoint.parse(data),
        lambda: Verifier.from_vkey(data),
    ):
        with pytest.raises((KfmError, ValueError)) as e:
            parse()
        _assert_hidden(e.value, key)


def test_holds_private_key() -> None:
    assert holds_private_key("PRIVATE+KEY+x+00000000+AAAA")
    assert holds_private_key(b"  private+key+x")
    assert not holds_private_key("example.org/log+0058954b+AThmMzTEK854")


def test_verify_proof_with_the_private_key_file_echoes_none_of_it(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    Ledger.init(d, origin=ORIGIN).close()
    key_text = (d / "log.key").read_text()
    entry = tmp_path / "entry"
    entry.write_text("x\n")
    runner = CliRunner()
    for args in (
        [str(d / "log.key"), "--vkey", str(d / "log.vkey")],
        [str(d / "log.key"), "--vkey", str(d / "log.key")],
        [str(entry), "--vkey", str(d / "log.key")],
    ):
        for extra in ([], ["--json"]):
            r = runner.invoke(app, ["verify-proof", *args, "--entry", str(entry), *extra])
            assert r.exit_code == 1, r.output
            out = r.output + (r.stderr if r.stderr_bytes is not None else "")
            for piece in _secret_pieces(key_text.strip()):
                assert piece not in out, (args, extra, out)
    r = runner.invoke(app, ["verify-proof", str(d / "log.key"), "--vkey", str(d / "log.vkey"), "--entry", str(entry)])
    assert HIDDEN_KEY_TEXT in r.output + r.stderr
