"""kfm_ledger.log.keys: key files, the default signing key, writing a key pair."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import KeyFormatError, NotALedgerError
from kfm_ledger.log.keys import default_signer, load_signer, read_text_key, write_key_pair
from kfm_ledger.log.layout import SKEY_KEY
from kfm_ledger.storage import MemoryStorage


def test_write_key_pair_writes_a_private_key_0600_and_its_verifier_key(tmp_path: Path) -> None:
    signer = Signer.generate("kfm.example/log")
    key, vkey = tmp_path / "log.key", tmp_path / "log.vkey"
    write_key_pair(key, vkey, signer.private_key_text(), signer.verifier().vkey_text())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_signer(key.read_bytes()).verifier().vkey_text() == read_text_key(vkey.read_bytes(), "vkey")
    with pytest.raises(FileExistsError):  # keys are never overwritten
        write_key_pair(key, tmp_path / "other.vkey", signer.private_key_text(), "x")


def test_write_key_pair_removes_the_private_key_when_the_verifier_key_cannot_be_written(tmp_path: Path) -> None:
    signer = Signer.generate("kfm.example/log")
    key, vkey = tmp_path / "log.key", tmp_path / "log.vkey"
    vkey.write_text("old\n")
    with pytest.raises(FileExistsError):
        write_key_pair(key, vkey, signer.private_key_text(), signer.verifier().vkey_text())
    assert not key.exists()
    assert vkey.read_text() == "old\n"


def test_default_signer_prefers_the_given_file_then_the_ledgers_key(tmp_path: Path) -> None:
    storage = MemoryStorage()
    with pytest.raises(NotALedgerError, match="no signing key"):
        default_signer(storage)
    own, other = Signer.generate("a"), Signer.generate("b")
    storage.write_private(SKEY_KEY, (own.private_key_text() + "\n").encode())
    assert default_signer(storage).name == "a"
    path = tmp_path / "k"
    path.write_text(other.private_key_text() + "\n")
    os.chmod(path, 0o600)
    assert default_signer(storage, path).name == "b"


def test_read_text_key_wants_one_line_of_utf8() -> None:
    with pytest.raises(KeyFormatError):
        read_text_key(b"\xff", "k")
    with pytest.raises(KeyFormatError):
        read_text_key(b"a\nb\n", "k")
    assert read_text_key(b"  one \n", "k") == "one"


def test_a_key_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from kfm_ledger.errors import StorageError
    from kfm_ledger.inputs import MAX_KEY_FILE_BYTES
    from kfm_ledger.log.keys import load_signer_file

    big = tmp_path / "big.key"
    big.write_bytes(b"P" * (MAX_KEY_FILE_BYTES + 1))
    big.chmod(0o600)
    with pytest.raises(StorageError, match=f"more than the {MAX_KEY_FILE_BYTES}"):
        load_signer_file(big)
