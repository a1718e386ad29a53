"""After the signed rows: bytes past the signed size, and whether the interrupted append's
record (``pending-append``) accounts for them."""

from __future__ import annotations

from kfm_ledger.log.layout import JSONL_KEY, PENDING_KEY

from ..storage.base import AppendLog
from .context import Run


def measure_tail(run: Run, log: AppendLog, signed_end: int, total: int) -> int:
    """Count the complete lines and torn bytes after ``signed_end`` into the report; return the tail's length."""
    report = run.report
    tail = total - signed_end
    if tail:
        last_newline, pos = -1, signed_end
        for chunk in log.iter_chunks(signed_end):
            report.uncovered_rows += chunk.count(b"\n")
            k = chunk.rfind(b"\n")
            if k >= 0:
                last_newline = pos + k
            pos += len(chunk)
        report.torn_bytes = total - (last_newline + 1) if last_newline >= 0 else tail
    return tail


def check_unaccounted_tail(run: Run, tail: int, signed_end: int) -> None:
    """Bytes after the last signed row are a failure unless an interrupted append left them."""
    report = run.report
    if tail and run.pending_append is None:
        run.fail(
            JSONL_KEY,
            f"{tail} byte(s) after the last signed row (from byte {signed_end}: {report.uncovered_rows} "
            f"complete line(s), {report.torn_bytes} torn byte(s)) that no interrupted append accounts "
            "for; writers refuse to run until they are removed",
        )


def check_pending_append_fits(run: Run, signed_end: int) -> None:
    """The pending-append record must describe an append onto this signed tree."""
    pending, size = run.pending_append, run.ledger.size
    if pending is not None and pending.new_size != size and (
        pending.old_size != size or pending.old_end != signed_end
    ):
        run.fail(
            PENDING_KEY,
            f"describes an append from size {pending.old_size} (byte {pending.old_end}), but the "
            f"signed tree has size {size} ending at byte {signed_end}: it does not belong to this ledger "
            "and writers refuse to run until it is removed",
        )
