"""Reliability engineer commands: rollback, diff, lineage, explain (docs/engineer.md).

Thin: each command opens the ledger, calls one function of ``kfm_ledger.ops`` and
prints its text or ``--json`` rendering.  The ops modules are imported inside the
commands so that ``kfm get`` and friends do not pay for them.

Exit codes: 0 ok; 1 unknown/ambiguous commit, proof not verified, bundle checksum
mismatch, archive refused, config mismatch; 2 usage error.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # pragma: no cover
    from ..config import KfmConfig
    from ..log.ledger import Ledger
    from ..ops.fetch_bundle import FetchStatus
    from ..ops.rollback import BundleStatus, RestoreStatus, RollbackPlan
    from ..schema import Entry

from . import (
    EXIT_FAILED,
    EXIT_USAGE,
    FETCH_BUNDLE,
    JsonFlag,
    LedgerDir,
    Output,
    Unverified,
    echo,
    handle_errors,
    open_ledger,
)
from .deep_cmds import AllowUnsupportedFlag, CacheOpt, ConfigOpt, load_kfm_config

CommitOpt = Annotated[
    str | None, typer.Option("--commit", help="lakeFS commit id or a unique prefix of one.", show_default=False)
]
IndexOpt = Annotated[
    int | None, typer.Option("--index", min=0, help="The row's leaf index (0-based).", show_default=False)
]


def one_row(out: Output, led: Ledger, commit: str | None, index: int | None, what: str = "") -> Entry:
    """The row named by exactly one of ``--commit`` / ``--index`` (exit 2 otherwise)."""
    if (commit is None) == (index is None):
        raise out.fail(f"give exactly one of --{what}commit or --{what}index", EXIT_USAGE)
    return led.get(commit) if commit is not None else led.entry(index)  # type: ignore[arg-type]



@handle_errors
def rollback(
    commit: CommitOpt = None,
    index: IndexOpt = None,
    bundle: Annotated[
        str | None,
        typer.Option(
            "--bundle",
            help="The bundle file (.tar.zst): check its sha256 against the ledger row. Without a path: fetch "
            "the row's artifact_uri through the resolvers ([resolve] in kfm.toml) and check its sha256 and "
            "attestation before anything is restored.",
            show_default=False,
        ),
    ] = None,
    restore_to: Annotated[
        Path | None,
        typer.Option(
            "--restore-to",
            help="Extract the bundle safely into this new (or empty) directory and check each config's sha256. "
            "Needs --bundle.",
        ),
    ] = None,
    max_bytes: Annotated[
        str,
        typer.Option("--max-bytes", help="Refuse bundles whose files add up to more than this (e.g. 500MB, 10GiB)."),
    ] = "10GiB",
    max_files: Annotated[
        int, typer.Option("--max-files", help="Refuse bundles with more members than this.")
    ] = 100_000,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    config: ConfigOpt = None,
    cache: CacheOpt = None,
    allow_unsupported: AllowUnsupportedFlag = False,
    *,
    out: Output,
) -> None:
    """The rollback plan for a lakeFS commit, proven against the signed checkpoint."""
    from ..errors import KfmError
    from ..ops.bundle import parse_size
    from ..ops.rollback import plan_for_entry, rollback_outcome

    if restore_to is not None and bundle is None:
        raise out.fail("--restore-to needs --bundle [PATH] (the .tar.zst to restore, or none to fetch it)", EXIT_USAGE)
    if max_files < 0:
        raise out.fail("--max-files must be >= 0", EXIT_USAGE)
    try:
        limit = parse_size(max_bytes)
    except KfmError as e:
        raise out.fail(str(e), EXIT_USAGE) from None
    if (commit is None) == (index is None):
        raise out.fail("give exactly one of --commit or --index", EXIT_USAGE)
    fetch = bundle == FETCH_BUNDLE
    if not fetch and (config is not None or cache is not None or allow_unsupported):
        raise out.fail("--config, --cache and --allow-unsupported go with --bundle without a path", EXIT_USAGE)
    led = open_ledger(ledger_dir)
    plan = plan_for_entry(led, one_row(out, led, commit, index))
    with contextlib.ExitStack() as stack:
        fetched = _fetch_bundle(plan, load_kfm_config(config, ledger_dir), cache, limit, max_files,
                                allow_unsupported, stack) if fetch else None
        if fetched is not None:
            bundle = fetched.path if fetched.ok else None
        bundle_status, restore_status = _check_or_restore(plan, bundle, restore_to, limit, max_files)
    outcome = rollback_outcome(plan, bundle_status, restore_status, fetched=fetched)
    if json_out:
        doc = outcome.to_json()
        out.emit_json({**doc, "lakefs_commit": doc["lakefs"]["commit"]})
    else:
        echo(outcome.render_text())
    if not outcome.ok:
        for p in outcome.problems:
            echo(f"kfm: error: {p}", err=True)
        raise typer.Exit(EXIT_FAILED)


def _check_or_restore(plan: RollbackPlan, bundle: str | None, restore_to: Path | None, limit: int,
                      max_files: int) -> tuple[BundleStatus | None, RestoreStatus | None]:
    """``--bundle`` alone: the sha256 check; with ``--restore-to``: the checked restore."""
    from ..ops.rollback import check_plan_bundle, restore_plan_bundle

    if bundle is None:
        return None, None
    if restore_to is not None:
        return restore_plan_bundle(plan, bundle, str(restore_to), max_bytes=limit, max_files=max_files)
    return check_plan_bundle(plan, bundle, max_bytes=limit, max_files=max_files), None


def _fetch_bundle(plan: RollbackPlan, cfg: KfmConfig, cache: Path | None, limit: int, max_files: int,
                  allow_unsupported: bool, stack: contextlib.ExitStack) -> FetchStatus:
    """``--bundle`` without a path: fetch and check through the resolvers (ops/fetch_bundle.py)."""
    import tempfile

    from ..attest import AttestationVerifier
    from ..ops.bundle import bundle_file_cap
    from ..ops.fetch_bundle import fetch_plan_bundle
    from ..resolve import Resolver

    into = stack.enter_context(tempfile.TemporaryDirectory(prefix="kfm-bundle-"))
    return fetch_plan_bundle(plan, Resolver(cfg, cache_dir=cache), AttestationVerifier(cfg.attestation), into,
                             max_bytes=bundle_file_cap(limit, max_files), allow_unsupported=allow_unsupported)


@handle_errors
def diff(
    a: Annotated[
        str | None,
        typer.Argument(metavar="[A]", help="Alias of --from (kept for compatibility).", show_default=False),
    ] = None,
    b: Annotated[
        str | None, typer.Argument(metavar="[B]", help="Alias of --to (kept for compatibility).", show_default=False)
    ] = None,
    from_commit: Annotated[
        str | None,
        typer.Option("--from", help="The 'from' state: a lakeFS commit id or unique prefix.", show_default=False),
    ] = None,
    to_commit: Annotated[
        str | None,
        typer.Option("--to", help="The 'to' state: a lakeFS commit id or unique prefix.", show_default=False),
    ] = None,
    from_index: Annotated[
        int | None, typer.Option("--from-index", min=0, help="The 'from' state by leaf index.", show_default=False)
    ] = None,
    to_index: Annotated[
        int | None, typer.Option("--to-index", min=0, help="The 'to' state by leaf index.", show_default=False)
    ] = None,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    unverified: Unverified = False,
    *,
    out: Output,
) -> None:
    """What changed from environment state A to B: models, configs, data, branch, producer, energy."""
    from ..ops.diff import diff_entries, render_diff

    if (a is not None and from_commit is not None) or (b is not None and to_commit is not None):
        raise out.fail("give A or --from, B or --to, not both", EXIT_USAGE)
    from_commit = from_commit if from_commit is not None else a
    to_commit = to_commit if to_commit is not None else b
    for side, c, i in (("from", from_commit, from_index), ("to", to_commit, to_index)):
        if (c is None) == (i is None):
            raise out.fail(f"give exactly one of --{side} (commit) or --{side}-index", EXIT_USAGE)
    led = open_ledger(ledger_dir, unverified=unverified, out=out)
    old = led.get(from_commit) if from_commit is not None else led.entry(from_index)  # type: ignore[arg-type]
    new = led.get(to_commit) if to_commit is not None else led.entry(to_index)  # type: ignore[arg-type]
    d = diff_entries(old, new)
    if json_out:
        out.emit_json(d.to_json())
    else:
        echo(render_diff(d))


@handle_errors
def lineage(
    commit: CommitOpt = None,
    index: IndexOpt = None,
    ledger_dir: LedgerDir = Path("."),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the JSON-LD here instead of stdout.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Accepted for symmetry: the output is JSON-LD either way.")
    ] = False,
    *,
    out: Output,
) -> None:
    """The entry's provenance as W3C PROV-O JSON-LD."""
    import json

    from ..ops.lineage import lineage_prov
    from ..ops.rollback import prove_entry

    if (commit is None) == (index is None):
        raise out.fail("give exactly one of --commit or --index", EXIT_USAGE)
    led = open_ledger(ledger_dir)
    entry = one_row(out, led, commit, index)
    proof = prove_entry(led, entry)
    doc = lineage_prov(entry, led.origin, proof=proof)
    if output is not None:
        output.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        out.emit_json(doc, envelope=False)  # a JSON-LD document, not a kfm envelope
    if not proof.verified:
        echo(f"kfm: error: the inclusion proof does not verify: {proof.reason}", err=True)
        raise typer.Exit(EXIT_FAILED)


@handle_errors
def explain(
    commit: CommitOpt = None,
    index: IndexOpt = None,
    scan_limit: Annotated[
        int, typer.Option("--scan-limit", help="Look back at most this many rows for the previous entry on the branch.")
    ] = 100_000,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    unverified: Unverified = False,
    *,
    out: Output,
) -> None:
    """A short narrative: what this entry changed since the previous one on its branch, who, when, proof."""
    from ..ops.lineage import explain_entry, render_explanation

    if scan_limit < 0:
        raise out.fail("--scan-limit must be >= 0", EXIT_USAGE)
    if (commit is None) == (index is None):
        raise out.fail("give exactly one of --commit or --index", EXIT_USAGE)
    led = open_ledger(ledger_dir, unverified=unverified, out=out)
    x = explain_entry(led, one_row(out, led, commit, index), scan_limit=scan_limit)
    if json_out:
        out.emit_json(x.to_json(), ok=x.proof.verified)
    else:
        echo(render_explanation(x))
    if not x.proof.verified:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
    app.command("diff")(diff)
    app.command("lineage")(lineage)
    app.command("explain")(explain)
