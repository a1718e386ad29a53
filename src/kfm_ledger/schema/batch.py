"""Batches: JSONL, a JSON array or one object, validated with the input line of every problem.

Pure: no I/O.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from ..errors import MAX_LISTED_PROBLEMS, InputRejected, RowProblem, SchemaError
from .codec import as_bytes, check_size, decode_and_encode
from .messages import BYTE_OFFSET, show, syntax_message, too_deep_message
from .problems import row_problems
from .rows import ENCODER, Row

__all__ = [
    "backwards_problem",
    "check_batch",
    "check_batch_capped",
    "check_batch_counted",
    "check_rows",
    "parse_batch",
    "parse_rows",
    "repeated_commit_problem",
]

_RAW_DECODER = msgspec.json.Decoder(msgspec.Raw)
_RAW_LIST_DECODER = msgspec.json.Decoder(list[msgspec.Raw])

# ------------------------------------------------------------------- batches


def parse_batch(data: bytes | str) -> list[tuple[int, Row, bytes]]:
    """Validate a batch of rows; return ``(input line, row, canonical line)`` for each.

    ``data`` is one JSON object, a JSON array of objects, or JSONL (one object per line;
    blank lines are skipped and still counted).  The line reported for a row is the
    1-based line of the input where the row starts (for an array: where its element
    starts).  A UTF-8 byte order mark at the start is ignored.  Input with no rows gives
    ``[]``; refusing an empty append is the caller's decision.

    Everything is validated and every problem collected: the schema (every problem of
    a row, each with its JSON path: :func:`.problems.row_problems`), the line size
    limit, a ``lakefs_commit`` repeated within the batch, and ``created_at`` going
    backwards from one valid row to the next.  If anything is wrong, raises
    :class:`InputRejected` with the problems in line order (at most
    :data:`~kfm_ledger.errors.MAX_LISTED_PROBLEMS` listed, ``total`` counting all).
    Input nested too deeply for the decoder (RecursionError) is a problem like any other:
    "nested more than 64 levels deep", on the line where that depth is reached.
    """
    rows, problems = check_batch(data)
    if problems:
        raise InputRejected(problems)
    return rows


def check_batch(data: bytes | str) -> tuple[list[tuple[int, Row, bytes]], list[RowProblem]]:
    """:func:`parse_batch` without raising: the rows that passed, and every problem (line order).

    For callers that check more (the ledger's rules) before they report.
    """
    rows, problems, _ = check_batch_capped(data, None)
    return rows, problems


def check_batch_capped(
    data: bytes | str, limit: int | None = MAX_LISTED_PROBLEMS
) -> tuple[list[tuple[int, Row, bytes]], list[RowProblem], int]:
    """:func:`check_batch` that stops collecting problems at ``limit``: the rows that passed,
    at most about ``limit`` problems (line order) and the total found.  Past the cap a row
    that fails counts as one problem, without its detailed diagnosis (which costs far more
    than the check), so refusing millions of bad lines stays fast and small."""
    rows, problems, total, _ = check_batch_counted(data, limit)
    return rows, problems, total


def check_batch_counted(
    data: bytes | str, limit: int | None = MAX_LISTED_PROBLEMS
) -> tuple[list[tuple[int, Row, bytes]], list[RowProblem], int, bool]:
    """:func:`check_batch_capped` and whether the total is exact: False when a failing row
    past the cap was counted as one problem without being diagnosed (a lower bound)."""
    try:
        raw = _as_batch_bytes(data)
    except InputRejected as e:
        return [], list(e.problems), e.total, True
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    start = _skip_space(raw, bom)
    if start == len(raw):
        return [], [], 0, True
    problems: list[RowProblem] = []
    items: Iterable[tuple[int, bytes]]
    if raw[start] == ord("["):
        items = _array_items(raw, start, problems)
    elif raw[start] == ord("{") and _is_one_object(raw, start):
        items = _single_item(raw, start, problems)
    else:
        items = _jsonl_items(raw, bom)
    rows, unlisted, undiagnosed = _validate_items(items, problems, limit)
    problems.sort(key=lambda p: p.line)
    return rows, problems, len(problems) + unlisted, not undiagnosed


def parse_rows(rows: Sequence[Row]) -> list[tuple[int, Row, bytes]]:
    """:func:`parse_batch` for rows built in Python; "line" is the 1-based position.

    Each row is validated and normalised through its encoding (see :func:`encode_row`);
    the same batch rules apply and the same :class:`InputRejected` is raised.
    """
    result, problems = check_rows(rows)
    if problems:
        raise InputRejected(problems)
    return result


def check_rows(rows: Sequence[Row]) -> tuple[list[tuple[int, Row, bytes]], list[RowProblem]]:
    """:func:`parse_rows` without raising (see :func:`check_batch`)."""
    problems: list[RowProblem] = []
    items: list[tuple[int, bytes]] = []
    for number, row in enumerate(rows, start=1):
        if type(row) is not Row:
            problems.append(RowProblem(number, "$", f"expected a Row, found {type(row).__name__}"))
            continue
        try:
            items.append((number, ENCODER.encode(row)))
        except (TypeError, ValueError, msgspec.EncodeError) as e:
            problems.append(RowProblem(number, "$", f"cannot encode the row as JSON: {e}"))
    result, _, _ = _validate_items(items, problems, None)
    problems.sort(key=lambda p: p.line)
    return result, problems


def _validate_items(
    items: Iterable[tuple[int, bytes]], problems: list[RowProblem], limit: int | None
) -> tuple[list[tuple[int, Row, bytes]], int, int]:
    """Validate each (line, raw row) and the batch rules; append problems (up to about
    ``limit``; past it each is only counted), return the good rows, the count not listed
    and how many of those were failing rows counted as one problem without a diagnosis."""
    result: list[tuple[int, Row, bytes]] = []
    first_line_of: dict[str, int] = {}
    previous: tuple[int, datetime.datetime, str] | None = None  # line, time, text
    unlisted = 0
    undiagnosed = 0

    def add(problem: RowProblem) -> None:
        nonlocal unlisted
        if limit is None or len(problems) < limit:
            problems.append(problem)
        else:
            unlisted += 1

    for line, item in items:
        try:
            row, canonical, created = decode_and_encode(item)
        except SchemaError as e:
            if limit is not None and len(problems) >= limit:
                unlisted += 1  # one problem at least; its diagnosis is not needed any more
                undiagnosed += 1
            else:
                problems += [RowProblem(line, p.path, p.message) for p in row_problems(item, e)]
            continue
        try:
            check_size(canonical)
        except SchemaError as e:
            add(RowProblem(line, e.path, e.message))
            continue
        commit = row.lakefs_commit
        if commit in first_line_of:
            add(repeated_commit_problem(line, commit, first_line_of[commit]))
        else:
            first_line_of[commit] = line
        if previous is not None and created < previous[1]:
            add(backwards_problem(line, row.created_at, previous[0], previous[2]))
        previous = (line, created, row.created_at)
        result.append((line, row, canonical))
    return result, unlisted, undiagnosed


def repeated_commit_problem(line: int, commit: str, first_line: int) -> RowProblem:
    """The batch rule "a lakefs_commit at most once per batch", broken on ``line``."""
    return RowProblem(
        line,
        "$.lakefs_commit",
        f"duplicate lakefs_commit {show(commit)}: also on line {first_line} (one row per lakeFS commit)",
    )


def backwards_problem(line: int, created_at: str, before_line: int, before: str) -> RowProblem:
    """The batch rule "created_at never goes backwards", broken on ``line``."""
    return RowProblem(
        line,
        "$.created_at",
        f"created_at goes backwards: {show(created_at)} is earlier than {show(before)} on line {before_line}",
    )


def _as_batch_bytes(data: bytes | str) -> bytes:
    try:
        return as_bytes(data)
    except SchemaError as e:
        raise InputRejected([RowProblem(1, e.path, e.message)]) from None


_SPACE = b" \t\r\n"  # JSON whitespace (RFC 8259 §2)
_SPACE_RUN = re.compile(rb"[ \t\r\n]*")


def _skip_space(raw: bytes, pos: int) -> int:
    """The offset of the first non-whitespace byte at or after ``pos`` (``len(raw)`` if none)."""
    m = _SPACE_RUN.match(raw, pos)
    return pos if m is None else m.end()  # the pattern matches the empty string, so m is never None


def _line_of_byte(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, max(0, min(offset, len(raw)))) + 1


def _too_deep_problem(raw: bytes, start: int) -> RowProblem:
    offset, message = too_deep_message(raw, start)
    return RowProblem(_line_of_byte(raw, offset), "$", message)


def _syntax_problem(raw: bytes, start: int, error: Exception) -> RowProblem:
    """A RowProblem for malformed input that starts at ``raw[start]``, on the line of the fault."""
    offset, message = syntax_message(raw[start:], error)
    # Offsets in the message count from the start of the whole input.
    if isinstance(error, UnicodeDecodeError):
        message = f"invalid UTF-8 at byte {start + offset}"
    else:
        message = BYTE_OFFSET.sub(f"(byte {start + offset})", message, count=1)
    return RowProblem(_line_of_byte(raw, start + offset), "$", message)


def _is_one_object(raw: bytes, start: int) -> bool:
    """Is the input from ``start`` (a '{') one JSON object, possibly over many lines (not JSONL)?"""
    try:
        _RAW_DECODER.decode(memoryview(raw)[start:])
        return True
    except msgspec.DecodeError as e:
        if "trailing characters" in str(e):
            return False  # one object, then more: JSONL
    except (UnicodeDecodeError, RecursionError):
        pass
    # Malformed or too deep: a pretty-printed object starts with '{' alone on its line; anything
    # else is read as JSONL, so that every line's problems are reported.
    end = raw.find(b"\n", start)
    first_line = raw[start:] if end < 0 else raw[start:end]
    return first_line.strip(_SPACE) == b"{"


def _decode_or_report(decoder: msgspec.json.Decoder, raw: bytes, start: int, problems: list[RowProblem]) -> Any:
    """``decoder`` over ``raw[start:]``; on a syntax error or too deep nesting, a problem and None."""
    try:
        return decoder.decode(memoryview(raw)[start:])
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        problems.append(_syntax_problem(raw, start, e))
    except RecursionError:
        problems.append(_too_deep_problem(raw, start))
    return None


def _single_item(raw: bytes, start: int, problems: list[RowProblem]) -> list[tuple[int, bytes]]:
    """The one object from ``start``, or a problem on the line of its syntax error."""
    if _decode_or_report(_RAW_DECODER, raw, start, problems) is None:
        return []
    return [(_line_of_byte(raw, start), raw[start:])]


def _jsonl_items(raw: bytes, bom: int) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of JSONL with their 1-based line numbers (one at a time)."""
    pos, number, end = bom, 1, len(raw)
    while pos <= end:
        k = raw.find(b"\n", pos)
        if k < 0:
            k = end
        line = raw[pos:k]
        if line.strip(_SPACE):
            yield number, line
        number += 1
        pos = k + 1


def _array_items(raw: bytes, start: int, problems: list[RowProblem]) -> list[tuple[int, bytes]]:
    """The elements of a JSON array with the line each starts on (malformed: one problem)."""
    elements = _decode_or_report(_RAW_LIST_DECODER, raw, start, problems)
    if elements is None:
        return []
    items = []
    pos = start + 1
    line = _line_of_byte(raw, start)
    for element in elements:
        text = bytes(element)
        # Between elements there is only whitespace and ',', so the first occurrence of
        # the element's exact text at or after the previous end is where it starts.
        at = raw.find(text, pos)
        if at < 0:  # pragma: no cover - msgspec.Raw is a slice of the input
            raise AssertionError("array element not found in its own input")
        line += raw.count(b"\n", pos, at)
        items.append((line, text))
        line += text.count(b"\n")
        pos = at + len(text)
    return items

