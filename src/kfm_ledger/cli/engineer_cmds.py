"""Reliability engineer commands: rollback, diff, lineage, explain (docs/engineer.md).

Thin: each command opens the ledger, calls one function of ``kfm_ledger.ops`` and
prints its text or ``--json`` rendering.  The ops modules are imported inside the
commands so that ``kfm get`` and friends do not pay for them.

Exit codes: 0 ok; 1 unknown/ambiguous commit, proof not verified, bundle checksum
mismatch, archive refused, config mismatch; 2 usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import EXIT_FAILED, EXIT_USAGE, JsonFlag, LedgerDir, Output, echo, handle_errors, open_ledger

CommitOpt = Annotated[
    str, typer.Option("--commit", help="lakeFS commit id or a unique prefix of one.", show_default=False)
]



@handle_errors
def rollback(
    commit: CommitOpt,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="The bundle file (.tar.zst): check its sha256 against the ledger row."),
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
    *,
    out: Output,
) -> None:
    """The rollback plan for a lakeFS commit, proven against the signed checkpoint."""
    from ..errors import KfmError
    from ..ops.bundle import parse_size
    from ..ops.rollback import (
        check_plan_bundle,
        plan_rollback,
        restore_plan_bundle,
        rollback_outcome,
    )

    if restore_to is not None and bundle is None:
        raise out.fail("--restore-to needs --bundle PATH (the .tar.zst to restore)", EXIT_USAGE)
    if max_files < 0:
        raise out.fail("--max-files must be >= 0", EXIT_USAGE)
    try:
        limit = parse_size(max_bytes)
    except KfmError as e:
        raise out.fail(str(e), EXIT_USAGE) from None
    led = open_ledger(ledger_dir)
    plan = plan_rollback(led, commit)
    bundle_status = restore_status = None
    if bundle is not None and restore_to is not None:
        bundle_status, restore_status = restore_plan_bundle(
            plan, str(bundle), str(restore_to), max_bytes=limit, max_files=max_files
        )
    elif bundle is not None:
        bundle_status = check_plan_bundle(plan, str(bundle))

    outcome = rollback_outcome(plan, bundle_status, restore_status)
    if json_out:
        out.emit_json(outcome.to_json())
    else:
        echo(outcome.render_text())
    if not outcome.ok:
        for p in outcome.problems:
            echo(f"kfm: error: {p}", err=True)
        raise typer.Exit(EXIT_FAILED)


@handle_errors
def diff(
    a: Annotated[str, typer.Argument(metavar="A", help="The 'from' state: a lakeFS commit id or unique prefix.")],
    b: Annotated[str, typer.Argument(metavar="B", help="The 'to' state: a lakeFS commit id or unique prefix.")],
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """What changed from environment state A to B: models, configs, data, branch, producer, energy."""
    from ..ops.diff import diff_entries, render_diff

    led = open_ledger(ledger_dir)
    d = diff_entries(led.get(a), led.get(b))
    if json_out:
        out.emit_json(d.to_json())
    else:
        echo(render_diff(d))


@handle_errors
def lineage(
    commit: CommitOpt,
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

    led = open_ledger(ledger_dir)
    entry = led.get(commit)
    proof = prove_entry(led, entry)
    doc = lineage_prov(entry, led.origin, proof=proof)
    if output is not None:
        output.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        out.emit_json(doc)
    if not proof.verified:
        echo(f"kfm: error: the inclusion proof does not verify: {proof.reason}", err=True)
        raise typer.Exit(EXIT_FAILED)


@handle_errors
def explain(
    commit: CommitOpt,
    scan_limit: Annotated[
        int, typer.Option("--scan-limit", help="Look back at most this many rows for the previous entry on the branch.")
    ] = 100_000,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """A short narrative: what this entry changed since the previous one on its branch, who, when, proof."""
    from ..ops.lineage import explain_entry, render_explanation

    if scan_limit < 0:
        raise out.fail("--scan-limit must be >= 0", EXIT_USAGE)
    led = open_ledger(ledger_dir)
    x = explain_entry(led, led.get(commit), scan_limit=scan_limit)
    if json_out:
        out.emit_json(x.to_json())
    else:
        echo(render_explanation(x))
    if not x.proof.verified:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
    app.command("diff")(diff)
    app.command("lineage")(lineage)
    app.command("explain")(explain)
