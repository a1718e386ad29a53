"""After the signed rows: bytes past the signed size, and whether the interrupted append's
record (``pending-append``) accounts for them."""

from __future__ import annotations

from kfm_ledger.log.layout import JSONL_KEY, PENDING_KEY

from ..errors import SchemaError
from ..schema import MAX_LINE_BYTES
from ..schema.codec import decode_canonical_line
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


def check_tail(run: Run, log: AppendLog, tail: int, signed_end: int, total: int) -> None:
    """Bytes after the last signed row are a failure unless they are exactly what a recoverable
    interrupted append wrote: a pending-append record that fits this signed tree, no byte past
    the end it names, no more rows than it names (all of them when every byte is there, a torn
    last line only when not), and every complete row a schema-valid canonical line.  Such a
    tail is reported as a note naming the rows and ``kfm recover``; anything else fails."""
    if not tail:
        return
    report, pending, size = run.report, run.pending_append, run.ledger.size
    what = (
        f"{tail} byte(s) after the last signed row (from byte {signed_end}: {report.uncovered_rows} "
        f"complete line(s), {report.torn_bytes} torn byte(s))"
    )
    if pending is None:
        run.fail(JSONL_KEY, f"{what} that no interrupted append accounts for; writers refuse to run until "
                 "they are removed")
        return
    if pending.new_size == size or pending.old_size != size or pending.old_end != signed_end:
        run.fail(JSONL_KEY, f"{what} that the {PENDING_KEY} record does not account for (it describes an "
                 f"append from size {pending.old_size} to {pending.new_size}); writers refuse to run until "
                 "they are removed")
        return
    if total > pending.new_end:
        run.fail(JSONL_KEY, f"{what}: {total - pending.new_end} byte(s) past byte {pending.new_end}, where the "
                 f"interrupted append in {PENDING_KEY} ends; no append accounts for them")
        return
    complete = total == pending.new_end
    if report.uncovered_rows > pending.rows or (complete and (report.uncovered_rows, report.torn_bytes) != (
        pending.rows, 0
    )):
        run.fail(JSONL_KEY, f"{what}, but the interrupted append in {PENDING_KEY} wrote {pending.rows} row(s) "
                 f"in {pending.new_end - pending.old_end} bytes; no append accounts for these")
        return
    if _bad_tail_rows(run, log, signed_end, size):
        return
    first, last = size, size + report.uncovered_rows - 1
    rows = f"rows {first}..{last}" if last > first else f"row {first}" if last == first else "no complete row"
    run.note(
        f"{report.uncovered_rows} unsigned row(s) of an interrupted append ({rows}"
        + (f", and {report.torn_bytes} torn byte(s)" if report.torn_bytes else "")
        + f") after the signed size {size}: not verified as part of the ledger; run `kfm recover`"
    )


def _bad_tail_rows(run: Run, log: AppendLog, signed_end: int, size: int) -> int:
    """Fail every complete line after ``signed_end`` that is not a schema-valid canonical row;
    return how many.  Streams: a line longer than the row limit is never held whole."""
    bad = 0
    line_no = size + 1  # 1-based JSONL line of the first unsigned row
    buf = bytearray()
    too_long = False
    for chunk in log.iter_chunks(signed_end):
        start = 0
        while True:
            k = chunk.find(b"\n", start)
            piece = chunk[start : k if k >= 0 else len(chunk)]
            if not too_long:
                buf += piece
                too_long = len(buf) > MAX_LINE_BYTES
            if k < 0:
                break
            problem = f"longer than the {MAX_LINE_BYTES}-byte row limit" if too_long else None
            if problem is None:
                try:
                    decode_canonical_line(bytes(buf))
                except SchemaError as e:
                    problem = f"{e.path}: {e.message}"
            if problem is not None:
                bad += 1
                run.fail(f"line {line_no}", f"after the signed size, written by the interrupted append in "
                         f"{PENDING_KEY}, is not a valid row ({problem}); recovery would remove it, but no "
                         "kfm append writes such a row")
            buf.clear()
            too_long = False
            line_no += 1
            start = k + 1
    return bad


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
