"""kfm_ledger.core.tlogproof: c2sp.org/tlog-proof@v1 format, parsing and offline verification.

The known-answer proof is assembled from Go's parts only: ``gocheck prove`` (Go's
``tlog.ProveRecord``) for the audit path of ``row-5`` in the 7 records ``row-0``..``row-6``,
and ``gocheck sign`` for the checkpoint.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger import errors
from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Signer, Verifier
from kfm_ledger.core.note import add_signatures
from kfm_ledger.core.signed_checkpoint import sign_checkpoint
from kfm_ledger.core.tlogproof import (
    MAX_PROOF_HASHES,
    TlogProof,
    format_tlog_proof,
    parse_tlog_proof,
    verify_tlog_proof,
)

A_SKEY = "PRIVATE+KEY+kfm.test/note-a+eee2875e+AZysLJZJu78XiowPF8uvuAZDL98tbmgo9z4khbns++0f"
A_VKEY = "kfm.test/note-a+eee2875e+AUBfmNx9OZuETGSzvtZkJgmXvpugKSCRC1ZEL+mL5POL"
ORIGIN = "kfm.test/note-a"
ROWS = [f"row-{i}".encode() for i in range(7)]
GO_ROOT7 = "E4alhZi4zyO2lY8GS4QxdPPdJEtHteIJDl9VGu2Fjiw="
GO_PATH5 = [  # gocheck prove leaves 5
    "L7wlR+Q01zwN5GkXZd9dVgddCz+aQ91yr5NbPjkw90A=",
    "GZHd5RBAZpk6uZI3mxhxW3s1eeUQqj07actCO0G3Vfc=",
    "20RawdSvsYfAWKZOvmjt8R3s52uTBpbGnhitDR038Ws=",
]
GO_CHECKPOINT7 = (
    f"{ORIGIN}\n7\n{GO_ROOT7}\n\n"
    "— kfm.test/note-a 7uKHXuk9oqUF5gH9sFq6FbgQua42bYo3NvWzW2UPpdWXwke/aAHpOr4YhW7qRLP3G132AO8JiOqJvelThDavTdxmxg8=\n"
).encode()
GO_PROOF5 = (
    "c2sp.org/tlog-proof@v1\nindex 5\n" + "".join(h + "\n" for h in GO_PATH5) + "\n"
).encode() + GO_CHECKPOINT7


def vkeys() -> list[Verifier]:
    return [Verifier.from_vkey(A_VKEY)]


# ------------------------------------------------------------------ known answer


def test_go_proof_verifies() -> None:
    checkpoint, index = verify_tlog_proof(GO_PROOF5, b"row-5", vkeys(), origin=ORIGIN)
    assert index == 5
    assert checkpoint == Checkpoint(ORIGIN, 7, base64.b64decode(GO_ROOT7))


def test_parse_go_proof() -> None:
    proof = parse_tlog_proof(GO_PROOF5)
    assert proof == TlogProof(index=5, hashes=tuple(base64.b64decode(h) for h in GO_PATH5),
                              checkpoint=GO_CHECKPOINT7)
    assert format_tlog_proof(proof) == GO_PROOF5


def test_our_proofs_match_go() -> None:
    tree = merkle.MemoryTree(merkle.leaf_hash(r) for r in ROWS)
    assert tree.root() == base64.b64decode(GO_ROOT7)
    path = merkle.inclusion_proof(5, 7, tree)
    signed = sign_checkpoint(Checkpoint(ORIGIN, 7, tree.root()), Signer.from_private_key_text(A_SKEY))
    assert signed == GO_CHECKPOINT7
    assert format_tlog_proof(TlogProof(index=5, hashes=tuple(path), checkpoint=signed)) == GO_PROOF5


# ------------------------------------------------------------------------ format


def test_format_with_extra_and_round_trip() -> None:
    proof = TlogProof(index=0, hashes=(), checkpoint=GO_CHECKPOINT7, extra=b"\x00opaque")
    data = format_tlog_proof(proof)
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra AG9wYXF1ZQ==\nindex 0\n\n" + GO_CHECKPOINT7[:15])
    assert parse_tlog_proof(data) == proof


@settings(max_examples=40, deadline=None)
@given(
    index=st.integers(0, 2**63 - 1),
    hashes=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES),
    extra=st.none() | st.binary(max_size=40),
)
def test_round_trip(index: int, hashes: list[bytes], extra: bytes | None) -> None:
    proof = TlogProof(index=index, hashes=tuple(hashes), checkpoint=GO_CHECKPOINT7, extra=extra)
    assert parse_tlog_proof(format_tlog_proof(proof)) == proof


def test_constructor_checks_fields() -> None:
    with pytest.raises(errors.FormatError, match="index -1"):
        TlogProof(index=-1, hashes=(), checkpoint=GO_CHECKPOINT7)
    with pytest.raises(errors.FormatError, match="hash 1 is not 32 bytes"):
        TlogProof(index=1, hashes=(bytes(32), bytes(31)), checkpoint=GO_CHECKPOINT7)
    with pytest.raises(errors.FormatError, match="at most 63"):
        TlogProof(index=1, hashes=(bytes(32),) * 64, checkpoint=GO_CHECKPOINT7)
    with pytest.raises(errors.FormatError, match="checkpoint is empty"):
        TlogProof(index=1, hashes=(), checkpoint=b"")


# ---------------------------------------------------------------- strict parsing


HASH_LINES = "".join(h + "\n" for h in GO_PATH5)
CP = GO_CHECKPOINT7.decode()
MALFORMED = {
    "wrong-header": (f"c2sp.org/tlog-proof@v2\nindex 5\n{HASH_LINES}\n{CP}", "line 1: expected"),
    "header-trailing-space": (f"c2sp.org/tlog-proof@v1 \nindex 5\n{HASH_LINES}\n{CP}", "line 1"),
    "no-index": (f"c2sp.org/tlog-proof@v1\n{HASH_LINES}\n{CP}", "line 2: expected 'extra <base64>' or 'index <n>'"),
    "index-then-extra": (f"c2sp.org/tlog-proof@v1\nindex 5\nextra AA==\n{HASH_LINES}\n{CP}", "line 3: proof hash"),
    "two-extras": (f"c2sp.org/tlog-proof@v1\nextra AA==\nextra AA==\nindex 5\n\n{CP}", "line 3: expected 'index <n>'"),
    "extra-bad-base64": (f"c2sp.org/tlog-proof@v1\nextra A!==\nindex 5\n\n{CP}", "line 2: extra data is not valid"),
    "extra-no-space": (f"c2sp.org/tlog-proof@v1\nextraAA==\nindex 5\n\n{CP}", "line 2"),
    "index-leading-zero": (f"c2sp.org/tlog-proof@v1\nindex 05\n{HASH_LINES}\n{CP}", "line 2: index '05'"),
    "index-plus": (f"c2sp.org/tlog-proof@v1\nindex +5\n{HASH_LINES}\n{CP}", "line 2: index '\\+5'"),
    "index-negative": (f"c2sp.org/tlog-proof@v1\nindex -1\n{HASH_LINES}\n{CP}", "line 2: index '-1'"),
    "index-two-spaces": (f"c2sp.org/tlog-proof@v1\nindex  5\n{HASH_LINES}\n{CP}", "line 2: index ' 5'"),
    "index-empty": (f"c2sp.org/tlog-proof@v1\nindex \n{HASH_LINES}\n{CP}", "line 2: index ''"),
    "index-2**63": (f"c2sp.org/tlog-proof@v1\nindex {2**63}\n{HASH_LINES}\n{CP}", "line 2"),
    "hash-31-bytes": (
        f"c2sp.org/tlog-proof@v1\nindex 5\n{base64.b64encode(bytes(31)).decode()}\n\n{CP}", "line 3: .* 31 bytes"
    ),
    "hash-bad-base64": (f"c2sp.org/tlog-proof@v1\nindex 5\nnot*base64\n\n{CP}", "line 3: proof hash is not valid"),
    "hash-non-canonical": (
        f"c2sp.org/tlog-proof@v1\nindex 5\n{GO_PATH5[0][:-2]}B=\n\n{CP}", "line 3: proof hash is not canonical"
    ),
    "no-empty-line": (f"c2sp.org/tlog-proof@v1\nindex 5\n{HASH_LINES}{CP}", "line 6: proof hash"),
    "nothing-after-empty-line": (f"c2sp.org/tlog-proof@v1\nindex 5\n{HASH_LINES}\n", "line 7: no checkpoint"),
    "truncated": ("c2sp.org/tlog-proof@v1\nindex 5", "line 2: missing"),
    "empty": ("", "line 1: missing"),
    "checkpoint-unsigned": (f"c2sp.org/tlog-proof@v1\nindex 5\n{HASH_LINES}\n{CP.split(chr(10) * 2)[0]}\n",
                            "checkpoint \\(from line 7\\)"),
    "checkpoint-bad-size": (f"c2sp.org/tlog-proof@v1\nindex 5\n{HASH_LINES}\n"
                            f"{CP.replace(chr(10) + '7', chr(10) + '07')}",
                            "checkpoint \\(from line 7\\): checkpoint line 2"),
    "crlf": (f"c2sp.org/tlog-proof@v1\r\nindex 5\r\n\r\n{CP}", "line 1"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_proofs_are_rejected_naming_the_line(case: str) -> None:
    data, message = MALFORMED[case]
    with pytest.raises(errors.FormatError, match=message):
        parse_tlog_proof(data.encode())
    with pytest.raises(errors.FormatError):
        verify_tlog_proof(data.encode(), b"row-5", vkeys())


def test_too_many_hashes() -> None:
    data = ("c2sp.org/tlog-proof@v1\nindex 5\n" + (GO_PATH5[0] + "\n") * 64 + "\n" + CP).encode()
    with pytest.raises(errors.FormatError, match="line 66: more than 63 proof hashes"):
        parse_tlog_proof(data)


# ------------------------------------------------------------------ verification


def test_wrong_entry_fails() -> None:
    with pytest.raises(errors.RootMismatchError):
        verify_tlog_proof(GO_PROOF5, b"row-4", vkeys())
    with pytest.raises(errors.RootMismatchError):
        verify_tlog_proof(GO_PROOF5, b"row-5\n", vkeys())  # the leaf is the line without "\n"


def test_tampered_hash_fails() -> None:
    proof = parse_tlog_proof(GO_PROOF5)
    assert len(proof.hashes) == len(GO_PATH5) == 3  # the loop below is not empty
    for i in range(len(proof.hashes)):
        hashes = list(proof.hashes)
        hashes[i] = bytes([hashes[i][0] ^ 1]) + hashes[i][1:]
        bad = format_tlog_proof(TlogProof(index=5, hashes=tuple(hashes), checkpoint=proof.checkpoint))
        with pytest.raises(errors.RootMismatchError):
            verify_tlog_proof(bad, b"row-5", vkeys())


@pytest.mark.parametrize("index", [4, 6, 1])
def test_wrong_index_fails(index: int) -> None:
    bad = GO_PROOF5.replace(b"index 5\n", f"index {index}\n".encode())
    with pytest.raises(errors.ProofError):  # RootMismatchError is a ProofError
        verify_tlog_proof(bad, b"row-5", vkeys())


def test_index_beyond_tree_and_wrong_length() -> None:
    with pytest.raises(errors.ProofError, match="out of bounds"):
        verify_tlog_proof(GO_PROOF5.replace(b"index 5\n", b"index 7\n"), b"row-5", vkeys())
    short = GO_PROOF5.replace((GO_PATH5[2] + "\n").encode(), b"")
    with pytest.raises(errors.ProofError, match="2 hashes, want 3"):
        verify_tlog_proof(short, b"row-5", vkeys())


def test_bad_signature_fails_before_the_path_is_used() -> None:
    # Root changed in the checkpoint (and the path made to match it): the signature fails.
    tree = merkle.MemoryTree(merkle.leaf_hash(r) for r in [*ROWS[:5], b"forged", ROWS[6]])
    forged_root = base64.b64encode(tree.root())
    forged_path = merkle.inclusion_proof(5, 7, tree)
    data = format_tlog_proof(
        TlogProof(index=5, hashes=tuple(forged_path), checkpoint=GO_CHECKPOINT7.replace(GO_ROOT7.encode(), forged_root))
    )
    with pytest.raises(errors.BadSignatureError):
        verify_tlog_proof(data, b"forged", vkeys())


def test_wrong_key_and_wrong_origin() -> None:
    with pytest.raises(errors.UnknownKeyError):
        verify_tlog_proof(GO_PROOF5, b"row-5", [Signer.generate(ORIGIN).verifier()])
    with pytest.raises(errors.UnknownKeyError):
        verify_tlog_proof(GO_PROOF5, b"row-5", [])
    with pytest.raises(errors.OriginMismatchError, match=re.escape("expected 'kfm.test/other'")):
        verify_tlog_proof(GO_PROOF5, b"row-5", vkeys(), origin="kfm.test/other")


def test_cosigned_checkpoint_and_extra_are_fine() -> None:
    witness = CosignatureSigner.generate("kfm.test/witness")
    cosigned = add_signatures(GO_CHECKPOINT7, [witness.cosign(GO_CHECKPOINT7.split(b"\n\n")[0].decode() + "\n", 1)])
    proof = parse_tlog_proof(GO_PROOF5)
    data = format_tlog_proof(TlogProof(index=5, hashes=proof.hashes, checkpoint=cosigned, extra=b"unauthenticated"))
    assert verify_tlog_proof(data, b"row-5", [*vkeys(), witness.verifier()])[1] == 5
    assert verify_tlog_proof(data, b"row-5", vkeys())[1] == 5  # the witness is just unknown


def test_every_leaf_of_a_tree() -> None:
    signer = Signer.from_private_key_text(A_SKEY)
    rows = [f"row {i}".encode() for i in range(13)]
    tree = merkle.MemoryTree(merkle.leaf_hash(r) for r in rows)
    for size in (1, 2, 7, 13):
        note = sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), signer)
        for index in range(size):
            path = merkle.inclusion_proof(index, size, tree)
            data = format_tlog_proof(TlogProof(index=index, hashes=tuple(path), checkpoint=note))
            assert verify_tlog_proof(data, rows[index], vkeys(), origin=ORIGIN) == (
                Checkpoint(ORIGIN, size, tree.root(size)), index
            )
