"""The log on the network: ``kfm serve``, ``kfm client prove|check``, ``kfm monitor`` (docs/network.md).

Thin: each command parses options, calls one function of ``kfm_ledger.net`` and prints.  The
network modules are imported inside the commands so that other commands do not pay for them.

Exit codes: 0 ok; 1 a verification failed (bad signature, fork, rollback, a server that lies,
missing quorum), the server could not be reached, or the monitor reported a problem; 2 usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import EXIT_USAGE, JsonFlag, LedgerDir, Output, echo, handle_errors, write_out

if TYPE_CHECKING:  # pragma: no cover
    from ..core.keys import Verifier
    from ..net.client import ClientOptions

UrlOpt = Annotated[str, typer.Option("--url", help="The log's URL prefix (http://HOST:PORT[/PREFIX]).")]
VkeyOpt = Annotated[Path, typer.Option("--vkey", help="The log's verifier key file (the only key trusted).")]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state", help="Where the last verified checkpoint per origin is kept (default: "
                 "$XDG_STATE_HOME/kfm, else ~/.local/state/kfm).", show_default=False),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the server.")]


def _verifier(path: Path, what: str = "verifier key file") -> Verifier:
    from ..core.keys import Verifier
    from ..inputs import MAX_KEY_FILE_BYTES, read_bounded
    from ..log.keys import read_text_key

    text = read_text_key(read_bounded(path, MAX_KEY_FILE_BYTES, what), str(path), kind="verifier key")
    return Verifier.from_vkey(text)


@handle_errors
def serve(
    ledger_dir: LedgerDir = Path("."),
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = "127.0.0.1:8080",
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    vkey: Annotated[
        Path | None, typer.Option("--vkey", help="Verifier key file (default: <ledger>/log.vkey).", show_default=False)
    ] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request to stderr.")] = False,
    *,
    out: Output,
) -> None:
    """Serve the ledger over HTTP: the c2sp.org/tlog-tiles read API plus lookups by commit."""
    from ..net.serve import ServeOptions, parse_listen
    from ..net.serve import serve as run

    parse_listen(listen)
    vkey_text = _verifier(vkey).vkey_text() if vkey else None
    echo(f"kfm serve: {ledger_dir} on http://{listen}/ ({workers} worker(s)); Ctrl-C stops", err=True)
    run(ServeOptions(ledger_dir, listen=listen, workers=workers, vkey=vkey_text, access_log=access_log))


def _options(
    out: Output, url: str, vkey: Path, state: Path | None, witness_vkey: list[Path] | None, quorum: int | None,
    timeout: float,
) -> ClientOptions:
    from ..net.client import ClientOptions
    from ..net.http_client import parse_base_url

    witnesses = tuple(_verifier(p, "witness verifier key file") for p in witness_vkey or ())
    if quorum is not None and quorum > len(witnesses):
        raise out.fail(f"--quorum {quorum} needs at least {quorum} --witness-vkey (given {len(witnesses)})", EXIT_USAGE)
    parse_base_url(url)
    return ClientOptions(url=url, vkey=_verifier(vkey), witnesses=witnesses, quorum=quorum, state_dir=state,
                         timeout=timeout)


WitnessOpt = Annotated[
    list[Path] | None,
    typer.Option("--witness-vkey", help="A witness's cosigner verifier key file (repeatable).", show_default=False),
]
QuorumOpt = Annotated[
    int | None,
    typer.Option("--quorum", min=0, help="Witness cosignatures required (default: every --witness-vkey).",
                 show_default=False),
]


@handle_errors
def client_check(
    url: UrlOpt,
    vkey: VkeyOpt,
    state: StateOpt = None,
    witness_vkey: WitnessOpt = None,
    quorum: QuorumOpt = None,
    timeout: TimeoutOpt = 10.0,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Verify the log's latest checkpoint and its consistency with the one verified last time."""
    from ..net.client import check

    options = _options(out, url, vkey, state, witness_vkey, quorum, timeout)
    result = check(options)
    if json_out:
        out.emit_json(result.to_json())
    else:
        echo(result.describe())


@handle_errors
def client_prove(
    url: UrlOpt,
    vkey: VkeyOpt,
    commit: Annotated[
        str | None, typer.Option("--commit", help="lakeFS commit id or a unique prefix of one.", show_default=False)
    ] = None,
    index: Annotated[
        int | None,
        typer.Option("--index", min=0, help="The entry's leaf index instead (no lookup API needed).",
                     show_default=False),
    ] = None,
    state: StateOpt = None,
    witness_vkey: WitnessOpt = None,
    quorum: QuorumOpt = None,
    timeout: TimeoutOpt = 10.0,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Prove a row from the server's tiles and entries: signature, consistency, inclusion, row."""
    from ..net.client import prove

    if (commit is None) == (index is None):
        raise out.fail("give exactly one of --commit or --index", EXIT_USAGE)
    options = _options(out, url, vkey, state, witness_vkey, quorum, timeout)
    result = prove(options, commit, index=index)
    if json_out:
        out.emit_json(result.to_json())
        return
    cp = result.check.checkpoint.checkpoint
    echo(f"kfm: verified: {result.lakefs_commit} is entry {result.index} of {cp.origin} (tree size {cp.size})",
         err=True)
    write_out(result.line + b"\n\n" + result.tlog_proof)


@handle_errors
def monitor(
    url: UrlOpt,
    vkey: VkeyOpt,
    state: StateOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Poll once; exit 1 if anything was reported wrong.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 60.0,
    max_age: Annotated[
        float | None,
        typer.Option("--max-age", min=0.0, help="Report a checkpoint unchanged for longer than this many seconds.",
                     show_default=False),
    ] = None,
    witness_vkey: WitnessOpt = None,
    quorum: QuorumOpt = None,
    timeout: TimeoutOpt = 10.0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line for each event.")] = False,
    *,
    out: Output,
) -> None:
    """Tail a log over HTTP: consistency of every checkpoint, every new row checked, forks and staleness."""
    from ..net.monitor import Event, Monitor, MonitorOptions

    def emit(event: Event) -> None:
        echo(event.to_json() if json_out else event.to_text())

    client = _options(out, url, vkey, state, witness_vkey, quorum, timeout)
    options = MonitorOptions(url=url, vkey=client.vkey, state_dir=state, max_age=max_age, interval=interval,
                             timeout=timeout, witnesses=client.witnesses, quorum=quorum)
    options.policy()  # a bad witness key or quorum: an error before the first poll
    if json_out:
        out.mark_json_emitted()  # from here on the events are the output (no error document)
    try:
        code = Monitor(options, emit).run(once=once)
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    client = typer.Typer(name="client", help="A trustless client of a log served by `kfm serve` (or any "
                         "c2sp.org/tlog-tiles log with kfm's lookup API).", no_args_is_help=True,
                         rich_markup_mode=None)
    client.command("prove")(client_prove)
    client.command("check")(client_check)
    app.add_typer(client, name="client")
    app.command("monitor")(monitor)
