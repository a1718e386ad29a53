"""Messages for a person: msgspec's validation errors and JSON syntax errors, reworded.

"Expected `str` matching regex '...' - at `$.x`" becomes "expected <what the rule says>,
found <the value>"; malformed JSON and too deep nesting name the byte where they were found.
Error path only.  Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..errors import SchemaError
from .rules import NUMBER_EXPECTED, NUMBER_FIELDS, STRING_RULES

__all__ = [
    "BYTE_OFFSET",
    "friendly_validation_error",
    "lower_first",
    "show",
    "syntax_message",
    "too_deep_message",
]

_ANY_DECODER = msgspec.json.Decoder()

_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")
_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_TYPE_ERROR = re.compile(r"^Expected `(\w+)`, got `(\w+)`$")
_MISSING = re.compile(r"^Object missing required field `(.*)`$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*)`$", re.S)
_TYPE_NAMES = {
    "str": "a string",
    "float": "a number",
    "int": "an integer",
    "object": "a JSON object",
    "array": "an array",
}
_MISSING_VALUE = object()


def friendly_validation_error(text: str, raw: bytes) -> SchemaError:
    """Turn msgspec's "Expected `str` matching regex '...' - at `$.x`" into "$.x: expected ..., found ..."."""
    m = _MSGSPEC_PATH.search(text)
    path = m.group(1) if m else "$"
    what = text[: m.start()] if m else text
    if mm := _MISSING.match(what):
        return SchemaError(path, f"missing required field {show(mm.group(1))}")
    if mm := _UNKNOWN.match(what):
        return SchemaError(path, f"unknown field {show(mm.group(1))}")
    found = _value_at(raw, path)
    if what == "Number out of range":
        shown = "a number out of range for a 64-bit float"
    elif found is _MISSING_VALUE:
        shown = "a value that cannot be shown"
    else:
        shown = show(found)
    if mm := _TYPE_ERROR.match(what):
        expected = _TYPE_NAMES.get(mm.group(1), mm.group(1))
        return SchemaError(path, f"expected {expected}, found {shown}")
    field = path.rsplit(".", 1)[-1]
    if field in STRING_RULES:
        return SchemaError(path, f"expected {STRING_RULES[field].expected}, found {shown}")
    if field in NUMBER_FIELDS:
        return SchemaError(path, f"expected {NUMBER_EXPECTED}, found {shown}")
    return SchemaError(path, f"{lower_first(what)}, found {shown}")  # pragma: no cover


def _value_at(raw: bytes, path: str) -> Any:
    """The value at a msgspec path in ``raw`` (error path only), or _MISSING_VALUE."""
    try:
        node: Any = _ANY_DECODER.decode(raw)
        for name, index in _PATH_STEP.findall(path):
            node = node[name] if name else node[int(index)]
        return node
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError):
        return _MISSING_VALUE
    except RecursionError:
        # Somewhere in the row, nesting deeper than msgspec can follow: that is the news.
        raise SchemaError("$", too_deep_message(raw, 0)[1]) from None


def show(value: Any, limit: int = 80) -> str:
    """A found value for a message: strings quoted and truncated, containers named."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[: limit - 3] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")


def syntax_message(raw: bytes, error: Exception) -> tuple[int, str]:
    """(byte offset, message) for malformed JSON or bad UTF-8 in ``raw`` (error path only)."""
    if isinstance(error, UnicodeDecodeError):
        # msgspec's offset is inside the string being decoded; find the real one.
        try:
            raw.decode("utf-8")
            offset = len(raw)
        except UnicodeDecodeError as e:
            offset = e.start
        return offset, f"invalid UTF-8 at byte {offset}"
    text = str(error)
    text = text.removeprefix("JSON is malformed: ")
    m = BYTE_OFFSET.search(text)
    offset = int(m.group(1)) if m else len(raw)
    return offset, f"invalid JSON: {lower_first(text)}"


#: Depth named when input is nested too deeply to decode (a row nests 3 levels; msgspec
#: and json raise RecursionError somewhere near Python's recursion limit).
_MAX_DEPTH = 64
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def too_deep_message(raw: bytes, start: int) -> tuple[int, str]:
    """(byte offset, message) for input from ``raw[start]`` that hit RecursionError (error path only)."""
    depth = 0
    offset = len(raw)
    for token in _JSON_TOKEN.finditer(raw, start):
        if token.group() in (b"[", b"{"):
            depth += 1
            if depth > _MAX_DEPTH:
                offset = token.start()
                break
        elif token.group() in (b"]", b"}"):
            depth -= 1
    return offset, f"nested more than {_MAX_DEPTH} levels deep (byte {offset})"

