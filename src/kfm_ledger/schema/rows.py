"""The row types: the msgspec Structs of one Rollback Registry Index row, and a stored Entry.

Pure: no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

__all__ = [
    "ENCODER",
    "ROW_DECODER",
    "Checksums",
    "Config",
    "DataSnapshot",
    "EnergyCarbon",
    "Entry",
    "Model",
    "Row",
    "Signatures",
]

# ------------------------------------------------------------------- structs
#
# The public structs hold plain types so that decoding is fast (msgspec checks types,
# required and unknown fields in C).  The string and number rules (:mod:`.rules`) are checked on
# the fast path by one combined regex (ROW_SHAPE); only a row that fails it is decoded
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

    # The field is named "index" in the public API, so it shadows tuple.index on purpose.
    index: int  # type: ignore[assignment]
    line: bytes
    row: Row



ROW_DECODER = msgspec.json.Decoder(Row)
ENCODER = msgspec.json.Encoder()
