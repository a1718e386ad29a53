"""Analytics commands: mirror, query, report energy, impact (docs/analytics.md).

Thin: each command opens the ledger, calls one function of :mod:`kfm_ledger.mirror` or
``kfm_ledger.ops`` and prints its text, CSV or ``--json`` rendering.  Those modules (and
pyarrow, DuckDB, matplotlib) are imported inside the commands.

Exit codes: 0 ok; 1 mirror missing/stale/modified (``--check``, ``query``), unknown or
ambiguous commit, query failed, optional dependency missing, ledger error; 2 usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import (
    EXIT_FAILED,
    EXIT_USAGE,
    JsonFlag,
    LedgerDir,
    Output,
    Unverified,
    aliased,
    echo,
    handle_errors,
    open_ledger,
    s3_location_of,
    with_ok,
    write_out,
)
from .progress import QuietFlag, progress_reporter

CsvFlag = Annotated[bool, typer.Option("--csv", help="Print CSV (with a header line) instead of a table.")]
SourceOption = Annotated[
    str,
    typer.Option(
        "--source",
        help="Where to read rows: auto (the mirror when its metadata names the current checkpoint, "
        "else the proven JSONL scan), mirror, jsonl.",
    ),
]

MirrorFileOption = Annotated[
    Path | None,
    typer.Option(
        "--mirror-file",
        help="Read the Parquet mirror from this local file (written by `kfm mirror --out FILE`) instead of the "
        "ledger's own; it must mirror the current checkpoint. The only mirror an s3:// ledger has.",
        dir_okay=False,
        show_default=False,
    ),
]


def _use_mirror_file(led: object, path: Path | None) -> None:
    """Point the ledger's mirror at the user's file (``--out`` / ``--mirror-file``; mirror/files.py)."""
    if path is not None:
        led.mirror_file = path  # type: ignore[attr-defined]


def _check_source(out: Output, source: str) -> None:
    if source not in ("auto", "mirror", "jsonl"):
        raise out.fail(f"--source must be auto, mirror or jsonl, not {source!r}", EXIT_USAGE)


def _emit_large_json(out: Output, value: object) -> None:
    """:meth:`Output.emit_json` for results that may be large (query rows, impact trees): the same
    indented JSON, encoded by msgspec in C."""
    import msgspec

    write_out(msgspec.json.format(msgspec.json.encode(out.stamp(with_ok(value))), indent=2) + b"\n")
    out.mark_json_emitted()


def _one_format(out: Output, csv_out: bool, json_out: bool) -> None:
    if csv_out and json_out:
        raise out.fail("--csv and --json cannot be used together", EXIT_USAGE)


@handle_errors
def mirror(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only check the mirror against a regeneration; exit 1 when it drifted."),
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write (or --check) the mirror in this local file instead of the ledger's "
            "rollback-index.parquet; needed for an s3:// ledger, whose bucket holds no mirror.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
    *,
    out: Output,
) -> None:
    """Regenerate the Parquet mirror rollback-index.parquet (or --check it)."""
    from ..mirror import check_mirror, write_mirror

    if out_file is None and s3_location_of(ledger_dir) is not None:
        raise out.fail(
            "an s3:// ledger keeps no Parquet mirror in its bucket: give --out FILE (a local file), "
            "then --mirror-file FILE to `kfm query`, `kfm impact` and `kfm report energy`",
            EXIT_USAGE,
        )
    led = open_ledger(ledger_dir)
    _use_mirror_file(led, out_file)
    try:
        if check:
            with progress_reporter("mirror --check", "rows", quiet=quiet) as progress:
                status = check_mirror(led, progress=progress)
            if json_out:
                out.emit_json(aliased(status.to_json(), {"ledger_size": "tree_size", "ledger_root": "root"}))
            elif status.ok:
                echo(status.render_text())
            else:
                echo(f"kfm: error: {status.render_text()}", err=True)
            if not status.ok:
                raise typer.Exit(EXIT_FAILED)
            return
        with progress_reporter("mirror", "rows", quiet=quiet) as progress:
            info = write_mirror(led, progress=progress)
    finally:
        led.close()
    if json_out:
        out.emit_json(info.to_json())
    else:
        echo(info.render_text())


@handle_errors
def query(
    sql: Annotated[
        str | None,
        typer.Argument(
            metavar="SQL",
            help="SQL over the table rollback_index (DuckDB dialect); '-' reads it from stdin. "
            "May start with a '--' comment.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the SQL from this file ('-': stdin).", show_default=False)
    ] = None,
    ledger_dir: LedgerDir = Path("."),
    csv_out: CsvFlag = False,
    json_out: JsonFlag = False,
    mirror_file: MirrorFileOption = None,
    *,
    out: Output,
) -> None:
    """Run a read-only SQL audit over the Parquet mirror (table rollback_index)."""
    from ..ops.query import run_query

    _one_format(out, csv_out, json_out)
    text = _query_text(out, sql, file)
    if mirror_file is None and s3_location_of(ledger_dir) is not None:
        raise out.fail(
            "an s3:// ledger keeps no Parquet mirror in its bucket: write one with `kfm mirror --out FILE`, "
            "then give --mirror-file FILE",
            EXIT_USAGE,
        )
    led = open_ledger(ledger_dir)
    _use_mirror_file(led, mirror_file)
    try:
        result = run_query(led, text)
    finally:
        led.close()
    if json_out:
        _emit_large_json(out, result.to_json())
    elif csv_out:
        echo(result.render_csv(), nl=False)
    else:
        echo(result.render_text())


def _query_text(out: Output, sql: str | None, file: Path | None) -> str:
    """The SQL of ``kfm query``: the argument, ``-`` (stdin) or ``--file F``; exactly one."""
    import re
    import sys

    if (sql is None) == (file is None):
        raise out.fail("give the SQL as an argument, '-' (stdin) or --file FILE (exactly one)", EXIT_USAGE)
    if sql is not None and re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", sql, re.DOTALL):
        # The command accepts unknown "options" as the SQL so that SQL starting with a
        # "-- comment" line works; a lone word like --jsn is still a mistyped option.
        raise out.fail(f"no such option: {sql.split('=', 1)[0]}", EXIT_USAGE)
    from ..inputs import MAX_QUERY_FILE_BYTES, read_bounded

    if sql == "-" or file is not None:
        source = "-" if sql == "-" else str(file)
        data = read_bounded(source, MAX_QUERY_FILE_BYTES, "SQL file", stdin=sys.stdin.buffer)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            where = "standard input" if source == "-" else source
            raise out.fail(f"the SQL in {where} is not UTF-8 text (byte {e.start})", EXIT_USAGE) from None
    return sql  # type: ignore[return-value]


report_app = typer.Typer(name="report", help="Reports over the ledger.", no_args_is_help=True, rich_markup_mode=None)


@handle_errors
def energy(
    ledger_dir: LedgerDir = Path("."),
    csv_out: CsvFlag = False,
    json_out: JsonFlag = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Also draw the monthly chart to this PNG file (needs matplotlib: the extra 'plot')."
        ),
    ] = None,
    source: SourceOption = "auto",
    mirror_file: MirrorFileOption = None,
    unverified: Unverified = False,
    quiet: QuietFlag = False,
    *,
    out: Output,
) -> None:
    """kWh and CO2e by producer, by month (UTC) and by branch, with totals and a trend."""
    from ..ops.energy import energy_report, plot_energy

    _one_format(out, csv_out, json_out)
    _check_source(out, source)
    led = open_ledger(ledger_dir, unverified=unverified, out=out)
    _use_mirror_file(led, mirror_file)
    try:
        with progress_reporter("report energy", "rows", quiet=quiet) as progress:
            report = energy_report(led, source=source, progress=progress)  # type: ignore[arg-type]
    finally:
        led.close()
    if plot is not None:
        png = plot_energy(report)
        try:
            plot.write_bytes(png)
        except OSError as e:
            raise out.fail(f"cannot write the plot to {plot}: {e.strerror}") from None
    if json_out:
        out.emit_json(report.to_json())
    elif csv_out:
        echo(report.render_csv(), nl=False)
    else:
        echo(report.render_text())
    if plot is not None:
        echo(f"plot written to {plot}", err=json_out or csv_out)


@handle_errors
def impact(
    commit: Annotated[
        str | None,
        typer.Option(
            "--commit",
            help="lakeFS commit id (or unique prefix): what depends on what it introduced.",
            show_default=False,
        ),
    ] = None,
    index: Annotated[
        int | None,
        typer.Option("--index", min=0, help="Leaf index of the entry (instead of --commit).", show_default=False),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="NAME or NAME@VERSION: entries using this model (version).", show_default=False),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="PATH or PATH@SHA256: entries using this config (hash).", show_default=False),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", help="STAC_URI or STAC_URI@LAKEFS_REF: entries using this data snapshot.", show_default=False
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Entries shown per producer in the text tree (0: all).")] = 50,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    source: SourceOption = "auto",
    mirror_file: MirrorFileOption = None,
    unverified: Unverified = False,
    quiet: QuietFlag = False,
    *,
    out: Output,
) -> None:
    """The tree of dependent pipelines: later entries, by producer, that use what an entry introduced."""
    from ..ops.impact import impact_of_artifact, impact_of_entry, parse_selector

    given = [
        (k, v)
        for k, v in (
            ("commit", commit),
            ("index", index),
            ("model", model),
            ("config", config),
            ("dataset", dataset),
        )
        if v is not None
    ]
    if len(given) != 1:
        raise out.fail("give exactly one of --commit, --index, --model, --config, --dataset", EXIT_USAGE)
    if limit < 0:
        raise out.fail("--limit must be >= 0", EXIT_USAGE)
    _check_source(out, source)
    kind, value = given[0]
    selector = None if kind in ("commit", "index") else parse_selector(kind, value)  # type: ignore[arg-type]
    led = open_ledger(ledger_dir, unverified=unverified, out=out)
    _use_mirror_file(led, mirror_file)
    try:
        with progress_reporter("impact", "rows", quiet=quiet) as progress:
            if selector is None:
                entry = led.get(value) if kind == "commit" else led.entry(value)  # type: ignore[arg-type]
                report = impact_of_entry(led, entry, source=source, progress=progress)  # type: ignore[arg-type]
            else:
                report = impact_of_artifact(led, selector, source=source, progress=progress)  # type: ignore[arg-type]
    finally:
        led.close()
    if json_out:
        doc = report.to_json()
        # One name per concept: "root" is the root hash everywhere; the impact root (the
        # entry or artifact asked about) is "subject".  "root_hash" stays one release.
        doc = {
            "format": doc["format"],
            "tree_size": doc["tree_size"],
            "root": doc["root_hash"],
            "root_hash": doc["root_hash"],
            "subject": doc["root"],
            **{k: v for k, v in doc.items() if k not in ("format", "tree_size", "root", "root_hash")},
        }
        _emit_large_json(out, doc)
    else:
        echo(report.render_text(limit=limit))


def register(app: typer.Typer) -> None:
    app.command("mirror")(mirror)
    # ignore_unknown_options: an argument such as "-- audit: ...\nSELECT ..." (SQL whose
    # first line is a comment) is the SQL, not an unknown option.
    app.command("query", context_settings={"ignore_unknown_options": True})(query)
    app.command("impact")(impact)
    report_app.command("energy")(energy)
    app.add_typer(report_app, name="report")
