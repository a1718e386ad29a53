"""``kfm export``: the ledger's rows as the JSONL file, proven against the signed checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from . import EXIT_USAGE, JsonFlag, LedgerDir, Output, echo, handle_errors, open_ledger

if TYPE_CHECKING:
    from kfm_ledger.log.ledger import Ledger
    from kfm_ledger.log.remote import RemoteLedger


@handle_errors
def export(
    ledger_dir: LedgerDir = Path("."),
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Write the JSONL to this file (default: standard output).", show_default=False),
    ] = None,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Write rollback-index.jsonl: every row, proven against the signed checkpoint (local or s3:// ledger).

    The bytes are those a local ledger holds after the same appends.  With --to the file is
    written whole to a temporary file beside it and renamed: it never holds a partial export.
    """
    if json_out and to is None:
        raise out.fail("--json needs --to FILE (without it the rows themselves go to standard output)", EXIT_USAGE)
    led = open_ledger(ledger_dir)
    try:
        if to is None:
            rows = _write(led, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            rows = _write_file(led, to)
    finally:
        led.close()
    if to is not None:
        if json_out:
            out.emit_json({"rows": rows, "to": str(to), "tree_size": led.size, "root": _b64(led.root)})
        else:
            echo(f"exported {rows} row(s) to {to}; tree size {led.size}, proven against the signed checkpoint")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _write(led: Ledger | RemoteLedger, stream: IO[bytes]) -> int:
    from kfm_ledger.log.remote import RemoteLedger

    if isinstance(led, RemoteLedger):  # streams its bundles, checked against the signed root
        return led.export(stream)
    rows = 0
    for line in led.iter_lines():  # proven: the root is checked before the last row is handed out
        stream.write(line + b"\n")
        rows += 1
    return rows


def _write_file(led: Ledger | RemoteLedger, to: Path) -> int:
    from ..outputs import write_file_atomic

    return write_file_atomic(to, lambda f: _write(led, f))


def register(app: typer.Typer) -> None:
    app.command("export")(export)
