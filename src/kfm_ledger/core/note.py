"""Signed notes (c2sp.org/signed-note): the envelope of a text and its signature lines.

Pure code: nothing here opens a file.  The keys that sign and verify notes (key IDs, key
names, Go's key text formats, :class:`~kfm_ledger.core.keys.Signer` and
:class:`~kfm_ledger.core.keys.Verifier`) are :mod:`kfm_ledger.core.keys`.

Wire format (signed-note §Format; base64 is standard RFC 4648 §4 base64 with padding, and
must be canonical):

* note: ``<text ending in \\n>\\n`` then one or more lines ``— <name> <base64(key ID || sig)>\\n``
  (U+2014, space, name, space, base64, newline).  The text is everything up to and including
  the newline before the *last* blank line (signed-note §Format).

Where Go's ``golang.org/x/mod/sumdb/note`` and the C2SP text differ, we take the stricter
reading and say so at the line: every base64 must be canonical; every signature from a
known key is verified, not only the first (signed-note §Signatures).

Errors: a malformed note raises :class:`MalformedNoteError` (both a NoteError and a
FormatError); a known key's failing signature BadSignatureError; no signature from a
trusted key UnknownKeyError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core.keys import (
    _KEY_ID_SIZE,
    Ed25519SigningKey,
    Signer,
    Verifier,
    _b64decode,
    _b64encode,
    _name_problem,
    _show,
    check_key_name,
)
from kfm_ledger.core.redact import HIDDEN_KEY_TEXT, holds_private_key
from kfm_ledger.errors import (
    AmbiguousKeyError,
    KeyFormatError,
    MalformedNoteError,
    UnknownKeyError,
)

__all__ = [
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MalformedNoteError",
    "Note",
    "NoteSignature",
    "VerifiedNote",
    "add_signatures",
    "open_note",
    "parse_note",
    "sign_note",
]

#: Largest signed note accepted, in bytes.  signed-note §Format asks verifiers to bound the
#: size and to accept at least 16 signatures (post-quantum ones up to ~5 kB): 1 MiB is ample.
MAX_NOTE_SIZE = 1 << 20
#: Most signature lines accepted on one note (Go's ``note.Open`` refuses more than 100).
MAX_SIGNATURES = 100

_SIG_PREFIX = "\u2014 "  # em dash, space
_SIG_PREFIX_BYTES = _SIG_PREFIX.encode()


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
    found = HIDDEN_KEY_TEXT if holds_private_key(text) else text
    return MalformedNoteError(message, what="signed note", line=line, field=field, found=found)


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
    if isinstance(signers, Ed25519SigningKey):
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


