""".ci/run, the CI entry point: the README's test command verbatim, and the Go checker required by default."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"Install and run the whole test suite:\n\n```sh\n(.+)\n```", text)
    assert m, "the README's test command block"
    return m.group(1)


def test_ci_run_runs_the_readme_test_command_byte_for_byte() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_test_command() in lines


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("", "1"), ("1", "1"), ("0", "0")])
def test_ci_run_requires_gocheck_unless_told_not_to(given: str | None, expected: str, tmp_path: Path) -> None:
    """The script's prologue (everything before the README command), run with a stub of that command."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    script = (ROOT / ".ci" / "run").read_text().replace(readme_test_command(), 'echo "REQUIRE=$KFM_REQUIRE_GOCHECK"')
    stub = tmp_path / ".ci" / "run"
    stub.parent.mkdir()
    stub.write_text(script)
    env = {k: v for k, v in os.environ.items() if k not in ("KFM_REQUIRE_GOCHECK", "CI")}
    env["GOCHECK"] = "/nonexistent/gocheck"  # skips the build
    if given is not None:
        env["KFM_REQUIRE_GOCHECK"] = given
    out = subprocess.run([sh, str(stub)], env=env, capture_output=True, text=True, check=True).stdout
    assert f"REQUIRE={expected}" in out.splitlines()
