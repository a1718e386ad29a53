"""Transparency log checkpoint bodies (c2sp.org/tlog-checkpoint §Note text): the tree head.

A checkpoint is a signed note (:mod:`kfm_ledger.core.note`; signing and opening are in
:mod:`kfm_ledger.core.signed_checkpoint`) whose text is::

    <origin>\\n<tree size>\\n<base64 root hash>\\n[<extension line>\\n ...]

Pure code: nothing here opens a file.  Parsing is strict: the size is canonical decimal
(``0``, or no leading zeros; no sign, no spaces; at most 2**63-1), the root is canonical
base64 of exactly 32 bytes, extension lines are non-empty.  Every check raises FormatError
naming the line and the text found.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from kfm_ledger.core.redact import HIDDEN_KEY_TEXT, holds_private_key
from kfm_ledger.errors import FormatError

__all__ = ["MAX_TREE_SIZE", "Checkpoint"]

#: Largest tree size a checkpoint may state (an int64, as in Go's ``tlog.Tree.N``).
MAX_TREE_SIZE = 2**63 - 1

#: Largest checkpoint body parsed, in bytes: the limit on a whole signed note
#: (:data:`kfm_ledger.core.note.MAX_NOTE_SIZE`); :mod:`kfm_ledger.core.keys` imports this module.
MAX_BODY_SIZE = 1 << 20

_HASH_SIZE = 32
_DIGITS = frozenset("0123456789")


def _show(text: str, limit: int = 60) -> str:
    if holds_private_key(text):  # never echo a private key passed where a checkpoint belongs
        return HIDDEN_KEY_TEXT
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _control_char(text: str) -> str | None:
    for ch in text:
        if ch < " ":
            return f"U+{ord(ch):04X}"
    return None


def _parse_size(line: str) -> int:
    """tlog-checkpoint §Note text 2: ASCII decimal, no leading zeroes unless the size is 0."""
    if (
        not line
        or not set(line) <= _DIGITS  # ASCII digits only: no sign, space, '_' or Unicode digit
        or (len(line) > 1 and line[0] == "0")
        or len(line) > len(str(MAX_TREE_SIZE))
    ):
        raise FormatError(
            f"checkpoint line 2: tree size {_show(line)} is not a canonical decimal number", what="checkpoint", line=2
        )
    size = int(line)
    if size > MAX_TREE_SIZE:
        raise FormatError(f"checkpoint line 2: tree size {line} is larger than 2**63-1", what="checkpoint", line=2)
    return size


def _parse_root(line: str) -> bytes:
    """tlog-checkpoint §Note text 3: base64 (RFC 4648 §4) of the 32-byte root hash."""
    try:
        root = base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FormatError(
            f"checkpoint line 3: root hash {_show(line)} is not valid base64", what="checkpoint", line=3
        ) from None
    if len(root) != _HASH_SIZE:
        raise FormatError(
            f"checkpoint line 3: root hash {_show(line)} decodes to {len(root)} bytes, expected {_HASH_SIZE}",
            what="checkpoint",
            line=3,
        )
    if base64.b64encode(root).decode("ascii") != line:
        raise FormatError(
            f"checkpoint line 3: root hash {_show(line)} is not in canonical base64 form", what="checkpoint", line=3
        )
    return root


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: ``origin`` (the log's identity), ``size`` (number of leaves),
    ``root`` (32-byte RFC 9162 root hash), and opaque ``extensions`` lines (without their
    newlines; the spec does NOT RECOMMEND them).  Construction checks every field
    (FormatError), so :meth:`body` always yields a text :meth:`parse` accepts."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise FormatError(
                "checkpoint origin is empty (tlog-checkpoint: the origin MUST be non-empty)", what="checkpoint"
            )
        if "\n" in self.origin or _control_char(self.origin):
            raise FormatError(
                f"checkpoint origin {_show(self.origin)} contains a newline or control character", what="checkpoint"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise FormatError(
                f"checkpoint tree size {self.size!r} is not an integer in [0, 2**63-1]", what="checkpoint"
            )
        if not isinstance(self.root, bytes) or len(self.root) != _HASH_SIZE:
            n = len(self.root) if isinstance(self.root, (bytes, bytearray)) else type(self.root).__name__
            raise FormatError(f"checkpoint root hash is {n} bytes, expected {_HASH_SIZE}", what="checkpoint")
        if isinstance(self.extensions, str):
            raise FormatError("checkpoint extensions must be a tuple of lines, not one string", what="checkpoint")
        exts = tuple(self.extensions)
        for i, ext in enumerate(exts):
            if not isinstance(ext, str) or not ext:
                raise FormatError(
                    f"checkpoint extension line {i + 4} is empty (tlog-checkpoint: MUST be non-empty)",
                    what="checkpoint",
                    line=i + 4,
                )
            if "\n" in ext or _control_char(ext):
                raise FormatError(
                    f"checkpoint extension line {i + 4} {_show(ext)} contains a newline or control character",
                    what="checkpoint",
                    line=i + 4,
                )
        object.__setattr__(self, "extensions", exts)

    def body(self) -> str:
        """The note text: ``<origin>\\n<size>\\n<base64 root>\\n`` then each extension line."""
        root64 = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root64}\n" + "".join(e + "\n" for e in self.extensions)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint note text (tlog-checkpoint §Note text), strictly: at least three
        lines, each ending in a newline; a non-empty origin; a canonical decimal size; a root
        that is canonical base64 of 32 bytes; non-empty extension lines.  Raises FormatError
        naming the line and the text found."""
        if not isinstance(body, str):
            raise FormatError(f"checkpoint body must be str, not {type(body).__name__}", what="checkpoint")
        if len(body) > MAX_BODY_SIZE:
            raise FormatError(
                f"checkpoint body is {len(body)} characters, more than the limit of {MAX_BODY_SIZE}", what="checkpoint"
            )
        if not body.endswith("\n"):
            raise FormatError("checkpoint body does not end with a newline", what="checkpoint")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError(
                f"checkpoint body has {len(lines)} line(s), expected at least 3 (origin, tree size, root hash)",
                what="checkpoint",
            )
        origin, size_line, root_line, *extensions = lines
        if not origin:
            raise FormatError("checkpoint line 1: the origin is empty", what="checkpoint", line=1)
        for number, line in enumerate(lines, start=1):
            bad = _control_char(line)
            if bad is not None:
                raise FormatError(
                    f"checkpoint line {number}: control character {bad} in {_show(line)}", what="checkpoint",
                    line=number,
                )
        size = _parse_size(size_line)
        root = _parse_root(root_line)
        for i, ext in enumerate(extensions):
            if not ext:
                raise FormatError(
                    f"checkpoint line {i + 4}: empty extension line (extension lines MUST be non-empty)",
                    what="checkpoint",
                    line=i + 4,
                )
        return cls(origin=origin, size=size, root=root, extensions=tuple(extensions))
