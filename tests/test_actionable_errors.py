"""Errors say what to do: the exact-bytes rule of verify-proof entries, a key of the wrong kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof
from kfm_ledger.errors import KeyFormatError, RootMismatchError
from kfm_ledger.log.ledger import Ledger

from conftest import ORIGIN, fill, private_key_secret


def test_a_private_key_given_as_a_verifier_key_says_so_without_showing_it() -> None:
    signer = Signer.generate("example.com/log")
    with pytest.raises(KeyFormatError) as e:
        Verifier.from_vkey(signer.private_key_text())
    assert "private signing key" in str(e.value) and "log.vkey" in str(e.value)
    assert "8 hexadecimal digits" not in str(e.value)
    secret = private_key_secret(signer.private_key_text())
    assert len(secret) == 44 and secret not in str(e.value)


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


# ------------------------------------------------- a signed row edited in place

RESTORE = "from a backup or another copy of the ledger"


def _edited_in_place(tmp_path: Path) -> Path:
    """A 20-row ledger whose line 5 (row 4) got one more byte: every later row moved."""
    d = tmp_path / "l"
    led = Ledger.init(d, origin=ORIGIN)
    fill(led, 20)
    led.close()
    jsonl = d / "rollback-index.jsonl"
    lines = jsonl.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b'"kwh":', b'"kwh":1', 1)
    jsonl.write_bytes(b"\n".join(lines))
    return d


def _kfm(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from kfm_ledger.cli import app

    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_an_edited_row_is_named_with_what_to_do(tmp_path: Path) -> None:
    d = str(_edited_in_place(tmp_path))
    code, _, err = _kfm("get", "--index", "4", "--ledger", d)
    assert code == 1
    assert "row 4 (line 5 " in err and "the row at line 5 no longer matches the signed tree" in err
    assert "`kfm verify`" in err and "restore the row's original bytes " + RESTORE in err
    assert "cannot repair signed rows" in err
    # A later row is not changed, it moved: the message names the row that changed length.
    code, _, err = _kfm("get", "--index", "10", "--ledger", d)
    assert code == 1
    assert "row 10 (line 11 " in err and "the row at line 5 (row 4) changed length" in err
    assert "restore row 4's original bytes " + RESTORE in err and "`kfm verify`" in err
    assert _kfm("get", "--index", "3", "--ledger", d)[0] == 0  # rows before it are fine


def test_verify_and_rebuild_do_not_advise_rebuild_for_signed_rows(tmp_path: Path) -> None:
    d = str(_edited_in_place(tmp_path))
    code, out, _ = _kfm("verify", "--ledger", d, "--json")
    assert code == 1
    failures = {f["where"]: f["message"] for f in json.loads(out)["failures"]}
    assert "run `kfm rebuild`" not in out
    assert RESTORE in failures["line 5"] and RESTORE in failures["checkpoint 20"]
    assert "cannot repair signed rows" in failures["checkpoint 20"]
    assert "the rows changed, not the index" in failures["index"]
    code, _, err = _kfm("rebuild", "--ledger", d)
    assert code == 1
    assert "nothing was rebuilt" in err and "cannot repair signed rows" in err
    assert "restore their original bytes " + RESTORE in err


def test_verify_still_advises_rebuild_for_a_wrong_index_alone(tmp_path: Path) -> None:
    import sqlite3

    d = tmp_path / "l"
    led = Ledger.init(d, origin=ORIGIN)
    fill(led, 20)
    led.close()
    con = sqlite3.connect(d / "index.sqlite")
    table = next(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'") if r[0] != "meta")
    con.execute(f"UPDATE {table} SET length = length + 1 WHERE leaf = 7")
    con.commit()
    con.close()
    code, out, _ = _kfm("verify", "--ledger", str(d), "--json")
    assert code == 1
    failures = {f["where"]: f["message"] for f in json.loads(out)["failures"]}
    assert failures["index"].endswith("run `kfm rebuild`") and len(failures) == 1


# ------------------------------------------------- the help patch on another typer


def test_cli_imports_and_helps_without_the_typer_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later typer whose TyperOption has no ``display_type_rich``: the patch is skipped and the
    CLI still imports and shows help."""
    import importlib
    import sys

    import typer.core
    from typer.testing import CliRunner

    class Bare:  # a TyperOption without the hook
        pass

    monkeypatch.setattr(typer.core, "TyperOption", Bare)
    for name in [m for m in sys.modules if m == "kfm_ledger.cli" or m.startswith("kfm_ledger.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    cli = importlib.import_module("kfm_ledger.cli")  # must not raise
    assert not hasattr(Bare, "display_type_rich")
    monkeypatch.undo()  # the real TyperOption and the modules imported before are back
    r = CliRunner().invoke(cli.app, ["get", "--help"])
    assert r.exit_code == 0 and "--json" in r.stdout


def test_cli_help_hides_bool_with_the_typer_hook() -> None:
    from typer.testing import CliRunner

    from kfm_ledger.cli import app

    r = CliRunner().invoke(app, ["get", "--help"])
    assert r.exit_code == 0 and "--json" in r.stdout and "<bool>" not in r.stdout
