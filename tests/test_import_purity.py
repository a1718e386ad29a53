"""The pure core and the row schema import nothing of the outer layers (issue: "the core
imports nothing from outer layers"): each check runs in a fresh interpreter, so nothing
imported by other tests can hide an import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

CORE_MODULES = [
    "kfm_ledger.core.merkle",
    "kfm_ledger.core.tiles",
    "kfm_ledger.core.tile_cache",
    "kfm_ledger.core.keys",
    "kfm_ledger.core.note",
    "kfm_ledger.core.checkpoint",
    "kfm_ledger.core.signed_checkpoint",
    "kfm_ledger.core.cosignature",
    "kfm_ledger.core.tlogproof",
]

#: What the core may load of the package: itself, the package's lazy facade and errors.
ALLOWED_OWN = {"kfm_ledger", "kfm_ledger.errors", "kfm_ledger.core"}
#: Heavy or I/O-bound libraries the core must never load.
FORBIDDEN = {"sqlite3", "multiprocessing", "concurrent.futures", "pyarrow", "typer", "click", "rich", "duckdb",
             "msgspec", "zstandard", "subprocess", "socket"}

#: Every module of schema/ (found on disk, so that a new one is checked too).
SCHEMA_MODULES = ["kfm_ledger.schema"] + [
    f"kfm_ledger.schema.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parents[1] / "src" / "kfm_ledger" / "schema")])
]
#: What schema/ may load of the package: itself, the lazy facade and errors.
SCHEMA_ALLOWED_OWN = {"kfm_ledger", "kfm_ledger.errors", "kfm_ledger.schema"}
#: The schema is built on msgspec (its Structs and codec); everything else the core may not load, it may not either.
SCHEMA_FORBIDDEN = FORBIDDEN - {"msgspec"}


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


def assert_pure(module: str, allowed_own: set[str], own_package: str, forbidden: set[str]) -> None:
    """Importing ``module`` alone loads no kfm_ledger module outside ``own_package`` and
    ``allowed_own``, and none of ``forbidden`` (top-level names)."""
    baseline = loaded_after("pass")
    loaded = loaded_after(f"import {module}") - baseline
    own = {m for m in loaded if m == "kfm_ledger" or m.startswith("kfm_ledger.")}
    outer = {m for m in own - allowed_own if not m.startswith(own_package + ".")}
    assert not outer, f"importing {module} loaded outer modules {sorted(outer)}"
    heavy = {m for m in loaded if m.split(".")[0] in forbidden or m in forbidden}
    assert not heavy, f"importing {module} loaded {sorted(heavy)}"


@pytest.mark.parametrize("module", CORE_MODULES)
def test_a_core_module_loads_no_outer_layer(module: str) -> None:
    assert_pure(module, ALLOWED_OWN, "kfm_ledger.core", FORBIDDEN)


def test_the_whole_core_together_stays_pure() -> None:
    loaded = loaded_after("\n".join(f"import {m}" for m in CORE_MODULES))
    own = {m for m in loaded if m.startswith("kfm_ledger")}
    assert own <= ALLOWED_OWN | {m for m in own if m.startswith("kfm_ledger.core.")}, sorted(own)
    assert not {m for m in loaded if m.split(".")[0] in FORBIDDEN}


def test_every_schema_module_is_listed() -> None:
    assert len(SCHEMA_MODULES) > 5 and "kfm_ledger.schema.batch" in SCHEMA_MODULES


@pytest.mark.parametrize("module", SCHEMA_MODULES)
def test_a_schema_module_loads_no_outer_layer(module: str) -> None:
    """schema/ is pure too (docs/architecture.md): no other layer, no I/O-bound or heavy library."""
    assert_pure(module, SCHEMA_ALLOWED_OWN, "kfm_ledger.schema", SCHEMA_FORBIDDEN)


def test_the_facade_is_lazy() -> None:
    """``import kfm_ledger`` loads no submodule until a name is used."""
    loaded = loaded_after("import kfm_ledger")
    assert {m for m in loaded if m.startswith("kfm_ledger.")} == set()
    loaded = loaded_after("import kfm_ledger\nkfm_ledger.verify_tlog_proof")
    assert "kfm_ledger.core.tlogproof" in loaded
    assert not {m for m in loaded if m.split(".")[0] in FORBIDDEN}
