"""The state one verification run shares between its phases."""

from __future__ import annotations

from dataclasses import dataclass, field

from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.recovery import PendingAppend

from .report import VerifyReport


@dataclass
class Run:
    """One run of :func:`~kfm_ledger.verify.verify_ledger`: the ledger, the report being filled,
    and what one phase learns for the next."""

    ledger: Ledger
    report: VerifyReport
    limit: int  #: at most this many failures are listed (the rest are counted)
    pending_append: PendingAppend | None = None
    #: signed size -> the root the log signed for it (from the stored checkpoints)
    expected_roots: dict[int, bytes] = field(default_factory=dict)
    #: the root of the checkpoint given as ``since``, while it is still to be checked
    since_root: bytes | None = None
    #: the rows do not give a signed root (set by the row pass): signed rows were changed or
    #: removed, so advice to rebuild derived data would not help
    rows_changed: bool = False

    def fail(self, where: str, message: str) -> None:
        self.report.fail(where, message, self.limit)

    def note(self, text: str) -> None:
        self.report.notes.append(text)
