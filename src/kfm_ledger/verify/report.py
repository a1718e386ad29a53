"""What :func:`~kfm_ledger.verify.verify_ledger` checked and found, and its JSON shape."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from ..errors import LedgerVerificationError

__all__ = ["Failure", "LedgerVerificationError", "VerifyReport"]


@dataclass(frozen=True)
class Failure:
    """One thing that did not verify, and where."""

    where: str  #: "line 12", "checkpoint 40", "tile tile/0/000", "since", "mirror", "index"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class VerifyReport:
    """What ``verify_ledger`` checked and found."""

    origin: str
    size: int
    root: bytes
    rows_checked: int = 0
    checkpoints_checked: int = 0
    tiles_checked: int = 0
    uncovered_rows: int = 0
    torn_bytes: int = 0
    since_size: int | None = None
    mirror_checked: bool = False
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures_truncated: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, where: str, message: str, limit: int) -> None:
        if len(self.failures) < limit:
            self.failures.append(Failure(where, message))
        else:
            self.failures_truncated += 1

    def raise_for_status(self) -> None:
        """Raise :class:`LedgerVerificationError` (carrying the failures) unless the report is OK."""
        if not self.ok:
            raise LedgerVerificationError(self)

    def to_json(self) -> dict[str, object]:
        """The report as ``kfm verify --json`` prints it (field order is part of the format)."""
        return {
            "ok": self.ok,
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "rows_checked": self.rows_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "tiles_checked": self.tiles_checked,
            "uncovered_rows": self.uncovered_rows,
            "torn_bytes": self.torn_bytes,
            "since_size": self.since_size,
            "mirror_checked": self.mirror_checked,
            "failures": [{"where": f.where, "message": f.message} for f in self.failures],
            "failures_not_shown": self.failures_truncated,
            "notes": list(self.notes),
        }

    @classmethod
    def not_started_json(cls, where: str, message: str) -> dict[str, object]:
        """The same JSON shape when verification could not start (no ledger to describe)."""
        report = cls(origin="", size=0, root=b"")
        report.failures.append(Failure(where, message))
        doc = report.to_json()
        doc.update(origin=None, size=None, root=None)
        return doc

