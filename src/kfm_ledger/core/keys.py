"""Ed25519 keys for signed notes (c2sp.org/signed-note) in Go's ``sumdb/note`` text formats,
and Ed25519 witness cosignature keys (c2sp.org/tlog-cosignature, ``cosignature/v1``, type 0x04).

Pure code: nothing here opens a file.  Key material and signatures are ``bytes``; base64 and
hex text exist only in the key text formats parsed and written here.  The signed-note
envelope (parse, sign, open) is :mod:`kfm_ledger.core.note`.

Wire formats (all base64 is standard RFC 4648 §4 base64 with padding, and must be canonical):

* key ID: ``SHA-256(name || 0x0A || type || public key)[:4]`` (signed-note §Signatures).
* key name: non-empty UTF-8, no Unicode spaces, no ``+`` (signed-note §Format).
* verifier key (vkey): ``<name>+<8 hex digits key ID>+<base64(type || public key)>``.
* signer key, exactly as Go's ``note.GenerateKey`` writes it:
  ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte Ed25519 seed)>``.
* cosigner key: there is no standard private text form (torchwood and litewitness take a raw
  Ed25519 key or an ssh-agent).  Ours is the same layout with the cosignature type byte:
  ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x04 || 32-byte Ed25519 seed)>``, the key ID
  computed with type 0x04.  Go's ``note.NewSigner`` refuses it (unknown algorithm), so a
  cosigner key can never be used by mistake to sign notes as a log.
* cosignature/v1 signed message: ``cosignature/v1\\ntime <ts>\\n`` + the checkpoint body
  (tlog-cosignature §Ed25519 signed message); the 0x04 :class:`Verifier` checks it, since
  a note verifier must check every known key's signature.

Where Go's ``golang.org/x/mod/sumdb/note`` and the C2SP text differ, we take the stricter
reading and say so at the line: every base64 must be canonical (Go decodes leniently, but
it only ever writes canonical base64); key names may not hold control characters (they could
never appear in a note).

Errors: a bad key text raises KeyFormatError; a known key's failing signature
BadSignatureError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar, Self

from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.redact import HIDDEN_KEY_TEXT, holds_private_key
from kfm_ledger.errors import BadSignatureError, FormatError, KeyFormatError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_TIMESTAMP",
    "TIMESTAMP_SIZE",
    "Ed25519SigningKey",
    "Signer",
    "Verifier",
    "check_key_name",
    "check_timestamp",
    "cosignature_message",
    "generate_key",
    "key_id",
]

#: Signature type byte of Ed25519 note signatures (signed-note §Signature types).
ALG_ED25519 = 0x01
#: Signature type byte of Ed25519 timestamped cosignatures (c2sp.org/tlog-cosignature).
ALG_COSIGNATURE_V1 = 0x04

#: Largest cosignature timestamp: tlog-cosignature §Format, "MUST NOT exceed 2^63 - 1".
MAX_TIMESTAMP = 2**63 - 1
#: Bytes of the big-endian timestamp that starts a cosignature (tlog-cosignature §Format).
TIMESTAMP_SIZE = 8

_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
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
    """``repr`` of a piece of found text for an error message, cut to ``limit`` characters.

    Text holding a private key is never shown (:data:`HIDDEN_KEY_TEXT` instead).
    """
    if holds_private_key(text):
        return HIDDEN_KEY_TEXT
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _evidence(text: str) -> str:
    """``text`` as a ``found`` evidence value: hidden when it holds a private key."""
    return HIDDEN_KEY_TEXT if holds_private_key(text) else text


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
            found=_evidence(name) if shown else None,
        )


def _looks_like_vkey(text: str) -> bool:
    """Does ``text`` have a verifier key's shape (``<name>+<8 hex>+<base64>``)? For messages only."""
    parts = text.split("+", 2)
    return len(parts) == 3 and _name_problem(parts[0]) is None and len(parts[1]) == 8 and set(parts[1]) <= _HEX_DIGITS


def _check_hex_key_id(hex_id: str, where: str, what: str) -> bytes:
    # Go: len(hash16) == 8 and strconv.ParseUint(hash16, 16, 32): either case, no sign/prefix.
    if len(hex_id) != 8 or not set(hex_id) <= _HEX_DIGITS:
        raise KeyFormatError(f"{where}: the key ID must be 8 hexadecimal digits", what=what, field="key ID")
    return bytes.fromhex(hex_id)


def check_timestamp(timestamp: int) -> None:
    """ValueError unless ``timestamp`` is a cosignature timestamp: an int (not a bool) in
    ``[0, MAX_TIMESTAMP]`` (tlog-cosignature §Format)."""
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
        if text.startswith(_PRIVATE_PREFIX):
            # Never repeat the text: it is a secret.
            raise KeyFormatError(
                "this is a private signing key (PRIVATE+KEY+...), not a verifier key: pass the verifier "
                "key instead (<name>+<key ID>+<base64 key>, the ledger's log.vkey, printed by `kfm keygen`), "
                "and keep the private key secret",
                what="verifier key",
                field="prefix",
            )
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError(
                f"verifier key {_show(text)} is not <name>+<key ID>+<base64 key>",
                what="verifier key",
                found=_evidence(text),
            )
        name, hex_id, key64 = parts
        problem = _name_problem(name)
        if problem is not None:
            raise KeyFormatError(
                f"verifier key {_show(text)}: {problem}", what="verifier key", field="name", found=_evidence(name)
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
        if len(signature) != TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
            raise BadSignatureError(
                f"{who} is {len(signature)} bytes, expected {TIMESTAMP_SIZE} (timestamp) + "
                f"{_ED25519_SIGNATURE_SIZE} (Ed25519 signature)",
                key_name=self.name,
                key_id=self.key_id,
            )
        timestamp = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
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
        self._verify_ed25519(cosignature_message(body, timestamp), signature[TIMESTAMP_SIZE:])
        return timestamp

    def __repr__(self) -> str:
        return f"Verifier({self.vkey_text()!r})"


class Ed25519SigningKey:
    """An Ed25519 private key with a name, in Go's ``PRIVATE+KEY+...`` text form: the base of
    :class:`Signer` (note signatures, type 0x01) and
    :class:`~kfm_ledger.core.cosignature.CosignatureSigner` (cosignatures, type 0x04), which set
    its signature type ``_ALG`` and the word ``_WHAT`` its errors use."""

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
            if _looks_like_vkey(text):
                raise KeyFormatError(
                    f"{what} does not start with {_PRIVATE_PREFIX!r}: it is a verifier key "
                    "(<name>+<key ID>+<base64 key>, the public half); pass the private key file instead "
                    "(the ledger's log.key, or --key / KFM_KEY)",
                    what=what,
                    field="prefix",
                )
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


class Signer(Ed25519SigningKey):
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


# ------------------------------------------------------------- cosignatures


def cosignature_message(checkpoint_body: str, timestamp: int) -> bytes:
    """The message an Ed25519 cosigner signs: ``cosignature/v1\\ntime <ts>\\n`` followed by
    the whole checkpoint body (tlog-cosignature §Ed25519 signed message)."""
    check_timestamp(timestamp)
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_body}".encode()
