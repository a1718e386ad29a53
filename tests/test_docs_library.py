"""docs/library.md's Python examples run as written, in order (one namespace, as a reader would
paste them into one session), so the documented library calls and import paths stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

LIBRARY_MD = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_library_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = python_blocks(LIBRARY_MD.read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "docs/library.md lost its examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    namespace: dict[str, object] = {"__name__": "library_md"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/library.md block {number}", "exec"), namespace)
        except Exception as e:  # name the block that broke, with its text
            raise AssertionError(f"docs/library.md python block {number} failed: {e!r}\n{block}") from e
    assert "refused:" in capsys.readouterr().out  # block 5's tampered entry was refused
