"""kfm_ledger against the cross-implementation vectors in ``vectors/``.

The vectors were produced by Go's reference code (``golang.org/x/mod/sumdb/{tlog,note}``
through ``gocheck``, see ``vectors/README.md``), never by kfm_ledger.  Each test here feeds
them to our implementation and expects exactly Go's bytes and Go's verdicts (with the few
deliberate differences the vectors document: a consistency proof from size 0, a repeated
bad signature).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kfm_ledger import errors
from kfm_ledger.core import merkle

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


@cache
def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text("utf-8"))


def b64(text: str) -> bytes:
    """Decode standard base64 (the vectors' only hash encoding), leniently about length:
    negative vectors deliberately hold 31- and 33-byte hashes."""
    return base64.b64decode(text, validate=True)


def module(name: str) -> ModuleType:
    """A module of the pure core (``kfm_ledger.core.<name>``); a missing one fails, never skips."""
    return importlib.import_module(f"kfm_ledger.core.{name}")


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["desc"] for c in cases]


def report(problems: list[str], total: int) -> None:
    """Fail listing the first mismatches (each names its vector and expected vs got)."""
    if problems:
        shown = "\n  ".join(problems[:15])
        more = f"\n  ... and {len(problems) - 15} more" if len(problems) > 15 else ""
        pytest.fail(f"{len(problems)} of {total} vectors disagree with Go:\n  {shown}{more}")


def check_rejects(verify: Any, *args: Any) -> BaseException | None:
    """Run a verify function expected to raise; return the ProofError, or None if it
    returned.  Any exception that is not a ProofError propagates and fails the test."""
    try:
        verify(*args)
    except errors.ProofError as e:
        return e
    return None


def test_generator_is_independent_of_kfm_ledger() -> None:
    """The vectors are the independent side: the generator must not use our code."""
    source = (VECTORS / "generate.py").read_text("utf-8")
    assert "import kfm_ledger" not in source
    assert "from kfm_ledger" not in source


# ------------------------------------------------------------------ RFC 6962


def test_rfc6962_leaf_hashes() -> None:
    v = load("rfc6962.json")
    got = [merkle.leaf_hash(bytes.fromhex(h)) for h in v["leaves_hex"]]
    assert got == [b64(h) for h in v["leaf_hashes"]]
    # The value FORMATS.md quotes, through Go's vector.
    assert got[0].hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_rfc6962_roots_every_size() -> None:
    v = load("rfc6962.json")
    hashes = [merkle.leaf_hash(bytes.fromhex(h)) for h in v["leaves_hex"]]
    tree = merkle.MemoryTree(hashes)
    for entry in v["roots"]:
        k, want = entry["size"], b64(entry["root"])
        assert tree.root(k) == want, f"root of size {k}"
        assert merkle.MemoryTree(hashes[:k]).root() == want, f"root of a fresh tree of size {k}"
        compact = merkle.CompactRange()
        compact.extend(hashes[:k])
        assert compact.root() == want, f"CompactRange root of size {k}"
    assert merkle.EMPTY_ROOT == b64(v["roots"][0]["root"])


# ------------------------------------------------------------- the 64-leaf log


@cache
def log64() -> tuple[list[bytes], merkle.MemoryTree]:
    v = load("inclusion.json")
    leaves = [leaf.encode("ascii") for leaf in v["leaves"]]
    assert leaves == [(v["leaf_template"] % i).encode() for i in range(len(leaves))]
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    return hashes, merkle.MemoryTree(hashes)


def test_log64_leaf_hashes_and_roots() -> None:
    v = load("inclusion.json")
    hashes, tree = log64()
    assert hashes == [b64(h) for h in v["leaf_hashes"]]
    assert [tree.root(r["size"]) for r in v["roots"]] == [b64(r["root"]) for r in v["roots"]]
    assert load("consistency.json")["roots"] == v["roots"]


# ----------------------------------------------------------------- inclusion


def test_inclusion_proofs_equal_go() -> None:
    v = load("inclusion.json")
    _, tree = log64()
    problems = []
    for p in v["proofs"]:
        got = merkle.inclusion_proof(p["index"], p["size"], tree)
        want = [b64(h) for h in p["proof"]]
        if got != want:
            problems.append(
                f"index {p['index']} size {p['size']}: expected {p['proof']}, "
                f"got {[base64.b64encode(h).decode() for h in got]}"
            )
    assert len(v["proofs"]) == 64 * 65 // 2
    report(problems, len(v["proofs"]))


def test_inclusion_proofs_verify() -> None:
    v = load("inclusion.json")
    leaves = [b64(h) for h in v["leaf_hashes"]]
    roots = [b64(r["root"]) for r in v["roots"]]
    problems = []
    for p in v["proofs"]:
        i, n = p["index"], p["size"]
        try:
            assert merkle.verify_inclusion(leaves[i], i, n, [b64(h) for h in p["proof"]], roots[n]) is None
        except errors.ProofError as e:
            problems.append(f"index {i} size {n}: Go's valid proof rejected: {e}")
    report(problems, len(v["proofs"]))


INCLUSION_NEGATIVES = load("inclusion.json")["negatives"]


@pytest.mark.parametrize("case", INCLUSION_NEGATIVES, ids=ids(INCLUSION_NEGATIVES))
def test_inclusion_negative(case: dict[str, Any]) -> None:
    args = (b64(case["leaf_hash"]), case["index"], case["size"],
            [b64(h) for h in case["proof"]], b64(case["root"]))
    err = check_rejects(merkle.verify_inclusion, *args)
    if case["wantErr"]:
        assert err is not None, f"{case['desc']}: accepted, Go says {case.get('gocheck_message')!r}"
    else:
        assert err is None, f"{case['desc']}: rejected ({err}); Go accepts: {case.get('note')}"


def test_inclusion_negatives_cover_what_the_brief_names() -> None:
    names = {c["desc"].split("/", 1)[1] for c in INCLUSION_NEGATIVES if "/" in c["desc"]}
    for want in ["modified-proof[0]-bit0", "index+1", "size+1", "size-1", "truncated-proof",
                 "extended-proof-zero-hash", "empty-proof", "index==size", "proof-hash-31-bytes"]:
        assert want in names
    assert any(c["gocheck_exit"] == 2 for c in INCLUSION_NEGATIVES)  # malformed input


# --------------------------------------------------------------- consistency


def test_consistency_proofs_equal_go() -> None:
    v = load("consistency.json")
    _, tree = log64()
    problems = []
    for p in v["proofs"]:
        got = merkle.consistency_proof(p["old_size"], p["new_size"], tree)
        want = [b64(h) for h in p["proof"]]
        if got != want:
            problems.append(
                f"{p['old_size']} -> {p['new_size']}: expected {p['proof']}, "
                f"got {[base64.b64encode(h).decode() for h in got]}"
            )
    assert len(v["proofs"]) == 64 * 65 // 2
    report(problems, len(v["proofs"]))


def test_consistency_proofs_verify() -> None:
    v = load("consistency.json")
    roots = [b64(r["root"]) for r in v["roots"]]
    problems = []
    for p in v["proofs"]:
        m, n = p["old_size"], p["new_size"]
        try:
            assert merkle.verify_consistency(m, n, roots[m], roots[n], [b64(h) for h in p["proof"]]) is None
        except errors.ProofError as e:
            problems.append(f"{m} -> {n}: Go's valid proof rejected: {e}")
    report(problems, len(v["proofs"]))


CONSISTENCY_NEGATIVES = load("consistency.json")["negatives"]


@pytest.mark.parametrize("case", CONSISTENCY_NEGATIVES, ids=ids(CONSISTENCY_NEGATIVES))
def test_consistency_negative(case: dict[str, Any]) -> None:
    args = (case["old_size"], case["new_size"], b64(case["old_root"]), b64(case["new_root"]),
            [b64(h) for h in case["proof"]])
    err = check_rejects(merkle.verify_consistency, *args)
    if case["wantErr"]:
        assert err is not None, (
            f"{case['desc']}: accepted; Go exit {case['gocheck_exit']} "
            f"{case.get('gocheck_message') or case.get('note')!r}"
        )
    else:
        assert err is None, f"{case['desc']}: rejected ({err}); Go accepts: {case.get('note')}"


def test_consistency_negatives_cover_what_the_brief_names() -> None:
    names = {c["desc"].split("/", 1)[1] for c in CONSISTENCY_NEGATIVES}
    for want in ["modified-proof[0]-bit0", "old-size+1", "new-size+1", "truncated-proof",
                 "extended-proof-zero-hash", "swapped-roots", "old-size-exceeds-new", "empty-proof"]:
        assert want in names
    zero = [c for c in CONSISTENCY_NEGATIVES if c["old_size"] == 0 and c["new_size"] > 0]
    assert zero and all(c["wantErr"] for c in zero)
    assert any(c["gocheck_exit"] == 0 for c in zero)  # Go's `cons 0` accepts; we must not
    # 0 -> 0 is the m == n rule: an empty proof between two empty trees verifies.
    (same,) = [c for c in CONSISTENCY_NEGATIVES if c["old_size"] == c["new_size"] == 0]
    assert not same["wantErr"]


# --------------------------------------------------------------------- notes


NOTES = load("notes.json")


def keys() -> dict[str, dict[str, str]]:
    return {k["name"]: k for k in NOTES["keys"]}


def verifiers(note_mod: ModuleType, vkeys: list[str]) -> list[Any]:
    return [note_mod.Verifier.from_vkey(k) for k in vkeys]


def test_go_keys_parse_and_round_trip() -> None:
    note_mod = module("note")
    for k in NOTES["keys"]:
        signer = note_mod.Signer.from_private_key_text(k["skey"])
        verifier = note_mod.Verifier.from_vkey(k["vkey"])
        assert signer.name == verifier.name == k["name"]
        assert signer.key_id == verifier.key_id
        assert signer.private_key_text() == k["skey"]
        assert signer.verifier().vkey_text() == k["vkey"]
        assert verifier.vkey_text() == k["vkey"]
        assert int(k["vkey"].split("+")[1], 16) == int.from_bytes(verifier.key_id, "big")


@pytest.mark.parametrize("case", NOTES["checkpoints"], ids=ids(NOTES["checkpoints"]))
def test_sign_note_is_byte_identical_to_go(case: dict[str, Any]) -> None:
    note_mod = module("note")
    signers = [note_mod.Signer.from_private_key_text(keys()[name]["skey"]) for name in case["signed_by"]]
    assert note_mod.sign_note(case["body"], signers) == case["note"].encode("utf-8")


@pytest.mark.parametrize("case", NOTES["checkpoints"], ids=ids(NOTES["checkpoints"]))
def test_open_note_of_go_notes(case: dict[str, Any]) -> None:
    note_mod = module("note")
    opened = note_mod.open_note(case["note"].encode("utf-8"), verifiers(note_mod, case["verify_with"]))
    assert opened.text == case["body"]
    assert [s.name for s in opened.verified] == case["expect"]["signers"]
    assert [f"{s.name} {s.key_id.hex()}" for s in opened.unverified] == case["expect"]["unverified"]


@pytest.mark.parametrize("case", NOTES["checkpoints"], ids=ids(NOTES["checkpoints"]))
def test_checkpoint_body_and_signature_are_byte_identical_to_go(case: dict[str, Any]) -> None:
    cp_mod = module("checkpoint")
    note_mod = module("note")
    want = case["expect"]
    cp = cp_mod.Checkpoint(want["origin"], want["size"], b64(want["root"]), tuple(want["ext"]))
    body = cp.body()
    assert (body.encode("utf-8") if isinstance(body, str) else body) == case["body"].encode("utf-8")
    if len(case["signed_by"]) == 1:
        signer = note_mod.Signer.from_private_key_text(keys()[case["signed_by"][0]]["skey"])
        assert module("signed_checkpoint").sign_checkpoint(cp, signer) == case["note"].encode("utf-8")


@pytest.mark.parametrize("case", NOTES["checkpoints"], ids=ids(NOTES["checkpoints"]))
def test_open_checkpoint_of_go_notes(case: dict[str, Any]) -> None:
    sc_mod = module("signed_checkpoint")
    note_mod = module("note")
    want = case["expect"]
    signed = sc_mod.open_checkpoint(case["note"].encode("utf-8"), verifiers(note_mod, case["verify_with"]))
    cp = signed.checkpoint
    assert (cp.origin, cp.size, cp.root, list(cp.extensions)) == (
        want["origin"], want["size"], b64(want["root"]), want["ext"]
    )
    # The same with the origin pinned.
    pinned = sc_mod.open_checkpoint(
        case["note"].encode("utf-8"), verifiers(note_mod, case["verify_with"]), origin=want["origin"]
    )
    assert pinned.checkpoint.size == want["size"]


@pytest.mark.parametrize("case", NOTES["tampered"], ids=ids(NOTES["tampered"]))
def test_tampered_note(case: dict[str, Any]) -> None:
    """open_note and open_checkpoint must raise the kfm_ledger.errors class the vector names
    (all are NoteError subclasses) on every note Go rejects, and accept the ones Go accepts
    (except the documented repeated-bad-signature case, which Go accepts and we reject)."""
    note_mod = module("note")
    data = case["note"].encode("utf-8")
    vs = verifiers(note_mod, case["verify_with"])
    openers = [("open_note", note_mod.open_note), ("open_checkpoint", module("signed_checkpoint").open_checkpoint)]
    for name, opener in openers:
        if not case["wantErr"]:
            opener(data, vs)
            continue
        want = getattr(errors, case["error"])
        assert issubclass(want, errors.NoteError)
        with pytest.raises(errors.KfmError) as info:
            opener(data, vs)
        assert isinstance(info.value, want), (
            f"{name} on {case['desc']}: raised {type(info.value).__name__} ({info.value}), "
            f"expected {case['error']} (Go: {case.get('gocheck_message')!r})"
        )


CHECKPOINT_REJECTED = NOTES["checkpoint_rejected"]


@pytest.mark.parametrize("case", CHECKPOINT_REJECTED, ids=ids(CHECKPOINT_REJECTED))
def test_validly_signed_note_rejected_as_checkpoint(case: dict[str, Any]) -> None:
    """Go's signature verifies but the text is not an acceptable checkpoint: open_note
    accepts it, open_checkpoint raises the vector's error (FormatError for a bad body)."""
    note_mod = module("note")
    data = case["note"].encode("utf-8")
    vs = verifiers(note_mod, case["verify_with"])
    assert note_mod.open_note(data, vs).text == case["body"]
    with pytest.raises(errors.KfmError) as info:
        module("signed_checkpoint").open_checkpoint(data, vs)
    assert isinstance(info.value, getattr(errors, case["error"])), (
        f"{case['desc']}: raised {type(info.value).__name__} ({info.value}), expected {case['error']} "
        f"(Go: {case['gocheck_message']!r})"
    )


# --------------------------------------------------------------------- tiles


TILES = load("tiles.json")
TREES = TILES["trees"]


@cache
def tile_leaves() -> list[bytes]:
    data = (VECTORS / TILES["leaves_file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == TILES["leaves_file_sha256"]
    lines = data.split(b"\n")
    assert lines[-1] == b""
    return [merkle.leaf_hash(line) for line in lines[:-1]]


def tile_files(tree: dict[str, Any]) -> dict[str, bytes]:
    root = VECTORS / tree["dir"]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("tree", TREES, ids=[str(t["size"]) for t in TREES])
def test_tile_files_are_intact(tree: dict[str, Any]) -> None:
    files = tile_files(tree)
    assert sorted(files) == sorted(t["path"] for t in tree["tiles"])
    for t in tree["tiles"]:
        assert hashlib.sha256(files[t["path"]]).hexdigest() == t["sha256"], t["path"]


@pytest.mark.parametrize("tree", TREES, ids=[str(t["size"]) for t in TREES])
def test_tiles_for_size_names_go_tiles(tree: dict[str, Any]) -> None:
    tiles = module("tiles")
    want = [(t["level"], t["index"], t["width"]) for t in tree["tiles"]]
    assert tiles.tiles_for_size(tree["size"]) == want
    assert [tiles.tile_path(*t) for t in want] == [t["path"] for t in tree["tiles"]]
    assert sorted(tiles.tile_path(*t) for t in tiles.tiles_for_size(tree["size"])) == sorted(tile_files(tree))
    for t in tree["tiles"]:
        assert tiles.parse_tile_path(t["path"]) == (t["level"], t["index"], t["width"])


@pytest.mark.parametrize("tree", TREES, ids=[str(t["size"]) for t in TREES])
def test_tile_bytes_from_memory_tree_equal_go(tree: dict[str, Any]) -> None:
    tiles = module("tiles")
    size = tree["size"]
    mem = merkle.MemoryTree(tile_leaves()[:size])
    assert mem.root() == b64(tree["root"])
    files = tile_files(tree)
    for level, index, width in tiles.tiles_for_size(size):
        nodes = [(tiles.TILE_HEIGHT * level, index * tiles.TILE_WIDTH + j) for j in range(width)]
        data = b"".join(mem.read_node_hashes(nodes))
        assert data == files[tiles.tile_path(level, index, width)], f"tile ({level}, {index}, {width})"


def dir_tile_reader(tree: dict[str, Any]) -> Any:
    tiles = module("tiles")
    files = tile_files(tree)

    def read_tile(level: int, index: int, width: int) -> bytes:
        full = tiles.tile_path(level, index)
        return files[full] if full in files else files[tiles.tile_path(level, index, width)]

    return tiles.TileHashReader(tree["size"], read_tile)


@pytest.mark.parametrize("tree", TREES, ids=[str(t["size"]) for t in TREES])
def test_proofs_from_go_tiles_equal_go(tree: dict[str, Any]) -> None:
    reader = dir_tile_reader(tree)
    root = b64(tree["root"])
    assert merkle.tree_root(tree["size"], reader) == root
    for p in tree["inclusion_proofs"]:
        want = [b64(h) for h in p["proof"]]
        assert merkle.inclusion_proof(p["index"], p["size"], reader) == want, f"inclusion {p['index']}"
        merkle.verify_inclusion(b64(p["leaf_hash"]), p["index"], p["size"], want, root)
        assert b64(p["leaf_hash"]) == tile_leaves()[p["index"]]
    for p in tree["consistency_proofs"]:
        want = [b64(h) for h in p["proof"]]
        got = merkle.consistency_proof(p["old_size"], p["new_size"], reader)
        assert got == want, f"consistency {p['old_size']} -> {p['new_size']}"
        merkle.verify_consistency(p["old_size"], p["new_size"], b64(p["old_root"]), root, want)
        assert merkle.MemoryTree(tile_leaves()[: p["old_size"]]).root() == b64(p["old_root"])


def test_a_corrupt_go_tile_is_caught() -> None:
    """Negative: one flipped bit in a level-0 tile changes the root rebuilt from tiles."""
    tree = next(t for t in TREES if t["size"] == 1000)
    tiles = module("tiles")
    files = dict(tile_files(tree))
    path = tiles.tile_path(0, 1)
    data = bytearray(files[path])
    data[5] ^= 1
    files[path] = bytes(data)

    def read_tile(level: int, index: int, width: int) -> bytes:
        full = tiles.tile_path(level, index)
        return files[full] if full in files else files[tiles.tile_path(level, index, width)]

    reader = tiles.TileHashReader(tree["size"], read_tile)
    proof = merkle.inclusion_proof(300, 1000, reader)
    with pytest.raises(errors.ProofError):
        merkle.verify_inclusion(tile_leaves()[300], 300, 1000, proof, b64(tree["root"]))
