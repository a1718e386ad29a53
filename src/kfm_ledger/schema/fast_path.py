"""The canonical-line fast path: one regex over a line's bytes instead of decode and encode.

Pure: no I/O.
"""

from __future__ import annotations

import re

from ..errors import SchemaError
from .rows import ENCODER
from .rules import STRING_RULES
from .timestamps import timestamp_to_datetime

__all__ = ["canonical_line_fields"]

# ------------------------------------------------- the canonical-line fast path
#
# Bulk input and stored lines are almost always canonical already.  For those, one regex
# over the raw bytes checks everything the decode-and-encode path checks, without
# building any Python objects: the canonical layout (compact JSON, schema field order,
# every field once, hence no duplicate keys), every string rule, the numbers' canonical
# spelling and the artifact_uri/commit cross-check (a backreference).  It applies only
# to ASCII lines without a backslash: then no string holds an escape, so a string's
# bytes are its characters, '"' ends it, and the ASCII-only byte classes below mean the
# same as the rules' str classes.  A line it does not accept is not thereby wrong: it
# takes the general path, which decides and names the problem.


def _inline_json(field: str) -> str:
    """A rule's pattern for the inside of a canonical JSON string (no anchors, no '"')."""
    pattern = STRING_RULES[field].pattern
    assert pattern.startswith("^") and pattern.endswith(r"\Z")
    # The string's closing quote is where the value ends; no character class may cross it.
    return pattern[1:-2].replace(r"\Z", '"').replace("[^", '[^"')


def _json_field(field: str, group: str | None = None) -> str:
    body = _inline_json(field)
    return f'"{field}":"' + (f"(?P<{group}>{body})" if group else f"(?:{body})") + '"'


def _json_array(field: str, element: str) -> str:
    return f'"{field}":\\[(?:{element}(?:,{element})*)?\\]'


# created_at in its one spelling (no zero fraction, no trailing zeros: the rule's own
# fraction), with the calendar checked as far as a regex can cheaply: days 29-31 are
# checked against the real calendar afterwards.
_TIMESTAMP_FAST = (
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{0,5}[1-9])?Z"
)
# A non-negative decimal with a '.', the only form the fast path takes; that it is the
# canonical spelling of its value is checked afterwards (msgspec writes 1e-05 as 0.00001).
_DECIMAL = r"(?:0|[1-9][0-9]*)\.[0-9]+"

# A decimal that is certainly the canonical spelling of its value, with no need to encode it: at most
# 10 integer and 5 fraction digits (15 significant digits: an IEEE double keeps any such decimal
# exactly, so its shortest round-trip spelling has the same digits), no trailing zero in the
# fraction but ".0" itself, and in [0.00001, 1e10), where msgspec writes plain decimals, never
# exponents (tests/test_fast_paths.py compares the two over random decimals).  Others are encoded.
_SHORT_DECIMAL = re.compile(rb"(?:0|[1-9][0-9]{0,9})\.(?:0|[0-9]{0,4}[1-9])").fullmatch

_CANONICAL_LINE = re.compile(
    (
        r"\{"
        + ",".join(
            [
                _json_field("lakefs_repo"),
                _json_field("lakefs_branch"),
                _json_field("lakefs_commit", "commit"),
                f'"created_at":"(?P<created>{_TIMESTAMP_FAST})"',
                _json_field("producer"),
                _json_field("openlineage_run_id"),
                _json_field("otel_trace_id"),
                # An s3:// URI whose last path segment is "<lakefs_commit>.tar.zst".
                '"artifact_uri":"(?=' + _inline_json("artifact_uri") + r'")[^"]*/(?P=commit)\.tar\.zst"',
                _json_array("data_snapshot", r"\{" + _json_field("stac") + "," + _json_field("lakefs_ref") + r"\}"),
                _json_array(
                    "models",
                    r"\{" + _json_field("name") + "," + _json_field("version") + "," + _json_field("uri") + r"\}",
                ),
                _json_array("configs", r"\{" + _json_field("path") + "," + _json_field("sha256") + r"\}"),
                r'"checksums":\{' + _json_field("artifact_sha256") + r"\}",
                r'"signatures":\{' + _json_field("in_toto") + r"\}",
                rf'"energy_carbon":\{{"kwh":(?P<kwh>{_DECIMAL}),"co2e_kg":(?P<co2e_kg>{_DECIMAL})\}}',
            ]
        )
        + r"\}"
    ).encode("ascii")
).fullmatch


def canonical_line_fields(line: bytes) -> tuple[str, str] | None:
    """``(lakefs_commit, created_at)`` if ``line`` is a valid row in canonical form, else None.

    The fast path for bulk appends and verify: when it returns a pair, validating and
    canonicalising ``line`` (:func:`canonicalize`) would succeed and give ``line`` itself.
    None does not mean the line is invalid, only that the general path must decide.  The
    line size limit is the caller's.
    """
    if not line.isascii() or b"\\" in line:
        return None
    m = _CANONICAL_LINE(line)
    if m is None:
        return None
    kwh, co2e_kg, commit, created_bytes = m.group("kwh", "co2e_kg", "commit", "created")
    for number in (kwh, co2e_kg):
        if _SHORT_DECIMAL(number) is None and ENCODER.encode(float(number)) != number:
            return None
    created = created_bytes.decode("ascii")
    if created[8:10] > "28":  # the only days the pattern cannot rule out (Feb 30, Apr 31)
        try:
            timestamp_to_datetime(created)
        except SchemaError:
            return None
    return commit.decode("ascii"), created

