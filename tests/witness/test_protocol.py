"""The add-checkpoint wire formats (c2sp.org/tlog-witness): strict parsing, each malformation a
WitnessRequestError naming the line; hypothesis fuzzing: never anything but a request or that error."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wit_support import FakeLog

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Verifier
from kfm_ledger.errors import FormatError, WitnessRequestError
from kfm_ledger.witness.check import Answer, check_add_checkpoint
from kfm_ledger.witness.protocol import (
    MAX_PROOF_LINES,
    MAX_REQUEST_BYTES,
    format_add_checkpoint,
    format_signature_lines,
    format_tlog_size,
    parse_add_checkpoint,
    parse_signature_lines,
    parse_tlog_size,
)

LOG = FakeLog("log.test/protocol")
NOTE = LOG.checkpoint(20)
H = [bytes([i]) * 32 for i in range(70)]


def test_round_trip() -> None:
    body = format_add_checkpoint(8, H[:5], NOTE)
    req = parse_add_checkpoint(body)
    assert (req.old_size, req.proof, req.note) == (8, tuple(H[:5]), NOTE)
    assert req.checkpoint.size == 20 and req.checkpoint.origin == "log.test/protocol"
    assert body.startswith(b"old 8\n" + base64.b64encode(H[0]) + b"\n")


def test_spec_example_shape() -> None:
    """The body of tlog-witness's example: old line, four proof lines, empty line, checkpoint."""
    body = b"old 20852014\n" + b"".join(base64.b64encode(h) + b"\n" for h in H[:4]) + b"\n" + NOTE
    req = parse_add_checkpoint(body)
    assert req.old_size == 20852014 and len(req.proof) == 4


def test_old_zero_and_no_proof() -> None:
    req = parse_add_checkpoint(b"old 0\n\n" + NOTE)
    assert req.old_size == 0 and req.proof == ()


def test_63_proof_lines_allowed_64_refused() -> None:
    assert len(parse_add_checkpoint(format_add_checkpoint(1, H[:MAX_PROOF_LINES], NOTE)).proof) == 63
    body = b"old 1\n" + b"".join(base64.b64encode(h) + b"\n" for h in H[:64]) + b"\n" + NOTE
    with pytest.raises(WitnessRequestError, match="more than 63") as e:
        parse_add_checkpoint(body)
    assert e.value.line == 65
    with pytest.raises(ValueError):
        format_add_checkpoint(1, H[:64], NOTE)


@pytest.mark.parametrize(
    "first",
    [b"old 01", b"old -1", b"old +1", b"old  1", b"Old 1", b"old 1 ", b"old", b"old ", b"new 1", b"old 1\r",
     b"old 9223372036854775808", b"old 1e3", b"old \xd9\xa1"],
)
def test_bad_old_size_line(first: bytes) -> None:
    with pytest.raises(WitnessRequestError) as e:
        parse_add_checkpoint(first + b"\n\n" + NOTE)
    assert e.value.line == 1 and e.value.field == "old size"


@pytest.mark.parametrize(
    "line",
    [
        base64.b64encode(b"\x01" * 31),  # 31 bytes
        base64.b64encode(b"\x01" * 33),
        base64.b64encode(b"\x01" * 32)[:-1],  # no padding
        base64.b64encode(b"\x01" * 32).replace(b"E=", b"F="),  # non-canonical padding bits
        b" " + base64.b64encode(b"\x01" * 32),
        b"-" * 44,
        b"\xff" * 44,
    ],
)
def test_bad_proof_line(line: bytes) -> None:
    with pytest.raises(WitnessRequestError) as e:
        parse_add_checkpoint(b"old 3\n" + base64.b64encode(H[0]) + b"\n" + line + b"\n\n" + NOTE)
    assert e.value.line == 3 and e.value.field == "consistency proof"


@pytest.mark.parametrize(
    "body, where",
    [
        (b"", 1),
        (b"old 3", 1),
        (b"old 3\n", 2),
        (b"old 3\n" + base64.b64encode(H[0]) + b"\n", 3),
        (b"old 3\n\n", 3),
    ],
)
def test_truncated_bodies(body: bytes, where: int) -> None:
    with pytest.raises(WitnessRequestError) as e:
        parse_add_checkpoint(body)
    assert e.value.line == where


@pytest.mark.parametrize(
    "note",
    [
        NOTE.replace(b"\n\n", b"\n"),  # no blank line before the signatures
        NOTE.split(b"\n\n")[0] + b"\n\n",  # no signature
        NOTE.replace(b"20\n", b"020\n", 1),  # non-canonical size
        NOTE[:-1],  # no final newline
        b"log.test/protocol\n20\n\n" + NOTE.split(b"\n\n")[1],  # no root line
        NOTE.replace(b"\xe2\x80\x94", b"-"),  # not an em dash
    ],
)
def test_malformed_checkpoint(note: bytes) -> None:
    with pytest.raises(WitnessRequestError) as e:
        parse_add_checkpoint(b"old 0\n\n" + note)
    assert e.value.field == "checkpoint" and e.value.line == 3


def test_oversize_body() -> None:
    with pytest.raises(WitnessRequestError, match="more than the limit"):
        parse_add_checkpoint(b"old 0\n\n" + NOTE + b"x" * MAX_REQUEST_BYTES)


def test_not_bytes() -> None:
    with pytest.raises(WitnessRequestError):
        parse_add_checkpoint("old 0\n\n")  # type: ignore[arg-type]


def test_tlog_size_body() -> None:
    assert format_tlog_size(42) == b"42\n"
    assert parse_tlog_size(b"42\n") == 42 and parse_tlog_size(b"0\n") == 0
    for bad in (b"42", b"042\n", b"-1\n", b"4 2\n", b"", b"\n", b"1" * 30 + b"\n", b"x\n"):
        with pytest.raises(FormatError):
            parse_tlog_size(bad)


def test_signature_lines() -> None:
    cosigner = CosignatureSigner.generate("witness.test/lines")
    sig = cosigner.cosign(LOG.checkpoint(5).split(b"\n\n")[0].decode() + "\n", 1_700_000_000)
    body = format_signature_lines([sig, sig])
    assert parse_signature_lines(body) == (sig, sig)
    for bad in (b"", b"not a signature\n", body[:-1], b"\xe2\x80\x94 name !!!\n"):
        with pytest.raises(FormatError):
            parse_signature_lines(bad)


# ------------------------------------------------------------------ fuzzing

_VALID = format_add_checkpoint(8, H[:3], NOTE)
_TRUSTED = {LOG.origin: [LOG.signer.verifier()]}


def _parse_or_error(data: bytes) -> None:
    try:
        req = parse_add_checkpoint(data)
    except WitnessRequestError as e:
        assert str(e).startswith("add-checkpoint request")
        return
    assert req.old_size >= 0 and all(len(h) == 32 for h in req.proof)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _parse_or_error(data)
    _parse_or_error(b"old 0\n" + data)
    _parse_or_error(b"old 0\n\n" + data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_VALID) - 1), st.binary(min_size=0, max_size=8), st.integers(0, 8))
def test_fuzz_mutated_valid_body(pos: int, insert: bytes, cut: int) -> None:
    data = _VALID[:pos] + insert + _VALID[pos + cut :]
    _parse_or_error(data)
    # The whole decision never raises either: a status and a body.
    answer = check_add_checkpoint(data, _TRUSTED, lambda origin: None)
    assert isinstance(answer, Answer) or answer.request.checkpoint.origin == LOG.origin
    if isinstance(answer, Answer):
        assert answer.status in (400, 403, 404, 409, 422) and answer.body.endswith(b"\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="old 0123456789+/=AQgw\n\u2014", max_size=50), max_size=8))
def test_fuzz_line_soup(lines: list[str]) -> None:
    _parse_or_error("\n".join(lines).encode())


def test_verifier_for_fuzz_is_the_log_key() -> None:
    assert _TRUSTED[LOG.origin] == [Verifier.from_vkey(LOG.signer.verifier().vkey_text())]
