"""Errors say what to do: the exact-bytes rule of verify-proof entries, a key of the wrong kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof
from kfm_ledger.errors import KeyFormatError, RootMismatchError
from kfm_ledger.log.ledger import Ledger

from conftest import ORIGIN, fill


def test_a_private_key_given_as_a_verifier_key_says_so_without_showing_it() -> None:
    signer = Signer.generate("example.com/log")
    with pytest.raises(KeyFormatError) as e:
        Verifier.from_vkey(signer.private_key_text())
    assert "private signing key" in str(e.value) and "log.vkey" in str(e.value)
    assert "8 hexadecimal digits" not in str(e.value)
    assert signer.private_key_text().rsplit("+", 1)[-1] not in str(e.value)


def test_a_verifier_key_given_as_a_private_key_says_so() -> None:
    signer = Signer.generate("example.com/log")
    with pytest.raises(KeyFormatError) as e:
        Signer.from_private_key_text(signer.verifier().vkey_text())
    assert "it is a verifier key" in str(e.value) and "log.key" in str(e.value)


def test_a_pretty_printed_entry_is_told_the_exact_bytes_rule(tmp_path: Path) -> None:
    led = Ledger.init(tmp_path / "l", origin=ORIGIN)
    fill(led, 5)
    entry = led.entry(2)
    proof = format_tlog_proof(led.tlog_proof(2))
    pretty = json.dumps(json.loads(entry.line), indent=2).encode()
    assert verify_tlog_proof(proof, entry.line, [led.verifier])[1] == 2
    with pytest.raises(RootMismatchError) as e:
        verify_tlog_proof(proof, pretty, [led.verifier])
    message = str(e.value)
    assert "exact bytes" in message and "kfm get" in message and "looks reformatted" in message
    assert message == e.value.diagnostics()
    with pytest.raises(RootMismatchError) as e:
        verify_tlog_proof(proof, led.entry(3).line, [led.verifier])
    assert "looks reformatted" not in str(e.value) and "another entry or index" in str(e.value)
