"""The entry point: :func:`verify_ledger` takes the writer lock and runs the phases in order."""

from __future__ import annotations

from collections.abc import Sequence

from kfm_ledger.core.keys import Verifier
from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger

from ..errors import LockedError
from . import access, checkpoints, cosignatures, since, tail
from .context import Run
from .entries import check_entries
from .index_check import CommitChecker, open_index
from .mirror_check import check_mirror_file
from .report import VerifyReport
from .rows import Progress, RowPass, find_signed_end
from .tiles import TileChecker


def verify_ledger(
    ledger: Ledger,
    *,
    since: bytes | None = None,
    since_verifier: Verifier | None = None,
    check_mirror: bool = True,
    progress: Progress | None = None,
    max_failures: int = 200,
    lock_wait: float = 60.0,
    witnesses: Sequence[Verifier] = (),
) -> VerifyReport:
    """Verify everything about a ledger in one streaming pass; never raises for what it finds.

    Holds the writer lock while it reads (waiting up to ``lock_wait`` seconds), so
    an append running at the same time cannot make a healthy ledger look broken;
    it verifies the latest signed checkpoint as of when it got the lock.  Where
    the lock cannot be taken at all (a read-only copy), it verifies without it.

    ``witnesses``: the witness cosigner keys (``[[witness]]`` of kfm.toml); every cosignature
    a stored checkpoint carries from one of them must verify (:mod:`.cosignatures`).
    """
    if getattr(ledger, "is_remote", False):  # an S3 ledger: no lock, no JSONL (kfm_ledger.log.remote_verify)
        from kfm_ledger.log.remote_verify import verify_remote

        return verify_remote(
            ledger,  # type: ignore[arg-type]
            since=since, since_verifier=since_verifier, progress=progress, max_failures=max_failures,
        )
    note = None
    try:
        held = ledger.writer_lock(wait=lock_wait)
        held.__enter__()
    except LockedError:
        held, note = None, f"verified without the writer lock: a writer held it for more than {lock_wait:g} s"
    except OSError as e:
        held = None  # a read-only copy: no lock file can be made
        note = f"verified without the writer lock: it cannot be taken here ({e.strerror or e})"
    try:
        if held is not None:
            ledger.refresh()
        report = _verify(
            ledger, since_note=since, since_verifier=since_verifier, check_mirror=check_mirror,
            progress=progress, max_failures=max_failures, witnesses=witnesses,
        )
        if note:
            report.notes.append(note)
        return report
    finally:
        if held is not None:
            held.__exit__(None, None, None)


def _verify(
    ledger: Ledger,
    *,
    since_note: bytes | None,
    since_verifier: Verifier | None,
    check_mirror: bool,
    progress: Progress | None,
    max_failures: int,
    witnesses: Sequence[Verifier] = (),
) -> VerifyReport:
    run = Run(ledger, VerifyReport(origin=ledger.origin, size=ledger.size, root=ledger.root), max_failures)
    checkpoints.check_pending_append(run)
    checkpoints.check_checkpoints(run)
    cosignatures.check_cosignatures(run, witnesses)
    if since_note is not None:
        since.open_since(run, since_note, since_verifier)

    # Where the signed rows end (a fast newline count).
    log = access.open_jsonl(ledger)
    total = log.size()
    signed_end, counted = find_signed_end(log, ledger.size)
    if signed_end < 0:
        run.fail(
            JSONL_KEY,
            f"holds {counted} complete rows but the signed checkpoint covers {ledger.size}: rows were removed",
        )
        signed_end = total  # still check what is there

    tile_checker = TileChecker(ledger, run.report, run.limit)
    commits = CommitChecker(run, open_index(run))
    rows = RowPass(
        run, log, signed_end=signed_end, total=total, tile_checker=tile_checker, commits=commits, progress=progress
    )
    rows.run_pass()
    commits.close()
    run.report.rows_checked = rows.rows
    commits.finish()

    tail_bytes = tail.measure_tail(run, log, signed_end, total)
    if progress is not None:
        progress(total, total)
    if rows.rows == ledger.size:
        tile_checker.finish(
            ledger.size,
            rows_changed=rows.roots_mismatch,
            beyond_ok=run.pending_append is not None,
            signed_sizes=[k for k in run.expected_roots if k <= ledger.size],
        )
        tail.check_tail(run, log, tail_bytes, signed_end, total)
        check_entries(run, log, [k for k in run.expected_roots if k <= ledger.size])
    log.close()
    tail.check_pending_append_fits(run, signed_end)
    since.prove_extends(run)
    if check_mirror:
        check_mirror_file(run)
    return run.report
