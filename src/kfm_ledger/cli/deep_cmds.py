"""The supply-chain options of ``kfm verify --deep``, ``kfm append --deep`` and ``kfm rollback
--bundle`` (docs/supply-chain.md): option types and thin printing helpers.  The work is in
:mod:`kfm_ledger.verify.deep`, :mod:`kfm_ledger.resolve` and :mod:`kfm_ledger.ops.fetch_bundle`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import EXIT_FAILED, EXIT_USAGE, Output, echo

if TYPE_CHECKING:
    from ..config import KfmConfig
    from ..core.keys import Signer
    from ..log.append import AppendResult
    from ..log.ledger import Ledger
    from ..log.progress import Progress
    from ..verify.deep import DeepReport

DeepFlag = Annotated[bool, typer.Option("--deep", help="Supply-chain checks of what each row points at: artifact "
                                        "sha256, attestation, STAC, lakeFS ref, configs, energy "
                                        "(docs/supply-chain.md).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="kfm.toml to use: attestation policy, resolvers, "
                                                "witnesses (default: $KFM_CONFIG, else <ledger>/kfm.toml).",
                                                show_default=False)]
ConfigsDirOpt = Annotated[Path | None, typer.Option("--configs", help="With --deep: check each configs[].path under "
                                                    "this directory against its sha256.", show_default=False)]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Content cache for fetched files, keyed by SHA-256.",
                                               show_default=False)]
AllowUnsupportedFlag = Annotated[bool, typer.Option("--allow-unsupported", help="Do not fail on checks that cannot "
                                                    "be verified offline ('unsupported'); they are still reported.")]
AllRowsFlag = Annotated[bool, typer.Option("--all-rows", help="With --deep: list every row, not only rows with a "
                                           "failed, unsupported or warning check.")]


def load_kfm_config(config: Path | None, ledger_dir: Path) -> KfmConfig:
    """``--config``, else ``$KFM_CONFIG``, else ``<ledger>/kfm.toml`` (absent: the defaults)."""
    from ..config import load_config, resolve_config_path

    return load_config(resolve_config_path(config, ledger_dir))


def print_deep_report(out: Output, report: DeepReport, *, all_rows: bool, json_out: bool) -> None:
    """The report as JSON or text; exit 1 unless it is ok."""
    if json_out:
        out.emit_json(report.to_json(all_rows=all_rows))
    else:
        echo(report.render_text(all_rows=all_rows))
    if not report.ok:
        s = report.summary()
        echo(f"kfm: error: deep verification failed: {s['failed']} failed, {s['unsupported']} unsupported "
             f"check(s) in {len(report.failing_rows())} row(s)", err=True)
        raise typer.Exit(EXIT_FAILED)


def needs_deep(out: Output, deep: bool, **given: object) -> None:
    """Exit 2 when an option that only means something with ``--deep`` was given without it."""
    names = {"all_rows": "--all-rows", "allow_unsupported": "--allow-unsupported", "configs": "--configs"}
    used = [names.get(k, f"--{k}") for k, v in given.items() if v]
    if used and not deep:
        raise out.fail(f"{used[0]} needs --deep", EXIT_USAGE)


def append_deep_cmd(out: Output, led: Ledger, file: str, signer: Signer, cfg: KfmConfig, wait: float,
                    configs_dir: Path | None, cache: Path | None, allow_unsupported: bool,
                    progress: Progress | None) -> tuple[AppendResult, DeepReport]:
    """``kfm append --deep``: :func:`kfm_ledger.verify.deep.append_deep`; a refusal prints the per-row
    report (stdout; JSON with ``--json``) before the error (stderr, exit 1)."""
    import sys

    from ..errors import DeepCheckFailed
    from ..verify.deep import append_deep

    try:
        return append_deep(led, file, signer=signer, config=cfg, wait=wait, configs_dir=configs_dir,
                           cache_dir=cache, allow_unsupported=allow_unsupported, stdin=sys.stdin.buffer,
                           progress=progress)
    except DeepCheckFailed as e:
        if out.json:
            out.emit_json({"ok": False, "error": {"type": "DeepCheckFailed", "message": str(e), "exit_code": 1},
                           "deep": e.report.to_json()})
        else:
            echo(e.report.render_text())
        raise
