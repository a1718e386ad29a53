"""The commit index's seal: a keyed check that lets the writer trust the index's "not stored".

The commit index (:mod:`kfm_ledger.index`) is derived data anyone with write access to
the ledger directory can edit.  Readers never need to trust it (every row they return is
proven against the signed tree), but append's "one row per lakeFS commit" rule asks the
index a question whose *negative* answer cannot be proven row by row: "is commit X
stored?".  The seal makes that answer sound at O(n / BUCKETS) cost per lookup:

* Entries fall into :data:`BUCKETS` buckets by a checksum of their commit id
  (:func:`bucket_of`, unkeyed: readers that index rows need it too).
* Per bucket, an order-independent keyed multiset hash: the sum modulo the prime
  2**127 - 1 of :func:`term` of its entries, ``H1 + leaf * H2`` where ``H1 || H2`` is keyed
  BLAKE2b (RFC 7693 §2.5 keyed mode, 256-bit output) of commit and created_at.  Adding rows
  adds their terms; because a term is linear in the leaf, a bulk append's workers sum their
  chunk's terms per bucket before they know where the chunk's rows will land
  (:func:`chunk_sums`), and the writer places each chunk with one multiplication per bucket.
* The table of sums is authenticated with HMAC-SHA256 (RFC 2104) over the tree size and
  root of the signed checkpoint it describes: :func:`seal_mac`.
* The key is derived from the log's signing key (:func:`seal_key`): only the writer can
  compute terms or seal a table, so an edit of the index (an entry renamed, moved, deleted,
  added; an old copy of the file; an edited table) makes some bucket's recomputed sum or
  the table's MAC disagree, except with probability about 2**-128.

docs/operations.md ("The commit index's seal") has the threat model and what happens
when a check fails.  Pure: bytes and integers in and out.
"""

from __future__ import annotations

import array
import collections
import hashlib
import hmac
import itertools
import operator
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, Protocol

#: Number of buckets (a power of two; 4096 keeps a bucket at ~250 entries at 1M rows
#: and the table at 64 KiB).
BUCKETS = 4096
_BUCKET_SHIFT = 32 - (BUCKETS - 1).bit_length()  # the top 12 bits of a CRC-32
#: Sums and terms are integers modulo this prime (2**127 - 1): a changed multiset goes unnoticed
#: with probability about 2**-127 (the terms are unknown without the key), and the table stays
#: 64 KiB (16 bytes a bucket, written every append).
MODULUS = (1 << 127) - 1
_SUM_BYTES = 16
_DIGEST_BYTES = 2 * _SUM_BYTES
#: A leaf is a SQLite integer: below 2**63, so two leaves never agree modulo MODULUS.
_LEAF_LIMIT = 1 << 63
TABLE_BYTES = BUCKETS * _SUM_BYTES

#: Domain separation: the message whose signature seeds the key can never be a signed
#: note's text (a NUL byte is not allowed in one, c2sp.org/signed-note), nor a
#: cosignature message (those start with "cosignature/v1").
_KEY_MESSAGE = b"kfm-ledger\x00commit index seal key\x00v1"
_HKDF_INFO = b"kfm-ledger commit index seal v1"
_MAC_LABEL = b"kfm-ledger\x00commit index seal table\x00v1\x00"


class _Signs(Protocol):
    def sign(self, message: bytes) -> bytes: ...


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869 §2.2 extract, §2.3 expand)."""
    prk = hmac.digest(salt or b"\x00" * 32, ikm, "sha256")
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
    return out[:length]


def seal_key(signer: _Signs) -> bytes:
    """The 32-byte seal key of the log's signing key.

    HKDF-SHA256 (RFC 5869) whose input keying material is the signer's Ed25519 signature
    (RFC 8032 §5.1.6: deterministic) of a fixed message no note or cosignature can be:
    only the holder of the signing key can compute it, and the private seed itself is never
    touched outside the key object.  Kept for the signer object's life (a few per process).
    """
    cached = _KEYS.get(id(signer))
    if cached is not None and cached[0] is signer:
        return cached[1]
    key = hkdf_sha256(signer.sign(_KEY_MESSAGE), salt=b"kfm-ledger", info=_HKDF_INFO)
    if len(_KEYS) >= 8:
        _KEYS.clear()
    _KEYS[id(signer)] = (signer, key)
    return key


_KEYS: dict[int, tuple[_Signs, bytes]] = {}


def bucket_of(commit: str) -> int:
    """The bucket of a commit id: the top 12 bits of the CRC-32 (ISO-HDLC, zlib's) of its UTF-8.

    Not keyed and not cryptographic: a bucket only decides how much of the index a check
    reads (commit ids are lakeFS's hashes, so buckets stay even); soundness is the terms'.
    """
    return zlib.crc32(commit.encode()) >> _BUCKET_SHIFT


def buckets_of(commits: Iterable[str]) -> list[int]:
    """:func:`bucket_of` of each commit (C-level maps: no Python code per commit)."""
    return utf8_buckets_of(map(str.encode, commits))


def utf8_buckets_of(commits: Iterable[bytes]) -> list[int]:
    """:func:`bucket_of` of each commit given in UTF-8."""
    return list(map(operator.rshift, map(zlib.crc32, commits), itertools.repeat(_BUCKET_SHIFT)))


def _digests(key: bytes, commits: Iterable[str], created: Iterable[str]) -> list[bytes]:
    """:func:`_utf8_digests` of entries given as text."""
    return _utf8_digests(key, map(str.encode, commits), map(str.encode, created))


def _utf8_digests(key: bytes, commits: Iterable[bytes], created: Iterable[bytes]) -> list[bytes]:
    """Keyed BLAKE2b-256 (RFC 7693 §2.5) of ``commit NUL created_at`` (UTF-8) for each entry,
    with C-level maps: the key block is hashed once and its state copied per entry."""
    messages = list(map(b"%s\x00%s".__mod__, zip(commits, created)))
    keyed = hashlib.blake2b(key=key, digest_size=_DIGEST_BYTES)
    macs = [keyed.copy() for _ in messages]
    collections.deque(map(type(keyed).update, macs, messages), maxlen=0)
    return list(map(operator.methodcaller("digest"), macs))


def _check_leaves(leaves: Iterable[int]) -> Iterator[int]:
    """The leaves as Python ints in [0, 2**63) (TypeError or ValueError otherwise: an index edited
    to hold a REAL, TEXT or out-of-range leaf is not a stored one)."""
    for leaf in map(operator.index, leaves):
        if not 0 <= leaf < _LEAF_LIMIT:
            raise ValueError(f"leaf {leaf} out of range")
        yield leaf


def term(key: bytes, leaf: int, commit: str, created_at: str) -> int:
    """The keyed hash of one index entry, an integer modulo :data:`MODULUS`:
    ``(H1 + leaf * H2) mod (2**127 - 1)`` where ``H1 || H2`` (16 bytes each, big-endian) is
    keyed BLAKE2b-256 of ``commit NUL created_at`` (UTF-8).

    Rows' commits and created_at values hold no NUL (schema), so the message determines both
    fields.  Soundness: the index's entries have distinct commits, and H1, H2 are unknown
    without the key; an edited bucket keeps its sum only if, for every (commit, created_at), its
    count and the sum of its leaves stay the same modulo the prime, which for one entry per
    commit and leaves below 2**63 means the very same entries (else a random sum is hit with
    probability 2**-127).
    """
    (digest,) = _digests(key, [commit], [created_at])
    (leaf,) = _check_leaves([leaf])
    return (int.from_bytes(digest[:_SUM_BYTES], "big") + leaf * int.from_bytes(digest[_SUM_BYTES:], "big")) % MODULUS


def add_terms(
    key: bytes, sums: dict[int, int], leaves: Iterable[int], commits: Iterable[str], created: Iterable[str],
    buckets: Iterable[int],
) -> None:
    """Add the terms of the entries (leaves[i], commits[i], created[i]) to ``sums[buckets[i]]``
    (unreduced), the hashing with C-level maps."""
    get = sums.get
    frombytes = int.from_bytes
    for bucket, leaf, digest in zip(buckets, _check_leaves(leaves), _digests(key, commits, created)):
        h1, h2 = frombytes(digest[:_SUM_BYTES], "big"), frombytes(digest[_SUM_BYTES:], "big")
        sums[bucket] = get(bucket, 0) + h1 + leaf * h2


def chunk_sums(
    key: bytes, commits: Sequence[bytes], created: Sequence[bytes], buckets: Sequence[int]
) -> tuple[array.array[int], list[int], list[int]]:
    """The seal terms of a run of entries whose leaves are not known yet, summed per bucket:
    the entries are at leaves ``base + 0, base + 1, ...`` for a ``base`` fixed later.
    ``commits`` and ``created`` are the entries' values in UTF-8.

    Returns (the buckets touched, sorted; for each, ``A = sum(H1 + j * H2)`` and
    ``B = sum(H2)`` over its entries, ``j`` an entry's position in the run), each reduced
    modulo :data:`MODULUS`.  The bucket's share of the sums is then ``A + base * B``
    (:func:`place_chunk_sums`).  Used by a bulk append's worker processes: everything but the
    sums per bucket runs in C-level maps.
    """
    count = len(commits)
    digests = _utf8_digests(key, commits, created)
    big: itertools.repeat[Literal["big"]] = itertools.repeat("big")
    h1 = map(int.from_bytes, map(operator.itemgetter(slice(_SUM_BYTES)), digests), big)
    h2 = list(map(int.from_bytes, map(operator.itemgetter(slice(_SUM_BYTES, None)), digests), big))
    a: dict[int, int] = {}
    b: dict[int, int] = {}
    get_a, get_b = a.get, b.get
    for bucket, a_term, b_term in zip(buckets, map(operator.add, h1, map(operator.mul, range(count), h2)), h2):
        a[bucket] = get_a(bucket, 0) + a_term
        b[bucket] = get_b(bucket, 0) + b_term
    touched = sorted(a)
    return array.array("H", touched), [a[t] % MODULUS for t in touched], [b[t] % MODULUS for t in touched]


def place_chunk_sums(
    sums: dict[int, int], base: int, touched: Iterable[int], a: Iterable[int], b: Iterable[int]
) -> None:
    """Add a run's :func:`chunk_sums` to ``sums`` (unreduced) now that its first leaf ``base`` is known."""
    get = sums.get
    for bucket, a_sum, b_sum in zip(touched, a, b):
        sums[bucket] = get(bucket, 0) + a_sum + base * b_sum


def bucket_sum(key: bytes, entries: Sequence[tuple[int, str, str]]) -> int:
    """The sum modulo :data:`MODULUS` of the terms of (leaf, commit, created_at) entries."""
    if not entries:
        return 0
    leaves, commits, created = zip(*entries)
    sums: dict[int, int] = {}
    add_terms(key, sums, leaves, commits, created, itertools.repeat(0))
    return sums[0] % MODULUS


class SealTable:
    """The per-bucket sums (a multiset hash of each bucket's entries): 16-byte big-endian
    integers below :data:`MODULUS`, bucket by bucket, updated in place (only the touched buckets are decoded)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | None = None) -> None:
        if data is not None and len(data) != TABLE_BYTES:
            raise ValueError(f"seal table is {len(data)} bytes, expected {TABLE_BYTES}")
        self.data = bytearray(data) if data is not None else bytearray(TABLE_BYTES)

    def get(self, bucket: int) -> int:
        return int.from_bytes(self.data[bucket * _SUM_BYTES : (bucket + 1) * _SUM_BYTES], "big")

    def put(self, bucket: int, value: int) -> None:
        self.data[bucket * _SUM_BYTES : (bucket + 1) * _SUM_BYTES] = (value % MODULUS).to_bytes(_SUM_BYTES, "big")

    def add(self, key: bytes, entries: Iterable[tuple[int, str, str]]) -> None:
        """Add (leaf, commit, created_at) entries' terms to their buckets."""
        sums: dict[int, int] = {}
        for chunk in _batched(entries):
            leaves, commits, created = zip(*chunk)
            add_terms(key, sums, leaves, commits, created, buckets_of(commits))
        self.add_sums(sums)

    def add_sums(self, sums: dict[int, int]) -> None:
        """Add per-bucket sums (from :func:`add_terms`)."""
        for b, value in sums.items():
            self.put(b, self.get(b) + value)


def _batched(entries: Iterable[tuple[int, str, str]], n: int = 10_000) -> Iterable[tuple[tuple[int, str, str], ...]]:
    it = iter(entries)
    while chunk := tuple(itertools.islice(it, n)):
        yield chunk


def seal_mac(key: bytes, size: int, root: bytes, table: bytes) -> bytes:
    """HMAC-SHA256 over the signed tree (size, root) a table describes and the table."""
    return hmac.digest(key, _MAC_LABEL + struct.pack(">Q", size) + root + table, "sha256")
