"""The row as a JSON Schema (draft 2020-12), generated from the checked structs.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .checked import CHECKED_ROW
from .rules import MAX_LINE_BYTES, SCHEMA_ID

__all__ = ["row_json_schema"]

# ---------------------------------------------------------------- JSON Schema


def row_json_schema() -> dict[str, Any]:
    """The row as a JSON Schema (draft 2020-12), for ``kfm schema``.

    Generated from the structs, so it cannot drift from them: every field required,
    ``additionalProperties: false`` at every level, the patterns of :mod:`.rules` (in ECMA-262 form),
    ``minimum: 0`` for the numbers.  Not expressible here and enforced only by kfm: real
    calendar dates, ``artifact_uri`` ending in ``<lakefs_commit>.tar.zst``, no duplicate
    keys, the line size limit, and the batch rules.
    """
    generated = msgspec.json.schema(CHECKED_ROW)
    defs = generated["$defs"]
    root = defs.pop("Row")
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "KFM Rollback Registry Index row",
        "description": (
            "One line of rollback-index.jsonl (KFM v11.2.2, 'Index Schema'). Also enforced, "
            "but not expressible here: created_at is a real date and time; artifact_uri's "
            "last path segment is '<lakefs_commit>.tar.zst'; no duplicate keys; the "
            f"canonical line is at most {MAX_LINE_BYTES} bytes."
        ),
        "type": "object",
        "properties": root["properties"],
        "required": root["required"],
        "additionalProperties": False,
        "$defs": defs,
    }
    return _ecma_patterns(schema)


def _ecma_patterns(node: Any) -> Any:
    r"""Rewrite Python's ``\Z`` (end of input) as ECMA-262's ``$`` in every pattern."""
    if isinstance(node, dict):
        return {
            k: (v.replace(r"\Z", "$") if k == "pattern" and isinstance(v, str) else _ecma_patterns(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ecma_patterns(v) for v in node]
    return node
