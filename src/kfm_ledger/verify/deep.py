"""``kfm verify --deep``: supply-chain checks of what each row points at (docs/supply-chain.md).

:func:`verify_deep` reads the rows through the ledger's proven reads (each row checked against
the signed checkpoint before it is used; ``kfm_ledger.log.reader``), runs the checks of
:mod:`.deep_checks` on a thread pool (fetching and hashing release the GIL) and returns a
:class:`DeepReport`.  :func:`check_rows` runs the same checks on rows not yet in the ledger
(``kfm append --deep``).  Nothing is printed here; the CLI renders the report.

A report is ``ok`` when no check ``failed`` and none is ``unsupported`` (unless
``allow_unsupported``); ``warning`` and ``skipped`` never fail it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..attest import AttestationVerifier
from ..config import KfmConfig
from ..errors import KfmError, VerificationError
from ..resolve import Resolver
from ..schema import Row
from .deep_checks import (
    STATUSES,
    CheckResult,
    check_artifact,
    check_attestation,
    check_configs,
    check_energy,
    check_lakefs_refs,
    check_stac,
)

if TYPE_CHECKING:
    from ..core.keys import Signer
    from ..log.append import AppendResult
    from ..log.ledger import Ledger
    from ..log.progress import Progress

__all__ = ["CHECKS", "DeepReport", "DeepVerifier", "RowResult", "append_deep", "check_rows", "verify_deep"]

#: The checks, in the order they are run and reported.
CHECKS = ("artifact", "attestation", "stac", "lakefs_ref", "configs", "energy")
_PROBLEMS = frozenset({"failed", "unsupported", "warning"})
_BATCH = 256  # rows handed to the pool at a time (bounds memory on long ledgers)


@dataclass(frozen=True)
class RowResult:
    """The checks of one row: its leaf ``index`` (for a batch: its would-be index) and commit."""

    index: int
    lakefs_commit: str
    checks: tuple[CheckResult, ...]

    def statuses(self) -> set[str]:
        return {c.status for c in self.checks}

    @property
    def has_problem(self) -> bool:
        """A check failed, is unsupported or warned (rows listed without ``--all-rows``)."""
        return bool(self.statuses() & _PROBLEMS)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "lakefs_commit": self.lakefs_commit, "checks": [c.to_json() for c in self.checks]}


@dataclass
class DeepReport:
    """Every row's results; ``ok`` as the module docstring says."""

    rows: list[RowResult] = field(default_factory=list)
    allow_unsupported: bool = False
    first: int = 0
    stop: int = 0

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            for c in r.checks:
                counts[c.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        s = self.summary()
        return s["failed"] == 0 and (self.allow_unsupported or s["unsupported"] == 0)

    def failing_rows(self) -> list[RowResult]:
        bad = {"failed"} | (set() if self.allow_unsupported else {"unsupported"})
        return [r for r in self.rows if r.statuses() & bad]

    def to_json(self, *, all_rows: bool = False) -> dict[str, Any]:
        rows = self.rows if all_rows else [r for r in self.rows if r.has_problem]
        return {"ok": self.ok, "summary": self.summary(), "checked_rows": len(self.rows),
                "rows": [r.to_json() for r in rows]}

    def failure_lines(self) -> list[str]:
        """One line per failed (or unsupported, unless allowed) check: row, check, message."""
        bad = {"failed"} | (set() if self.allow_unsupported else {"unsupported"})
        return [f"row {r.index} ({r.lakefs_commit}): {c.check}: {c.status}: {c.message}"
                for r in self.rows for c in r.checks if c.status in bad]

    def render_text(self, *, all_rows: bool = False) -> str:
        """A table per row with a problem (every row with ``all_rows``), then the summary."""
        lines: list[str] = []
        for r in self.rows if all_rows else [r for r in self.rows if r.has_problem]:
            lines.append(f"row {r.index}  commit {r.lakefs_commit}")
            width = max(len(c.check) for c in r.checks)
            for c in r.checks:
                lines.append(f"  {c.check:<{width}}  {c.status:<11}  {c.message}")
            lines.append("")
        s = self.summary()
        counts = ", ".join(f"{s[k]} {k}" for k in STATUSES)
        verdict = "OK" if self.ok else "FAILED"
        note = " (unsupported allowed)" if self.allow_unsupported and s["unsupported"] else ""
        lines.append(f"deep verify: {len(self.rows)} row(s), {counts}: {verdict}{note}")
        return "\n".join(lines)


class DeepVerifier:
    """The checks made ready for one configuration: resolver, keys, Sigstore root.  Thread-safe.

    Raises ConfigFileError when a configured key or trusted root cannot be used.
    """

    def __init__(
        self,
        config: KfmConfig,
        *,
        resolver: Resolver | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        configs_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.config = config
        self.resolver = resolver or Resolver(config, cache_dir=cache_dir)
        self.attest = AttestationVerifier(config.attestation)
        self.configs_dir = Path(configs_dir) if configs_dir is not None else None
        if self.configs_dir is not None and not self.configs_dir.is_dir():
            from ..errors import ConfigFileError

            raise ConfigFileError(f"--configs {self.configs_dir}: not a directory", path=str(self.configs_dir))
        self.max_bytes = max_bytes

    def check_row(self, index: int, row: Row) -> RowResult:
        """Every check of one row (a check that raises unexpectedly is reported ``failed``)."""
        checks: list[CheckResult] = []
        steps = (
            lambda: [check_artifact(row, self.resolver, self.max_bytes)],
            lambda: [check_attestation(row, self.resolver, self.attest)],
            lambda: check_stac(row, self.resolver),
            lambda: check_lakefs_refs(row),
            lambda: check_configs(row, self.configs_dir),
            lambda: [check_energy(row, self.config.energy)],
        )
        for name, step in zip(CHECKS, steps):
            try:
                checks.extend(step())
            except KfmError as e:  # e.g. an unreadable config file
                checks.append(CheckResult(name, "failed", str(e)))
        return RowResult(index, row.lakefs_commit, tuple(checks))

    def run(self, rows: Iterable[tuple[int, Row]], *, total: int, workers: int | None = None,
            progress: Progress | None = None, allow_unsupported: bool = False) -> DeepReport:
        """Check ``rows`` (an iterator of (index, row)) on a pool of ``workers`` threads, in order."""
        report = DeepReport(allow_unsupported=allow_unsupported)
        n = workers or min(8, (os.cpu_count() or 2) * 2)
        done = 0
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="kfm-deep") as pool:
            for batch in _batches(rows, _BATCH):
                report.rows.extend(pool.map(lambda ir: self.check_row(*ir), batch))
                done += len(batch)
                if progress is not None:
                    progress(done, total)
        return report


def _batches(rows: Iterable[tuple[int, Row]], size: int) -> Iterator[list[tuple[int, Row]]]:
    batch: list[tuple[int, Row]] = []
    for item in rows:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def since_size(ledger: Ledger, since: bytes) -> int:
    """The size of a saved checkpoint that this ledger extends (signed by its key, same origin,
    RFC 9162 §2.1.4 consistency proof to the current checkpoint); VerificationError otherwise."""
    from ..core import merkle
    from ..core.signed_checkpoint import open_checkpoint

    old = open_checkpoint(since, [ledger.verifier], origin=ledger.origin).checkpoint
    if old.size > ledger.size:
        raise VerificationError(
            f"--since: the saved checkpoint has size {old.size} but the ledger's signed size is {ledger.size}"
        )
    proof = ledger.consistency_proof(old.size, ledger.size, stored_expansions=False)
    merkle.verify_consistency(old.size, ledger.size, old.root, ledger.root, proof)
    return old.size


def verify_deep(
    ledger: Ledger,
    config: KfmConfig,
    *,
    since: bytes | None = None,
    commit: str | None = None,
    configs_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    resolver: Resolver | None = None,
    workers: int | None = None,
    allow_unsupported: bool = False,
    progress: Progress | None = None,
    max_bytes: int | None = None,
) -> DeepReport:
    """Run the supply-chain checks on the ledger's rows: all, those after the saved checkpoint
    ``since`` (its bytes), or the one row of ``commit`` (a commit id or unique prefix).

    Rows are proven against the signed checkpoint as they are read (CorruptLedgerError if one
    is not); ConfigFileError when the configuration's keys or trusted root cannot be used.
    """
    deep = DeepVerifier(config, resolver=resolver, cache_dir=cache_dir, configs_dir=configs_dir,
                        max_bytes=max_bytes)
    if commit is not None:
        entry = ledger.get(commit)
        report = deep.run([(entry.index, entry.row)], total=1, workers=1, progress=progress,
                          allow_unsupported=allow_unsupported)
        report.first, report.stop = entry.index, entry.index + 1
        return report
    start = since_size(ledger, since) if since is not None else 0
    stop = ledger.size
    rows = ((e.index, e.row) for e in ledger.iter_entries(start, stop))
    report = deep.run(rows, total=stop - start, workers=workers, progress=progress,
                      allow_unsupported=allow_unsupported)
    report.first, report.stop = start, stop
    return report


def check_rows(
    rows: Sequence[Row],
    config: KfmConfig,
    *,
    first_index: int = 0,
    deep: DeepVerifier | None = None,
    workers: int | None = None,
    allow_unsupported: bool = False,
    **kwargs: Any,
) -> DeepReport:
    """The checks of rows not yet in a ledger (``kfm append --deep``), indexed from ``first_index``."""
    deep = deep or DeepVerifier(config, **kwargs)
    report = deep.run(((first_index + i, r) for i, r in enumerate(rows)), total=len(rows), workers=workers,
                      allow_unsupported=allow_unsupported)
    report.first, report.stop = first_index, first_index + len(rows)
    return report


#: The largest batch ``kfm append --deep`` reads (it checks and appends the same bytes).
MAX_DEEP_BATCH_BYTES = 256 * 1024 * 1024


def append_deep(
    ledger: Ledger,
    path: str | os.PathLike[str],
    *,
    signer: Signer,
    config: KfmConfig,
    wait: float = 10.0,
    configs_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    resolver: Resolver | None = None,
    allow_unsupported: bool = False,
    workers: int | None = None,
    stdin: BinaryIO | None = None,
    progress: Progress | None = None,
) -> tuple[AppendResult, DeepReport]:
    """``kfm append --deep``: validate the batch (InputRejected as ``append``), run the supply-chain
    checks on every row, and append the very bytes checked only when the report is ok.

    A failing row refuses the whole batch with :class:`~kfm_ledger.errors.DeepCheckFailed`
    (its ``report`` names each row and check); the ledger is not touched.  ``path`` ``-``
    reads ``stdin``.  Batches larger than :data:`MAX_DEEP_BATCH_BYTES` are refused.
    ``progress(done, total)``: rows checked, per batch of rows.
    """
    from ..errors import DeepCheckFailed, InputRejected, RowProblem
    from ..inputs import read_bounded
    from ..schema import parse_batch

    data = read_bounded(path, MAX_DEEP_BATCH_BYTES, "append input (--deep)", stdin=stdin)
    parsed = parse_batch(data)
    if not parsed:
        raise InputRejected([RowProblem(1, "$", "no rows in the input")])
    deep = DeepVerifier(config, resolver=resolver, cache_dir=cache_dir, configs_dir=configs_dir)
    report = deep.run(((ledger.size + i, row) for i, (_, row, _) in enumerate(parsed)), total=len(parsed),
                      workers=workers, progress=progress, allow_unsupported=allow_unsupported)
    report.first, report.stop = ledger.size, ledger.size + len(parsed)
    if not report.ok:
        bad = report.failing_rows()
        raise DeepCheckFailed(
            f"append --deep refused the batch: {len(bad)} of {len(parsed)} row(s) failed the supply-chain checks "
            "(nothing was written)",
            report,
        )
    return ledger.append(data, signer=signer, wait=wait), report
