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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

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

#: This invocation: was --json given, and has a JSON document been printed yet?
_OUTPUT = {"json": False, "emitted": False}


def _emit_error_json(kind: str, message: str, code: int, problems: list[Any] | None = None) -> None:
    """With --json, a failure is a JSON document on stdout too (unless one was printed already)."""
    if not _OUTPUT["json"] or _OUTPUT["emitted"]:
        return
    doc: dict[str, Any] = {"ok": False, "error": {"type": kind, "message": message, "exit_code": code}}
    if problems is not None:
        doc["problems"] = [{"line": p.line, "path": p.path, "message": p.message} for p in problems]
    emit_json(doc)


def handle_errors(fn: F) -> F:
    """Turn library errors into a message on stderr and the documented exit code.

    * :class:`KfmError`: its diagnostics, its exit code (1).
    * An operating-system error on a file or directory (a missing input file, a
      directory where a file was expected, a ledger directory that cannot be created):
      one line naming the path and why, exit 1.  Only real OS errors (with an errno)
      are caught; anything else is a bug and keeps its traceback.
    * A broken pipe on stdout or stderr (``kfm verify | head -1``): the output was cut
      short, so exit 1 quietly (docs/cli.md), whatever the command would have returned.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _OUTPUT["json"] = bool(kwargs.get("json_out"))
        _OUTPUT["emitted"] = False
        try:
            try:
                return fn(*args, **kwargs)
            finally:
                # Buffered output (sys.stdout.buffer.write) meets a closed pipe here, not
                # at interpreter exit where it would print "Exception ignored ...".
                sys.stdout.flush()
        except KfmError as e:
            typer.echo(f"kfm: error: {e.diagnostics()}", err=True)
            _emit_error_json(type(e).__name__, str(e), e.exit_code, getattr(e, "problems", None))
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            _silence_standard_streams()
            raise typer.Exit(EXIT_FAILED) from None
        except OSError as e:
            if e.errno is None:  # io.UnsupportedOperation and the like: a programming error
                raise
            typer.echo(f"kfm: error: {describe_os_error(e)}", err=True)
            _emit_error_json("OSError", describe_os_error(e), EXIT_FAILED)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(error: OSError) -> str:
    """``cannot access PATH: why`` for an OS error (the path as given, the system's reason)."""
    why = error.strerror or str(error)
    if error.filename is None:
        return why
    path = os.fsdecode(error.filename)
    if error.filename2 is not None:
        return f"cannot move {path} to {os.fsdecode(error.filename2)}: {why}"
    return f"cannot access {path}: {why}"


def _silence_standard_streams() -> None:
    """Point stdout and stderr at /dev/null so that Python's final flush of what the
    closed pipe refused cannot fail again ("Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # not a real file (a test runner's capture)
            pass
    os.close(devnull)


def _mark_json_emitted() -> None:
    """For commands that print their JSON document by other means than :func:`emit_json`."""
    _OUTPUT["emitted"] = True


def emit_json(value: Any) -> None:
    """Print one JSON document (sorted keys are NOT applied: field order is meaningful)."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))
    _OUTPUT["emitted"] = True


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``kfm: error: message`` to stderr (and, with --json, a JSON error document on
    stdout); return the Exit to raise."""
    typer.echo(f"kfm: error: {message}", err=True)
    _emit_error_json("UsageError" if code == EXIT_USAGE else "Failed", message, code)
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
