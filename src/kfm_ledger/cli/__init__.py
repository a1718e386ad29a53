"""The `kfm` command line: thin wrappers over the library.

Each command group lives in its own module and registers itself on :data:`app`
through ``register(app)``.  Commands call into the library and print; they hold
no ledger logic.  Exit codes: 0 ok, 1 verification failed or input refused,
2 usage error, 3 the ledger is locked by another writer (docs/cli.md).

All output goes through :func:`echo` / :func:`write_out`, which write every byte or
raise ``BrokenPipeError``: a pipe closed early (``kfm query ... | head -1``) always
ends the command with exit 1, even for one large write that the kernel cut short.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from ..errors import KfmError

if TYPE_CHECKING:  # pragma: no cover
    from kfm_ledger.log.ledger import Ledger

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
#: The value ``kfm rollback --bundle`` gets when given without a path (fetch through the resolvers).
FETCH_BUNDLE = ""


def _flags_without_type() -> None:
    """typer 0.2x shows a flag in help as ``--json <bool>``, as if it took a value (``--json
    true`` is refused).  Show flags (``--help`` included) without a type.

    A typer (or typer.core) without ``TyperOption.display_type_rich`` gets no patch: help
    may then show ``<bool>`` after flags, but the CLI imports and works."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - a typer that moved its core module
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if not callable(shown):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()


def write_out(data: bytes | str, *, err: bool = False) -> None:
    """Write ``data`` to stdout (or stderr) completely, then flush.

    A write to a pipe whose reader went away returns the bytes the pipe took (64 KiB)
    instead of failing, and ``BufferedWriter.write`` passes that short count on: a
    caller that ignores it never sees the broken pipe.  This loops until every byte is
    written, so a closed pipe always surfaces as ``BrokenPipeError`` (exit 1 in
    :func:`handle_errors`)."""
    stream = sys.stderr if err else sys.stdout
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only stream (a test's capture): it takes everything
        stream.write(raw.decode("utf-8", "replace"))
        stream.flush()
        return
    stream.flush()
    view = memoryview(raw)
    while view:
        n = buffer.write(view)
        if n is None:  # a non-blocking stream that is full: wait for it
            buffer.flush()
            continue
        view = view[n:]
    buffer.flush()


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """``typer.echo`` that never loses a broken pipe (:func:`write_out`)."""
    write_out(text + "\n" if nl else text, err=err)

app = typer.Typer(
    name="kfm",
    help="kfm-ledger: the Kansas Frontier Matrix Rollback Registry Index, an append-only "
    "ledger on an RFC 9162 Merkle tree with signed C2SP checkpoints.",
    no_args_is_help=True,
    # Help texts are literal: "http://HOST:PORT[/PREFIX]" is not rich markup.
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    add_completion=True,
)


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        echo(f"kfm {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print kfm's version and exit."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Configuration file (kfm.toml); the same as $KFM_CONFIG.", show_default=False),
    ] = None,
) -> None:
    """kfm-ledger: the Kansas Frontier Matrix Rollback Registry Index, an append-only ledger on an
    RFC 9162 Merkle tree with signed C2SP checkpoints."""
    if config is not None:
        from kfm_ledger.config import CONFIG_ENV

        os.environ[CONFIG_ENV] = str(config)  # read where a command needs it (config.resolve_config_path)

LedgerDir = Annotated[
    Path,
    typer.Option(
        "--ledger",
        envvar="KFM_LEDGER",
        help="Ledger directory, or s3://bucket/prefix (default: $KFM_LEDGER, else the current directory).",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]
Unverified = Annotated[bool, typer.Option("--unverified", help="Skip proving the rows read against the signed "
                                          "checkpoint; the output then says 'unverified'.")]

F = TypeVar("F", bound=Callable[..., Any])

class Output:
    """This invocation's output state: was --json given, and has a JSON document been printed yet?

    :func:`handle_errors` makes one per command run and passes it as the command's ``out``
    argument (hidden from the command line); printing JSON and failing go through it.
    """

    def __init__(self, json_out: bool = False) -> None:
        self.json = json_out
        self.emitted = False
        self.unverified = False  # --unverified: a JSON document says "verified": false

    def stamp(self, value: Any) -> Any:
        return {**value, "verified": False} if self.unverified and isinstance(value, dict) else value

    def emit_json(self, value: Any, *, ok: bool = True, envelope: bool = True) -> None:
        """Print one JSON document (sorted keys are NOT applied: field order is meaningful).

        ``envelope``: a document without ``ok`` gets ``"ok": ok`` (docs/cli.md, "JSON
        envelope"); only documents in another standard's format (JSON Schema, JSON-LD) opt out."""
        doc = self.stamp(with_ok(value, ok)) if envelope else value
        try:
            text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
        except ValueError:  # inf or nan (an overflowed sum): JSON has no such numbers, so null
            text = json.dumps(_finite(doc), indent=2, ensure_ascii=False)
        echo(text)
        self.emitted = True

    def mark_json_emitted(self) -> None:
        """For commands that print their JSON document by other means than :meth:`emit_json`."""
        self.emitted = True

    def error_json(
        self, kind: str, message: str, code: int, problems: list[Any] | None = None, error: Any = None
    ) -> None:
        """With --json, a failure is a JSON document on stdout too (unless one was printed already).

        A refused input (``error`` an InputRejected) also gives ``total`` and ``total_exact``
        (False: the total is a lower bound)."""
        if not self.json or self.emitted:
            return
        doc: dict[str, Any] = {"ok": False, "error": {"type": kind, "message": message, "exit_code": code}}
        if problems is not None:
            doc["problems"] = [{"line": p.line, "path": p.path, "message": p.message} for p in problems]
        if hasattr(error, "total_exact"):
            doc["total"] = error.total
            doc["total_exact"] = error.total_exact
        self.emit_json(doc)

    def fail(self, message: str, code: int = EXIT_FAILED) -> typer.Exit:
        """Print ``kfm: error: message`` to stderr (and, with --json, a JSON error document on
        stdout); return the Exit to raise."""
        echo(f"kfm: error: {message}", err=True)
        self.error_json("UsageError" if code == EXIT_USAGE else "Failed", message, code)
        return typer.Exit(code)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no Infinity or NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def with_ok(value: Any, ok: bool = True) -> Any:
    """``value`` with the envelope's ``"ok"`` when it is a document that has none."""
    if isinstance(value, dict) and "ok" not in value:
        return {**value, "ok": ok}
    return value


def aliased(doc: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """``doc`` with each old key of ``renames`` preceded by its canonical name (same value); the old
    name stays as an alias for one release (docs/cli.md, "JSON envelope")."""
    result: dict[str, Any] = {}
    for key, value in doc.items():
        if key in renames:
            result[renames[key]] = value
        result[key] = value
    return result


def open_ledger(
    ledger_dir: Path, vkey: Path | None = None, *, unverified: bool = False, out: Output | None = None
) -> Ledger:
    """The ledger at ``--ledger`` (or $KFM_LEDGER), its signature checked (with ``vkey`` when given);
    ``unverified``: its reads are not proven, and stderr (and ``out``'s JSON) says so."""
    from kfm_ledger.inputs import MAX_KEY_FILE_BYTES, read_bounded
    from kfm_ledger.log.keys import read_text_key
    from kfm_ledger.log.ledger import Ledger

    vkey_text = (
        read_text_key(read_bounded(vkey, MAX_KEY_FILE_BYTES, "verifier key file"), str(vkey), kind="verifier key")
        if vkey
        else None
    )
    s3_url = s3_location_of(ledger_dir)
    if s3_url is not None:
        led = open_s3_ledger(s3_url, vkey_text)
    else:
        led = Ledger.open(ledger_dir, vkey=vkey_text)
    if unverified:
        led.verify_reads = False
        echo("kfm: warning: unverified: the rows read were not checked against the signed checkpoint", err=True)
        if out is not None:
            out.unverified = True
    return led


#: The commands that work on an ``s3://`` ledger (docs/s3.md); the others say so and stop.
#: (``energy`` is ``kfm report energy``: the name the command context carries.)
S3_COMMANDS = frozenset(
    {"append", "get", "prove", "verify", "checkpoint", "rebuild", "recover", "export", "rollback", "diff",
     "lineage", "explain", "impact", "energy", "mirror", "query"}
)


def s3_location_of(ledger_dir: Path | str) -> str | None:
    """The ``s3://bucket/prefix`` URL ``--ledger`` / ``$KFM_LEDGER`` names, or None for a directory.

    ``--ledger`` is parsed as a path, which folds ``s3://`` to ``s3:/``: both spellings are read.
    """
    text = str(ledger_dir)
    if text[:4].lower() != "s3:/":
        return None
    return "s3://" + text[4:].lstrip("/")


def _command_name() -> str | None:
    """The name of the command being run (``get``), or None outside a command."""
    try:
        from typer._click.globals import get_current_context  # typer 0.2x carries its own click
    except ImportError:
        try:
            from click import get_current_context  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ImportError:
            return None
    ctx = get_current_context(silent=True)
    return None if ctx is None else ctx.info_name


def open_s3_ledger(url: str, vkey_text: str | None = None) -> Ledger:
    """The S3 ledger at ``url`` (connection settings: ``[s3]`` of ``$KFM_CONFIG``, the ``AWS_*`` environment).

    Only the commands of :data:`S3_COMMANDS` take one; the others get a usage error naming the way round.
    """
    from kfm_ledger.config import load_config, resolve_config_path
    from kfm_ledger.errors import S3LocationError
    from kfm_ledger.log.remote import RemoteLedger
    from kfm_ledger.storage.s3 import S3Storage

    command = _command_name()
    if command is not None and command not in S3_COMMANDS:
        raise S3LocationError(
            f"`kfm {command}` does not work on an s3:// ledger yet; run it on a local copy of the rows: "
            f"`kfm export --ledger {url} --to rows.jsonl` (commands for S3 ledgers: {', '.join(sorted(S3_COMMANDS))})",
            location=url,
            field="command",
        )
    settings = load_config(resolve_config_path(None, None)).s3
    remote = RemoteLedger.open(S3Storage.from_url(url, settings), vkey=vkey_text)
    return cast("Ledger", remote)  # duck-typed: the lookups, proofs and appends of S3_COMMANDS


def handle_errors(fn: F) -> F:
    """Turn library errors into a message on stderr and the documented exit code.

    The command gets this run's :class:`Output` as its ``out`` argument.

    * :class:`KfmError`: its diagnostics, its exit code (1; 3 for a held lock,
      :class:`LockedError`, so that a script can retry instead of raising an alarm).
    * An operating-system error on a file or directory (a missing input file, a
      directory where a file was expected, a ledger directory that cannot be created):
      one line naming the path and why, exit 1.  Only real OS errors (with an errno)
      are caught; anything else is a bug and keeps its traceback.
    * A broken pipe on stdout or stderr (``kfm verify | head -1``): the output was cut
      short, so exit 1 quietly (docs/cli.md), whatever the command would have returned.
    """

    signature = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Output(bool(kwargs.get("json_out")))
        try:
            try:
                return fn(*args, out=out, **kwargs)
            finally:
                # Buffered output (sys.stdout.buffer.write) meets a closed pipe here, not
                # at interpreter exit where it would print "Exception ignored ...".
                sys.stdout.flush()
        except KfmError as e:
            code = e.exit_code  # LockedError: EXIT_LOCKED (3)
            echo(f"kfm: error: {e.diagnostics()}", err=True)
            out.error_json(type(e).__name__, str(e), code, getattr(e, "problems", None), e)
            raise typer.Exit(code) from None
        except BrokenPipeError:
            _silence_standard_streams()
            raise typer.Exit(EXIT_FAILED) from None
        except OSError as e:
            if e.errno is None:  # io.UnsupportedOperation and the like: a programming error
                raise
            echo(f"kfm: error: {describe_os_error(e)}", err=True)
            out.error_json("OSError", describe_os_error(e), EXIT_FAILED)
            raise typer.Exit(EXIT_FAILED) from None
        except Exception as e:
            # SQLite's storage failing (a full disk, an I/O error, a read-only file): the same as an
            # OS error.  Any other SQLite error is a bug and keeps its traceback.
            why = describe_sqlite_storage_error(e)
            if why is None:
                raise
            echo(f"kfm: error: {why}", err=True)
            out.error_json("StorageError", why, EXIT_FAILED)
            raise typer.Exit(EXIT_FAILED) from None

    # typer reads the options from the signature: ``out`` is not one of them.
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "out"]
    )
    return wrapper  # type: ignore[return-value]


#: SQLite's primary result codes for storage that failed (sqlite.org/rescode.html): PERM, READONLY,
#: IOERR, FULL, CANTOPEN, NOLFS.
_SQLITE_STORAGE_CODES = {3: "SQLITE_PERM", 8: "SQLITE_READONLY", 10: "SQLITE_IOERR", 13: "SQLITE_FULL",
                         14: "SQLITE_CANTOPEN", 22: "SQLITE_NOLFS"}


def describe_sqlite_storage_error(error: BaseException) -> str | None:
    """``SQLite storage failed: why (CODE); ...`` for a SQLite error (the commit index, a witness's
    or client's state) whose primary result code says its storage failed; None for any other.
    (sqlite3 is not imported here: only a command that used it can raise its errors.)"""
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is None or not isinstance(error, sqlite3.Error):
        return None
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int) or (code & 0xFF) not in _SQLITE_STORAGE_CODES:
        return None
    name = getattr(error, "sqlite_errorname", None) or _SQLITE_STORAGE_CODES[code & 0xFF]
    return f"SQLite storage failed: {error} ({name}); free space or fix the file system, then run the command again"


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


def _register_all() -> None:
    from . import analytics_cmds, engineer_cmds, export_cmd, ledger_cmds, net_cmds, witness_cmds

    ledger_cmds.register(app)
    export_cmd.register(app)
    engineer_cmds.register(app)
    analytics_cmds.register(app)
    witness_cmds.register(app)
    net_cmds.register(app)


_register_all()


def _not_utf8(args: list[str]) -> str | None:
    """The first argument that was not valid UTF-8 (Python keeps such bytes as lone
    surrogates, which no later step could encode), shown with its bad bytes escaped."""
    for number, arg in enumerate(args, 1):
        if any("\udc80" <= ch <= "\udcff" for ch in arg):
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return f"argument {number} ({shown!r}) is not valid UTF-8; kfm takes UTF-8 text arguments"
    return None


def bundle_without_path(args: list[str]) -> list[str]:
    """``kfm rollback ... --bundle`` with no path after it (last, or followed by another option)
    becomes ``--bundle=`` (:data:`FETCH_BUNDLE`): typer options cannot have an optional value."""
    if "rollback" not in args:
        return args
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--bundle" and (i + 1 == len(out) or (out[i + 1].startswith("-") and out[i + 1] != "-")):
            out[i] = "--bundle=" + FETCH_BUNDLE
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `kfm` console script."""
    args = sys.argv[1:] if argv is None else argv
    problem = _not_utf8(args)
    if problem is not None:
        sys.stderr.write(f"kfm: error: {problem}\n")
        raise SystemExit(EXIT_USAGE)
    app(args=bundle_without_path(args), prog_name="kfm")
