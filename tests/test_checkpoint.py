"""kfm_ledger.core.checkpoint: strict checkpoint bodies, signing and opening.

The known-answer note was made with ``gocheck sign`` (Go's ``note.Sign``) from the key below.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger import errors
from kfm_ledger.core.checkpoint import MAX_TREE_SIZE, Checkpoint
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.merkle import EMPTY_ROOT
from kfm_ledger.core.note import add_signatures, sign_note
from kfm_ledger.core.signed_checkpoint import (
    SignedCheckpoint,
    open_checkpoint,
    parse_unverified,
    sign_checkpoint,
)

# `gocheck keygen kfm.test/note-a`, then `gocheck sign` of GO_BODY.
A_SKEY = "PRIVATE+KEY+kfm.test/note-a+eee2875e+AZysLJZJu78XiowPF8uvuAZDL98tbmgo9z4khbns++0f"
A_VKEY = "kfm.test/note-a+eee2875e+AUBfmNx9OZuETGSzvtZkJgmXvpugKSCRC1ZEL+mL5POL"
ORIGIN = "kfm.test/note-a"
ROOT8_B64 = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="  # RFC 6962 test tree, 8 leaves
ROOT8 = base64.b64decode(ROOT8_B64)
GO_BODY = f"{ORIGIN}\n1234\n{ROOT8_B64}\n"
GO_NOTE = (
    GO_BODY
    + "\n— kfm.test/note-a "
    + "7uKHXmoqVNKYAeRNHGYcgOe47E9f1s9Lg0ZB3DK319WETcwN9lzdT05r+RCTpO90eMuQ1qg6asvmP+aV/8PmnqzIrwE=\n"
).encode()


def signer() -> Signer:
    return Signer.from_private_key_text(A_SKEY)


def verifier() -> Verifier:
    return Verifier.from_vkey(A_VKEY)


# --------------------------------------------------------------------------- body


def test_body_format() -> None:
    assert Checkpoint(ORIGIN, 1234, ROOT8).body() == GO_BODY
    assert Checkpoint("o", 0, EMPTY_ROOT).body() == "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    with_ext = Checkpoint("o", 5, ROOT8, ("ext one", "été — two"))
    assert with_ext.body() == f"o\n5\n{ROOT8_B64}\next one\nété — two\n"
    assert Checkpoint.parse(with_ext.body()) == with_ext
    assert Checkpoint("o", 5, ROOT8, ["a"]).extensions == ("a",)  # type: ignore[arg-type]


def test_parse_known_body() -> None:
    cp = Checkpoint.parse(GO_BODY)
    assert (cp.origin, cp.size, cp.root, cp.extensions) == (ORIGIN, 1234, ROOT8, ())
    # Origins are opaque: spaces and '+' are only a SHOULD NOT.
    assert Checkpoint.parse(f"a log + spaces\n1\n{ROOT8_B64}\n").origin == "a log + spaces"
    assert Checkpoint.parse(f"o\n{MAX_TREE_SIZE}\n{ROOT8_B64}\n").size == 2**63 - 1


BAD_BODIES = {
    # name: (body, what the message must say)
    "no-final-newline": (f"o\n5\n{ROOT8_B64}", "does not end with a newline"),
    "two-lines": ("o\n5\n", "2 line\\(s\\), expected at least 3"),
    "empty": ("", "does not end with a newline"),
    "origin-empty": (f"\n5\n{ROOT8_B64}\n", "line 1: the origin is empty"),
    "size-leading-zero": (f"o\n05\n{ROOT8_B64}\n", "line 2: tree size '05'"),
    "size-plus": (f"o\n+5\n{ROOT8_B64}\n", "line 2: tree size '\\+5'"),
    "size-space": (f"o\n 5\n{ROOT8_B64}\n", "line 2: tree size ' 5'"),
    "size-trailing-space": (f"o\n5 \n{ROOT8_B64}\n", "line 2: tree size '5 '"),
    "size-negative": (f"o\n-1\n{ROOT8_B64}\n", "line 2: tree size '-1'"),
    "size-00": (f"o\n00\n{ROOT8_B64}\n", "line 2: tree size '00'"),
    "size-empty": (f"o\n\n{ROOT8_B64}\n", "line 2: tree size ''"),
    "size-underscore": (f"o\n1_000\n{ROOT8_B64}\n", "line 2: tree size '1_000'"),
    "size-hex": (f"o\n0x5\n{ROOT8_B64}\n", "line 2"),
    "size-unicode-digit": (f"o\n\u0665\n{ROOT8_B64}\n", "line 2"),  # ARABIC-INDIC FIVE
    "size-2**63": (f"o\n{2**63}\n{ROOT8_B64}\n", "line 2: tree size 9223372036854775808 is larger"),
    "size-huge": (f"o\n{'9' * 30}\n{ROOT8_B64}\n", "line 2"),
    "root-31-bytes": (f"o\n5\n{base64.b64encode(bytes(31)).decode()}\n", "line 3: .* 31 bytes, expected 32"),
    "root-33-bytes": (f"o\n5\n{base64.b64encode(bytes(33)).decode()}\n", "line 3: .* 33 bytes"),
    "root-unpadded": (f"o\n5\n{ROOT8_B64.rstrip('=')}\n", "line 3: root hash .* not valid base64"),
    "root-urlsafe": (f"o\n5\n{base64.urlsafe_b64encode(bytes([0xfb]) * 32).decode()}\n", "line 3"),
    "root-non-canonical": (f"o\n5\n{ROOT8_B64[:-2]}h=\n", "line 3: .* not in canonical base64"),
    "root-missing": ("o\n5\n\n", "line 3"),
    "root-with-space": (f"o\n5\n {ROOT8_B64}\n", "line 3"),
    "empty-extension": (f"o\n5\n{ROOT8_B64}\nfirst\n\nthird\n", "line 5: empty extension line"),
    "trailing-blank-line": (f"o\n5\n{ROOT8_B64}\n\n", "line 4: empty extension line"),
    "control-char": (f"o\x01\n5\n{ROOT8_B64}\n", "line 1: control character U\\+0001"),
    "crlf": (f"o\r\n5\r\n{ROOT8_B64}\r\n", "control character U\\+000D|line 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_bodies_are_rejected_naming_the_line(case: str) -> None:
    body, message = BAD_BODIES[case]
    with pytest.raises(errors.FormatError, match=message):
        Checkpoint.parse(body)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (("", 5, ROOT8), "origin is empty"),
        (("a\nb", 5, ROOT8), "newline"),
        (("o", -1, ROOT8), "tree size -1"),
        (("o", 2**63, ROOT8), "tree size"),
        (("o", True, ROOT8), "tree size"),
        (("o", 5, ROOT8[:31]), "31 bytes"),
        (("o", 5, ROOT8, ("",)), "extension line 4 is empty"),
        (("o", 5, ROOT8, ("a\nb",)), "extension line 4"),
        (("o", 5, ROOT8, "abc"), "tuple of lines"),
    ],
)
def test_constructor_checks_fields(fields: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(errors.FormatError, match=message):
        Checkpoint(*fields)


@settings(max_examples=50, deadline=None)
@given(
    origin=st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=20),
    size=st.integers(0, MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    exts=st.lists(st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=10),
                  max_size=3),
)
def test_body_parse_round_trip(origin: str, size: int, root: bytes, exts: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(exts))
    assert Checkpoint.parse(cp.body()) == cp


# --------------------------------------------------------------- signing, opening


def test_sign_checkpoint_equals_go() -> None:
    assert sign_checkpoint(Checkpoint(ORIGIN, 1234, ROOT8), signer()) == GO_NOTE


def test_open_go_checkpoint() -> None:
    signed = open_checkpoint(GO_NOTE, [verifier()], origin=ORIGIN)
    assert isinstance(signed, SignedCheckpoint)
    assert signed.checkpoint == Checkpoint(ORIGIN, 1234, ROOT8)
    assert signed.note == GO_NOTE
    assert [s.name for s in signed.verified] == [ORIGIN]
    assert parse_unverified(GO_NOTE) == signed.checkpoint


def test_sign_requires_key_named_like_origin() -> None:
    message = "named 'kfm.test/note-a' but the checkpoint origin is 'other'"
    with pytest.raises(errors.KeyFormatError, match=re.escape(message)):
        sign_checkpoint(Checkpoint("other", 1, ROOT8), signer())
    with pytest.raises(TypeError):
        sign_checkpoint(Checkpoint("w", 1, ROOT8), CosignatureSigner.generate("w"))  # type: ignore[arg-type]


def test_origin_pinning() -> None:
    message = "origin 'kfm.test/note-a', expected 'kfm.test/other'"
    with pytest.raises(errors.OriginMismatchError, match=re.escape(message)) as info:
        open_checkpoint(GO_NOTE, [verifier()], origin="kfm.test/other")
    assert isinstance(info.value, errors.VerificationError)
    assert (info.value.expected, info.value.found) == ("kfm.test/other", ORIGIN)


def test_log_signature_must_come_from_a_key_named_like_the_origin() -> None:
    """A trusted key that is not the log's (another log's, or a witness's) is not enough."""
    impostor = Signer.generate("kfm.test/impostor")
    foreign = sign_note(GO_BODY, [impostor])
    with pytest.raises(errors.UnknownKeyError, match="no verified signature from a log key named"):
        open_checkpoint(foreign, [verifier(), impostor.verifier()])
    witness = CosignatureSigner.generate(ORIGIN)  # even a cosigner named like the origin
    cosigned_only = add_signatures(foreign, [witness.cosign(GO_BODY, 1700000000)])
    with pytest.raises(errors.UnknownKeyError):
        open_checkpoint(cosigned_only, [witness.verifier()])
    # With the log's signature too, the cosignature is reported as verified.
    full = add_signatures(GO_NOTE, [witness.cosign(GO_BODY, 1700000000)])
    signed = open_checkpoint(full, [verifier(), witness.verifier()])
    assert len(signed.verified) == 2


def test_signature_is_checked_before_the_body() -> None:
    # A validly signed note whose text is no checkpoint: open_note would accept it.
    not_a_checkpoint = sign_note(f"{ORIGIN}\n05\n{ROOT8_B64}\n", [signer()])
    with pytest.raises(errors.FormatError, match="line 2"):
        open_checkpoint(not_a_checkpoint, [verifier()])
    # The same text with a bad signature: the signature error wins.
    tampered = not_a_checkpoint.replace(b"\n05\n", b"\n06\n")
    with pytest.raises(errors.BadSignatureError):
        open_checkpoint(tampered, [verifier()])


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"\n1234\n", b"\n1235\n"), (b"Xcna", b"Ycna"), (b"kfm.test/note-a\n1", b"kfm.test/note-b\n1")],
)
def test_tampered_checkpoint_fails(old: bytes, new: bytes) -> None:
    with pytest.raises(errors.BadSignatureError):
        open_checkpoint(GO_NOTE.replace(old, new, 1), [verifier()])


def test_unknown_key() -> None:
    with pytest.raises(errors.UnknownKeyError) as info:
        open_checkpoint(GO_NOTE, [Signer.generate(ORIGIN).verifier()])
    assert info.value.names == [ORIGIN]


def test_parse_unverified_rejects_malformed() -> None:
    with pytest.raises(errors.FormatError):
        parse_unverified(GO_BODY.encode())
    with pytest.raises(errors.FormatError, match="line 2"):
        parse_unverified(sign_note("o\n-1\nx\n", [signer()]))
