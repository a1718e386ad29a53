"""The errors kfm-ledger raises.

Every error derives from :class:`KfmError` and carries the evidence a caller
needs to act on it (the line, the leaf index, the field path, the expected and
the found value).  ``diagnostics()`` renders that evidence for a person; the
CLI prints it and exits non-zero.

Verification functions raise a subclass of :class:`VerificationError` and never
return ``False`` (the pyca/cryptography convention).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AmbiguousCommitError",
    "AmbiguousKeyError",
    "AttestationError",
    "BadSignatureError",
    "BundleChecksumError",
    "BundleError",
    "BundleFileTooLargeError",
    "BundleLimitError",
    "CommitNotFoundError",
    "ConfigFileError",
    "ConfigMismatchError",
    "CorruptLedgerError",
    "DeepCheckFailed",
    "EnergySourceError",
    "ForkError",
    "FormatError",
    "ImmutableObjectError",
    "IndexOutOfRangeError",
    "InputRejected",
    "KeyFormatError",
    "KfmError",
    "LedgerError",
    "LedgerExistsError",
    "LedgerVerificationError",
    "LockedError",
    "MalformedNoteError",
    "MirrorDriftError",
    "MissingExtraError",
    "NetworkError",
    "NotALedgerError",
    "NoteError",
    "ObjectNotFoundError",
    "OriginMismatchError",
    "ProofError",
    "QueryError",
    "QuorumError",
    "RemoteDataError",
    "ResolveError",
    "RollbackError",
    "RootMismatchError",
    "RowProblem",
    "SchemaError",
    "SelectorError",
    "StorageError",
    "UnknownKeyError",
    "UnsafeArchiveError",
    "VerificationError",
    "WitnessError",
    "WitnessRequestError",
]


class KfmError(Exception):
    """Root of every error kfm-ledger raises on purpose.

    The message is always the first positional argument; the evidence is in keyword-only
    fields of the subclasses (``None`` where the raise site did not know it), named in
    ``evidence_fields`` and collected by :meth:`evidence`.
    """

    #: Process exit code the CLI uses for this error (see docs/cli.md).
    exit_code: int = 1

    #: The names of the attributes that hold this error's evidence.
    evidence_fields: tuple[str, ...] = ()

    def diagnostics(self) -> str:
        """A text for a person: what was wrong and where."""
        return str(self)

    def evidence(self) -> dict[str, object]:
        """The evidence fields that are set (not ``None``), by name, for machine-readable reports."""
        found = {name: getattr(self, name, None) for name in self.evidence_fields}
        return {name: value for name, value in found.items() if value is not None}


# --------------------------------------------------------------------- input


@dataclass(frozen=True)
class RowProblem:
    """One problem with one input row: ``line 3: $.checksums.artifact_sha256: ...``."""

    #: 1-based line of the input where the row starts (a JSONL line, or where the object / array element begins)
    line: int
    path: str  #: JSON path of the field, ``$`` for the whole row
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.path}: {self.message}"


class SchemaError(KfmError):
    """One row does not follow the schema.  ``path`` is a JSON path like ``$.models[0].version``."""

    evidence_fields = ("path", "message")

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


#: The most problems an :class:`InputRejected` lists (docs/cli.md, ``kfm append``); its
#: ``total`` counts every problem found.
MAX_LISTED_PROBLEMS = 1000


class InputRejected(KfmError):
    """A batch given to append was refused; nothing was written.

    ``problems`` lists the problems found (at most ``limit``, default
    :data:`MAX_LISTED_PROBLEMS`, the first in line order), each naming its input line and
    field; ``total`` is how many were found in all (``>= len(problems)``; a caller that
    stopped collecting early passes the count it had).  Every entry of ``problems`` is a
    problem of the input: the "not listed" count is ``total - len(problems)``, never an entry.
    ``total_exact`` is False when ``total`` is a lower bound (past the cap rows are counted
    as one problem each, undiagnosed); the message then says "at least".
    """

    evidence_fields = ("problems", "total", "total_exact")

    def __init__(
        self,
        problems: Sequence[RowProblem],
        *,
        total: int | None = None,
        limit: int = MAX_LISTED_PROBLEMS,
        exact: bool = True,
    ) -> None:
        found = list(problems)
        self.total = max(total or 0, len(found))
        self.total_exact = exact
        self.problems = found[: max(limit, 1)]
        head = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {self._least}{self.total - 3:,} more)" if self.total > 3 else ""
        super().__init__(f"input refused, nothing was written: {self._count()}: {head}{more}")

    @property
    def _least(self) -> str:
        return "" if self.total_exact else "at least "

    @property
    def not_listed(self) -> int:
        """Problems found but not in ``problems`` (over the cap)."""
        return self.total - len(self.problems)

    def _count(self) -> str:
        if self.not_listed:
            return f"showing {len(self.problems):,} of {self._least}{self.total:,} problems"
        return f"{self._least}{self.total:,} problem(s)"

    def diagnostics(self) -> str:
        lines = [f"input refused: {self._count()}; nothing was written"]
        lines += [f"  {p}" for p in self.problems]
        if self.not_listed:
            lines.append(
                f"  ({self._least}{self.not_listed:,} more problem(s) not listed: at most {len(self.problems):,} "
                "are listed; "
                "fix these and run again to see the rest)"
            )
        return "\n".join(lines)


# --------------------------------------------------------------- verification


class VerificationError(KfmError):
    """Something did not verify: a proof, a signature, a stored hash, a row."""


class ProofError(VerificationError):
    """An inclusion or consistency proof is malformed or does not verify.

    ``index`` and ``size`` are the leaf index and tree size of an inclusion proof,
    ``old_size`` and ``size`` the tree sizes of a consistency proof (``None`` when they
    do not apply).
    """

    evidence_fields: tuple[str, ...] = ("index", "size", "old_size")

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        size: int | None = None,
        old_size: int | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.size = size
        self.old_size = old_size


class RootMismatchError(ProofError):
    """A recomputed root differs from the expected one (RFC 9162 §2.1.3.2, §2.1.4.2)."""

    evidence_fields = ("what", "expected", "calculated")

    def __init__(self, expected: bytes, calculated: bytes, what: str = "root") -> None:
        super().__init__(
            f"{what} mismatch: expected {base64.b64encode(expected).decode()}, "
            f"calculated {base64.b64encode(calculated).decode()}"
        )
        self.what = what
        self.expected = expected
        self.calculated = calculated


class NoteError(VerificationError):
    """A signed note (c2sp.org/signed-note) is malformed or its signatures do not verify."""


class UnknownKeyError(NoteError):
    """No signature on the note is from a key the verifier was given.

    ``names`` are the key names the note's signatures carry.
    """

    evidence_fields = ("names",)

    def __init__(self, message: str, names: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.names = list(names)


class BadSignatureError(NoteError):
    """A signature from a known key does not verify: the note was tampered with.

    ``key_name`` and ``key_id`` (4 bytes) name the key whose signature failed.
    """

    evidence_fields = ("key_name", "key_id")

    def __init__(self, message: str, *, key_name: str | None = None, key_id: bytes | None = None) -> None:
        super().__init__(message)
        self.key_name = key_name
        self.key_id = key_id


class AmbiguousKeyError(NoteError):
    """Two different verifier keys given share a name and key ID (Go's ``ambiguousVerifierError``):
    the trusted key list itself is wrong.

    ``key_name`` and ``key_id`` (4 bytes) are the name and key ID the keys share.
    """

    evidence_fields = ("key_name", "key_id")

    def __init__(self, message: str, *, key_name: str | None = None, key_id: bytes | None = None) -> None:
        super().__init__(message)
        self.key_name = key_name
        self.key_id = key_id


class OriginMismatchError(VerificationError):
    """A checkpoint is for another log than the one expected.

    ``expected`` is the origin asked for, ``found`` the checkpoint's origin.
    """

    evidence_fields = ("expected", "found")

    def __init__(self, message: str, *, expected: str | None = None, found: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class _VerifyReportLike(Protocol):
    """What :class:`LedgerVerificationError` reads of a ``kfm_ledger.verify.VerifyReport``."""

    @property
    def failures(self) -> Sequence[object]: ...

    @property
    def failures_truncated(self) -> int: ...


class LedgerVerificationError(VerificationError):
    """``verify_ledger`` found failures; ``report`` and ``failures`` carry them.

    ``failures`` are the report's ``Failure`` records (``where`` and ``message``), at most the
    report's limit; ``failures_not_shown`` counts the ones beyond it.
    """

    evidence_fields = ("failures", "failures_not_shown")

    def __init__(self, report: _VerifyReportLike) -> None:
        self.report = report
        self.failures = list(report.failures)
        self.failures_not_shown = report.failures_truncated
        count = len(self.failures) + report.failures_truncated
        super().__init__(f"the ledger does not verify: {count} problem(s), first: {self.failures[0]}")

    def diagnostics(self) -> str:
        lines = [str(self)] + [f"  {f}" for f in self.failures]
        if self.failures_not_shown:
            lines.append(f"  ... and {self.failures_not_shown} more")
        return "\n".join(lines)


class FormatError(KfmError):
    """Bytes that do not follow a wire format (checkpoint, tlog-proof, key text, tile path).

    ``what`` names what was parsed ("checkpoint", "tlog-proof", "signed note", "tile path",
    "verifier key", ...), ``line`` the 1-based line of it that is wrong, ``field`` the part
    of it ("tree size", "root hash", "index", ...) and ``found`` the offending text.
    """

    evidence_fields = ("what", "line", "field", "found")

    def __init__(
        self,
        message: str,
        *,
        what: str | None = None,
        line: int | None = None,
        field: str | None = None,
        found: str | None = None,
    ) -> None:
        super().__init__(message)
        self.what = what
        self.line = line
        self.field = field
        self.found = found


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
    """The directory holds no ledger (no checkpoint, no verifier key); ``path`` is where it looked."""

    evidence_fields = ("path",)

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LedgerExistsError(LedgerError):
    """``init`` was asked to create a ledger where one already exists (at ``path``)."""

    evidence_fields = ("path",)

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CommitNotFoundError(LedgerError):
    """No row has this lakeFS commit (or commit prefix)."""

    evidence_fields = ("commit",)

    def __init__(self, commit: str) -> None:
        super().__init__(f"no row for lakeFS commit {commit!r}")
        self.commit = commit


class AmbiguousCommitError(LedgerError):
    """A commit prefix matches more than one row; ``candidates`` lists them."""

    evidence_fields = ("prefix", "candidates")

    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        self.prefix = prefix
        self.candidates = list(candidates)
        super().__init__(
            f"commit prefix {prefix!r} is ambiguous: it matches "
            + ", ".join(self.candidates)
        )


class IndexOutOfRangeError(LedgerError):
    """A leaf index or tree size beyond the signed tree.

    ``index`` is the leaf index (or tree size) asked for, ``size`` the tree size it must be
    below (at most, for a tree size).
    """

    evidence_fields = ("index", "size")

    def __init__(self, message: str, *, index: int | None = None, size: int | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.size = size


class LockedError(LedgerError):
    """Another writer holds the ledger's lock (``key`` names the lock object).  Exit code 3, so that
    a script can retry instead of raising an alarm (docs/cli.md, exit codes)."""

    evidence_fields = ("key",)
    exit_code = 3

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ContentionError(LedgerError):
    """An S3 append lost the compare-and-swap of ``checkpoint`` to other writers ``attempts`` times in a
    row (or for longer than its wait) and gave up; nothing of the batch was appended.  Exit code 3,
    as for a held lock: retrying later is the remedy (docs/s3.md)."""

    evidence_fields = ("key", "attempts")
    exit_code = 3

    def __init__(self, message: str, *, key: str | None = None, attempts: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.attempts = attempts


class CorruptLedgerError(VerificationError):
    """Stored bytes contradict each other (tiles vs rows, checkpoint vs tree).

    ``key`` is the storage key (or path) of the object found wrong, ``line`` the 1-based
    line in it, ``index`` the leaf index (or tile index) concerned, where known.
    """

    evidence_fields = ("key", "line", "index")

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        line: int | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.line = line
        self.index = index


class MissingExtraError(KfmError):
    """An optional dependency is not installed; the message names the pip extra."""

    evidence_fields = ("module", "extra")

    def __init__(self, module: str, extra: str, what: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{what} needs the Python package {module!r}, which is not installed: "
            f"pip install 'kfm-ledger[{extra}]'"
        )


class ConfigFileError(KfmError):
    """The configuration file (``kfm.toml``) is unreadable or breaks its schema (docs/configuration.md).

    ``path`` names the file, ``key`` the section or key that is wrong (``attestation.identity[0].san``).
    """

    exit_code = 2
    evidence_fields = ("path", "key")

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class StorageError(KfmError):
    """The storage backend failed (I/O error, missing object); ``key`` names the object."""

    evidence_fields: tuple[str, ...] = ("key",)

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ObjectNotFoundError(StorageError):
    """The storage backend has no object under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}", key=key)


class ImmutableObjectError(StorageError):
    """An immutable object (a full tile, a stored checkpoint) was rewritten with other bytes."""


class PreconditionFailedError(StorageError):
    """A conditional write lost the race: the object changed (or vanished, or appeared) since it was read.

    Raised by an ``If-Match`` update whose ETag no longer matches (HTTP 412, or 404 when the
    object is gone) and by an ``If-None-Match: *`` create whose object exists.  ``key`` names
    the object, ``expected`` the ETag the write was conditioned on (``None`` for a create).
    """

    evidence_fields: tuple[str, ...] = ("key", "expected")

    def __init__(self, message: str, *, key: str | None = None, expected: str | None = None) -> None:
        super().__init__(message, key=key)
        self.expected = expected


class ObjectTooLargeError(StorageError):
    """An object is larger than the reader's cap (``limit`` bytes); ``size`` is what was found (at least)."""

    evidence_fields: tuple[str, ...] = ("key", "size", "limit")

    def __init__(
        self, message: str, *, key: str | None = None, size: int | None = None, limit: int | None = None
    ) -> None:
        super().__init__(message, key=key)
        self.size = size
        self.limit = limit


class S3LocationError(KfmError):
    """An ``s3://bucket/prefix`` location or the S3 connection settings are not usable (a usage error).

    ``location`` is what was given, ``field`` what is wrong in it (``bucket``, ``prefix``,
    ``endpoint_url``, ``allow_http``, ...).
    """

    exit_code = 2
    evidence_fields = ("location", "field")

    def __init__(self, message: str, *, location: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.location = location
        self.field = field


# ------------------------------------------------------- mirror and operations


class _MirrorStatusLike(Protocol):
    """What :class:`MirrorDriftError` reads of a ``kfm_ledger.mirror.MirrorStatus``."""

    @property
    def state(self) -> str: ...

    @property
    def problems(self) -> Sequence[str]: ...

    def render_text(self) -> str: ...


class MirrorDriftError(VerificationError):
    """The Parquet mirror is missing, stale or modified; ``status`` says which and why."""

    evidence_fields = ("status",)

    def __init__(self, status: _MirrorStatusLike) -> None:
        self.status = status
        head = status.problems[0] if status.problems else status.state
        super().__init__(f"mirror {status.state}: {head}")

    def diagnostics(self) -> str:
        return self.status.render_text()


class EnergySourceError(KfmError):
    """``source="mirror"`` was asked for but the mirror is not current.

    ``state`` is the mirror's state ("missing", "stale", ...), ``problems`` what was found.
    """

    evidence_fields = ("state", "problems")

    def __init__(self, message: str, *, state: str | None = None, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.state = state
        self.problems = list(problems)


class QueryError(KfmError):
    """DuckDB refused or failed the SQL (syntax, unknown column, a file access refused); ``sql`` is the statement."""

    evidence_fields = ("sql",)

    def __init__(self, message: str, *, sql: str | None = None) -> None:
        super().__init__(message)
        self.sql = sql


class SelectorError(KfmError):
    """An artifact selector (``--model``, ``--config``, ``--dataset``) is malformed.

    ``kind`` is the selector ("model", "config", "dataset"), ``value`` the text given.
    """

    exit_code = 2

    evidence_fields = ("kind", "value")

    def __init__(self, message: str, *, kind: str | None = None, value: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.value = value


class BundleError(KfmError):
    """A bundle could not be checked or restored; ``path`` is the bundle (or directory) concerned.

    A refused option has no path: ``field`` names the option (``max_bytes``) and ``found``
    is what was given (the text a size was parsed from, or the number).
    """

    evidence_fields: tuple[str, ...] = ("path", "field", "found")

    def __init__(
        self, message: str, *, path: str | None = None, field: str | None = None, found: str | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.field = field
        self.found = found


class BundleChecksumError(BundleError, VerificationError):
    """The bundle's SHA-256 is not the one the ledger row records."""

    evidence_fields = ("path", "expected", "found")

    def __init__(self, path: str, expected: str, found: str, *, when: str = "") -> None:
        where = f" {when}" if when else ""
        super().__init__(
            f"bundle {path}: sha256 mismatch{where}: expected {expected} (checksums.artifact_sha256), "
            f"found {found}; nothing was written",
            path=path,
        )
        self.expected = expected
        self.found = found


class UnsafeArchiveError(BundleError):
    """The archive holds a member that may not be extracted; nothing was written."""

    evidence_fields = ("path", "member", "reason")

    def __init__(self, path: str, member: str, reason: str) -> None:
        super().__init__(f"bundle {path}: member {member!r} refused: {reason}; nothing was written", path=path)
        self.member = member
        self.reason = reason


class BundleLimitError(UnsafeArchiveError):
    """The archive exceeds the member count or uncompressed size limit."""


class BundleFileTooLargeError(BundleLimitError):
    """The bundle file itself is larger than the restore's limits allow: it was refused while
    being hashed, so its checksum was never established (unlike the other archive refusals,
    which come after the checksum matched)."""


class _ConfigCheckLike(Protocol):
    """What :class:`ConfigMismatchError` reads of a ``kfm_ledger.ops.bundle.ConfigCheck``."""

    @property
    def ok(self) -> bool: ...

    def describe(self) -> str: ...


class ConfigMismatchError(BundleError, VerificationError):
    """Extracted configs are missing or differ from the row's ``configs[]``; nothing was kept.

    ``checks`` holds every config's check (``ConfigCheck``), the good ones too.
    """

    evidence_fields = ("path", "checks")

    def __init__(self, path: str, checks: Sequence[_ConfigCheckLike]) -> None:
        self.checks = list(checks)
        bad = [c for c in self.checks if not c.ok]
        super().__init__(
            f"bundle {path}: {len(bad)} of {len(self.checks)} config(s) do not match the ledger row: "
            + "; ".join(c.describe() for c in bad)
            + "; nothing was restored",
            path=path,
        )

    def diagnostics(self) -> str:
        bad = [c for c in self.checks if not c.ok]
        lines = [f"bundle {self.path}: {len(bad)} of {len(self.checks)} config(s) do not match; nothing was restored"]
        lines += [f"  {c.describe()}" for c in bad]
        return "\n".join(lines)


# ---------------------------------------------------------------------- witness


class WitnessRequestError(FormatError):
    """An ``add-checkpoint`` request body does not follow c2sp.org/tlog-witness (a witness answers
    400 Bad Request); ``line`` names the 1-based line of the body, ``field`` the part."""


class WitnessError(KfmError):
    """A witness refused or failed a checkpoint the log sent it (c2sp.org/tlog-witness).

    ``url`` is the witness's submission URL, ``status`` the HTTP status it answered (``None``
    when it could not be reached), ``found`` the start of its answer body.
    """

    evidence_fields = ("url", "status", "found")

    def __init__(
        self, message: str, *, url: str | None = None, status: int | None = None, found: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.found = found
# ------------------------------------------------------------ supply chain (docs/supply-chain.md)


class ResolveError(KfmError):
    """What a row points at could not be fetched: ``uri`` as the row has it, ``location`` where the
    ``[resolve]`` mappings sent it, ``reason`` why (missing, not a regular file, over the size cap,
    a network error after the retries)."""

    evidence_fields = ("uri", "location", "reason")

    def __init__(self, uri: str, reason: str, *, location: str | None = None) -> None:
        where = f" (resolved to {location})" if location is not None and location != uri else ""
        super().__init__(f"cannot fetch {uri}{where}: {reason}")
        self.uri = uri
        self.location = location
        self.reason = reason


class AttestationError(VerificationError):
    """An attestation does not verify: ``kind`` is what it was detected as (``dsse``,
    ``intoto-jsonl``, ``sigstore-bundle``), ``expected``/``found`` the values compared when the
    failure is a mismatch.  ``unsupported`` marks what cannot be verified offline (never ``ok``)."""

    evidence_fields = ("kind", "expected", "found")

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        expected: str | None = None,
        found: str | None = None,
        unsupported: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.expected = expected
        self.found = found
        self.unsupported = unsupported


class _DeepReportLike(Protocol):
    """What :class:`DeepCheckFailed` reads of a ``kfm_ledger.verify.deep.DeepReport``."""

    @property
    def ok(self) -> bool: ...

    def failure_lines(self) -> list[str]: ...

    def render_text(self, *, all_rows: bool = False) -> str: ...

    def to_json(self, *, all_rows: bool = False) -> dict[str, object]: ...


class DeepCheckFailed(VerificationError):
    """``kfm append --deep`` / ``kfm rollback --bundle``: a supply-chain check did not pass; nothing
    was written.  ``report`` is the per-row ``DeepReport``."""

    evidence_fields = ("report",)

    def __init__(self, message: str, report: _DeepReportLike) -> None:
        super().__init__(message)
        self.report = report

    def diagnostics(self) -> str:
        return "\n".join([str(self), *(f"  {line}" for line in self.report.failure_lines())])


# ------------------------------------------------------------------ network


class NetworkError(KfmError):
    """A log server could not be reached, or answered with an error status or a malformed or
    oversized response (``kfm client``, ``kfm monitor``).

    ``url`` is the URL asked for, ``status`` the HTTP status (``None`` when there was no answer).
    """

    evidence_fields = ("url", "status")

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class RemoteDataError(VerificationError):
    """Bytes a log server sent do not match the signed checkpoint they must match (a tampered
    tile, a wrong entry, a lookup naming another commit).

    ``url`` is the resource found wrong (where known), ``what`` says what it was ("tile",
    "entry", "lookup").
    """

    evidence_fields = ("url", "what")

    def __init__(self, message: str, *, url: str | None = None, what: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.what = what


class ForkError(VerificationError):
    """Two checkpoints validly signed by the log's key that cannot both be true: the log showed
    two histories (a split view).  ``evidence_path`` is the evidence file written (both signed
    checkpoints and the proof); ``old_size`` / ``new_size`` are their tree sizes."""

    evidence_fields = ("origin", "old_size", "new_size", "evidence_path")

    def __init__(
        self,
        message: str,
        *,
        origin: str | None = None,
        old_size: int | None = None,
        new_size: int | None = None,
        evidence_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.origin = origin
        self.old_size = old_size
        self.new_size = new_size
        self.evidence_path = evidence_path


class RollbackError(VerificationError):
    """A log server served a signed checkpoint older (smaller) than one already verified:
    stale or rolled back.  ``stored_size`` is the size verified before, ``served_size`` the one served."""

    evidence_fields = ("origin", "stored_size", "served_size")

    def __init__(
        self, message: str, *, origin: str | None = None, stored_size: int | None = None, served_size: int | None = None
    ) -> None:
        super().__init__(message)
        self.origin = origin
        self.stored_size = stored_size
        self.served_size = served_size


class QuorumError(VerificationError):
    """A checkpoint lacks the witness cosignatures a client requires (c2sp.org/tlog-cosignature).

    ``required`` is the quorum asked for, ``found`` the witnesses whose cosignature verified."""

    evidence_fields = ("required", "found")

    def __init__(self, message: str, *, required: int | None = None, found: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.required = required
        self.found = list(found)
