#!/usr/bin/env python3
"""Generate kfm-ledger's cross-implementation vectors from Go's reference code.

Every hash, proof, signed note and tile in the files this script writes comes
from ``gocheck`` (``/work/shared/tools/gocheck``), a thin command line over
Go's ``golang.org/x/mod/sumdb/tlog`` and ``sumdb/note``.  Nothing here imports
``kfm_ledger``: these vectors are the independent side our implementation is
tested against (``tests/test_vectors.py``).  The script only builds inputs
(leaf files, checkpoint bodies, deliberately broken proofs and notes), runs
gocheck, checks gocheck's verdict on each case and writes what gocheck said.

Usage::

    python vectors/generate.py --gocheck /tmp/gocheck-bin/gocheck          # (re)write vectors/
    python vectors/generate.py --gocheck /tmp/gocheck-bin/gocheck --check  # compare, write nothing

Output is deterministic: the only randomness is ``gocheck keygen``, and the
test keys it made are read back from the existing ``notes.json`` (Ed25519
signatures are deterministic), unless ``--new-keys`` is given.
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: What produced the vectors (see README.md; gocheck cannot print its own version).
PRODUCER = (
    "gocheck (work/shared/tools/gocheck) on golang.org/x/mod/sumdb/{tlog,note} "
    "from Debian golang-golang-x-mod-dev 0.7.0-1, Go 1.19 (golang-go 2:1.19~1)"
)
HASH_ENCODING = "standard base64 (RFC 4648 section 4) of 32-byte SHA-256 values, as gocheck prints them"

#: The RFC 6962 test leaves (FORMATS.md; transparency-dev/merkle testonly).
RFC6962_LEAVES_HEX = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
#: Published values, asserted as a sanity check on gocheck itself (not copied into vectors).
RFC6962_EMPTY_LEAF_HASH_HEX = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
RFC6962_ROOT8_HEX = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
EMPTY_ROOT_B64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

LEAF_TEMPLATE = '{"i":%d}'
INCLUSION_LOG_SIZE = 64
TILE_LOG_SIZES = (256, 257, 1000)
LEAVES_FILE = "leaves-1000.txt"

KEY_NAMES = ("kfm.test/vectors/log-a", "kfm.test/vectors/log-b", "kfm.test/vectors/witness-c")
TEST_KEY_WARNING = (
    "TEST KEYS ONLY, made by `gocheck keygen` for these vectors and published here: "
    "never trust them for anything."
)


# --------------------------------------------------------------------- gocheck


@dataclass(frozen=True)
class Result:
    """One gocheck run: exit status, stdout text and the first stderr line."""

    exit: int
    out: str
    err: str

    def facts(self) -> dict[str, list[str]]:
        """``key value`` lines of stdout, grouped by key (bare hash lines under ``""``)."""
        res: dict[str, list[str]] = {}
        for line in self.out.splitlines():
            key, sep, value = line.partition(" ")
            if not sep:
                key, value = "", line
            res.setdefault(key, []).append(value)
        return res

    def fact(self, key: str) -> str:
        values = self.facts().get(key)
        if not values or len(values) != 1:
            raise SystemExit(f"gocheck output has no single {key!r} line:\n{self.out}")
        return values[0]

    @property
    def message(self) -> str:
        return self.err.removeprefix("gocheck: FAIL: ").removeprefix("gocheck: ")


class GoCheck:
    def __init__(self, path: str, workdir: Path) -> None:
        self.path = path
        self.workdir = workdir
        self.calls = 0

    def run(self, *args: str | os.PathLike[str], stdin: bytes | None = None) -> Result:
        self.calls += 1
        proc = subprocess.run(
            [self.path, *map(str, args)],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            check=False,
        )
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return Result(proc.returncode, proc.stdout.decode("utf-8"), err[-1] if err else "")

    def ok(self, *args: str | os.PathLike[str]) -> Result:
        res = self.run(*args)
        if res.exit != 0:
            raise SystemExit(f"gocheck {' '.join(map(str, args))} failed ({res.exit}): {res.err}")
        return res

    def tmpfile(self, name: str, data: bytes) -> Path:
        path = self.workdir / name
        path.write_bytes(data)
        return path


# --------------------------------------------------------------------- helpers


def records_file(leaves: Sequence[bytes]) -> bytes:
    """gocheck FILE format: each record followed by ``\\n`` (records must not hold ``\\n``)."""
    for i, leaf in enumerate(leaves):
        if b"\n" in leaf:
            raise SystemExit(f"leaf {i} contains 0x0A and cannot be a gocheck FILE record")
    return b"".join(leaf + b"\n" for leaf in leaves)


def flip_bit_b64(b64: str, byte: int = 0, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[byte] ^= 1 << bit
    return base64.b64encode(bytes(raw)).decode()


def b64_of_len(n: int, fill: int = 0xAB) -> str:
    return base64.b64encode(bytes([fill]) * n).decode()


def dumps(doc: dict[str, Any]) -> str:
    """JSON with one top-level key per line and one list element per line (diff-friendly, small)."""

    def compact(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], (dict, list)):
            body = ",\n  ".join(compact(v) for v in value)
            parts.append(f" {compact(key)}: [\n  {body}\n ]")
        else:
            parts.append(f" {compact(key)}: {compact(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def meta(what: str) -> dict[str, str]:
    return {
        "description": what,
        "produced_by": PRODUCER,
        "generator": "vectors/generate.py (see vectors/README.md)",
        "hash_encoding": HASH_ENCODING,
    }


# ------------------------------------------------------------------ rfc6962.json


def gen_rfc6962(gc: GoCheck) -> dict[str, Any]:
    leaves = [bytes.fromhex(h) for h in RFC6962_LEAVES_HEX]
    # None of the eight leaves contains 0x0A (checked by records_file), so each
    # prefix of the list is a valid gocheck FILE; the empty leaf is an empty line.
    roots = []
    for k in range(len(leaves) + 1):
        res = gc.ok("root", gc.tmpfile(f"rfc6962-{k}.txt", records_file(leaves[:k])))
        if int(res.fact("size")) != k:
            raise SystemExit(f"gocheck root read {res.fact('size')} records, want {k}")
        roots.append({"size": k, "root": res.fact("root")})
    full = gc.workdir / "rfc6962-8.txt"
    leaf_hashes = [gc.ok("prove", full, i, len(leaves)).fact("leaf") for i in range(len(leaves))]

    if base64.b64decode(leaf_hashes[0]).hex() != RFC6962_EMPTY_LEAF_HASH_HEX:
        raise SystemExit("gocheck's leaf hash of the empty string differs from RFC 6962's")
    if base64.b64decode(roots[8]["root"]).hex() != RFC6962_ROOT8_HEX:
        raise SystemExit("gocheck's root of the 8 RFC 6962 leaves differs from the published value")
    if roots[0]["root"] != EMPTY_ROOT_B64:
        raise SystemExit("gocheck's empty root is not SHA-256('')")
    return {
        **meta(
            "The eight RFC 6962 test leaves, their RFC 9162 leaf hashes SHA-256(0x00||data), and the "
            "tree root of the first k leaves for k = 0..8 (the root of size 0 is SHA-256 of nothing). "
            "Leaf hashes: `gocheck prove FILE i 8` (its `leaf` line); roots: `gocheck root FILE` on a "
            "file holding the first k leaves, one per line."
        ),
        "leaves_hex": RFC6962_LEAVES_HEX,
        "leaf_hashes": leaf_hashes,
        "roots": roots,
    }


# ----------------------------------------------------------- the 64-leaf test log


def log_leaves(n: int) -> list[bytes]:
    return [(LEAF_TEMPLATE % i).encode("ascii") for i in range(n)]


def inclusion_negatives(
    gc: GoCheck, index: int, size: int, root: str, leaf: str, proof: list[str], roots: list[str]
) -> list[dict[str, Any]]:
    """Broken variants of one valid inclusion proof, each checked with ``gocheck inclh``."""
    cases: list[tuple[str, int, int, str, str, list[str]]] = []
    tag = f"i{index}-n{size}"
    if proof:
        for k in range(len(proof)):
            cases.append((f"{tag}/modified-proof[{k}]-bit0", index, size, root, leaf,
                          proof[:k] + [flip_bit_b64(proof[k])] + proof[k + 1:]))
        cases.append((f"{tag}/modified-proof[last]-bit255", index, size, root, leaf,
                      proof[:-1] + [flip_bit_b64(proof[-1], 31, 7)]))
        cases.append((f"{tag}/truncated-proof", index, size, root, leaf, proof[:-1]))
        cases.append((f"{tag}/truncated-proof-front", index, size, root, leaf, proof[1:]))
        cases.append((f"{tag}/extended-proof-repeat-last", index, size, root, leaf, proof + [proof[-1]]))
        cases.append((f"{tag}/empty-proof", index, size, root, leaf, []))
        cases.append((f"{tag}/reversed-proof", index, size, root, leaf, proof[::-1]))
        last = base64.b64decode(proof[-1])
        cases.append((f"{tag}/proof-hash-31-bytes", index, size, root, leaf,
                      proof[:-1] + [base64.b64encode(last[:31]).decode()]))
        cases.append((f"{tag}/proof-hash-33-bytes", index, size, root, leaf,
                      proof[:-1] + [base64.b64encode(last + b"\0").decode()]))
    else:
        cases.append((f"{tag}/proof-hash-31-bytes", index, size, root, leaf, [b64_of_len(31)]))
    cases.append((f"{tag}/extended-proof-zero-hash", index, size, root, leaf, proof + [b64_of_len(32, 0)]))
    cases.append((f"{tag}/prepended-leaf-hash", index, size, root, leaf, [leaf] + proof))
    cases.append((f"{tag}/wrong-leaf", index, size, root, flip_bit_b64(leaf), proof))
    cases.append((f"{tag}/wrong-root", index, size, flip_bit_b64(root), leaf, proof))
    cases.append((f"{tag}/root-of-size-minus-1", index, size, roots[size - 1], leaf, proof))
    if index + 1 < size:
        cases.append((f"{tag}/index+1", index + 1, size, root, leaf, proof))
    if index > 0:
        cases.append((f"{tag}/index-1", index - 1, size, root, leaf, proof))
    if (index ^ 1) < size:
        cases.append((f"{tag}/index-xor-1", index ^ 1, size, root, leaf, proof))
    cases.append((f"{tag}/size+1", index, size + 1, root, leaf, proof))
    if size - 1 > index:
        cases.append((f"{tag}/size-1", index, size - 1, root, leaf, proof))
    cases.append((f"{tag}/size*2", index, size * 2, root, leaf, proof))
    cases.append((f"{tag}/index==size", size, size, root, leaf, proof))
    cases.append((f"{tag}/index>size", size + 5, size, root, leaf, proof))
    out = []
    seen: set[tuple[Any, ...]] = {(index, size, root, leaf, tuple(proof))}  # no-op alterations
    for desc, i, n, r, lh, p in cases:
        if (i, n, r, lh, tuple(p)) in seen:
            continue
        seen.add((i, n, r, lh, tuple(p)))
        res = gc.run("inclh", n, i, r, lh, "-", stdin=" ".join(p).encode()) if p else gc.run("inclh", n, i, r, lh)
        case: dict[str, Any] = {
            "desc": desc, "index": i, "size": n, "root": r, "leaf_hash": lh, "proof": p,
            "wantErr": res.exit != 0, "gocheck_exit": res.exit,
        }
        if res.exit != 0:
            case["gocheck_message"] = res.message
        else:
            case["note"] = (
                "accepted by Go: this proof has the same shape (sibling sides and length) for the "
                "altered (index, size), so the RFC 9162 algorithm computes the same root"
            )
        out.append(case)
    return out


def gen_inclusion(gc: GoCheck) -> dict[str, Any]:
    leaves = log_leaves(INCLUSION_LOG_SIZE)
    path = gc.tmpfile("log64.txt", records_file(leaves))
    roots = [gc.ok("root", gc.tmpfile(f"log64-{k}.txt", records_file(leaves[:k]))).fact("root")
             for k in range(INCLUSION_LOG_SIZE + 1)]
    proofs = []
    leaf_hashes: list[str] = []
    for n in range(1, INCLUSION_LOG_SIZE + 1):
        for i in range(n):
            res = gc.ok("prove", path, i, n)
            facts = res.facts()
            proof = facts.get("", [])
            if res.fact("root") != roots[n] or int(res.fact("size")) != n or int(res.fact("index")) != i:
                raise SystemExit(f"gocheck prove {i} {n} disagrees with gocheck root")
            if n == INCLUSION_LOG_SIZE:
                leaf_hashes.append(res.fact("leaf"))
            # Each positive must verify with gocheck's own verifier.
            gc.ok("inclh", n, i, res.fact("root"), res.fact("leaf"), *proof)
            proofs.append({"index": i, "size": n, "proof": proof, "_leaf": res.fact("leaf")})
    for p in proofs:
        if p.pop("_leaf") != leaf_hashes[p["index"]]:
            raise SystemExit(f"gocheck prove gave two leaf hashes for leaf {p['index']}")

    by_key = {(p["index"], p["size"]): p["proof"] for p in proofs}
    negatives: list[dict[str, Any]] = []
    for i, n in [(0, 1), (0, 2), (1, 2), (0, 3), (2, 3), (5, 8), (7, 8), (2, 7), (6, 7),
                 (10, 33), (32, 33), (17, 64), (63, 64), (0, 64)]:
        negatives += inclusion_negatives(gc, i, n, roots[n], leaf_hashes[i], by_key[(i, n)], roots)
    # Size 0 and out-of-range cases on their own.
    for desc, i, n, r in [("size-0/index-0", 0, 0, EMPTY_ROOT_B64)]:
        res = gc.run("inclh", n, i, r, leaf_hashes[0])
        negatives.append({"desc": desc, "index": i, "size": n, "root": r, "leaf_hash": leaf_hashes[0],
                          "proof": [], "wantErr": True, "gocheck_exit": res.exit,
                          "gocheck_message": res.message})
    return {
        **meta(
            "A 64-leaf log (leaf i = the ASCII bytes of leaf_template with i substituted, e.g. "
            '{"i":7}; leaf_hashes[i] its leaf hash; roots[k] the root of its first k leaves, from '
            "`gocheck root`). `proofs`: for every size n in 1..64 and index i < n, the RFC 9162 inclusion "
            "proof (audit path, the leaf's sibling first) from `gocheck prove FILE i n`, each checked with "
            "`gocheck inclh`; its leaf hash is leaf_hashes[index] and its root roots[size].root (left out "
            "of each entry to keep the file small). `negatives`: altered proofs named by what they change, "
            "self-contained, each run through `gocheck inclh`; wantErr is true when Go rejected it "
            "(gocheck_exit 1: does not verify, 2: malformed input such as a 31-byte hash). Some size "
            "changes keep the proof's shape and Go accepts them (wantErr false, see note)."
        ),
        "leaf_template": LEAF_TEMPLATE,
        "leaves": [leaf.decode("ascii") for leaf in leaves],
        "leaf_hashes": leaf_hashes,
        "roots": [{"size": k, "root": r} for k, r in enumerate(roots)],
        "proofs": proofs,
        "negatives": negatives,
    }


# -------------------------------------------------------------- consistency.json


def cons_case(gc: GoCheck, desc: str, m: int, n: int, old: str, new: str, proof: list[str]) -> dict[str, Any]:
    if proof:
        res = gc.run("cons", m, old, n, new, "-", stdin=" ".join(proof).encode())
    else:
        res = gc.run("cons", m, old, n, new)
    case: dict[str, Any] = {"desc": desc, "old_size": m, "new_size": n, "old_root": old, "new_root": new,
                            "proof": proof, "wantErr": res.exit != 0, "gocheck_exit": res.exit}
    if res.exit != 0:
        case["gocheck_message"] = res.message
    else:
        case["note"] = (
            "accepted by Go: the altered sizes give the same proof shape, so the RFC 9162 algorithm "
            "computes the same roots"
        )
    return case


def consistency_negatives(gc: GoCheck, m: int, n: int, roots: list[str], proof: list[str]) -> list[dict[str, Any]]:
    old, new = roots[m], roots[n]
    tag = f"m{m}-n{n}"
    cases: list[tuple[str, int, int, str, str, list[str]]] = []
    for k in range(len(proof)):
        cases.append((f"{tag}/modified-proof[{k}]-bit0", m, n, old, new,
                      proof[:k] + [flip_bit_b64(proof[k])] + proof[k + 1:]))
    if proof:
        cases.append((f"{tag}/modified-proof[last]-bit255", m, n, old, new,
                      proof[:-1] + [flip_bit_b64(proof[-1], 31, 7)]))
        cases.append((f"{tag}/truncated-proof", m, n, old, new, proof[:-1]))
        cases.append((f"{tag}/truncated-proof-front", m, n, old, new, proof[1:]))
        cases.append((f"{tag}/extended-proof-repeat-last", m, n, old, new, proof + [proof[-1]]))
        cases.append((f"{tag}/empty-proof", m, n, old, new, []))
        cases.append((f"{tag}/reversed-proof", m, n, old, new, proof[::-1]))
        cases.append((f"{tag}/proof-hash-31-bytes", m, n, old, new,
                      proof[:-1] + [base64.b64encode(base64.b64decode(proof[-1])[:31]).decode()]))
    cases.append((f"{tag}/extended-proof-zero-hash", m, n, old, new, proof + [b64_of_len(32, 0)]))
    cases.append((f"{tag}/prepended-old-root", m, n, old, new, [old] + proof))
    cases.append((f"{tag}/wrong-old-root", m, n, flip_bit_b64(old), new, proof))
    cases.append((f"{tag}/wrong-new-root", m, n, old, flip_bit_b64(new), proof))
    cases.append((f"{tag}/swapped-roots", m, n, new, old, proof))
    cases.append((f"{tag}/old-size+1", m + 1, n, old, new, proof))
    cases.append((f"{tag}/old-size-1", m - 1, n, old, new, proof))
    cases.append((f"{tag}/new-size+1", m, n + 1, old, new, proof))
    cases.append((f"{tag}/new-size-1", m, n - 1, old, new, proof))
    cases.append((f"{tag}/new-size*2", m, n * 2, old, new, proof))
    cases.append((f"{tag}/sizes-swapped", n, m, new, old, proof))
    out = []
    seen: set[tuple[Any, ...]] = {(m, n, old, new, tuple(proof))}  # no-op alterations
    for desc, mm, nn, o, w, p in cases:
        if desc.endswith("old-size-1") and mm == 0:
            continue  # the size-0 rules are covered by their own cases
        if (mm, nn, o, w, tuple(p)) in seen:
            continue
        seen.add((mm, nn, o, w, tuple(p)))
        out.append(cons_case(gc, desc, mm, nn, o, w, p))
    return out


def gen_consistency(gc: GoCheck) -> dict[str, Any]:
    path = gc.workdir / "log64.txt"
    roots = [gc.ok("root", gc.workdir / f"log64-{k}.txt").fact("root") for k in range(INCLUSION_LOG_SIZE + 1)]
    proofs = []
    for n in range(1, INCLUSION_LOG_SIZE + 1):
        for m in range(1, n + 1):
            res = gc.ok("proveCons", path, m, n)
            entry = {"old_size": m, "new_size": n, "proof": res.facts().get("", [])}
            if (res.fact("oldroot"), res.fact("root")) != (roots[m], roots[n]):
                raise SystemExit(f"gocheck proveCons {m} {n} disagrees with gocheck root")
            gc.ok("cons", m, roots[m], n, roots[n], *entry["proof"])
            proofs.append(entry)
    by_key = {(p["old_size"], p["new_size"]): p["proof"] for p in proofs}

    negatives: list[dict[str, Any]] = []
    for m, n in [(1, 1), (1, 2), (2, 3), (3, 7), (4, 8), (6, 8), (7, 8), (8, 8), (1, 64),
                 (13, 50), (32, 64), (33, 64), (63, 64)]:
        negatives += consistency_negatives(gc, m, n, roots, by_key[(m, n)])

    # m == n: the proof must be empty and the roots equal.
    negatives.append(cons_case(gc, "m8-n8/same-size-different-roots", 8, 8, roots[8], roots[7], []))
    negatives.append(cons_case(gc, "m8-n8/same-size-nonempty-proof", 8, 8, roots[8], roots[8], [roots[8]]))
    # m > n, with the proof of (n, m).
    negatives.append(cons_case(gc, "m8-n7/old-size-exceeds-new", 8, 7, roots[8], roots[7], by_key[(7, 8)]))
    negatives.append(cons_case(gc, "m64-n1/old-size-exceeds-new-empty-proof", 64, 1, roots[64], roots[1], []))

    # Size 0.  RFC 9162 section 2.1.4 only defines proofs for 0 < m <= n; gocheck's
    # `cons 0` (not tlog.CheckTree, which rejects size 0) accepts an empty proof with
    # the empty root, but kfm-ledger's verifier never accepts a proof from size 0 to a
    # larger size (FORMATS.md), so wantErr is true there whatever Go says.  0 -> 0 is
    # the m == n rule (empty proof, equal roots), as in transparency-dev/merkle's
    # VerifyConsistency, which checks size1 == size2 before size1 == 0.
    zero_note = (
        "kfm-ledger's verify_consistency never accepts a proof from size 0 to a larger size "
        "(FORMATS.md: 'a proof from size 0 never verifies'), so wantErr is true for our verifier; "
        "gocheck_exit records what gocheck's `cons 0` rule (empty proof + SHA-256('') as old root) said"
    )
    same_note = (
        "m == n: an empty proof and equal roots verify (FORMATS.md; transparency-dev/merkle checks "
        "size1 == size2 before size1 == 0), so 0 -> 0 with both roots SHA-256('') is accepted"
    )
    for desc, m, n, old, new, proof in [
        ("m0-n0/empty-trees", 0, 0, EMPTY_ROOT_B64, EMPTY_ROOT_B64, []),
        ("m0-n8/empty-proof", 0, 8, EMPTY_ROOT_B64, roots[8], []),
        ("m0-n64/empty-proof", 0, 64, EMPTY_ROOT_B64, roots[64], []),
        ("m0-n8/nonempty-proof", 0, 8, EMPTY_ROOT_B64, roots[8], [roots[8]]),
        ("m0-n8/zero-old-root", 0, 8, b64_of_len(32, 0), roots[8], []),
    ]:
        case = cons_case(gc, desc, m, n, old, new, proof)
        case["wantErr"] = n > 0
        case["note"] = zero_note if n > 0 else same_note
        negatives.append(case)
    return {
        **meta(
            "The log of inclusion.json (roots[k]: root of its first k leaves). `proofs`: for every "
            "1 <= m <= n <= 64 the RFC 9162 consistency proof from size m to size n (`gocheck proveCons "
            "FILE m n`; empty when m == n), each checked with `gocheck cons`; its roots are "
            "roots[old_size].root and roots[new_size].root (left out of each entry to keep the file "
            "small). `negatives`: altered proofs named by what they change, self-contained, each run "
            "through `gocheck cons` (gocheck_exit 1: does not verify, 2: malformed input). wantErr is "
            "what kfm-ledger's verifier must do: Go's verdict, except for proofs from size 0 (see "
            "their note)."
        ),
        "leaf_template": LEAF_TEMPLATE,
        "roots": [{"size": k, "root": r} for k, r in enumerate(roots)],
        "proofs": proofs,
        "negatives": negatives,
    }


# -------------------------------------------------------------------- notes.json


def load_or_make_keys(gc: GoCheck, out_dir: Path, new_keys: bool) -> list[dict[str, str]]:
    existing = out_dir / "notes.json"
    if not existing.exists() and (HERE / "notes.json").exists():
        existing = HERE / "notes.json"
    if not new_keys and existing.exists():
        keys = json.loads(existing.read_text("utf-8"))["keys"]
        if [k["name"] for k in keys] == list(KEY_NAMES):
            return keys
    keys = []
    for name in KEY_NAMES:
        res = gc.ok("keygen", name)
        keys.append({"name": name, "skey": res.fact("skey"), "vkey": res.fact("vkey")})
    return keys


def sign(gc: GoCheck, skeys: Sequence[str], body: str) -> str:
    keyfile = gc.tmpfile("skeys.txt", ("\n".join(skeys) + "\n").encode())
    res = gc.ok("sign", keyfile, gc.tmpfile("body.txt", body.encode("utf-8")))
    return res.out


def open_note(gc: GoCheck, note: str, vkeys: Sequence[str]) -> Result:
    path = gc.tmpfile("note.txt", note.encode("utf-8"))
    return gc.run("note", path, *vkeys)


def split_sig_line(line: str) -> tuple[str, str]:
    """``— name base64`` -> (name, base64)."""
    assert line.startswith("\u2014 "), line
    name, _, b64 = line[2:].partition(" ")
    return name, b64


def gen_notes(gc: GoCheck, rfc: dict[str, Any], incl: dict[str, Any], keys: list[dict[str, str]]) -> dict[str, Any]:
    a, b, c = keys
    root8 = rfc["roots"][8]["root"]
    root64 = incl["roots"][64]["root"]
    root5 = incl["roots"][5]["root"]

    checkpoints_spec = [
        ("size-0", a["name"], 0, EMPTY_ROOT_B64, [], [a]),
        ("rfc6962-size-8", a["name"], 8, root8, [], [a]),
        ("size-64-with-extension-lines", a["name"], 64, root64,
         ["kfm.test/extension seq=64", "\u00e9t\u00e9 2025 \u2014 UTF-8 extension"], [a]),
        ("two-signers", b["name"], 5, root5, [], [b, c]),
    ]
    checkpoints = []
    signed: dict[str, str] = {}
    for desc, origin, size, root, ext, signers in checkpoints_spec:
        body = f"{origin}\n{size}\n{root}\n" + "".join(line + "\n" for line in ext)
        note = sign(gc, [k["skey"] for k in signers], body)
        signed[desc] = note
        for verify_with in ([signers[0]], signers) if len(signers) > 1 else ([signers[0]],):
            res = open_note(gc, note, [k["vkey"] for k in verify_with])
            if res.exit != 0:
                raise SystemExit(f"gocheck note rejects its own signed note {desc}: {res.err}")
            facts = res.facts()
            expect = {
                "origin": res.fact("origin"),
                "size": int(res.fact("size")),
                "root": res.fact("root"),
                "ext": facts.get("ext", []),
                "signers": facts.get("signer", []),
                "unverified": facts.get("unverified", []),
            }
            if (expect["origin"], expect["size"], expect["root"], expect["ext"]) != (origin, size, root, ext):
                raise SystemExit(f"gocheck note parsed {desc} as {expect}")
            checkpoints.append({
                "desc": desc if len(verify_with) == len(signers) else f"{desc}/verified-with-first-key-only",
                "body": body,
                "signed_by": [k["name"] for k in signers],
                "note": note,
                "verify_with": [k["vkey"] for k in verify_with],
                "expect": expect,
            })

    # ---------------------------------------------------------- tampered notes
    base = signed["rfc6962-size-8"]
    text, _, sigs = base.rpartition("\n\n")
    text += "\n"
    sig_line = sigs.rstrip("\n")
    name_a, sig_a = split_sig_line(sig_line)
    two = signed["two-signers"]
    two_text, _, two_sigs = two.rpartition("\n\n")
    two_text += "\n"
    two_lines = two_sigs.rstrip("\n").split("\n")
    ab = sign(gc, [a["skey"], b["skey"]], text)
    ab_lines = ab.rpartition("\n\n")[2].rstrip("\n").split("\n")

    def with_sigs(t: str, lines: Iterable[str]) -> str:
        return t + "\n" + "".join(line + "\n" for line in lines)

    def line_with(name: str, b64: str) -> str:
        return f"\u2014 {name} {b64}"

    def corrupt(line: str) -> str:
        """The same signature line with one bit of the Ed25519 signature flipped."""
        name, b64 = split_sig_line(line)
        return line_with(name, flip_bit_b64(b64, 30, 1))

    va, vb, vc = a["vkey"], b["vkey"], c["vkey"]
    tampered: list[tuple[str, str, list[str], str, str | None]] = [
        # (desc, note, vkeys, expected kfm error class, note)
        ("body-size-changed", base.replace(f"\n8\n{rfc['roots'][8]['root']}", f"\n9\n{rfc['roots'][8]['root']}", 1),
         [va], "BadSignatureError", None),
        ("body-root-bit-flipped", base.replace(root8, flip_bit_b64(root8, 5, 3), 1), [va], "BadSignatureError", None),
        ("body-origin-changed", base.replace(a["name"] + "\n", a["name"] + "x\n", 1), [va], "BadSignatureError", None),
        ("body-extension-line-added", with_sigs(text + "injected extension\n", [sig_line]), [va],
         "BadSignatureError", None),
        ("signature-bit-flipped", with_sigs(text, [line_with(name_a, flip_bit_b64(sig_a, 20, 0))]), [va],
         "BadSignatureError", None),
        ("signature-last-byte-flipped", with_sigs(text, [line_with(name_a, flip_bit_b64(sig_a, 67, 7))]), [va],
         "BadSignatureError", None),
        ("signed-by-unknown-key-only", sign(gc, [c["skey"]], text), [va], "UnknownKeyError", None),
        ("verified-with-other-key-only", base, [vb], "UnknownKeyError", None),
        ("key-id-bit-flipped", with_sigs(text, [line_with(name_a, flip_bit_b64(sig_a, 0, 0))]), [va],
         "UnknownKeyError",
         "the (name, key ID) pair matches no known key, so the signature is ignored and none is left"),
        ("key-name-changed", with_sigs(text, [line_with(name_a + "x", sig_a)]), [va], "UnknownKeyError",
         "the (name, key ID) pair matches no known key, so the signature is ignored and none is left"),
        ("two-signatures-second-bad", with_sigs(text, [ab_lines[0], corrupt(ab_lines[1])]), [va, vb],
         "BadSignatureError", None),
        ("two-signatures-first-bad", with_sigs(text, [corrupt(ab_lines[0]), ab_lines[1]]), [va, vb],
         "BadSignatureError", None),
        ("two-signers-cosigner-signature-bad", with_sigs(two_text, [two_lines[0], corrupt(two_lines[1])]),
         [vb, vc], "BadSignatureError", None),
        ("bad-signature-from-unknown-key-ignored", with_sigs(two_text, [two_lines[0], corrupt(two_lines[1])]),
         [vb], "", "the bad signature is from a key the verifier was not given, so it is ignored"),
        ("duplicate-signature-second-copy-bad", with_sigs(text, [sig_line, corrupt(sig_line)]),
         [va], "BadSignatureError",
         "Go's note.Open (x/mod 0.7.0) skips a repeated signature from a key it has already verified, so it "
         "accepts this note; c2sp.org/signed-note says verifiers MUST verify every signature from a known "
         "key and SHOULD reject the note if one fails, and FORMATS.md says reject: kfm-ledger must reject"),
        ("duplicate-signature-first-copy-bad", with_sigs(text, [corrupt(sig_line), sig_line]),
         [va], "BadSignatureError", None),
        ("missing-blank-line", text + sig_line + "\n", [va], "NoteError", None),
        ("no-signature-lines", text + "\n", [va], "NoteError", None),
        ("missing-final-newline", with_sigs(text, [sig_line]).rstrip("\n"), [va], "NoteError", None),
        ("hyphen-instead-of-em-dash", with_sigs(text, ["-" + sig_line[1:]]), [va], "NoteError", None),
        ("signature-not-base64", with_sigs(text, [line_with(name_a, sig_a[:-4] + "!!!!")]), [va], "NoteError", None),
        ("signature-only-key-id",
         with_sigs(text, [line_with(name_a, base64.b64encode(base64.b64decode(sig_a)[:4]).decode())]),
         [va], "NoteError", "4 bytes: a key ID and no signature (Go requires at least 5 bytes)"),
        ("signature-truncated",
         with_sigs(text, [line_with(name_a, base64.b64encode(base64.b64decode(sig_a)[:40]).decode())]),
         [va], "NoteError", "key ID of the known key followed by a 36-byte signature: malformed or bad"),
        ("tab-in-text", base.replace("\n8\n", "\n8\t\n", 1), [va], "NoteError", "control character other than newline"),
        ("crlf-line-endings", base.replace("\n", "\r\n"), [va], "NoteError", "control character other than newline"),
        ("trailing-garbage-after-signatures", base + "garbage", [va], "NoteError", None),
        ("empty-note", "", [va], "NoteError", None),
    ]
    tampered_out = []
    for desc, note, vkeys, error, why in tampered:
        res = open_note(gc, note, vkeys)
        want_err = bool(error)
        if desc == "duplicate-signature-second-copy-bad":
            if res.exit != 0:
                raise SystemExit("gocheck now rejects a duplicate bad signature: update the note of " + desc)
        elif (res.exit != 0) != want_err:
            raise SystemExit(f"gocheck note on tampered case {desc}: exit {res.exit} ({res.err})")
        case: dict[str, Any] = {"desc": desc, "note": note, "verify_with": vkeys, "wantErr": want_err,
                                "error": error or None, "gocheck_exit": res.exit}
        if res.exit != 0:
            case["gocheck_message"] = res.message
        if why:
            case["why"] = why
        tampered_out.append(case)

    # ------------------------------------------- validly signed, invalid checkpoint bodies
    bad_bodies = [
        ("size-leading-zero", f"{a['name']}\n08\n{root8}\n"),
        ("size-plus-sign", f"{a['name']}\n+8\n{root8}\n"),
        ("size-negative", f"{a['name']}\n-1\n{root8}\n"),
        ("size-leading-space", f"{a['name']}\n 8\n{root8}\n"),
        ("size-hex", f"{a['name']}\n0x8\n{root8}\n"),
        ("size-empty", f"{a['name']}\n\n{root8}\n"),
        ("size-above-int64", f"{a['name']}\n9223372036854775808\n{root8}\n"),
        ("root-31-bytes", f"{a['name']}\n8\n{b64_of_len(31)}\n"),
        ("root-33-bytes", f"{a['name']}\n8\n{b64_of_len(33)}\n"),
        ("root-unpadded-base64", f"{a['name']}\n8\n{root8.rstrip('=')}\n"),
        ("root-urlsafe-base64", f"{a['name']}\n8\n{b64_of_len(32, 0xFB).replace('+', '-').replace('/', '_')}\n"),
        ("root-missing", f"{a['name']}\n8\n"),
        ("origin-empty", f"\n8\n{root8}\n"),
        ("empty-extension-line", f"{a['name']}\n8\n{root8}\nfirst\n\nthird\n"),
    ]
    rejected = []
    for desc, body in bad_bodies:
        note = sign(gc, [a["skey"]], body)
        res = open_note(gc, note, [va])
        if res.exit != 1:
            raise SystemExit(f"gocheck note accepted bad checkpoint body {desc}: {res.out}")
        rejected.append({"desc": desc, "body": body, "note": note, "verify_with": [va], "wantErr": True,
                         "error": "FormatError", "gocheck_exit": res.exit, "gocheck_message": res.message})
    # A valid checkpoint whose origin is not the signing key's name.  Go's note layer has no
    # notion of origin and accepts it; tlog-checkpoint says the key name SHOULD be the
    # origin and kfm-ledger's open_checkpoint requires a log signature by a key so named.
    body = f"kfm.test/vectors/some-other-origin\n8\n{root8}\n"
    note = sign(gc, [a["skey"]], body)
    res = open_note(gc, note, [va])
    if res.exit != 0:
        raise SystemExit(f"gocheck note rejects a checkpoint with another origin: {res.err}")
    rejected.append({
        "desc": "origin-is-not-the-key-name", "body": body, "note": note, "verify_with": [va], "wantErr": True,
        "error": "UnknownKeyError", "gocheck_exit": 0,
        "why": "Go accepts (its note layer ignores the origin); c2sp.org/tlog-checkpoint: the log's key name "
               "SHOULD be the origin, and kfm-ledger requires a verified log signature by a key named "
               "like the origin",
    })
    return {
        **meta(
            "C2SP signed notes and checkpoints. `keys`: Ed25519 note key pairs from `gocheck keygen NAME` "
            "(Go's PRIVATE+KEY+... and verifier key texts). `checkpoints`: C2SP checkpoint bodies signed "
            "with `gocheck sign SKEYFILE BODY` and opened with `gocheck note NOTE VKEY...` (`expect`: "
            "what Go parsed and which keys it verified). `tampered`: altered notes, each opened with "
            "`gocheck note`; `error` is the kfm_ledger.errors class our open_note/open_checkpoint must "
            "raise. `checkpoint_rejected`: validly signed notes that open_note accepts but "
            "open_checkpoint must reject with `error`: texts that are not valid checkpoints (gocheck "
            "note exits 1), and one whose origin is not its key's name (Go accepts, see why)."
        ),
        "warning": TEST_KEY_WARNING,
        "keys": keys,
        "checkpoints": checkpoints,
        "tampered": tampered_out,
        "checkpoint_rejected": rejected,
    }


# --------------------------------------------------------------------- tiles


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """``tile/L/x001/234.p/17`` -> (L, 1234, 17); width 256 for a full tile."""
    parts = path.split("/")
    assert parts[0] == "tile", path
    level = int(parts[1])
    rest = parts[2:]
    width = 256
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        width = int(rest[-1])
        rest = rest[:-2] + [rest[-2][:-2]]
    index = 0
    for group in rest:
        index = index * 1000 + int(group.removeprefix("x"))
    return level, index, width


def gen_tiles(gc: GoCheck, out_dir: Path) -> dict[str, Any]:
    leaves = log_leaves(max(TILE_LOG_SIZES))
    leaves_path = out_dir / LEAVES_FILE
    leaves_path.write_bytes(records_file(leaves))
    trees = []
    for size in TILE_LOG_SIZES:
        src = gc.tmpfile(f"tiles-{size}.txt", records_file(leaves[:size]))
        rel = Path("tiles") / str(size)
        dest = out_dir / rel
        if dest.exists():
            shutil.rmtree(dest)
        res = gc.ok("mktiles", src, dest)
        root = res.fact("root")
        if int(res.fact("size")) != size:
            raise SystemExit(f"mktiles read {res.fact('size')} records, want {size}")
        if gc.ok("root", src).fact("root") != root:
            raise SystemExit("mktiles and root disagree")
        gc.ok("tiles", dest, size, root)  # gocheck verifies the tiles it wrote
        tiles = []
        for file in sorted(p for p in dest.rglob("*") if p.is_file()):
            tpath = file.relative_to(dest).as_posix()
            level, index, width = parse_tile_path(tpath)
            data = file.read_bytes()
            if len(data) != 32 * width:
                raise SystemExit(f"{file}: {len(data)} bytes for width {width}")
            tiles.append({"path": tpath, "level": level, "index": index, "width": width,
                          "sha256": hashlib.sha256(data).hexdigest()})
        tiles.sort(key=lambda t: (t["level"], t["index"]))
        # A few proofs over this tree, so tile-backed proof building can be checked too.
        proofs = []
        for index in sorted({0, 1, 255, 256, size - 1} & set(range(size))):
            pr = gc.ok("prove", src, index, size)
            proofs.append({"index": index, "size": size, "root": root, "leaf_hash": pr.fact("leaf"),
                           "proof": pr.facts().get("", [])})
        cons = []
        for m in sorted({1, 255, 256, 257, size - 1} & set(range(1, size))):
            pc = gc.ok("proveCons", src, m, size)
            cons.append({"old_size": m, "new_size": size, "old_root": pc.fact("oldroot"), "new_root": root,
                         "proof": pc.facts().get("", [])})
        trees.append({"size": size, "root": root, "dir": rel.as_posix(),
                      "fulltiles": int(res.fact("fulltiles")), "partialtiles": int(res.fact("partialtiles")),
                      "tiles": tiles, "inclusion_proofs": proofs, "consistency_proofs": cons})
    return {
        **meta(
            "C2SP tlog-tiles hash tiles written by `gocheck mktiles FILE DIR` for logs of the first 256, "
            "257 and 1000 leaves of leaves_file (leaf i = leaf_template with i; the same leaves as "
            "inclusion.json). Each tree lists every tile file under <dir>/ (C2SP path tile/L/N[.p/W], "
            "level, index, width, sha256 hex of the file); mktiles writes each full tile and, per level, "
            "the widest partial tile. The tiles were checked with `gocheck tiles DIR SIZE ROOT`. "
            "inclusion_proofs / consistency_proofs: a few `gocheck prove` / `proveCons` results for the "
            "same tree, to check proofs built from tiles."
        ),
        "leaf_template": LEAF_TEMPLATE,
        "leaves_file": LEAVES_FILE,
        "leaves_file_sha256": hashlib.sha256(leaves_path.read_bytes()).hexdigest(),
        "trees": trees,
    }


# ---------------------------------------------------------------------- main


def generate(gocheck: str, out_dir: Path, new_keys: bool) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kfm-vectors-") as tmp:
        gc = GoCheck(gocheck, Path(tmp))
        keys = load_or_make_keys(gc, out_dir, new_keys)
        rfc = gen_rfc6962(gc)
        incl = gen_inclusion(gc)
        cons = gen_consistency(gc)
        notes = gen_notes(gc, rfc, incl, keys)
        tiles = gen_tiles(gc, out_dir)
        for name, doc in [("rfc6962.json", rfc), ("inclusion.json", incl), ("consistency.json", cons),
                          ("notes.json", notes), ("tiles.json", tiles)]:
            (out_dir / name).write_text(dumps(doc), encoding="utf-8")
        return gc.calls


def vector_files(root: Path) -> list[str]:
    names = ["rfc6962.json", "inclusion.json", "consistency.json", "notes.json", "tiles.json", LEAVES_FILE]
    tile_dir = root / "tiles"
    if tile_dir.exists():
        names += sorted(p.relative_to(root).as_posix() for p in tile_dir.rglob("*") if p.is_file())
    return names


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gocheck", default=os.environ.get("GOCHECK", "/tmp/gocheck-bin/gocheck"),
                    help="path to the gocheck binary (default: $GOCHECK or /tmp/gocheck-bin/gocheck)")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: this directory)")
    ap.add_argument("--new-keys", action="store_true", help="make new test keys instead of reusing notes.json's")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary directory and compare with --out; write nothing")
    args = ap.parse_args(argv)
    if not (os.path.isfile(args.gocheck) and os.access(args.gocheck, os.X_OK)):
        print(f"gocheck not found or not executable: {args.gocheck}", file=sys.stderr)
        return 2
    if not args.check:
        calls = generate(args.gocheck, args.out, args.new_keys)
        total = sum((args.out / f).stat().st_size for f in vector_files(args.out))
        print(f"wrote {len(vector_files(args.out))} files, {total} bytes, after {calls} gocheck runs")
        return 0
    with tempfile.TemporaryDirectory(prefix="kfm-vectors-check-") as tmp:
        fresh = Path(tmp)
        if (args.out / "notes.json").exists():
            shutil.copy(args.out / "notes.json", fresh / "notes.json")  # reuse the test keys
        generate(args.gocheck, fresh, new_keys=False)
        want, have = vector_files(fresh), vector_files(args.out)
        problems = [f"missing: {f}" for f in want if f not in have]
        problems += [f"unexpected: {f}" for f in have if f not in want]
        problems += [f"differs: {f}" for f in want if f in have
                     and not filecmp.cmp(fresh / f, args.out / f, shallow=False)]
        for p in problems:
            print(p, file=sys.stderr)
        print("vectors match gocheck" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
