"""Entry bundles (c2sp.org/tlog-tiles "Log entries"): encoding, decoding, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.core.entry_bundle import (
    MAX_ENTRY_BYTES,
    bundle_width,
    decode_entry_bundle,
    encode_entry_bundle,
)
from kfm_ledger.errors import FormatError


def test_known_bytes() -> None:
    assert encode_entry_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    assert decode_entry_bundle(b"\x00\x02ab\x00\x00\x00\x01c", expected_count=3) == [b"ab", b"", b"c"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=256))
def test_round_trip(entries: list[bytes]) -> None:
    assert decode_entry_bundle(encode_entry_bundle(entries), expected_count=len(entries)) == entries


def test_limits() -> None:
    with pytest.raises(ValueError, match="at most 65535"):
        encode_entry_bundle([b"x" * (MAX_ENTRY_BYTES + 1)])
    with pytest.raises(ValueError, match="at most 256"):
        encode_entry_bundle([b""] * 257)
    assert decode_entry_bundle(encode_entry_bundle([b"x" * MAX_ENTRY_BYTES])) == [b"x" * MAX_ENTRY_BYTES]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x00", "entry 0"),
        (b"\x00\x05abc", "entry 0"),
        (b"\x00\x01a\x00\x02b", "entry 1"),
        (b"\x00\x00" * 257, "entry count"),
    ],
)
def test_malformed(data: bytes, field: str) -> None:
    with pytest.raises(FormatError) as info:
        decode_entry_bundle(data)
    assert info.value.field == field


def test_count_mismatch() -> None:
    with pytest.raises(FormatError, match="holds 2 entries, expected 3"):
        decode_entry_bundle(encode_entry_bundle([b"a", b"b"]), expected_count=3)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_only_format_errors(data: bytes) -> None:
    try:
        decode_entry_bundle(data)
    except FormatError:
        pass


def test_bundle_width() -> None:
    assert bundle_width(0, 0) == 0
    assert bundle_width(0, 255) == 255
    assert bundle_width(0, 256) == 256
    assert bundle_width(1, 256) == 0
    assert bundle_width(1, 300) == 44
    assert bundle_width(0, 10**6) == 256
