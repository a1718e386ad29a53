"""The `kfm` command line: thin wrappers over the library.

Each command group lives in its own module and registers itself on :data:`app`
through ``register(app)``.  Commands call into the library and print; they hold
no ledger logic.  Exit codes: 0 ok, 1 verification failed or input refused,
2 usage error (docs/cli.md).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import typer

from ..errors import KfmError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="kfm",
    help="kfm-ledger: the Kansas Frontier Matrix Rollback Registry Index, an append-only "
    "ledger on an RFC 9162 Merkle tree with signed C2SP checkpoints.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

LedgerDir = Annotated[
    Path,
    typer.Option(
        "--ledger",
        envvar="KFM_LEDGER",
        help="Ledger directory (default: $KFM_LEDGER, else the current directory).",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn library errors into a message on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KfmError as e:
            typer.echo(f"kfm: error: {e.diagnostics()}", err=True)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:  # pragma: no cover - `kfm ... | head`
            os._exit(EXIT_OK)

    return wrapper  # type: ignore[return-value]


def emit_json(value: Any) -> None:
    """Print one JSON document (sorted keys are NOT applied: field order is meaningful)."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def fail(message: str, code: int = EXIT_FAILED) -> "typer.Exit":
    """Print ``kfm: error: message`` to stderr; return the Exit to raise."""
    typer.echo(f"kfm: error: {message}", err=True)
    return typer.Exit(code)


def is_terminal() -> bool:
    return sys.stderr.isatty()


def _register_all() -> None:
    from . import analytics_cmds, engineer_cmds, ledger_cmds

    ledger_cmds.register(app)
    engineer_cmds.register(app)
    analytics_cmds.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `kfm` console script."""
    app(args=argv, prog_name="kfm")
