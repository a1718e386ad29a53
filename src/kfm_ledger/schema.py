"""The Rollback Registry Index row: schema, strict decoding, canonical bytes, batch parsing.

The row is the one in the KFM v11.2.2 spec, section "Index Schema (Authoritative)":
fourteen fields, all required, in this order::

    lakefs_repo, lakefs_branch, lakefs_commit, created_at, producer,
    openlineage_run_id, otel_trace_id, artifact_uri,
    data_snapshot[{stac, lakefs_ref}], models[{name, version, uri}],
    configs[{path, sha256}], checksums{artifact_sha256}, signatures{in_toto},
    energy_carbon{kwh, co2e_kg}

**Canonical bytes** (what is stored as one JSONL line and hashed as a Merkle leaf,
RFC 9162 §2.1.1): compact JSON (no spaces), the schema's field order at every level,
no trailing newline, strings as msgspec writes them (UTF-8, only ``"``, ``\\`` and
control characters escaped), numbers as msgspec writes floats: the shortest digits that
round-trip, always with a ``.`` or an exponent (``2`` -> ``2.0``, ``1e-05`` ->
``0.00001``, ``1e20`` -> ``1e20``), ``-0.0`` written as ``0.0``.  Input in any key
order and with any whitespace canonicalises to the same bytes.  Stored lines are never
re-encoded to be hashed; :func:`encode_row` of a decoded stored line reproduces it.

**Validation rules** (each failure names the JSON path and the value found):

* unknown fields are rejected at every level; every field is required (lists may be
  empty: ``data_snapshot``, ``models``, ``configs``); types are exact (no string for a
  number, no ``true`` for a number; an integer is accepted as a number and written as a
  float); duplicate keys in one object are rejected.
* text fields (``lakefs_repo``, ``producer``, ``openlineage_run_id``, ``otel_trace_id``,
  ``models[].name``, ``models[].version``, ``configs[].path``): non-empty, no control
  characters (C0, DEL, C1), no leading or trailing whitespace.  Run and trace ids are
  not forced to be UUIDs / 32 hex digits because the spec's own examples are not.
* ``lakefs_branch``: letters, digits, ``_ - . /``, starting with a letter, digit or
  ``_``, at most 256 characters (a superset of lakeFS's ``^\\w[-\\w]*$`` that also
  admits ``release/v1``-style names).
* ``lakefs_commit``: 1 to 128 letters, digits, ``- _ .``, not ``.`` or ``..``: it names
  the bundle file ``rollback-registry/artifacts/<lakefs_commit>.tar.zst``.
* ``created_at``: RFC 3339 §5.6 in UTC, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``: upper-case
  ``T`` and ``Z`` required (no numeric offsets, not even ``+00:00``), at most six
  fractional digits (so a :class:`datetime.datetime` holds it exactly), and a real
  date and time (no Feb 30, no hour 24, no leap second ``:60``).
* ``configs[].sha256``, ``checksums.artifact_sha256``: exactly 64 lower-case hex digits.
* ``artifact_uri``, ``models[].uri``, ``signatures.in_toto``: ``s3://<bucket>/<key>``
  with an S3 bucket name (3-63 of ``a-z 0-9 . -``, starting and ending with a letter or
  digit) and a non-empty key without whitespace or control characters.
  ``artifact_uri``'s last path segment must be exactly ``<lakefs_commit>.tar.zst``.
* ``data_snapshot[].stac``: ``s3://<bucket>/<key>`` (as in the spec) or
  ``https://<host>[:port]/<path>``.
* ``data_snapshot[].lakefs_ref``: ``lakefs://<repo>@<ref>[/<path>]``, the spec's form
  (``lakefs://kfm@abc123/path``); ``<ref>`` is letters, digits, ``_ . - ~ ^``.
* ``energy_carbon.kwh``, ``energy_carbon.co2e_kg``: finite numbers >= 0 (a literal too
  large for a 64-bit float, like ``1e400``, is rejected, not read as infinity).

Batch rules (:func:`parse_batch`): a ``lakefs_commit`` at most once per batch;
``created_at`` never goes backwards from one row to the next (equal is allowed); a
canonical line is at most :data:`MAX_LINE_BYTES`.  Rules that need the ledger (a commit
already stored, the batch starting before the ledger's last row) are the ledger's.

The JSON Schema (:func:`row_json_schema`) states every per-field rule above except the
ones JSON Schema cannot express: the real-date check, the ``artifact_uri``/commit
cross-check and duplicate keys.

Pure: no I/O.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

import msgspec

from .errors import InputRejected, RowProblem, SchemaError

__all__ = [
    "MAX_LINE_BYTES",
    "Checksums",
    "Config",
    "DataSnapshot",
    "EnergyCarbon",
    "Entry",
    "Model",
    "Row",
    "Signatures",
    "backwards_problem",
    "canonical_line_fields",
    "canonicalize",
    "check_batch",
    "check_rows",
    "created_at_datetime",
    "created_at_order_key",
    "decode_canonical_line",
    "decode_row",
    "encode_row",
    "parse_batch",
    "parse_created_at",
    "parse_rows",
    "repeated_commit_problem",
    "row_json_schema",
]

#: A stored line's size limit in bytes, without its newline.  C2SP tlog-tiles entry
#: bundles prefix each entry with a big-endian uint16 length (c2sp.org/tlog-tiles,
#: "Log entries"), so no leaf can be longer.
MAX_LINE_BYTES = 65535

#: The JSON Schema's ``$id``.
SCHEMA_ID = "urn:kfm:schemas:rollback-registry-index:row:v11.2.2"

# ------------------------------------------------------------------ the rules
#
# Each pattern is written once and used three ways: alone by msgspec when diagnosing a
# bad row (Python ``re``, ``search`` semantics), inside one combined regex that checks
# a whole row at once on the fast path, and in the JSON Schema (ECMA-262).  They end in
# ``\Z`` here because Python's ``$`` also matches before a final newline ("<64 hex>\n"
# would pass ``^[0-9a-f]{64}$``); the JSON Schema export writes ``$``, which in ECMA-262
# means end of input.  Only syntax common to both dialects is used (classes, ``\x``
# escapes, ``\s``, ``(?:``, ``(?!``).

_CONTROL = r"\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
_TEXT = r"^[^\s" + _CONTROL + r"](?:[^" + _CONTROL + r"]*[^\s" + _CONTROL + r"])?\Z"
_BRANCH = r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,255}\Z"
_COMMIT = r"^(?!\.\.?\Z)[A-Za-z0-9._-]{1,128}\Z"
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z\Z"
_SHA256 = r"^[0-9a-f]{64}\Z"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_KEY = r"[^\s/" + _CONTROL + r"][^\s" + _CONTROL + r"]*"
_S3_URI = r"^s3://" + _BUCKET + "/" + _KEY + r"\Z"
_HTTPS_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
_STAC_URI = r"^(?:s3://" + _BUCKET + "/" + _KEY + "|https://" + _HTTPS_HOST + "/" + _KEY + r")\Z"
_LAKEFS_REF = r"^lakefs://[A-Za-z0-9][A-Za-z0-9_.-]*@[A-Za-z0-9_.~^-]+(?:/[^\s" + _CONTROL + r"]*)?\Z"


class _Rule(NamedTuple):
    """What one string field must match; ``expected`` completes "expected ..., found ..."."""

    pattern: str
    expected: str
    description: str


_TEXT_RULE = _Rule(
    _TEXT,
    "non-empty text without control characters or leading/trailing whitespace",
    "Non-empty text; no control characters, no leading or trailing whitespace.",
)
_SHA256_RULE = _Rule(_SHA256, "64 lowercase hex digits", "SHA-256 digest: 64 lowercase hex digits.")
_S3_RULE = _Rule(_S3_URI, "an s3://<bucket>/<key> URI", "s3://<bucket>/<key> URI.")

# Every leaf field name is unique across the structs, so the name alone says the rule.
_STRING_RULES: dict[str, _Rule] = {
    "lakefs_repo": _TEXT_RULE,
    "lakefs_branch": _Rule(
        _BRANCH,
        "a lakeFS branch name (letters, digits, '_', '-', '.', '/'; "
        "starting with a letter, digit or '_'; at most 256 characters)",
        "lakeFS branch name: letters, digits, '_', '-', '.', '/'; starts with a letter, digit or '_'.",
    ),
    "lakefs_commit": _Rule(
        _COMMIT,
        "a lakeFS commit id: 1 to 128 letters, digits, '-', '_' or '.' (not '.' or '..')",
        "lakeFS commit id; names the bundle rollback-registry/artifacts/<lakefs_commit>.tar.zst.",
    ),
    "created_at": _Rule(
        _TIMESTAMP,
        "an RFC 3339 UTC timestamp ending in 'Z' "
        "(YYYY-MM-DDTHH:MM:SS[.ffffff]Z, at most 6 fractional digits)",
        "RFC 3339 UTC timestamp YYYY-MM-DDTHH:MM:SS[.ffffff]Z.",
    ),
    "producer": _TEXT_RULE,
    "openlineage_run_id": _TEXT_RULE,
    "otel_trace_id": _TEXT_RULE,
    "artifact_uri": _Rule(
        _S3_URI,
        "an s3://<bucket>/<key> URI",
        "s3:// URI of the rollback bundle; its last path segment is '<lakefs_commit>.tar.zst'.",
    ),
    "stac": _Rule(
        _STAC_URI,
        "an s3://<bucket>/<key> or https://<host>/<path> URI",
        "STAC document: s3://<bucket>/<key> or https://<host>/<path>.",
    ),
    "lakefs_ref": _Rule(
        _LAKEFS_REF,
        "a lakefs://<repo>@<ref>[/<path>] URI",
        "lakeFS reference lakefs://<repo>@<ref>[/<path>].",
    ),
    "name": _TEXT_RULE,
    "version": _TEXT_RULE,
    "uri": _S3_RULE,
    "path": _TEXT_RULE,
    "sha256": _SHA256_RULE,
    "artifact_sha256": _SHA256_RULE,
    "in_toto": _Rule(_S3_URI, "an s3://<bucket>/<key> URI", "s3:// URI of the in-toto / SLSA attestation."),
}
_NUMBER_EXPECTED = "a finite number >= 0"
_NUMBER_FIELDS = {"kwh": "Energy used, kWh (>= 0).", "co2e_kg": "Emissions, kg CO2e (>= 0)."}

# ------------------------------------------------------------------- structs
#
# The public structs hold plain types so that decoding is fast (msgspec checks types,
# required and unknown fields in C).  The string and number rules above are checked on
# the fast path by one combined regex (_ROW_SHAPE); only a row that fails it is decoded
# again with a checked twin of the structs (built from the rules, with msgspec.Meta
# constraints) to learn which field failed.  The twin is also what the JSON Schema is
# generated from.


class DataSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """One ``data_snapshot[]`` element: a STAC document and the lakeFS ref it was read at."""

    stac: str
    lakefs_ref: str


class Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """One ``models[]`` element: a model's name, version and s3:// URI."""

    name: str
    version: str
    uri: str


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """One ``configs[]`` element: a config file's path and SHA-256 (hex)."""

    path: str
    sha256: str


class Checksums(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """``checksums``: the bundle's SHA-256 (the in-toto subject digest must equal it)."""

    artifact_sha256: str


class Signatures(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """``signatures``: where the in-toto / SLSA attestation is stored."""

    in_toto: str


class EnergyCarbon(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """``energy_carbon``: energy used (kWh) and emissions (kg CO2e), finite and >= 0."""

    kwh: float
    co2e_kg: float

    def __post_init__(self) -> None:
        # -0.0 passes ">= 0" but would encode as "-0.0": one value, one spelling.
        if self.kwh == 0.0:
            msgspec.structs.force_setattr(self, "kwh", 0.0)
        if self.co2e_kg == 0.0:
            msgspec.structs.force_setattr(self, "co2e_kg", 0.0)


class Row(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """One Rollback Registry Index row (spec section "Index Schema"), fields in order.

    Construct with keywords; a row built in Python is only checked when it is encoded
    (:func:`encode_row`, :func:`parse_rows`).  Decoded rows have passed every rule.
    """

    lakefs_repo: str
    lakefs_branch: str
    lakefs_commit: str
    created_at: str
    producer: str
    openlineage_run_id: str
    otel_trace_id: str
    artifact_uri: str
    data_snapshot: list[DataSnapshot]
    models: list[Model]
    configs: list[Config]
    checksums: Checksums
    signatures: Signatures
    energy_carbon: EnergyCarbon


class Entry(NamedTuple):
    """A stored row at its 0-based leaf index.

    ``line`` is the stored canonical bytes without the newline: the Merkle leaf data
    (RFC 9162 §2.1.1), hashed as stored and never re-encoded.
    """

    index: int
    line: bytes
    row: Row


def _checked_twin(cls: type[msgspec.Struct], made: dict[type, Any]) -> Any:
    """A copy of struct ``cls`` whose leaf fields carry the rules as msgspec.Meta."""
    if cls in made:
        return made[cls]
    fields: list[tuple[str, Any]] = []
    for info in msgspec.structs.fields(cls):
        tp: Any = info.type
        if tp is str:
            rule = _STRING_RULES[info.name]
            extra = {"format": "date-time"} if info.name == "created_at" else None
            tp = Annotated[
                str, msgspec.Meta(pattern=rule.pattern, description=rule.description, extra_json_schema=extra)
            ]
        elif tp is float:
            tp = Annotated[float, msgspec.Meta(ge=0, description=_NUMBER_FIELDS[info.name])]
        elif getattr(tp, "__origin__", None) is list:
            tp = list[_checked_twin(tp.__args__[0], made)]  # type: ignore[misc]
        else:
            tp = _checked_twin(tp, made)
        fields.append((info.name, tp))
    twin = msgspec.defstruct(
        cls.__name__, fields, frozen=True, forbid_unknown_fields=True, kw_only=True, module=__name__
    )
    twin.__doc__ = (cls.__doc__ or "").replace("``", "")
    made[cls] = twin
    return twin


_CHECKED_ROW: Any = _checked_twin(Row, {})


def _inline(field: str) -> str:
    """A rule's pattern without its anchors, for the combined regex.

    Fields are separated by NUL there (no field may contain a control character), so
    the one ``\\Z`` inside a pattern (lakefs_commit's "not '.' or '..'" lookahead, the
    commit being followed by a separator) becomes ``\\x00``.
    """
    pattern = _STRING_RULES[field].pattern
    assert pattern.startswith("^") and pattern.endswith(r"\Z")
    return pattern[1:-2].replace(r"\Z", r"\x00")


# The whole row's strings joined as _joined() does: the eight top-level strings with NUL
# between them; then each data_snapshot element after \x01, each model after \x02, each
# config after \x03 (their fields NUL-separated); then \x04 artifact_sha256 NUL in_toto.
_ROW_SHAPE = re.compile(
    r"\x00".join(
        _inline(f)
        for f in (
            "lakefs_repo",
            "lakefs_branch",
            "lakefs_commit",
            "created_at",
            "producer",
            "openlineage_run_id",
            "otel_trace_id",
            "artifact_uri",
        )
    )
    + r"(?:\x01" + _inline("stac") + r"\x00" + _inline("lakefs_ref") + ")*"
    + r"(?:\x02" + _inline("name") + r"\x00" + _inline("version") + r"\x00" + _inline("uri") + ")*"
    + r"(?:\x03" + _inline("path") + r"\x00" + _inline("sha256") + ")*"
    + r"\x04" + _inline("artifact_sha256") + r"\x00" + _inline("in_toto")
).fullmatch


def _joined(row: Row) -> str:
    """The row's strings laid out for _ROW_SHAPE (every field is a str after decoding)."""
    return (
        f"{row.lakefs_repo}\x00{row.lakefs_branch}\x00{row.lakefs_commit}\x00{row.created_at}"
        f"\x00{row.producer}\x00{row.openlineage_run_id}\x00{row.otel_trace_id}\x00{row.artifact_uri}"
        + "".join([f"\x01{d.stac}\x00{d.lakefs_ref}" for d in row.data_snapshot])
        + "".join([f"\x02{m.name}\x00{m.version}\x00{m.uri}" for m in row.models])
        + "".join([f"\x03{c.path}\x00{c.sha256}" for c in row.configs])
        + f"\x04{row.checksums.artifact_sha256}\x00{row.signatures.in_toto}"
    )


_ROW_DECODER = msgspec.json.Decoder(Row)
_ENCODER = msgspec.json.Encoder()

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
    pattern = _STRING_RULES[field].pattern
    assert pattern.startswith("^") and pattern.endswith(r"\Z")
    # The string's closing quote is where the value ends; no character class may cross it.
    return pattern[1:-2].replace(r"\Z", '"').replace("[^", '[^"')


def _json_field(field: str, group: str | None = None) -> str:
    body = _inline_json(field)
    return f'"{field}":"' + (f"(?P<{group}>{body})" if group else f"(?:{body})") + '"'


def _json_array(field: str, element: str) -> str:
    return f'"{field}":\\[(?:{element}(?:,{element})*)?\\]'


# created_at with the calendar checked as far as a regex can cheaply: days 29-31 are
# checked against the real calendar afterwards.
_TIMESTAMP_FAST = (
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?Z"
)
# A non-negative decimal with a '.', the only form the fast path takes; that it is the
# canonical spelling of its value is checked afterwards (msgspec writes 1e-05 as 0.00001).
_DECIMAL = r"(?:0|[1-9][0-9]*)\.[0-9]+"

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
    for name in ("kwh", "co2e_kg"):
        number = m[name]
        if _ENCODER.encode(float(number)) != number:
            return None
    created = m["created"].decode("ascii")
    if created[8:10] > "28":  # the only days the pattern cannot rule out (Feb 30, Apr 31)
        try:
            _timestamp_to_datetime(created)
        except SchemaError:
            return None
    return m["commit"].decode("ascii"), created


def created_at_order_key(created_at: str) -> str:
    """A string that sorts like ``created_at``'s instant: ``YYYY-MM-DDTHH:MM:SS.ffffff``.

    Plain string order is wrong for timestamps with and without fractions
    (``...:00Z`` sorts after ``...:00.5Z``); this key pads the fraction to six digits.
    ``created_at`` must have the schema's form.
    """
    fraction = created_at[20:-1] if len(created_at) > 20 else ""
    return created_at[:19] + "." + fraction.ljust(6, "0")


_CHECKED_DECODER = msgspec.json.Decoder(_CHECKED_ROW)
_ANY_DECODER = msgspec.json.Decoder()
_RAW_DECODER = msgspec.json.Decoder(msgspec.Raw)
_RAW_LIST_DECODER = msgspec.json.Decoder(list[msgspec.Raw])

# ------------------------------------------------------------------ created_at

_UTC = datetime.UTC


def parse_created_at(text: str) -> datetime.datetime:
    """Parse a ``created_at`` value into an aware UTC datetime.

    Accepts exactly the schema's form ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (RFC 3339 §5.6,
    UTC, at most six fractional digits, so the result is exact).  Raises
    :class:`SchemaError` at ``$.created_at`` when the text does not have that form or is
    not a real date and time.
    """
    if not isinstance(text, str) or _TIMESTAMP_RE.search(text) is None:
        expected = _STRING_RULES["created_at"].expected
        raise SchemaError("$.created_at", f"expected {expected}, found {_show(text)}")
    return _timestamp_to_datetime(text)


def created_at_datetime(row: Row) -> datetime.datetime:
    """The row's ``created_at`` as an aware UTC datetime, for ordering checks.

    Compare these, not the strings: ``"...00Z"`` sorts after ``"...00.5Z"`` as text.
    """
    return _timestamp_to_datetime(row.created_at)


_TIMESTAMP_RE = re.compile(_TIMESTAMP)


def _timestamp_to_datetime(text: str) -> datetime.datetime:
    # The pattern has fixed the layout: YYYY-MM-DDTHH:MM:SS[.ffffff]Z.
    try:
        micro = int(text[20:-1].ljust(6, "0")) if len(text) > 20 else 0
        return datetime.datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            micro,
            tzinfo=_UTC,
        )
    except ValueError as e:
        raise SchemaError(
            "$.created_at", f"not a real UTC date and time ({e}), found {_show(text)}"
        ) from None


# ------------------------------------------------------------------- decoding


def decode_row(data: bytes | str) -> Row:
    """Decode and validate one row (one JSON object).

    Strict: every rule in the module docstring.  Raises :class:`SchemaError` with the
    JSON path of the first problem and the value found there.  Surrounding whitespace is
    allowed.  The line size limit is not checked here (see :func:`canonicalize`).
    """
    raw = _as_bytes(data)
    if canonical_line_fields(raw) is not None:  # every rule holds already (stored lines)
        return _ROW_DECODER.decode(raw)
    row, _, _ = _decode_and_encode(raw)
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
        first = _ENCODER.encode(row)
    except (TypeError, ValueError, msgspec.EncodeError) as e:
        raise SchemaError("$", f"cannot encode the row as JSON: {e}") from None
    _, canonical, _ = _decode_and_encode(first)
    return canonical


def canonicalize(data: bytes | str) -> bytes:
    """Validate one row and return its canonical line (no newline).

    :func:`decode_row`, then :func:`encode_row`, then the size limit: raises
    :class:`SchemaError` at ``$`` when the canonical line exceeds :data:`MAX_LINE_BYTES`.
    """
    _, canonical, _ = _decode_and_encode(_as_bytes(data))
    _check_size(canonical)
    return canonical


def decode_canonical_line(line: bytes) -> Row:
    """Decode a stored ledger line and check that it is canonical, in one pass.

    For re-reading a ledger: equivalent to ``decode_row(line)`` plus
    ``encode_row(row) == line`` plus the size limit, at the cost of one validation.
    Raises :class:`SchemaError` (at ``$`` when the bytes are valid but not canonical).
    """
    line = _as_bytes(line)
    if len(line) <= MAX_LINE_BYTES and canonical_line_fields(line) is not None:
        return _ROW_DECODER.decode(line)  # valid and canonical by construction
    row, canonical, _ = _decode_and_encode(line)
    if canonical != line:
        raise SchemaError(
            "$", "not in canonical form: compact JSON in schema field order expected"
        )
    _check_size(canonical)
    return row


def _as_bytes(data: bytes | str) -> bytes:
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


def _check_size(canonical: bytes) -> None:
    if len(canonical) > MAX_LINE_BYTES:
        raise SchemaError(
            "$",
            f"canonical row is {len(canonical)} bytes, over the {MAX_LINE_BYTES}-byte limit "
            "of a stored line (c2sp.org/tlog-tiles entry bundles use a uint16 length)",
        )


def _decode_and_encode(raw: bytes) -> tuple[Row, bytes, datetime.datetime]:
    """Decode ``raw`` as a Row, run the checks msgspec cannot; return (row, canonical, created_at)."""
    try:
        row = _ROW_DECODER.decode(raw)
    except msgspec.ValidationError as e:
        raise _friendly_validation_error(str(e), raw) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise SchemaError("$", _syntax_message(raw, e)[1]) from None
    except RecursionError:
        raise SchemaError("$", _too_deep_message(raw, 0)[1]) from None
    energy = row.energy_carbon
    if _ROW_SHAPE(_joined(row)) is None or not (energy.kwh >= 0 and energy.co2e_kg >= 0):
        raise _diagnose(raw)
    canonical = _ENCODER.encode(row)
    # Duplicate keys: msgspec keeps the last one silently.  Cheap screen: without "\u"
    # escapes, every '"' inside a string must be written '\"', so the input holds at least
    # as many '"' bytes as the canonical form unless it has extra keys (duplicates).
    # Only when the screen fires is the slow, exact check run.
    if b"\\u" in raw or raw.count(b'"') > canonical.count(b'"'):
        _reject_duplicate_keys(raw)
    # Cross-field and calendar checks (JSON Schema cannot state these).
    created = _timestamp_to_datetime(row.created_at)
    commit = row.lakefs_commit
    bundle = commit + ".tar.zst"
    uri = row.artifact_uri
    if not uri.endswith(bundle) or uri[-len(bundle) - 1] != "/":
        found = uri.rsplit("/", 1)[-1]
        raise SchemaError(
            "$.artifact_uri",
            f"last path segment must be {bundle!r} (the bundle for lakefs_commit {commit!r}), "
            f"found {_show(found)}",
        )
    return row, canonical, created


def _diagnose(raw: bytes) -> SchemaError:
    """Which field broke a rule: decode again with the checked twin (error path only)."""
    try:
        _CHECKED_DECODER.decode(raw)
    except msgspec.ValidationError as e:
        return _friendly_validation_error(str(e), raw)
    # Unreachable while _ROW_SHAPE and the twin state the same rules.
    return SchemaError("$", "row does not follow the schema")  # pragma: no cover


class _Pairs(list):  # type: ignore[type-arg]
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
                raise SchemaError(path, f"duplicate key {_show(key)}")
            seen.add(key)
            _walk_for_duplicates(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk_for_duplicates(item, f"{path}[{i}]")


# -------------------------------------------------------- friendly messages

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


def _friendly_validation_error(text: str, raw: bytes) -> SchemaError:
    """Turn msgspec's "Expected `str` matching regex '...' - at `$.x`" into "$.x: expected ..., found ..."."""
    m = _MSGSPEC_PATH.search(text)
    path = m.group(1) if m else "$"
    what = text[: m.start()] if m else text
    if mm := _MISSING.match(what):
        return SchemaError(path, f"missing required field {_show(mm.group(1))}")
    if mm := _UNKNOWN.match(what):
        return SchemaError(path, f"unknown field {_show(mm.group(1))}")
    found = _value_at(raw, path)
    if what == "Number out of range":
        shown = "a number out of range for a 64-bit float"
    elif found is _MISSING_VALUE:
        shown = "a value that cannot be shown"
    else:
        shown = _show(found)
    if mm := _TYPE_ERROR.match(what):
        expected = _TYPE_NAMES.get(mm.group(1), mm.group(1))
        return SchemaError(path, f"expected {expected}, found {shown}")
    field = path.rsplit(".", 1)[-1]
    if field in _STRING_RULES:
        return SchemaError(path, f"expected {_STRING_RULES[field].expected}, found {shown}")
    if field in _NUMBER_FIELDS:
        return SchemaError(path, f"expected {_NUMBER_EXPECTED}, found {shown}")
    return SchemaError(path, f"{_lower_first(what)}, found {shown}")  # pragma: no cover


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
        raise SchemaError("$", _too_deep_message(raw, 0)[1]) from None


def _show(value: Any, limit: int = 80) -> str:
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


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# ------------------------------------------------------------------- batches


def parse_batch(data: bytes | str) -> list[tuple[int, Row, bytes]]:
    """Validate a batch of rows; return ``(input line, row, canonical line)`` for each.

    ``data`` is one JSON object, a JSON array of objects, or JSONL (one object per line;
    blank lines are skipped and still counted).  The line reported for a row is the
    1-based line of the input where the row starts (for an array: where its element
    starts).  A UTF-8 byte order mark at the start is ignored.  Input with no rows gives
    ``[]``; refusing an empty append is the caller's decision.

    Everything is validated and every problem collected: the schema (first problem per
    row), the line size limit, a ``lakefs_commit`` repeated within the batch, and
    ``created_at`` going backwards from one valid row to the next.  If anything is
    wrong, raises :class:`InputRejected` listing all the :class:`RowProblem` s in line
    order.  Input nested too deeply for the decoder (RecursionError) is a problem like
    any other: "nested more than 64 levels deep", on the line where that depth is reached.
    """
    rows, problems = check_batch(data)
    if problems:
        raise InputRejected(problems)
    return rows


def check_batch(data: bytes | str) -> tuple[list[tuple[int, Row, bytes]], list[RowProblem]]:
    """:func:`parse_batch` without raising: the rows that passed, and every problem (line order).

    For callers that check more (the ledger's rules) before they report.
    """
    try:
        raw = _as_batch_bytes(data)
    except InputRejected as e:
        return [], list(e.problems)
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    start = _SKIP_SPACE(raw, bom).end()
    if start == len(raw):
        return [], []
    problems: list[RowProblem] = []
    items: list[tuple[int, bytes]]
    if raw[start] == ord("["):
        items = _array_items(raw, start, problems)
    elif raw[start] == ord("{") and _is_one_object(raw, start):
        items = _single_item(raw, start, problems)
    else:
        items = _jsonl_items(raw, bom)
    rows = _validate_items(items, problems)
    problems.sort(key=lambda p: p.line)
    return rows, problems


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
            items.append((number, _ENCODER.encode(row)))
        except (TypeError, ValueError, msgspec.EncodeError) as e:
            problems.append(RowProblem(number, "$", f"cannot encode the row as JSON: {e}"))
    result = _validate_items(items, problems)
    problems.sort(key=lambda p: p.line)
    return result, problems


def _validate_items(
    items: list[tuple[int, bytes]], problems: list[RowProblem]
) -> list[tuple[int, Row, bytes]]:
    """Validate each (line, raw row) and the batch rules; append problems, return the good rows."""
    result: list[tuple[int, Row, bytes]] = []
    first_line_of: dict[str, int] = {}
    previous: tuple[int, datetime.datetime, str] | None = None  # line, time, text
    for line, item in items:
        try:
            row, canonical, created = _decode_and_encode(item)
            _check_size(canonical)
        except SchemaError as e:
            problems.append(RowProblem(line, e.path, e.message))
            continue
        commit = row.lakefs_commit
        if commit in first_line_of:
            problems.append(repeated_commit_problem(line, commit, first_line_of[commit]))
        else:
            first_line_of[commit] = line
        if previous is not None and created < previous[1]:
            problems.append(backwards_problem(line, row.created_at, previous[0], previous[2]))
        previous = (line, created, row.created_at)
        result.append((line, row, canonical))
    return result


def repeated_commit_problem(line: int, commit: str, first_line: int) -> RowProblem:
    """The batch rule "a lakefs_commit at most once per batch", broken on ``line``."""
    return RowProblem(
        line,
        "$.lakefs_commit",
        f"duplicate lakefs_commit {_show(commit)}: also on line {first_line} (one row per lakeFS commit)",
    )


def backwards_problem(line: int, created_at: str, before_line: int, before: str) -> RowProblem:
    """The batch rule "created_at never goes backwards", broken on ``line``."""
    return RowProblem(
        line,
        "$.created_at",
        f"created_at goes backwards: {_show(created_at)} is earlier than {_show(before)} on line {before_line}",
    )


def _as_batch_bytes(data: bytes | str) -> bytes:
    try:
        return _as_bytes(data)
    except SchemaError as e:
        raise InputRejected([RowProblem(1, e.path, e.message)]) from None


_SPACE = b" \t\r\n"  # JSON whitespace (RFC 8259 §2)
_SKIP_SPACE = re.compile(rb"[ \t\r\n]*").match


def _line_of_byte(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, max(0, min(offset, len(raw)))) + 1


_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")


def _syntax_message(raw: bytes, error: Exception) -> tuple[int, str]:
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
    m = _BYTE_OFFSET.search(text)
    offset = int(m.group(1)) if m else len(raw)
    return offset, f"invalid JSON: {_lower_first(text)}"


#: Depth named when input is nested too deeply to decode (a row nests 3 levels; msgspec
#: and json raise RecursionError somewhere near Python's recursion limit).
_MAX_DEPTH = 64
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _too_deep_message(raw: bytes, start: int) -> tuple[int, str]:
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


def _too_deep_problem(raw: bytes, start: int) -> RowProblem:
    offset, message = _too_deep_message(raw, start)
    return RowProblem(_line_of_byte(raw, offset), "$", message)


def _syntax_problem(raw: bytes, start: int, error: Exception) -> RowProblem:
    """A RowProblem for malformed input that starts at ``raw[start]``, on the line of the fault."""
    offset, message = _syntax_message(raw[start:], error)
    # Offsets in the message count from the start of the whole input.
    if isinstance(error, UnicodeDecodeError):
        message = f"invalid UTF-8 at byte {start + offset}"
    else:
        message = _BYTE_OFFSET.sub(f"(byte {start + offset})", message, count=1)
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


def _jsonl_items(raw: bytes, bom: int) -> list[tuple[int, bytes]]:
    """The non-blank lines of JSONL with their 1-based line numbers."""
    lines = raw[bom:].split(b"\n") if bom else raw.split(b"\n")
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip(_SPACE)]


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


# ---------------------------------------------------------------- JSON Schema


def row_json_schema() -> dict[str, Any]:
    """The row as a JSON Schema (draft 2020-12), for ``kfm schema``.

    Generated from the structs, so it cannot drift from them: every field required,
    ``additionalProperties: false`` at every level, the patterns above (in ECMA-262 form),
    ``minimum: 0`` for the numbers.  Not expressible here and enforced only by kfm: real
    calendar dates, ``artifact_uri`` ending in ``<lakefs_commit>.tar.zst``, no duplicate
    keys, the line size limit, and the batch rules.
    """
    generated = msgspec.json.schema(_CHECKED_ROW)
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
