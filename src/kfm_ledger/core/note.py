"""Signed notes (c2sp.org/signed-note), Ed25519 keys in Go's ``sumdb/note`` text formats, and
Ed25519 witness cosignatures (c2sp.org/tlog-cosignature, ``cosignature/v1``, type 0x04).

Pure code: nothing here opens a file.  Key material and signatures are ``bytes``; base64 and
hex text exist only in the wire formats parsed and written here.

Wire formats (all base64 is standard RFC 4648 §4 base64 with padding, and must be canonical):

* note: ``<text ending in \\n>\\n`` then one or more lines ``— <name> <base64(key ID || sig)>\\n``
  (U+2014, space, name, space, base64, newline).  The text is everything up to and including
  the newline before the *last* blank line (signed-note §Format).
* key ID: ``SHA-256(name || 0x0A || type || public key)[:4]`` (signed-note §Signatures).
* verifier key (vkey): ``<name>+<8 hex digits key ID>+<base64(type || public key)>``.
* signer key, exactly as Go's ``note.GenerateKey`` writes it:
  ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte Ed25519 seed)>``.
* cosigner key: there is no standard private text form (torchwood and litewitness take a raw
  Ed25519 key or an ssh-agent).  Ours is the same layout with the cosignature type byte:
  ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x04 || 32-byte Ed25519 seed)>``, the key ID
  computed with type 0x04.  Go's ``note.NewSigner`` refuses it (unknown algorithm), so a
  cosigner key can never be used by mistake to sign notes as a log.

Where Go's ``golang.org/x/mod/sumdb/note`` and the C2SP text differ, we take the stricter
reading and say so at the line: every base64 must be canonical (Go decodes leniently, but
it only ever writes canonical base64); key names may not hold control characters (they could
never appear in a note); every signature from a known key is verified, not only the first.

Errors: a malformed note raises :class:`MalformedNoteError` (both a NoteError and a
FormatError); a bad key text KeyFormatError; a known key's failing signature
BadSignatureError; no signature from a trusted key UnknownKeyError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar, Self

from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.errors import (
    AmbiguousKeyError,
    BadSignatureError,
    FormatError,
    KeyFormatError,
    MalformedNoteError,
    UnknownKeyError,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TIMESTAMP",
    "MalformedNoteError",
    "Note",
    "NoteSignature",
    "Signer",
    "VerifiedNote",
    "Verifier",
    "add_signatures",
    "check_key_name",
    "cosignature_message",
    "generate_key",
    "key_id",
    "open_note",
    "parse_note",
    "sign_note",
]

#: Signature type byte of Ed25519 note signatures (signed-note §Signature types).
ALG_ED25519 = 0x01
#: Signature type byte of Ed25519 timestamped cosignatures (c2sp.org/tlog-cosignature).
ALG_COSIGNATURE_V1 = 0x04

#: Largest signed note accepted, in bytes.  signed-note §Format asks verifiers to bound the
#: size and to accept at least 16 signatures (post-quantum ones up to ~5 kB): 1 MiB is ample.
MAX_NOTE_SIZE = 1 << 20
#: Most signature lines accepted on one note (Go's ``note.Open`` refuses more than 100).
MAX_SIGNATURES = 100
#: Largest cosignature timestamp: tlog-cosignature §Format, "MUST NOT exceed 2^63 - 1".
MAX_TIMESTAMP = 2**63 - 1

_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
_TIMESTAMP_SIZE = 8
_SIG_PREFIX = "\u2014 "  # em dash, space
_SIG_PREFIX_BYTES = _SIG_PREFIX.encode()
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ALG_NAMES = {ALG_ED25519: "Ed25519 note signature", ALG_COSIGNATURE_V1: "Ed25519 cosignature/v1"}

# Go's unicode.IsSpace: the Unicode White_Space property.  Python's str.isspace() differs
# (it also counts U+001C..U+001F), so the set is spelled out.
_GO_SPACES = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


# ------------------------------------------------------------------ helpers


def _ed25519() -> ModuleType:
    """The Ed25519 module of ``cryptography``, imported on first use (keeps import fast)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def _b64decode(text: str) -> bytes:
    """Strict, canonical standard base64 (RFC 4648 §4): raises ValueError otherwise.

    Go's ``base64.StdEncoding`` also accepts non-zero padding bits; we require the text to be
    exactly what encoding the bytes gives, so each value has one spelling."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError("not valid base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _show(text: str, limit: int = 60) -> str:
    """``repr`` of a piece of found text for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """The 4-byte key ID ``SHA-256(name || 0x0A || alg || public key)[:4]`` (signed-note
    §Signatures; tlog-cosignature §Format for ``alg`` 0x04)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:_KEY_ID_SIZE]


def _name_problem(name: str) -> str | None:
    """What is wrong with a key name, or None.  Go's ``isValidName`` plus no control chars."""
    if not isinstance(name, str):
        return f"key name must be text, not {type(name).__name__}"
    if name == "":
        return "key name is empty"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "key name is not valid UTF-8"
    for ch in name:
        cp = ord(ch)
        if cp in _GO_SPACES:
            return f"key name contains a space character (U+{cp:04X})"
        if cp < 0x20:
            # Stricter than Go's isValidName: such a name could never appear in a note.
            return f"key name contains a control character (U+{cp:04X})"
        if ch == "+":
            return "key name contains '+'"
    return None


def check_key_name(name: str) -> None:
    """Raise KeyFormatError unless ``name`` is a valid key name: non-empty, valid UTF-8, no
    Unicode spaces, no ``+`` (signed-note §Format; Go's ``isValidName``) and, stricter than
    Go, no control characters (signed-note forbids them anywhere in a note)."""
    problem = _name_problem(name)
    if problem is not None:
        shown = isinstance(name, str)
        raise KeyFormatError(
            f"{problem}: {_show(name) if shown else type(name).__name__}",
            what="key name",
            found=name if shown else None,
        )


def _check_hex_key_id(hex_id: str, where: str, what: str) -> bytes:
    # Go: len(hash16) == 8 and strconv.ParseUint(hash16, 16, 32): either case, no sign/prefix.
    if len(hex_id) != 8 or not set(hex_id) <= _HEX_DIGITS:
        raise KeyFormatError(f"{where}: the key ID must be 8 hexadecimal digits", what=what, field="key ID")
    return bytes.fromhex(hex_id)


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature timestamp {timestamp!r} is not an integer in [0, 2**63-1]")


# --------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Verifier:
    """A public key that checks note signatures: type 0x01 (Ed25519 note signatures) or type
    0x04 (Ed25519 ``cosignature/v1`` cosignatures, c2sp.org/tlog-cosignature).

    ``key_id`` is derived from ``name``, ``alg`` and ``public_key`` (signed-note §Signatures).
    """

    name: str
    public_key: bytes
    alg: int = ALG_ED25519
    key_id: bytes = b""  # computed; any value passed in is checked against the key

    def __post_init__(self) -> None:
        check_key_name(self.name)
        object.__setattr__(self, "public_key", bytes(self.public_key))
        if self.alg not in _ALG_NAMES:
            raise KeyFormatError(
                f"unsupported key type 0x{self.alg:02x} (supported: 0x01, 0x04)",
                what="verifier key",
                field="key type",
                found=f"0x{self.alg:02x}",
            )
        if len(self.public_key) != _ED25519_KEY_SIZE:
            raise KeyFormatError(
                f"Ed25519 public key is {len(self.public_key)} bytes, expected {_ED25519_KEY_SIZE}",
                what="verifier key",
                field="public key",
            )
        expected = key_id(self.name, self.alg, self.public_key)
        if self.key_id and self.key_id != expected:
            raise KeyFormatError(
                f"key ID {self.key_id.hex()} does not match the key of {self.name!r} "
                f"(computed {expected.hex()})",
                what="verifier key",
                field="key ID",
                found=self.key_id.hex(),
            )
        object.__setattr__(self, "key_id", expected)

    @classmethod
    def from_vkey(cls, text: str) -> Verifier:
        """Parse a verifier key ``<name>+<8 hex key ID>+<base64(type || public key)>``, as Go's
        ``note.NewVerifier`` (type 0x01) and torchwood's ``NewCosignatureVerifier`` (type 0x04)
        do: split on the first two ``+`` only (base64 may contain ``+``), 8 hex digits in
        either case, the key ID must match.  Surrounding whitespace (a key file's final
        newline) is ignored.  Raises KeyFormatError naming what is wrong."""
        if not isinstance(text, str):
            raise KeyFormatError(f"verifier key must be text, not {type(text).__name__}", what="verifier key")
        text = text.strip(" \t\r\n")
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError(
                f"verifier key {_show(text)} is not <name>+<key ID>+<base64 key>", what="verifier key", found=text
            )
        name, hex_id, key64 = parts
        problem = _name_problem(name)
        if problem is not None:
            raise KeyFormatError(
                f"verifier key {_show(text)}: {problem}", what="verifier key", field="name", found=name
            )
        claimed = _check_hex_key_id(hex_id, f"verifier key for {name!r}", "verifier key")
        try:
            key = _b64decode(key64)
        except ValueError as e:
            raise KeyFormatError(
                f"verifier key for {name!r}: the key is {e}", what="verifier key", field="key"
            ) from None
        if not key:
            raise KeyFormatError(f"verifier key for {name!r}: the key is empty", what="verifier key", field="key")
        alg, public_key = key[0], key[1:]
        if alg not in _ALG_NAMES:
            raise KeyFormatError(
                f"verifier key for {name!r}: unknown key type 0x{alg:02x} "
                "(supported: 0x01 Ed25519, 0x04 Ed25519 cosignature/v1)",
                what="verifier key",
                field="key type",
                found=f"0x{alg:02x}",
            )
        if len(public_key) != _ED25519_KEY_SIZE:
            raise KeyFormatError(
                f"verifier key for {name!r}: Ed25519 public key is {len(public_key)} bytes, "
                f"expected {_ED25519_KEY_SIZE}",
                what="verifier key",
                field="public key",
            )
        computed = key_id(name, alg, public_key)
        if computed != claimed:
            raise KeyFormatError(
                f"verifier key for {name!r}: key ID {hex_id} does not match the key "
                f"(computed {computed.hex()})",
                what="verifier key",
                field="key ID",
                found=hex_id,
            )
        return cls(name=name, public_key=public_key, alg=alg)

    def vkey_text(self) -> str:
        """``<name>+<key ID, 8 lowercase hex>+<base64(type || public key)>`` as Go writes it."""
        return f"{self.name}+{self.key_id.hex()}+{_b64encode(bytes([self.alg]) + self.public_key)}"

    def _public(self) -> Ed25519PublicKey:
        key: Ed25519PublicKey = _ed25519().Ed25519PublicKey.from_public_bytes(self.public_key)
        return key

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check ``signature`` (the bytes after the key ID in a signature line) over
        ``message`` (the note text).  Returns None; raises BadSignatureError.

        Type 0x01: Ed25519 over the message (signed-note §Ed25519 signatures).
        Type 0x04: ``signature`` is ``uint64 BE timestamp || Ed25519 signature`` over
        ``cosignature/v1\\ntime <ts>\\n`` + the message, which must be a checkpoint body
        (tlog-cosignature §Ed25519 signed message)."""
        if self.alg == ALG_COSIGNATURE_V1:
            self.verify_cosignature_bytes(message, signature)
            return
        self._verify_ed25519(message, signature)

    def _verify_ed25519(self, message: bytes, signature: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        if len(signature) != _ED25519_SIGNATURE_SIZE:
            raise BadSignatureError(
                f"signature by {self.name}+{self.key_id.hex()} is {len(signature)} bytes, "
                f"expected an {_ED25519_SIGNATURE_SIZE}-byte Ed25519 signature",
                key_name=self.name,
                key_id=self.key_id,
            )
        try:
            self._public().verify(signature, message)
        except InvalidSignature:
            raise BadSignatureError(
                f"signature by {self.name}+{self.key_id.hex()} does not verify: "
                "the signed text was changed or the signature is corrupt",
                key_name=self.name,
                key_id=self.key_id,
            ) from None

    def verify_cosignature_bytes(self, message: bytes, signature: bytes) -> int:
        """Check a ``cosignature/v1`` signature (timestamp || Ed25519) over a checkpoint body and
        return its timestamp (tlog-cosignature §Format).  Raises BadSignatureError."""
        who = f"cosignature by {self.name}+{self.key_id.hex()}"
        if len(signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
            raise BadSignatureError(
                f"{who} is {len(signature)} bytes, expected {_TIMESTAMP_SIZE} (timestamp) + "
                f"{_ED25519_SIGNATURE_SIZE} (Ed25519 signature)",
                key_name=self.name,
                key_id=self.key_id,
            )
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise BadSignatureError(
                f"{who} has timestamp {timestamp}, larger than 2**63-1", key_name=self.name, key_id=self.key_id
            )
        try:
            body = message.decode("utf-8")
            Checkpoint.parse(body)
        except (UnicodeDecodeError, FormatError) as e:
            raise BadSignatureError(
                f"{who} is over a text that is not a checkpoint: {e}", key_name=self.name, key_id=self.key_id
            ) from None
        self._verify_ed25519(cosignature_message(body, timestamp), signature[_TIMESTAMP_SIZE:])
        return timestamp

    def __repr__(self) -> str:
        return f"Verifier({self.vkey_text()!r})"


class _Ed25519SigningKey:
    """An Ed25519 private key with a name, in Go's ``PRIVATE+KEY+...`` text form."""

    __slots__ = ("_private", "key_id", "name")

    _ALG: ClassVar[int]
    _WHAT: ClassVar[str]

    name: str
    key_id: bytes

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        """Prefer :meth:`from_private_key_text`, :meth:`from_seed` or :meth:`generate`."""
        check_key_name(name)
        self.name = name
        self._private = private_key
        self.key_id = key_id(name, self._ALG, self.public_key)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Self:
        """The key with this 32-byte Ed25519 seed (RFC 8032 §5.1.5 private key)."""
        if len(seed) != _ED25519_KEY_SIZE:
            raise KeyFormatError(
                f"Ed25519 seed is {len(seed)} bytes, expected {_ED25519_KEY_SIZE}", what=cls._WHAT, field="seed"
            )
        return cls(name, _ed25519().Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls, name: str) -> Self:
        """A fresh random key named ``name`` (like Go's ``note.GenerateKey``)."""
        check_key_name(name)
        return cls(name, _ed25519().Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key_text(cls, text: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(type || 32-byte seed)>`` as Go's
        ``note.NewSigner`` does, and check that the key ID matches the key.  Surrounding
        whitespace is ignored.  KeyFormatError messages never repeat the key text."""
        what = cls._WHAT
        if not isinstance(text, str):
            raise KeyFormatError(f"{what} must be text, not {type(text).__name__}", what=what)
        text = text.strip(" \t\r\n")
        if not text.startswith(_PRIVATE_PREFIX):
            raise KeyFormatError(f"{what} does not start with {_PRIVATE_PREFIX!r}", what=what, field="prefix")
        parts = text[len(_PRIVATE_PREFIX):].split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError(f"{what} is not PRIVATE+KEY+<name>+<key ID>+<base64 key>", what=what)
        name, hex_id, key64 = parts
        problem = _name_problem(name)
        if problem is not None:
            raise KeyFormatError(f"{what}: {problem}", what=what, field="name")
        claimed = _check_hex_key_id(hex_id, what, what)
        try:
            key = _b64decode(key64)
        except ValueError:
            raise KeyFormatError(
                f"{what}: the key material is not canonical base64", what=what, field="key material"
            ) from None
        if not key:
            raise KeyFormatError(f"{what}: the key material is empty", what=what, field="key material")
        if key[0] != cls._ALG:
            raise KeyFormatError(
                f"{what}: key type is 0x{key[0]:02x}, expected 0x{cls._ALG:02x} "
                f"({_ALG_NAMES.get(cls._ALG)})",
                what=what,
                field="key type",
                found=f"0x{key[0]:02x}",
            )
        if len(key) - 1 != _ED25519_KEY_SIZE:
            raise KeyFormatError(
                f"{what}: the Ed25519 seed is {len(key) - 1} bytes, expected {_ED25519_KEY_SIZE}",
                what=what,
                field="key material",
            )
        signer = cls.from_seed(name, key[1:])
        if signer.key_id != claimed:
            raise KeyFormatError(
                f"{what}: key ID {hex_id} does not match the key (wrong name or corrupt key)",
                what=what,
                field="key ID",
                found=hex_id,
            )
        return signer

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._private.public_key().public_bytes_raw()

    def private_key_text(self) -> str:
        """``PRIVATE+KEY+<name>+<key ID>+<base64(type || seed)>``: secret, keep it so."""
        seed = self._private.private_bytes_raw()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{_b64encode(bytes([self._ALG]) + seed)}"

    def verifier(self) -> Verifier:
        """The matching public :class:`Verifier`."""
        return Verifier(name=self.name, public_key=self.public_key, alg=self._ALG)

    def _sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        # Never shows key material: only the public name and key ID.
        return f"{type(self).__name__}(name={self.name!r}, key_id={self.key_id.hex()!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(f"{type(self).__name__} holds a private key and is not picklable")


class Signer(_Ed25519SigningKey):
    """An Ed25519 note signing key (signed-note type 0x01), e.g. the log's checkpoint key."""

    __slots__ = ()
    _ALG = ALG_ED25519
    _WHAT = "signer key"

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (RFC 8032; deterministic)."""
        return self._sign(message)


def generate_key(name: str) -> tuple[str, str]:
    """``(private key text, verifier key text)`` for a new Ed25519 note key, like Go's
    ``note.GenerateKey``."""
    signer = Signer.generate(name)
    return signer.private_key_text(), signer.verifier().vkey_text()


# -------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line ``— <name> base64(key_id || signature)`` (signed-note §Signatures).

    ``signature`` is the bytes after the 4-byte key ID (for a cosignature: the 8-byte
    timestamp then the Ed25519 signature)."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.key_id) != _KEY_ID_SIZE:
            raise KeyFormatError(
                f"key ID is {len(self.key_id)} bytes, expected {_KEY_ID_SIZE}", what="note signature", field="key ID"
            )
        if not self.signature:
            raise KeyFormatError(f"signature by {self.name!r} is empty", what="note signature", field="signature")

    def line(self) -> str:
        """The signature line, with its final newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_id + self.signature)}\n"

    def __repr__(self) -> str:
        return f"NoteSignature(name={self.name!r}, key_id={self.key_id.hex()!r}, {len(self.signature)} bytes)"


@dataclass(frozen=True)
class Note:
    """A parsed (not verified) signed note: its text and its signature lines in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        """The note's bytes: text, blank line, signature lines."""
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose signatures :func:`open_note` checked.

    ``verified``: signatures from the given keys, each verified (one per key).
    ``unverified``: signatures from keys not given, ignored (signed-note §Signatures)."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def _check_text_chars(text: str, what: str) -> None:
    """signed-note §Format: valid UTF-8, no control characters below U+0020 but newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        line = text.count("\n", 0, e.start) + 1
        raise MalformedNoteError(
            f"{what}, line {line}: not valid UTF-8 (a lone surrogate)", what=what, line=line
        ) from None
    for pos, ch in enumerate(text):
        if ch < " " and ch != "\n":
            line = text.count("\n", 0, pos) + 1
            raise MalformedNoteError(
                f"{what}, line {line}: control character U+{ord(ch):04X} "
                "(signed-note allows no control characters but newline)",
                what=what,
                line=line,
            )


def _check_note_text(text: str) -> None:
    if not isinstance(text, str):
        raise MalformedNoteError(f"note text must be str, not {type(text).__name__}")
    if not text.endswith("\n"):
        raise MalformedNoteError("note text does not end with a newline (signed-note §Format)")
    _check_text_chars(text, "note text")


def _bad_signature_line(message: str, line: int, text: str, field: str | None = None) -> MalformedNoteError:
    """The error for signature line ``line`` (1-based, of the whole note) whose text is ``text``."""
    return MalformedNoteError(message, what="signed note", line=line, field=field, found=text)


def parse_note(data: bytes) -> Note:
    """Parse a signed note (c2sp.org/signed-note §Format) without verifying it.

    Strict and bounded, following Go's ``note.Open``: at most :data:`MAX_NOTE_SIZE` bytes;
    valid UTF-8 with no control characters but newline; the text ends at the last blank
    line; then one or more lines ``— <name> <base64>\\n`` (at most :data:`MAX_SIGNATURES`),
    each with a valid key name and canonical base64 of at least 5 bytes (key ID and a
    signature); the note ends with a newline.  Raises FormatError naming the line."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedNoteError(f"signed note must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNoteError(
            f"signed note is {len(data)} bytes, more than the limit of {MAX_NOTE_SIZE}", what="signed note"
        )
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise MalformedNoteError(
            f"signed note, line {line}: not valid UTF-8 (byte {e.start})", what="signed note", line=line
        ) from None
    _check_text_chars(decoded, "signed note")
    split = data.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError(
            "signed note has no blank line between the text and the signatures", what="signed note"
        )
    text = data[: split + 1].decode("utf-8")
    sig_block = data[split + 2 :]
    first_sig_line = text.count("\n") + 2
    if not sig_block:
        raise MalformedNoteError(
            f"signed note, line {first_sig_line}: no signature lines after the blank line",
            what="signed note",
            line=first_sig_line,
        )
    if not sig_block.endswith(b"\n"):
        raise MalformedNoteError("signed note does not end with a newline", what="signed note")
    raw_lines = sig_block[:-1].split(b"\n")
    if len(raw_lines) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"signed note has {len(raw_lines)} signatures, more than the limit of {MAX_SIGNATURES}", what="signed note"
        )
    signatures: list[NoteSignature] = []
    for n, raw in enumerate(raw_lines):
        number = first_sig_line + n
        where = f"signed note, line {number}"
        sig_line = raw.decode("utf-8")
        if not raw.startswith(_SIG_PREFIX_BYTES):
            raise _bad_signature_line(
                f"{where}: signature line does not start with an em dash (U+2014) and a space: {_show(sig_line)}",
                number,
                sig_line,
            )
        name, sep, b64 = sig_line[len(_SIG_PREFIX):].partition(" ")
        problem = _name_problem(name)
        if problem is not None:
            raise _bad_signature_line(f"{where}: {problem}: {_show(sig_line)}", number, sig_line, "key name")
        if not sep or not b64:
            raise _bad_signature_line(
                f"{where}: no signature after the key name {name!r}", number, sig_line, "signature"
            )
        try:
            sig = _b64decode(b64)
        except ValueError as e:
            raise _bad_signature_line(
                f"{where}: signature of {name!r} is {e}: {_show(b64)}", number, sig_line, "signature"
            ) from None
        if len(sig) < _KEY_ID_SIZE + 1:
            raise _bad_signature_line(
                f"{where}: signature of {name!r} is {len(sig)} bytes, expected a 4-byte key ID and a signature",
                number,
                sig_line,
                "signature",
            )
        signatures.append(NoteSignature(name=name, key_id=sig[:_KEY_ID_SIZE], signature=sig[_KEY_ID_SIZE:]))
    return Note(text=text, signatures=tuple(signatures))


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` with each signer, in order: ``text + "\\n" + signature lines``
    (signed-note §Format; byte-for-byte what Go's ``note.Sign`` writes).  The text must end
    with a newline and hold no control characters but newline (FormatError)."""
    _check_note_text(text)
    if isinstance(signers, _Ed25519SigningKey):
        raise TypeError("sign_note takes a sequence of signers, not one signer")
    if not signers:
        raise ValueError("sign_note needs at least one signer")
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        if not isinstance(signer, Signer):
            raise TypeError(
                f"{signer!r} is not a note Signer (cosignatures are added with add_signatures)"
            )
        lines.append(NoteSignature(signer.name, signer.key_id, signer.sign(message)).line())
    data = (text + "\n" + "".join(lines)).encode("utf-8")
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note would be {len(data)} bytes, more than the limit of {MAX_NOTE_SIZE}")
    return data


def _verifier_map(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    if isinstance(verifiers, Verifier):
        raise TypeError("pass a sequence of verifiers, not one Verifier")
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        if not isinstance(v, Verifier):
            raise TypeError(f"{v!r} is not a Verifier")
        k = (v.name, v.key_id)
        if k in known and known[k] != v:
            # Go: ambiguousVerifierError.  Two keys share a name and key ID: the trusted
            # key list itself is wrong; do not guess which one is meant.
            raise AmbiguousKeyError(
                f"two different verifier keys are named {v.name!r} with key ID {v.key_id.hex()}",
                key_name=v.name,
                key_id=v.key_id,
            )
        known[k] = v
    return known


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> VerifiedNote:
    """Parse a signed note and check its signatures against ``verifiers`` (signed-note
    §Signatures; Go's ``note.Open``).

    * A signature whose (name, key ID) matches no verifier is ignored (``unverified``).
    * Every signature from a known key is verified (type 0x04 keys check ``cosignature/v1``
      lines); one that fails raises BadSignatureError: the whole note is rejected.  (Go
      checks only the first signature of each key; the spec says MUST verify.)
    * No verified signature: UnknownKeyError carrying the names that did sign.
    * Malformed note: FormatError.
    """
    known = _verifier_map(verifiers)
    note = parse_note(data)
    message = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        v.verify(message, sig.signature)
        if all((s.name, s.key_id) != (sig.name, sig.key_id) for s in verified):
            verified.append(sig)
    if not verified:
        signed_by = sorted({f"{s.name}+{s.key_id.hex()}" for s in unverified})
        trusted = sorted(f"{v.name}+{v.key_id.hex()}" for v in known.values())
        raise UnknownKeyError(
            "note has no signature from a trusted key: signed by "
            + (", ".join(signed_by) or "nobody")
            + "; trusted keys: "
            + (", ".join(trusted) or "none given"),
            names=sorted({s.name for s in unverified}),
        )
    return VerifiedNote(text=note.text, verified=tuple(verified), unverified=tuple(unverified))


def add_signatures(note_bytes: bytes, sigs: Sequence[NoteSignature]) -> bytes:
    """Append signature lines (e.g. witness cosignatures) to a signed note.

    As Go's ``note.Sign`` does, an existing signature from the same (name, key ID) as a new
    one is dropped, so re-cosigning replaces the older cosignature.  The input must parse
    (FormatError); nothing is verified here."""
    if isinstance(sigs, NoteSignature):
        raise TypeError("add_signatures takes a sequence of NoteSignature, not one")
    note = parse_note(note_bytes)
    new = list(sigs)
    for s in new:
        if not isinstance(s, NoteSignature):
            raise TypeError(f"{s!r} is not a NoteSignature")
    replaced = {(s.name, s.key_id) for s in new}
    kept = [s for s in note.signatures if (s.name, s.key_id) not in replaced]
    combined = Note(text=note.text, signatures=tuple(kept + new))
    if len(combined.signatures) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"note would have {len(combined.signatures)} signatures, more than the limit of {MAX_SIGNATURES}"
        )
    data = combined.encode()
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note would be {len(data)} bytes, more than the limit of {MAX_NOTE_SIZE}")
    return data


# ------------------------------------------------------------- cosignatures


def cosignature_message(checkpoint_body: str, timestamp: int) -> bytes:
    """The message an Ed25519 cosigner signs: ``cosignature/v1\\ntime <ts>\\n`` followed by
    the whole checkpoint body (tlog-cosignature §Ed25519 signed message)."""
    _check_timestamp(timestamp)
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_body}".encode()
