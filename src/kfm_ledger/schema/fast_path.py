"""The canonical-line fast path: one regex over a line's bytes instead of decode and encode.

Pure: no I/O.
"""

from __future__ import annotations

import re

from ..errors import SchemaError
from .rows import ENCODER
from .rules import STRING_RULES
from .timestamps import timestamp_to_datetime

__all__ = ["canonical_line_bytes", "canonical_line_fields", "strict_canonical_line", "strict_canonical_rows"]

# ------------------------------------------------- the canonical-line fast path
#
# Bulk input and stored lines are almost always canonical already.  For those, one regex
# over the raw bytes checks everything the decode-and-encode path checks, without
# building any Python objects: the canonical layout (compact JSON, schema field order,
# every field once, hence no duplicate keys), every string rule, the numbers' canonical
# spelling and the artifact_uri/commit cross-check (a backreference).  It applies only
# to ASCII lines without a backslash: then no string holds an escape, so a string's
# bytes are its characters, '"' ends it, and the ASCII-only byte classes below mean the
# same as the rules' str classes.  The regex enforces that itself: every byte of a line it
# accepts is a literal of the layout or in a class, and every class below excludes bytes
# 0x80-0xff and the backslash.  A line it does not accept is not thereby wrong: it takes the
# general path, which decides and names the problem.
#
# Two regexes: the first (strict) takes nearly every row with no work after it, since it
# checks the whole calendar and takes only the decimals whose spelling is certainly
# canonical; a line it declines gets the second, wider one, whose matches are then checked
# for those two things in Python.


def _inline_json(field: str) -> str:
    """A rule's pattern for the inside of a canonical JSON string (no anchors, no '"'), in the
    form Python's regex engine runs fastest (:func:`_text_form`, :func:`_space_as_byte`)."""
    pattern = STRING_RULES[field].pattern
    assert pattern.startswith("^") and pattern.endswith(r"\Z")
    # The string's closing quote is where the value ends; no character class may cross it,
    # nor take a backslash (an escape) or a byte beyond ASCII.
    return _text_form(_space_as_byte(pattern[1:-2].replace(r"\Z", '"').replace("[^", r'[^"\\\x80-\xff')))


# A negated class of the byte patterns: '[^', then escapes or other characters, then ']'.
_NEGATED_CLASS = r"\[\^(?:\\.|[^\\\]])*\]"


def _space_as_byte(pattern: str) -> str:
    r"""``\s`` in the negated classes of a byte pattern written as the one byte it still adds.

    In a bytes regex ``\s`` is ASCII whitespace (tab, newline, vertical tab, form feed, carriage
    return, space); each class that names it here also excludes the control bytes 0x00-0x1f,
    which hold all of those but the space.  So ``\s`` adds only the space, and written as
    ``\x20`` the class is one bitmap test a byte instead of a bitmap and a category call (about
    4 % of a row's match).
    """

    def one_class(m: re.Match[str]) -> str:
        text = m.group()
        escapes = re.findall(r"\\.", text)  # escape by escape: "\\s" is a backslash, then "s"
        assert not {r"\S", r"\D", r"\W", r"\d", r"\w"} & set(escapes), text  # (only \s is rewritten)
        if r"\s" in escapes:
            assert r"\x00-\x1f" in text, text  # (else \s would add more than the space)
            text = re.sub(r"\\.", lambda e: r"\x20" if e.group() == r"\s" else e.group(), text)
        return text

    rewritten = re.sub(_NEGATED_CLASS, one_class, pattern)
    assert r"\s" not in re.findall(r"\\.", rewritten), pattern  # only ever inside such a class
    return rewritten


# ``X(?:Y*X)?`` where X is Y without the space: text with no leading or trailing whitespace.
_TEXT_SHAPE = re.compile(r"(?P<x>" + _NEGATED_CLASS + r")\(\?:(?P<y>" + _NEGATED_CLASS + r")\*(?P=x)\)\?")


def _text_form(pattern: str) -> str:
    r"""The text rule's ``X(?:Y*X)?`` (the first and last character not whitespace) written as
    ``XY*(?<!\x20)``, when X is Y without the space (after :func:`_space_as_byte`).

    The same strings: both take a first character in X and the rest in Y, and the last character,
    in Y, must not be the space, i.e. must be in X (for a one-character string the first is the
    last).  Y excludes '"', so Y* runs to the closing quote with nothing to try after a failed
    look-behind.  The regex engine runs the second form as a plain repeat of one class and a one-byte
    look-behind, without the repeat-of-a-group machinery of the first (about 8 % of a row's match).
    """

    def one(m: re.Match[str]) -> str:
        x, y = m.group("x", "y")
        # X must be Y with the space as one more item of its own (not the end of a range).
        if x.replace(r"\x20", "", 1) != y or r"\x20-" in x or r"-\x20" in x:
            return m.group()
        return x + y + r"*(?<!\x20)"

    return _TEXT_SHAPE.sub(one, pattern)


def _optional_groups_as_branches(pattern: str) -> str:
    """Each optional non-capturing group ``(?:A)?`` written ``(?:A|)``.

    The same matches in the same order of trial (A first, then nothing), but Python's regex
    engine runs a branch with an empty last alternative without the general repeat machinery that a
    ``?`` on a group takes (about 7 % of a row's match).  Capturing groups, lazy or possessive ``??``
    ``?+`` and other quantifiers are left as they are.
    """
    out = list(pattern)
    opened: list[int] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            assert pattern[i + 1 : i + 2] != "]" and pattern[i + 1 : i + 3] != "^]", pattern  # (']' first: not parsed)
            in_class = True
        elif c == "(":
            opened.append(i)
        elif c == ")":
            start = opened.pop()
            quantifier = pattern[i + 1 : i + 3]
            if pattern.startswith("(?:", start) and quantifier[:1] == "?" and quantifier[1:] not in ("?", "+"):
                out[i], out[i + 1] = "|)", ""
        i += 1
    assert not opened and not in_class, pattern
    return "".join(out)


def _json_field(field: str, group: str | None = None) -> str:
    body = _inline_json(field)
    return f'"{field}":"' + (f"(?P<{group}>{body})" if group else f"(?:{body})") + '"'


def _json_array(field: str, element: str) -> str:
    return f'"{field}":\\[(?:{element}(?:,{element})*)?\\]'


_TIME_OF_DAY = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{0,5}[1-9])?Z"
# The leap years of the proleptic Gregorian calendar (Python's datetime): those divisible by 4,
# but of the centuries only those divisible by 400 (year 0000 is excluded where this is used).
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
# created_at in its one spelling (no zero fraction, no trailing zeros: the rule's own
# fraction), each month with its own days, February 29 in leap years only: the whole calendar.
_TIMESTAMP_STRICT = (
    r"(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))|" + _LEAP_YEAR + "-02-29)" + _TIME_OF_DAY
)
# The same, with days 29-31 of any month: checked against the real calendar afterwards.
_TIMESTAMP_WIDE = r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])" + _TIME_OF_DAY

# A decimal that is certainly the canonical spelling of its value, with no need to encode it: at most
# 10 integer and 5 fraction digits (15 significant digits: an IEEE double keeps any such decimal
# exactly, so its shortest round-trip spelling has the same digits), no trailing zero in the
# fraction but ".0" itself, and in [0.00001, 1e10), where msgspec writes plain decimals, never
# exponents (tests/test_fast_paths.py compares the two over random decimals).
_SHORT_DECIMAL = r"(?:0|[1-9][0-9]{0,9})\.(?:0|[0-9]{0,4}[1-9])"
# A non-negative decimal with a '.', the only form the wide regex takes; that it is the
# canonical spelling of its value is checked afterwards (msgspec writes 1e-05 as 0.00001).
_DECIMAL = r"(?:0|[1-9][0-9]*)\.[0-9]+"
_is_short_decimal = re.compile(_SHORT_DECIMAL.encode("ascii")).fullmatch


def _canonical_line(timestamp: str, decimal: str, *, numbers: bool = True) -> str:
    """The pattern of a canonical row: groups ``commit`` and ``created``, and with ``numbers``
    ``kwh`` and ``co2e_kg`` (the energy numbers' spelling, for the wide regex to check)."""
    kwh, co2e_kg = ("(?P<kwh>", "(?P<co2e_kg>") if numbers else ("(?:", "(?:")
    return _optional_groups_as_branches(
        r"\{"
        + ",".join(
            [
                _json_field("lakefs_repo"),
                _json_field("lakefs_branch"),
                _json_field("lakefs_commit", "commit"),
                f'"created_at":"(?P<created>{timestamp})"',
                _json_field("producer"),
                _json_field("openlineage_run_id"),
                _json_field("otel_trace_id"),
                # An s3:// URI whose last path segment is "<lakefs_commit>.tar.zst".
                '"artifact_uri":"(?=' + _inline_json("artifact_uri") + r'")[^"]*/(?P=commit)\.tar\.zst"',
                _json_array(
                    "data_snapshot", r"\{" + _json_field("stac") + "," + _json_field("lakefs_ref") + r"\}"
                ),
                _json_array(
                    "models",
                    r"\{" + _json_field("name") + "," + _json_field("version") + "," + _json_field("uri") + r"\}",
                ),
                _json_array("configs", r"\{" + _json_field("path") + "," + _json_field("sha256") + r"\}"),
                r'"checksums":\{' + _json_field("artifact_sha256") + r"\}",
                r'"signatures":\{' + _json_field("in_toto") + r"\}",
                rf'"energy_carbon":\{{"kwh":{kwh}{decimal}),"co2e_kg":{co2e_kg}{decimal})\}}',
            ]
        )
        + r"\}"
    )


_STRICT_LINE = re.compile(_canonical_line(_TIMESTAMP_STRICT, _SHORT_DECIMAL).encode("ascii")).fullmatch
#: The strict regex's ``fullmatch``: a match means :func:`canonical_line_bytes` would return its
#: groups ``commit`` and ``created`` with nothing else to check.
strict_canonical_line = _STRICT_LINE
#: ``findall`` of the strict regex over newline-terminated lines: ``(commit, created)`` of each line
#: it matches whole, in order.  A match begins where a line begins (``^``, multi-line) and takes
#: the line's newline: the layout holds no newline and every class excludes it.  So as many pairs
#: as lines means every line matched (a bulk worker's chunk, in one call: no match objects).
strict_canonical_rows = re.compile(
    ("(?m)^" + _canonical_line(_TIMESTAMP_STRICT, _SHORT_DECIMAL, numbers=False) + "\n").encode("ascii")
).findall
_WIDE_LINE = re.compile(_canonical_line(_TIMESTAMP_WIDE, _DECIMAL).encode("ascii")).fullmatch


def canonical_line_bytes(line: bytes) -> tuple[bytes, bytes] | None:
    """:func:`canonical_line_fields` with the two values as ASCII bytes (a bulk worker joins
    them and decodes once per chunk)."""
    m = _STRICT_LINE(line)
    if m is not None:
        return m.group("commit", "created")  # type: ignore[return-value]
    m = _WIDE_LINE(line)
    if m is None:
        return None
    for number in m.group("kwh", "co2e_kg"):
        if _is_short_decimal(number) is None and ENCODER.encode(float(number)) != number:
            return None
    commit, created = m.group("commit", "created")
    if created[8:10] > b"28":  # the days the wide pattern cannot rule out (Feb 30, Apr 31)
        try:
            timestamp_to_datetime(created.decode("ascii"))
        except SchemaError:
            return None
    return commit, created


def canonical_line_fields(line: bytes) -> tuple[str, str] | None:
    """``(lakefs_commit, created_at)`` if ``line`` is a valid row in canonical form, else None.

    The fast path for bulk appends and verify: when it returns a pair, validating and
    canonicalising ``line`` (:func:`canonicalize`) would succeed and give ``line`` itself.
    None does not mean the line is invalid, only that the general path must decide.  The
    line size limit is the caller's.
    """
    found = canonical_line_bytes(line)
    if found is None:
        return None
    return found[0].decode("ascii"), found[1].decode("ascii")
