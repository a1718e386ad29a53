"""The witness's wire formats and decisions are pure (bytes in, values out): importing them
loads no I/O library and nothing of the package's outer layers (a fresh interpreter each)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = {"sqlite3", "socket", "http", "asyncio", "uvicorn", "threading", "subprocess", "multiprocessing",
             "concurrent", "typer", "click", "pyarrow", "duckdb"}
ALLOWED_OWN = {"kfm_ledger", "kfm_ledger.errors", "kfm_ledger.witness", "kfm_ledger.core"}


def _loaded(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    return set(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                         text=True).stdout))


@pytest.mark.parametrize("module", ["kfm_ledger.witness.protocol", "kfm_ledger.witness.check"])
def test_pure(module: str) -> None:
    loaded = _loaded(f"import {module}") - _loaded("pass")
    own = {m for m in loaded if m.startswith("kfm_ledger")}
    outer = {m for m in own - ALLOWED_OWN if not m.startswith(("kfm_ledger.core.", "kfm_ledger.witness."))}
    assert not outer, outer
    heavy = {m for m in loaded if m.split(".")[0] in FORBIDDEN}
    assert not heavy, heavy


def test_kfm_help_does_not_load_the_witness() -> None:
    loaded = _loaded("import kfm_ledger.cli")
    assert not {m for m in loaded if m.startswith("kfm_ledger.witness") or m.split(".")[0] == "uvicorn"}
