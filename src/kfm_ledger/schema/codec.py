"""One row: strict decoding, canonical encoding, the size limit and duplicate keys.

Pure: no I/O.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import msgspec

from ..errors import SchemaError
from .checked import CHECKED_ROW, ROW_SHAPE, STORED_CHECKED_ROW, STORED_ROW_SHAPE, joined
from .fast_path import canonical_line_fields
from .messages import friendly_validation_error, show, syntax_message, too_deep_message
from .rows import ENCODER, ROW_DECODER, Row
from .rules import MAX_LINE_BYTES
from .timestamps import timestamp_to_datetime

__all__ = [
    "as_bytes",
    "canonical_timestamp",
    "canonicalize",
    "check_size",
    "decode_and_encode",
    "decode_canonical_line",
    "decode_row",
    "encode_row",
    "legacy_spelling",
    "legacy_spelling_of",
]

_CHECKED_DECODER = msgspec.json.Decoder(CHECKED_ROW)
_STORED_CHECKED_DECODER = msgspec.json.Decoder(STORED_CHECKED_ROW)

# ------------------------------------------------------------------- decoding


def decode_row(data: bytes | str) -> Row:
    """Decode and validate one row (one JSON object), as a stored row is read.

    Strict: every rule in the module docstring, except that the two spellings rows
    stored before those rules were tightened may hold are read (an upper-case
    ``lakefs_commit``; a ``created_at`` fraction of zeros or with trailing zeros):
    :func:`canonicalize`, :func:`encode_row` and every append refuse them.  Raises :class:`SchemaError` with the
    JSON path of the first problem and the value found there.  Surrounding whitespace is
    allowed.  The line size limit is not checked here (see :func:`canonicalize`).
    """
    raw = as_bytes(data)
    if canonical_line_fields(raw) is not None:  # every rule holds already (stored lines)
        return ROW_DECODER.decode(raw)
    row, _, _ = decode_and_encode(raw, stored=True)
    return row


def encode_row(row: Row) -> bytes:
    """The canonical bytes of a row: compact JSON in schema field order, no newline.

    A row built in Python (not decoded) is validated by decoding its encoding, and its
    numbers are normalised (``kwh=2`` -> ``2.0``), so the bytes are always canonical and
    always decode back to an equal row.  Raises :class:`SchemaError` if the row breaks a
    rule.  (The size limit is checked by :func:`canonicalize` and :func:`parse_batch`.)
    """
    if type(row) is not Row:
        raise SchemaError("$", f"expected a Row, found {type(row).__name__}")
    try:
        first = ENCODER.encode(row)
    except (TypeError, ValueError, msgspec.EncodeError) as e:
        raise SchemaError("$", f"cannot encode the row as JSON: {e}") from None
    _, canonical, _ = decode_and_encode(first)
    return canonical


def canonicalize(data: bytes | str) -> bytes:
    """Validate one row and return its canonical line (no newline).

    :func:`decode_row`, then :func:`encode_row`, then the size limit: raises
    :class:`SchemaError` at ``$`` when the canonical line exceeds :data:`MAX_LINE_BYTES`.
    """
    _, canonical, _ = decode_and_encode(as_bytes(data))
    check_size(canonical)
    return canonical


def decode_canonical_line(line: bytes) -> Row:
    """Decode a stored ledger line and check that it is canonical, in one pass.

    For re-reading a ledger: equivalent to ``decode_row(line)`` plus
    ``encode_row(row) == line`` plus the size limit, at the cost of one validation.
    Raises :class:`SchemaError` (at ``$`` when the bytes are valid but not canonical).
    Like :func:`decode_row`, reads the older spellings of ``lakefs_commit`` and
    ``created_at`` (:func:`legacy_spelling` names them).
    """
    line = as_bytes(line)
    if len(line) <= MAX_LINE_BYTES and canonical_line_fields(line) is not None:
        return ROW_DECODER.decode(line)  # valid and canonical by construction
    row, canonical, _ = decode_and_encode(line, stored=True)
    if canonical != line:
        raise SchemaError(
            "$", "not in canonical form: compact JSON in schema field order expected"
        )
    check_size(canonical)
    return row


def legacy_spelling(row: Row) -> str | None:
    """What in a row (valid as stored) a new row could not hold, or None.

    Rows stored before ``lakefs_commit`` had one case and ``created_at`` one spelling
    per instant are read, never appended; ``kfm verify`` notes them with this text.
    """
    return legacy_spelling_of(row.lakefs_commit, row.created_at)


def legacy_spelling_of(commit: str, created: str) -> str | None:
    """:func:`legacy_spelling` from a row's commit and created_at."""
    found = []
    if commit != commit.lower():
        found.append(f"lakefs_commit {commit!r} is not lower-case (new rows: {commit.lower()!r})")
    if "." in created and created[-2] == "0":
        one = canonical_timestamp(created)
        found.append(f"created_at {created!r} is not the instant's one spelling (new rows: {one!r})")
    return "; ".join(found) or None


def canonical_timestamp(created_at: str) -> str:
    """``created_at`` (schema form, old spellings included) in its one spelling per instant."""
    if len(created_at) <= 20:
        return created_at
    fraction = created_at[20:-1].rstrip("0")
    return created_at[:19] + ("." + fraction if fraction else "") + "Z"


def as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as e:
            raise SchemaError("$", f"text is not valid Unicode (lone surrogate at {e.start})") from None
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"expected bytes or str, found {type(data).__name__}")
    return data


def check_size(canonical: bytes) -> None:
    if len(canonical) > MAX_LINE_BYTES:
        raise SchemaError(
            "$",
            f"canonical row is {len(canonical)} bytes, over the {MAX_LINE_BYTES}-byte limit "
            "of a stored line (c2sp.org/tlog-tiles entry bundles use a uint16 length)",
        )


def decode_and_encode(raw: bytes, *, stored: bool = False) -> tuple[Row, bytes, datetime.datetime]:
    """Decode ``raw`` as a Row, run the checks msgspec cannot; return (row, canonical, created_at).

    ``stored``: read with the rules stored rows are held to (:data:`.rules.STORED_STRING_RULES`),
    not the rules for new rows.
    """
    try:
        row = ROW_DECODER.decode(raw)
    except msgspec.ValidationError as e:
        raise friendly_validation_error(str(e), raw) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise SchemaError("$", syntax_message(raw, e)[1]) from None
    except RecursionError:
        raise SchemaError("$", too_deep_message(raw, 0)[1]) from None
    energy = row.energy_carbon
    shape = STORED_ROW_SHAPE if stored else ROW_SHAPE
    if shape(joined(row)) is None or not (energy.kwh >= 0 and energy.co2e_kg >= 0):
        raise _diagnose(raw, stored)
    canonical = ENCODER.encode(row)
    # Duplicate keys: msgspec keeps the last one silently.  Cheap screen: without "\u"
    # escapes, every '"' inside a string must be written '\"', so the input holds at least
    # as many '"' bytes as the canonical form unless it has extra keys (duplicates).
    # Only when the screen fires is the slow, exact check run.
    if b"\\u" in raw or raw.count(b'"') > canonical.count(b'"'):
        _reject_duplicate_keys(raw)
    # Cross-field and calendar checks (JSON Schema cannot state these).
    created = timestamp_to_datetime(row.created_at)
    commit = row.lakefs_commit
    bundle = commit + ".tar.zst"
    uri = row.artifact_uri
    if not uri.endswith(bundle) or uri[-len(bundle) - 1] != "/":
        found = uri.rsplit("/", 1)[-1]
        raise SchemaError(
            "$.artifact_uri",
            f"last path segment must be {bundle!r} (the bundle for lakefs_commit {commit!r}), "
            f"found {show(found)}",
        )
    return row, canonical, created


def _diagnose(raw: bytes, stored: bool = False) -> SchemaError:
    """Which field broke a rule: decode again with the checked twin (error path only)."""
    try:
        (_STORED_CHECKED_DECODER if stored else _CHECKED_DECODER).decode(raw)
    except msgspec.ValidationError as e:
        return friendly_validation_error(str(e), raw)
    # Unreachable while ROW_SHAPE and the twin state the same rules.
    return SchemaError("$", "row does not follow the schema")  # pragma: no cover


class _Pairs(list[Any]):
    """A JSON object as its list of (key, value) pairs, duplicates kept."""


def _reject_duplicate_keys(raw: bytes) -> None:
    try:
        tree = json.loads(raw, object_pairs_hook=_Pairs)
    except ValueError:  # msgspec accepted it; json disagrees only on exotic input
        return
    _walk_for_duplicates(tree, "$")


def _walk_for_duplicates(node: Any, path: str) -> None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            if key in seen:
                raise SchemaError(path, f"duplicate key {show(key)}")
            seen.add(key)
            _walk_for_duplicates(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk_for_duplicates(item, f"{path}[{i}]")

