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
* ``lakefs_commit``: 1 to 128 lower-case letters, digits, ``- _ .``, not ``.`` or ``..``: it names
  the bundle file ``rollback-registry/artifacts/<lakefs_commit>.tar.zst`` (one case, so
  two ids cannot name one file on a case-insensitive store).
* ``created_at``: RFC 3339 §5.6 in UTC, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``: upper-case
  ``T`` and ``Z`` required (no numeric offsets, not even ``+00:00``), at most six
  fractional digits (so a :class:`datetime.datetime` holds it exactly), one spelling
  per instant (no fraction when it is zero, else no trailing zeros: ``...:00Z``,
  ``...:00.25Z``; never ``...:00.0Z`` or ``...:00.250000Z``), and a real date and time
  (no Feb 30, no hour 24, no leap second ``:60``).  Rows stored before the commit case
  and this spelling were enforced are still read (:func:`decode_row` and
  :func:`decode_canonical_line` use :data:`.rules.STORED_STRING_RULES`); new rows
  (:func:`canonicalize`, :func:`encode_row`, :func:`parse_batch`, the fast path) are
  held to these rules.
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

Modules (one concept each; this package re-exports their public names):

* :mod:`.rules`: the limits (:data:`MAX_LINE_BYTES`), :data:`SCHEMA_ID` and the per-field rules;
* :mod:`.rows`: the row types (msgspec Structs) and :class:`Entry`;
* :mod:`.checked`: the rules applied to the row types (checked twin, combined row regex);
* :mod:`.timestamps`: ``created_at`` parsing and ordering;
* :mod:`.fast_path`: the canonical-line fast path (:func:`canonical_line_fields`);
* :mod:`.codec`: one row: decode, encode, canonicalise;
* :mod:`.batch`: batches with input line numbers, the batch rules;
* :mod:`.messages`: the wording of problems (error path only);
* :mod:`.problems`: every problem of a refused row, not only the first (error path only);
* :mod:`.json_schema`: the JSON Schema export.

Pure: no I/O, and nothing imported from outer layers (only :mod:`kfm_ledger.errors`).
"""

from __future__ import annotations

from .batch import (
    backwards_problem,
    check_batch,
    check_rows,
    parse_batch,
    parse_rows,
    repeated_commit_problem,
)
from .codec import canonicalize, decode_canonical_line, decode_row, encode_row
from .fast_path import canonical_line_bytes, canonical_line_fields
from .json_schema import row_json_schema
from .problems import row_problems
from .rows import Checksums, Config, DataSnapshot, EnergyCarbon, Entry, Model, Row, Signatures
from .rules import MAX_LINE_BYTES, SCHEMA_ID
from .timestamps import created_at_datetime, created_at_order_key, parse_created_at

__all__ = [
    "MAX_LINE_BYTES",
    "SCHEMA_ID",
    "Checksums",
    "Config",
    "DataSnapshot",
    "EnergyCarbon",
    "Entry",
    "Model",
    "Row",
    "Signatures",
    "backwards_problem",
    "canonical_line_bytes",
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
    "row_problems",
]
