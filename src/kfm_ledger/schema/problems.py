"""Every problem of a refused row, not only the first (error path only).

msgspec stops at the first problem of a row.  A row that was refused is read again here,
as plain JSON, and every field is checked against the same rules (:mod:`.rules`), so that
one run names all of a row's mistakes, each with its JSON path.  Only refused rows take
this pass: the accepted path (:func:`.codec.decode_and_encode`, :mod:`.fast_path`) is not
slowed down.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

from ..errors import SchemaError
from .messages import show
from .rows import Row
from .rules import NUMBER_EXPECTED, STRING_RULES
from .timestamps import timestamp_to_datetime

__all__ = ["row_problems"]

_ANY_DECODER = msgspec.json.Decoder()
_COMPILED = {name: re.compile(rule.pattern) for name, rule in STRING_RULES.items()}
_OUT_OF_RANGE = object()  # a number literal too large for a 64-bit float


class _Pairs(list[Any]):
    """A JSON object as its list of (key, value) pairs, duplicates kept."""


def _number(text: str) -> Any:
    value = float(text)
    return _OUT_OF_RANGE if math.isinf(value) else value


def _integer(text: str) -> Any:
    value = int(text)
    try:
        float(value)
    except OverflowError:
        return _OUT_OF_RANGE
    return value


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"not JSON: {text}")


def row_problems(raw: bytes, first: SchemaError) -> list[SchemaError]:
    """Every problem of the refused row ``raw``; ``first`` is the one the fast decoder found.

    Malformed JSON (and too deep nesting) is one problem: ``[first]``.  Otherwise every
    field is checked: unknown, missing and duplicate keys at every level, types, the string
    and number rules, the real date of ``created_at`` and the ``artifact_uri``/commit
    cross-check.  The result always holds ``first`` (put in front if this pass did not name
    it) and is in the order found: schema field order, depth first.
    """
    try:
        _ANY_DECODER.decode(raw)
    except msgspec.ValidationError:
        pass  # a number out of range: still JSON
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return [first]
    try:
        tree = json.loads(
            raw,
            object_pairs_hook=_Pairs,
            parse_float=_number,
            parse_int=_integer,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError):  # msgspec accepted it; json disagrees only on exotic input
        return [first]
    found: list[SchemaError] = []
    _check_struct(Row, tree, "$", found)
    if not any(p.path == first.path and p.message == first.message for p in found):
        found.insert(0, first)
    return found


def _shown(value: Any) -> str:
    if value is _OUT_OF_RANGE:
        return "a number out of range for a 64-bit float"
    return "an object" if isinstance(value, _Pairs) else show(value)


def _check_struct(cls: type[msgspec.Struct], node: Any, path: str, found: list[SchemaError]) -> None:
    if not isinstance(node, _Pairs):
        found.append(SchemaError(path, f"expected a JSON object, found {_shown(node)}"))
        return
    values: dict[str, Any] = {}
    for key, value in node:
        if key in values:
            found.append(SchemaError(path, f"duplicate key {show(key)}"))
        values[key] = value  # msgspec keeps the last one
    fields = msgspec.structs.fields(cls)
    names = {f.name for f in fields}
    for key in values:
        if key not in names:
            found.append(SchemaError(path, f"unknown field {show(key)}"))
    for info in fields:
        if info.name not in values:
            found.append(SchemaError(path, f"missing required field {show(info.name)}"))
            continue
        value = values[info.name]
        where = f"{path}.{info.name}"
        tp: Any = info.type
        if tp is str:
            _check_string(info.name, value, where, found)
        elif tp is float:
            _check_number(value, where, found)
        elif getattr(tp, "__origin__", None) is list:
            if not isinstance(value, list) or isinstance(value, _Pairs):
                found.append(SchemaError(where, f"expected an array, found {_shown(value)}"))
                continue
            for i, item in enumerate(value):
                _check_struct(tp.__args__[0], item, f"{where}[{i}]", found)
        else:
            _check_struct(tp, value, where, found)
    if cls is Row:
        _check_cross_fields(values, found)


def _check_string(name: str, value: Any, where: str, found: list[SchemaError]) -> None:
    if not isinstance(value, str):
        found.append(SchemaError(where, f"expected a string, found {_shown(value)}"))
    elif _COMPILED[name].search(value) is None:
        found.append(SchemaError(where, f"expected {STRING_RULES[name].expected}, found {show(value)}"))
    elif name == "created_at":
        try:
            timestamp_to_datetime(value)
        except SchemaError as e:
            found.append(e)


def _check_number(value: Any, where: str, found: list[SchemaError]) -> None:
    if value is _OUT_OF_RANGE:
        found.append(SchemaError(where, f"expected {NUMBER_EXPECTED}, found {_shown(value)}"))
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        found.append(SchemaError(where, f"expected a number, found {_shown(value)}"))
    elif not value >= 0:
        found.append(SchemaError(where, f"expected {NUMBER_EXPECTED}, found {show(value)}"))


def _check_cross_fields(values: dict[str, Any], found: list[SchemaError]) -> None:
    """The artifact_uri/commit cross-check, when both fields are otherwise valid."""
    commit, uri = values.get("lakefs_commit"), values.get("artifact_uri")
    if not (isinstance(commit, str) and isinstance(uri, str)):
        return
    if _COMPILED["lakefs_commit"].search(commit) is None or _COMPILED["artifact_uri"].search(uri) is None:
        return
    bundle = commit + ".tar.zst"
    if not uri.endswith(bundle) or uri[-len(bundle) - 1] != "/":
        found.append(
            SchemaError(
                "$.artifact_uri",
                f"last path segment must be {bundle!r} (the bundle for lakefs_commit {commit!r}), "
                f"found {show(uri.rsplit('/', 1)[-1])}",
            )
        )
