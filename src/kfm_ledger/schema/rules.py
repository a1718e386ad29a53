"""The row's rules: limits, the per-field patterns and what a message says each expects.

Each pattern is written once and used three ways: alone by msgspec when diagnosing a bad
row (:mod:`.checked`), inside one combined regex that checks a whole row at once
(:data:`.checked.ROW_SHAPE`, :mod:`.fast_path`), and in the JSON Schema (:mod:`.json_schema`).

Pure: no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "MAX_LINE_BYTES",
    "NUMBER_EXPECTED",
    "NUMBER_FIELDS",
    "SCHEMA_ID",
    "STORED_STRING_RULES",
    "STRING_RULES",
    "TIMESTAMP_PATTERN",
    "Rule",
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
# Commit ids are lower-case (as git and lakeFS print them): one spelling per commit, and
# bundle names that cannot collide on a case-insensitive store.
_COMMIT = r"^(?!\.\.?\Z)[a-z0-9._-]{1,128}\Z"
# One spelling per instant: no fraction when it is zero, else 1-6 digits without
# trailing zeros ("...:00Z", "...:00.25Z"; never "...:00.0Z" or "...:00.250000Z").
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{0,5}[1-9])?Z\Z"
# What rows stored before those two rules were tightened may hold (read, never appended).
_STORED_COMMIT = r"^(?!\.\.?\Z)[A-Za-z0-9._-]{1,128}\Z"
STORED_TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z\Z"
_SHA256 = r"^[0-9a-f]{64}\Z"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_KEY = r"[^\s/" + _CONTROL + r"][^\s" + _CONTROL + r"]*"
_S3_URI = r"^s3://" + _BUCKET + "/" + _KEY + r"\Z"
_HTTPS_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
_STAC_URI = r"^(?:s3://" + _BUCKET + "/" + _KEY + "|https://" + _HTTPS_HOST + "/" + _KEY + r")\Z"
_LAKEFS_REF = r"^lakefs://[A-Za-z0-9][A-Za-z0-9_.-]*@[A-Za-z0-9_.~^-]+(?:/[^\s" + _CONTROL + r"]*)?\Z"


class Rule(NamedTuple):
    """What one string field must match; ``expected`` completes "expected ..., found ..."."""

    pattern: str
    expected: str
    description: str


_TEXT_RULE = Rule(
    _TEXT,
    "non-empty text without control characters or leading/trailing whitespace",
    "Non-empty text; no control characters, no leading or trailing whitespace.",
)
_SHA256_RULE = Rule(_SHA256, "64 lowercase hex digits", "SHA-256 digest: 64 lowercase hex digits.")
_S3_RULE = Rule(_S3_URI, "an s3://<bucket>/<key> URI", "s3://<bucket>/<key> URI.")

# Every leaf field name is unique across the structs, so the name alone says the rule.
STRING_RULES: dict[str, Rule] = {
    "lakefs_repo": _TEXT_RULE,
    "lakefs_branch": Rule(
        _BRANCH,
        "a lakeFS branch name (letters, digits, '_', '-', '.', '/'; "
        "starting with a letter, digit or '_'; at most 256 characters)",
        "lakeFS branch name: letters, digits, '_', '-', '.', '/'; starts with a letter, digit or '_'.",
    ),
    "lakefs_commit": Rule(
        _COMMIT,
        "a lakeFS commit id: 1 to 128 lower-case letters, digits, '-', '_' or '.' (not '.' or '..')",
        "lakeFS commit id, lower-case; names the bundle rollback-registry/artifacts/<lakefs_commit>.tar.zst.",
    ),
    "created_at": Rule(
        TIMESTAMP_PATTERN,
        "an RFC 3339 UTC timestamp ending in 'Z' in its one spelling "
        "(YYYY-MM-DDTHH:MM:SS[.ffffff]Z: no fraction when it is zero, "
        "else 1 to 6 fractional digits without trailing zeros)",
        "RFC 3339 UTC timestamp YYYY-MM-DDTHH:MM:SS[.ffffff]Z; no fraction when it is zero, "
        "else 1 to 6 digits without trailing zeros.",
    ),
    "producer": _TEXT_RULE,
    "openlineage_run_id": _TEXT_RULE,
    "otel_trace_id": _TEXT_RULE,
    "artifact_uri": Rule(
        _S3_URI,
        "an s3://<bucket>/<key> URI",
        "s3:// URI of the rollback bundle; its last path segment is '<lakefs_commit>.tar.zst'.",
    ),
    "stac": Rule(
        _STAC_URI,
        "an s3://<bucket>/<key> or https://<host>/<path> URI",
        "STAC document: s3://<bucket>/<key> or https://<host>/<path>.",
    ),
    "lakefs_ref": Rule(
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
    "in_toto": Rule(_S3_URI, "an s3://<bucket>/<key> URI", "s3:// URI of the in-toto / SLSA attestation."),
}
#: The rules a stored row is read with: :data:`STRING_RULES` with the wider
#: ``lakefs_commit`` and ``created_at`` patterns that rows appended before those two rules
#: were tightened may hold (upper-case commit ids; ``.0`` or trailing-zero fractions).  New rows are
#: held to :data:`STRING_RULES`; ``kfm verify`` notes stored rows that only pass these.
STORED_STRING_RULES: dict[str, Rule] = {
    **STRING_RULES,
    "lakefs_commit": STRING_RULES["lakefs_commit"]._replace(pattern=_STORED_COMMIT),
    "created_at": STRING_RULES["created_at"]._replace(pattern=STORED_TIMESTAMP_PATTERN),
}
NUMBER_EXPECTED = "a finite number >= 0"
NUMBER_FIELDS = {"kwh": "Energy used, kWh (>= 0).", "co2e_kg": "Emissions, kg CO2e (>= 0)."}
