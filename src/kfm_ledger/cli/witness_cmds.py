"""Witness commands (docs/witness.md): ``kfm witness init``, ``kfm witness serve`` (a
c2sp.org/tlog-witness witness) and ``kfm witness-push`` (the log side).

Thin: each command calls :mod:`kfm_ledger.witness` and prints.  Exit codes: 0 ok; 1 a witness
refused or could not be reached (witness-push), a key or state problem; 2 usage (no witness
configured, a bad ``--listen``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import EXIT_FAILED, EXIT_USAGE, JsonFlag, LedgerDir, Output, echo, handle_errors, open_ledger

if TYPE_CHECKING:  # pragma: no cover
    from ..log.ledger import Ledger
    from ..witness.push import PushResult

witness_app = typer.Typer(
    name="witness",
    help="Run a c2sp.org/tlog-witness witness that cosigns checkpoints of the logs it follows.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="kfm.toml with [[witness]] entries (default: $KFM_CONFIG, else <ledger>/kfm.toml).",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each witness.")]


@handle_errors
def witness_init(
    name: Annotated[str, typer.Option("--name", help="The witness's key name (a schema-less URL).")],
    key_out: Annotated[
        Path, typer.Option("--key-out", help="Where to write the private cosigning key (mode 0600).")
    ] = Path("witness.key"),
    vkey_out: Annotated[
        Path | None,
        typer.Option("--vkey-out", help="Where to write the verifier key (default: KEY-OUT with suffix .vkey).",
                     show_default=False),
    ] = None,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Generate the witness's Ed25519 cosigning key (c2sp.org/tlog-cosignature, type 0x04); print its verifier key.

    Refuses (exit 1) if either file exists. The private key is never printed.
    """
    from ..witness.server import init_witness_key

    try:
        files = init_witness_key(name, key_out, vkey_out)
    except FileExistsError as e:
        raise out.fail(f"{e.filename} exists; refusing to overwrite a key file") from None
    if json_out:
        out.emit_json({"name": name, "vkey": files.vkey, "key_file": str(files.key_file),
                       "vkey_file": str(files.vkey_file)})
    else:
        echo(f"wrote {files.key_file} (mode 0600) and {files.vkey_file}")
        echo(f"verifier key: {files.vkey}")


@handle_errors
def witness_serve(
    state: Annotated[Path, typer.Option("--state", help="Directory of the witness's state (witness.sqlite).")],
    key: Annotated[Path, typer.Option("--key", help="The witness's private cosigning key file (mode 0600).")],
    log: Annotated[
        list[str],
        typer.Option("--log", metavar="ORIGIN=VKEYFILE",
                     help="A log to witness and its verifier key file. Repeatable."),
    ],
    listen: Annotated[str, typer.Option("--listen", metavar="HOST:PORT",
                                        help="Where to listen (port 0: any free port).")] = (
        "127.0.0.1:7380"
    ),
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn's log level (critical, error, warning, info, debug).")
    ] = "warning",
    *,
    out: Output,
) -> None:
    """Serve POST /add-checkpoint (and GET /<origin hash>/checkpoint) until interrupted."""
    from ..witness.server import load_cosigner, load_log_keys, parse_listen, serve

    try:
        parse_listen(listen)
    except ValueError as e:
        raise out.fail(str(e), EXIT_USAGE) from None
    if not log:
        raise out.fail("give at least one --log ORIGIN=VKEYFILE", EXIT_USAGE)
    signer = load_cosigner(key)
    logs = load_log_keys(log)
    vkey = signer.verifier().vkey_text()

    def announce(url: str) -> None:
        echo(f"kfm witness {signer.name} listening on {url} ({len(logs)} log(s)); verifier key: {vkey}")

    serve(listen=listen, state_dir=state, logs=logs, signer=signer, announce=announce, log_level=log_level)


@handle_errors
def witness_state(
    state: Annotated[Path, typer.Option("--state", help="Directory of the witness's state (witness.sqlite).")],
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Print what the witness holds: per log, the latest cosigned size and root, and refused requests kept."""
    import base64
    import datetime

    from ..witness.state import STATE_FILE, WitnessState

    if not (state / STATE_FILE).is_file():
        raise out.fail(f"no witness state in {state} (no {STATE_FILE})")
    store = WitnessState(state)
    try:
        rows = store.summary()
    finally:
        store.close()
    if json_out:
        out.emit_json({"logs": [
            {"origin": r.origin, "tree_size": r.size, "root": base64.b64encode(r.root).decode(),
             "updated_at": r.updated_at, "refusals": r.refusals}
            for r in rows
        ]})
        return
    if not rows:
        echo("no checkpoint cosigned yet")
    for r in rows:
        when = datetime.datetime.fromtimestamp(r.updated_at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        echo(f"{r.origin}: tree size {r.size}, root {base64.b64encode(r.root).decode()}, cosigned {when}"
             + (f"; {r.refusals} refused request(s) kept" if r.refusals else ""))


def load_witnesses(out: Output, ledger_dir: Path, config: Path | None):  # -> tuple[WitnessEndpoint, ...]
    from ..config import load_config, resolve_config_path

    path = resolve_config_path(config, ledger_dir)
    witnesses = load_config(path).witnesses
    if not witnesses:
        where = str(path) if path is not None else f"{ledger_dir / 'kfm.toml'} (absent)"
        raise out.fail(f"no [[witness]] entries in {where}: add url and vkey for each witness", EXIT_USAGE)
    return witnesses


def push_and_report(out: Output, led: Ledger, ledger_dir: Path, config: Path | None, timeout: float,
                    json_out: bool) -> list[PushResult]:
    """Push the ledger's checkpoint to the configured witnesses; print one line each (text mode)."""
    from ..witness.push import push_checkpoint

    results = push_checkpoint(led, load_witnesses(out, ledger_dir, config), timeout=timeout)
    if not json_out:
        for r in results:
            if r.ok:
                echo(f"witness {r.witness} ({r.url}) cosigned tree size {r.size} (proof from size {r.old_size})")
            else:
                echo(f"kfm: error: witness {r.witness} ({r.url}): {r.error}", err=True)
    return results


@handle_errors
def witness_push(
    ledger_dir: LedgerDir = Path("."),
    config: ConfigOpt = None,
    timeout: TimeoutOpt = 10.0,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Send the latest checkpoint to every [[witness]] of kfm.toml and keep their cosignatures with it."""
    led = open_ledger(ledger_dir)
    results = push_and_report(out, led, ledger_dir, config, timeout, json_out)
    ok = all(r.ok for r in results)
    if json_out:
        out.emit_json({"tree_size": led.size, "witnesses": [r.to_json() for r in results]}, ok=ok)
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    witness_app.command("init")(witness_init)
    witness_app.command("serve")(witness_serve)
    witness_app.command("state")(witness_state)
    app.add_typer(witness_app, name="witness")
    app.command("witness-push")(witness_push)
