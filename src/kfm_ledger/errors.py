"""The errors kfm-ledger raises.

Every error derives from :class:`KfmError` and carries the evidence a caller
needs to act on it (the line, the leaf index, the field path, the expected and
the found value).  ``diagnostics()`` renders that evidence for a person; the
CLI prints it and exits non-zero.

Verification functions raise a subclass of :class:`VerificationError` and never
return ``False`` (the pyca/cryptography convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class KfmError(Exception):
    """Root of every error kfm-ledger raises on purpose."""

    #: Process exit code the CLI uses for this error (see docs/cli.md).
    exit_code: int = 1

    def diagnostics(self) -> str:
        """A text for a person: what was wrong and where."""
        return str(self)


# --------------------------------------------------------------------- input


@dataclass(frozen=True)
class RowProblem:
    """One problem with one input row: ``line 3: $.checksums.artifact_sha256: ...``."""

    line: int  #: 1-based line of the input where the row starts (a JSONL line, or where the object / array element begins)
    path: str  #: JSON path of the field, ``$`` for the whole row
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.path}: {self.message}"


class SchemaError(KfmError):
    """One row does not follow the schema.  ``path`` is a JSON path like ``$.models[0].version``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class InputRejected(KfmError):
    """A batch given to append was refused; nothing was written.

    ``problems`` lists every problem found, each naming its input line and field.
    """

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        self.problems = list(problems)
        head = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        super().__init__(f"input refused, nothing was written: {head}{more}")

    def diagnostics(self) -> str:
        lines = [f"input refused: {len(self.problems)} problem(s); nothing was written"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


# --------------------------------------------------------------- verification


class VerificationError(KfmError):
    """Something did not verify: a proof, a signature, a stored hash, a row."""


class ProofError(VerificationError):
    """An inclusion or consistency proof is malformed or does not verify."""


class RootMismatchError(ProofError):
    """A recomputed root differs from the expected one (RFC 9162 §2.1.3.2, §2.1.4.2)."""

    def __init__(self, expected: bytes, calculated: bytes, what: str = "root") -> None:
        import base64

        self.expected = expected
        self.calculated = calculated
        super().__init__(
            f"{what} mismatch: expected {base64.b64encode(expected).decode()}, "
            f"calculated {base64.b64encode(calculated).decode()}"
        )


class NoteError(VerificationError):
    """A signed note (c2sp.org/signed-note) is malformed or its signatures do not verify."""


class UnknownKeyError(NoteError):
    """No signature on the note is from a key the verifier was given."""

    def __init__(self, message: str, names: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.names = list(names)


class BadSignatureError(NoteError):
    """A signature from a known key does not verify: the note was tampered with."""


class FormatError(KfmError):
    """Bytes that do not follow a wire format (checkpoint, tlog-proof, key text, tile path)."""


class MalformedNoteError(NoteError, FormatError):
    """A signed note does not follow c2sp.org/signed-note (the line is named).

    Both a NoteError (Go's ``note.Open`` answers "malformed note") and a
    FormatError (bytes that do not follow a wire format), so callers catching
    either see it.
    """


class KeyFormatError(FormatError):
    """A signer or verifier key string does not follow Go's sumdb/note text format."""


# --------------------------------------------------------------------- ledger


class LedgerError(KfmError):
    """The ledger cannot do what was asked."""


class NotALedgerError(LedgerError):
    """The directory holds no ledger (no checkpoint, no verifier key)."""


class LedgerExistsError(LedgerError):
    """``init`` was asked to create a ledger where one already exists."""


class CommitNotFoundError(LedgerError):
    """No row has this lakeFS commit (or commit prefix)."""

    def __init__(self, commit: str) -> None:
        super().__init__(f"no row for lakeFS commit {commit!r}")
        self.commit = commit


class AmbiguousCommitError(LedgerError):
    """A commit prefix matches more than one row; ``candidates`` lists them."""

    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        self.prefix = prefix
        self.candidates = list(candidates)
        super().__init__(
            f"commit prefix {prefix!r} is ambiguous: it matches "
            + ", ".join(self.candidates)
        )


class IndexOutOfRangeError(LedgerError):
    """A leaf index or tree size beyond the signed tree."""


class LockedError(LedgerError):
    """Another writer holds the ledger's lock."""


class CorruptLedgerError(VerificationError):
    """Stored bytes contradict each other (tiles vs rows, checkpoint vs tree)."""


class MissingExtraError(KfmError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, module: str, extra: str, what: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{what} needs the Python package {module!r}, which is not installed: "
            f"pip install 'kfm-ledger[{extra}]'"
        )


class StorageError(KfmError):
    """The storage backend failed (I/O error, missing object)."""


class ObjectNotFoundError(StorageError):
    """The storage backend has no object under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}")
        self.key = key


class ImmutableObjectError(StorageError):
    """An immutable object (a full tile, a stored checkpoint) was rewritten with other bytes."""
