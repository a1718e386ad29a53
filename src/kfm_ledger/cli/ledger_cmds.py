"""Core ledger commands: init, keygen, append, get, prove, verify-proof, verify, checkpoint,
rebuild, recover, schema, demo."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ..errors import KfmError
from . import (
    EXIT_USAGE,
    JsonFlag,
    LedgerDir,
    Output,
    Unverified,
    aliased,
    describe_os_error,
    echo,
    handle_errors,
    open_ledger,
    s3_location_of,
    write_out,
)
from .deep_cmds import (
    AllowUnsupportedFlag,
    AllRowsFlag,
    CacheOpt,
    ConfigOpt,
    ConfigsDirOpt,
    DeepFlag,
    append_deep_cmd,
    load_kfm_config,
    needs_deep,
    print_deep_report,
)
from .progress import QuietFlag, progress_reporter

KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key",
        envvar="KFM_KEY",
        help="Signing key file (Go sumdb/note PRIVATE+KEY+... text). Default: $KFM_KEY, else <ledger>/log.key.",
        show_default=False,
    ),
]
VkeyFile = Annotated[
    Path | None,
    typer.Option("--vkey", help="Verifier key file (default: <ledger>/log.vkey).", show_default=False),
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()



def _signer(ledger, key: Path | None):  # -> Signer
    from ..log.keys import default_signer

    return default_signer(ledger.storage, key)


def _checkpoint_json(signed) -> dict[str, object]:
    cp = signed.checkpoint
    return {
        "origin": cp.origin,
        "tree_size": cp.size,
        "size": cp.size,  # alias of tree_size, one release
        "root": _b64(cp.root),
        "note": signed.note.decode(),
    }


# ----------------------------------------------------------------- commands


@handle_errors
def init(
    origin: Annotated[str, typer.Option("--origin", help="The log's origin line; also the key name.")],
    ledger_dir: LedgerDir = Path("."),
    key: Annotated[
        Path | None, typer.Option("--key", help="Use this existing signing key instead of generating log.key.")
    ] = None,
    key_out: Annotated[
        Path | None,
        typer.Option("--key-out", help="Write the new signing key to this file (mode 0600) instead of "
                     "<ledger>/log.key (an s3:// ledger needs --key or --key-out).", show_default=False),
    ] = None,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Create a ledger: empty JSONL, log.vkey, log.key (mode 0600) and the signed size-0 checkpoint."""
    from ..log.keys import load_signer_file
    from ..log.ledger import Ledger

    if key is not None and key_out is not None:
        raise out.fail("give at most one of --key and --key-out", EXIT_USAGE)
    if s3_location_of(ledger_dir) is not None:
        from .s3_init import init_s3

        init_s3(s3_location_of(ledger_dir) or "", origin, key, key_out, json_out=json_out, out=out)
        return
    if key_out is not None:
        from .s3_init import new_key_file

        key = new_key_file(key_out, origin)
    signer = load_signer_file(key) if key else None  # a regular file only its owner may read
    try:
        ledger_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise out.fail(f"cannot create the ledger directory {ledger_dir}: {e.strerror or e}") from None
    led = Ledger.init(ledger_dir, origin=origin, signer=signer, store_key=key is None)
    if json_out:
        out.emit_json(
            {
                "ledger": str(ledger_dir),
                "vkey": led.verifier.vkey_text(),
                "checkpoint": _checkpoint_json(led.checkpoint),
            }
        )
    else:
        echo(f"created ledger {ledger_dir} for origin {origin}")
        echo(f"verifier key: {led.verifier.vkey_text()}")
        echo("signing key: " + (str(key) if key else f"{ledger_dir / 'log.key'} (mode 0600)"))


@handle_errors
def keygen(
    name: Annotated[str, typer.Argument(help="Key name (for a log: its origin).")],
    key_file: Annotated[Path, typer.Option("--key-file", help="Where to write the private key (mode 0600).")] = Path(
        "log.key"
    ),
    vkey_file: Annotated[Path, typer.Option("--vkey-file", help="Where to write the verifier key.")] = Path("log.vkey"),
    cosignature: Annotated[
        bool, typer.Option("--cosignature", help="A witness key for c2sp.org/tlog-cosignature (type 0x04).")
    ] = False,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Generate an Ed25519 key pair in Go's sumdb/note text formats. The private key is never printed.

    Refuses (exit 1) if either file exists: keys are never overwritten.
    """
    from kfm_ledger.core.cosignature import CosignatureSigner
    from kfm_ledger.core.keys import Signer

    from ..log.keys import write_key_pair

    # Refuse before writing anything: a half-written pair (new private key, old verifier
    # key) would not match.  O_EXCL below closes the race for the private key.
    for path in (key_file, vkey_file):
        if os.path.lexists(path):
            raise out.fail(f"{path} exists; refusing to overwrite a key file")
    signer = CosignatureSigner.generate(name) if cosignature else Signer.generate(name)
    vkey = signer.verifier().vkey_text()
    write_key_pair(key_file, vkey_file, signer.private_key_text(), vkey)
    if json_out:
        out.emit_json({"name": name, "vkey": vkey, "key_file": str(key_file), "vkey_file": str(vkey_file)})
    else:
        echo(f"wrote {key_file} (mode 0600) and {vkey_file}")
        echo(f"verifier key: {vkey}")


@handle_errors
def append(
    file: Annotated[str, typer.Argument(help="Input: one JSON object, a JSON array, or JSONL; '-' for stdin.")],
    ledger_dir: LedgerDir = Path("."),
    key: KeyFile = None,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for another writer's lock.")] = 10.0,
    mirror: Annotated[bool, typer.Option("--mirror", help="Regenerate the Parquet mirror afterwards.")] = False,
    witness: Annotated[
        bool, typer.Option("--witness", help="Then send the new checkpoint to the [[witness]]es of kfm.toml.")
    ] = False,
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
    deep: Annotated[bool, typer.Option("--deep", help="Run the supply-chain checks on the new rows first; a batch "
                                       "with a failing row is refused whole (docs/supply-chain.md).")] = False,
    allow_unsupported: AllowUnsupportedFlag = False,
    configs_dir: ConfigsDirOpt = None,
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    *,
    out: Output,
) -> None:
    """Validate rows and append them under a new signed checkpoint (all or nothing)."""
    needs_deep(out, deep, allow_unsupported=allow_unsupported, configs=configs_dir, cache=cache)
    led = open_ledger(ledger_dir)
    if witness:
        from .witness_cmds import load_witnesses

        load_witnesses(out, ledger_dir, config)  # a usage error before anything is appended
    if mirror and getattr(led, "is_remote", False):
        raise out.fail("--mirror: an s3:// ledger has no Parquet mirror in its bucket (write one to a local "
                       "file with `kfm mirror --out FILE`)", EXIT_USAGE)
    signer = _signer(led, key)
    deep_report = None
    with progress_reporter("append --deep" if deep else "append", "rows" if deep else "bytes",
                           quiet=quiet) as progress:
        if deep:
            result, deep_report = append_deep_cmd(out, led, file, signer, load_kfm_config(config, ledger_dir), wait,
                                                  configs_dir, cache, allow_unsupported, progress)
        elif file == "-":
            # Spool standard input so a large batch streams like a file.
            import shutil
            import tempfile

            with tempfile.NamedTemporaryFile(prefix="kfm-stdin-") as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
                spool.flush()
                result = led.append_file(spool.name, signer=signer, wait=wait, progress=progress)
        else:
            result = led.append_file(file, signer=signer, wait=wait, progress=progress)
    from ..mirror import mirror_after_append

    with progress_reporter("append: mirror", "rows", quiet=quiet or not mirror) as progress:
        mirror_state = mirror_after_append(led, regenerate=mirror, progress=progress)
    cp = result.checkpoint.checkpoint
    pushed = None
    if witness:
        from .witness_cmds import push_and_report

        pushed = push_and_report(out, led, ledger_dir, config, 10.0, json_out)
    if json_out:
        doc: dict[str, object] = {
            "appended": result.count,
            "first_index": result.first_index,
            "recovered": result.recovered,
            "checkpoint": _checkpoint_json(led.checkpoint if witness else result.checkpoint),
            "mirror": mirror_state,
        }
        if pushed is not None:
            doc["witnesses"] = [r.to_json() for r in pushed]
        if deep_report is not None:
            doc["deep"] = deep_report.to_json()
        out.emit_json(doc, ok=pushed is None or all(r.ok for r in pushed))
    else:
        if deep_report is not None:
            echo(deep_report.render_text())
        if result.recovered:
            echo(f"recovered {result.recovered} row(s) left by an interrupted append")
        echo(
            f"appended {result.count} row(s) at index {result.first_index}..{result.first_index + result.count - 1}; "
            f"signed tree size {cp.size}, root {_b64(cp.root)}"
        )
        if mirror_state == "stale":
            echo(
                "note: the Parquet mirror now mirrors an older tree; run `kfm mirror` to refresh it "
                "(or append with --mirror)"
            )
    if pushed is not None and not all(r.ok for r in pushed):
        echo("kfm: error: the rows ARE appended and signed, but a witness did not cosign; "
             "retry with `kfm witness-push`", err=True)
        raise typer.Exit(1)


@handle_errors
def get(
    commit: Annotated[str | None, typer.Option("--commit", help="lakeFS commit id or unique prefix.")] = None,
    index: Annotated[int | None, typer.Option("--index", min=0, help="Leaf index (0-based).")] = None,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    unverified: Unverified = False,
    *,
    out: Output,
) -> None:
    """Print a row: its stored canonical line (usable as --entry for verify-proof)."""
    from kfm_ledger.core.merkle import leaf_hash

    if (commit is None) == (index is None):
        raise out.fail("give exactly one of --commit or --index", EXIT_USAGE)
    led = open_ledger(ledger_dir, unverified=unverified, out=out)
    entry = led.get(commit) if commit is not None else led.entry(index)  # type: ignore[arg-type]
    if json_out:
        out.emit_json(
            {
                "index": entry.index,
                "lakefs_commit": entry.row.lakefs_commit,
                "leaf_hash": _b64(leaf_hash(entry.line)),
                "row": json.loads(entry.line),
            }
        )
    else:
        write_out(entry.line + b"\n")


@handle_errors
def prove(
    commit: Annotated[
        str | None, typer.Option("--commit", help="Inclusion proof for this commit (or unique prefix).")
    ] = None,
    index: Annotated[int | None, typer.Option("--index", min=0, help="Inclusion proof for this leaf index.")] = None,
    size: Annotated[
        int | None, typer.Option("--size", min=0, help="Tree size of a signed checkpoint (default: latest).")
    ] = None,
    from_size: Annotated[
        int | None, typer.Option("--from", min=0, help="Consistency proof from this tree size (at least 1).")
    ] = None,
    to_size: Annotated[
        int | None, typer.Option("--to", min=0, help="Consistency proof to this tree size (default: latest).")
    ] = None,
    ledger_dir: LedgerDir = Path("."),
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Inclusion proof as a c2sp.org/tlog-proof, or a consistency proof (one base64 hash a line)."""
    from kfm_ledger.core.merkle import leaf_hash
    from kfm_ledger.core.tlogproof import format_tlog_proof

    inclusion = commit is not None or index is not None
    if inclusion == (from_size is not None) or (commit is not None and index is not None):
        raise out.fail("give --commit or --index (inclusion), or --from (consistency)", EXIT_USAGE)
    if from_size == 0:
        # RFC 9162 §2.1.4 defines proofs for 0 < m <= n only; an empty "proof" from the
        # empty tree would prove nothing.
        raise out.fail("a consistency proof from the empty tree (--from 0) is not defined; use --from 1 or more")
    led = open_ledger(ledger_dir)
    if inclusion:
        if to_size is not None:
            raise out.fail("--to goes with --from; use --size for an inclusion proof", EXIT_USAGE)
        entry = led.get(commit) if commit is not None else led.entry(index)  # type: ignore[arg-type]
        proof = led.tlog_proof(entry.index, size)
        if json_out:
            signed = led.stored_checkpoint(size if size is not None else led.size)
            out.emit_json(
                {
                    "index": entry.index,
                    "tree_size": signed.checkpoint.size,
                    "size": signed.checkpoint.size,  # alias of tree_size, one release
                    "root": _b64(signed.checkpoint.root),
                    "lakefs_commit": entry.row.lakefs_commit,
                    "leaf_hash": _b64(leaf_hash(entry.line)),
                    "proof": [_b64(h) for h in proof.hashes],
                    "checkpoint": _checkpoint_json(signed),
                    "tlog_proof": format_tlog_proof(proof).decode(),
                }
            )
        else:
            write_out(format_tlog_proof(proof))
        return
    if size is not None:
        raise out.fail("--size goes with an inclusion proof; use --to", EXIT_USAGE)
    new_size = led.size if to_size is None else to_size
    hashes = led.consistency_proof(from_size, new_size)  # type: ignore[arg-type]
    if json_out:
        signed_sizes = set(led.checkpoint_sizes())
        old = led.stored_checkpoint(from_size) if from_size in signed_sizes else None
        new = led.stored_checkpoint(new_size) if new_size in signed_sizes else None
        out.emit_json(
            {
                "old_size": from_size,
                "tree_size": new_size,
                "new_size": new_size,  # alias of tree_size, one release
                "old_root": _b64(old.checkpoint.root) if old else None,
                "root": _b64(new.checkpoint.root) if new else None,
                "new_root": _b64(new.checkpoint.root) if new else None,  # alias of root, one release
                "proof": [_b64(h) for h in hashes],
            }
        )
    else:
        for h in hashes:
            echo(_b64(h))


@handle_errors
def verify_proof(
    proof_file: Annotated[Path, typer.Argument(metavar="PROOF", help="A c2sp.org/tlog-proof file.")],
    vkey: Annotated[Path, typer.Option("--vkey", help="The log's verifier key file.")],
    entry: Annotated[
        Path, typer.Option("--entry", help="The entry's bytes (one stored line; a final newline is ignored).")
    ],
    origin: Annotated[str | None, typer.Option("--origin", help="Require this origin.")] = None,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Check a tlog-proof offline: the checkpoint's signature first, then the inclusion path."""
    from kfm_ledger.core.keys import Verifier
    from kfm_ledger.core.tlogproof import verify_tlog_proof

    from ..inputs import MAX_ENTRY_FILE_BYTES, MAX_KEY_FILE_BYTES, MAX_PROOF_FILE_BYTES, read_bounded
    from ..log.keys import read_text_key

    vkey_data = read_bounded(vkey, MAX_KEY_FILE_BYTES, "verifier key file")
    verifiers = [Verifier.from_vkey(read_text_key(vkey_data, str(vkey), kind="verifier key"))]
    data = read_bounded(entry, MAX_ENTRY_FILE_BYTES, "entry file")
    if data.endswith(b"\n"):
        data = data[:-1]
    proof = read_bounded(proof_file, MAX_PROOF_FILE_BYTES, "tlog-proof file")
    checkpoint, index = verify_tlog_proof(proof, data, verifiers, origin=origin)
    if json_out:
        out.emit_json(
            {
                "ok": True,
                "origin": checkpoint.origin,
                "index": index,
                "tree_size": checkpoint.size,
                "size": checkpoint.size,  # alias of tree_size, one release
                "root": _b64(checkpoint.root),
            }
        )
    else:
        echo(
            f"OK: entry is leaf {index} of {checkpoint.origin} at tree size {checkpoint.size} "
            f"(root {_b64(checkpoint.root)}), signature and path verified"
        )


@handle_errors
def verify(
    ledger_dir: LedgerDir = Path("."),
    since: Annotated[
        Path | None, typer.Option("--since", help="A checkpoint saved earlier: prove the ledger extends it.")
    ] = None,
    vkey: VkeyFile = None,
    no_mirror: Annotated[bool, typer.Option("--no-mirror", help="Skip the Parquet mirror check.")] = False,
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
    deep: DeepFlag = False,
    commit: Annotated[str | None, typer.Option("--commit", help="With --deep: only this row (commit id or "
                                               "unique prefix).", show_default=False)] = None,
    all_rows: AllRowsFlag = False,
    allow_unsupported: AllowUnsupportedFlag = False,
    configs_dir: ConfigsDirOpt = None,
    cache: CacheOpt = None,
    config: ConfigOpt = None,
    *,
    out: Output,
) -> None:
    """Verify the whole ledger in one streaming pass; exit 0 only when everything holds.

    With --deep: the supply-chain checks of what the rows point at instead (docs/supply-chain.md)."""
    from ..inputs import MAX_NOTE_FILE_BYTES, InputFileError, read_bounded
    from ..verify import verify_ledger

    needs_deep(out, deep, commit=commit, all_rows=all_rows, allow_unsupported=allow_unsupported,
               configs=configs_dir, cache=cache)
    if deep:
        _verify_deep(out, ledger_dir, since, vkey, commit, all_rows, allow_unsupported, configs_dir, cache, config,
                     json_out, quiet)
        return

    try:
        since_note = read_bounded(since, MAX_NOTE_FILE_BYTES, "checkpoint file") if since else None
    except OSError as e:
        if not json_out or e.errno is None:
            raise
        _verify_failed_json(out, "since", describe_os_error(e))
    except InputFileError as e:
        if not json_out:
            raise
        _verify_failed_json(out, "since", str(e))
    try:
        led = open_ledger(ledger_dir, vkey)
    except (KfmError, OSError) as e:
        if not json_out or (isinstance(e, OSError) and e.errno is None):
            raise
        _verify_failed_json(out, "open", e.diagnostics() if isinstance(e, KfmError) else describe_os_error(e))

    witnesses = _witness_keys(ledger_dir, config)
    with progress_reporter("verify", "bytes", quiet=quiet) as progress:
        report = verify_ledger(
            led, since=since_note, check_mirror=not no_mirror, progress=progress, witnesses=witnesses
        )
    if json_out:
        out.emit_json(aliased(report.to_json(), {"size": "tree_size"}))
    else:
        for f in report.failures:
            echo(f"FAIL {f}", err=True)
        if report.failures_truncated:
            echo(f"FAIL ... and {report.failures_truncated} more", err=True)
        for note in report.notes:
            echo(f"note: {note}")
        status = "OK" if report.ok else f"FAILED ({len(report.failures) + report.failures_truncated} problem(s))"
        echo(
            f"{status}: {report.rows_checked} rows, {report.checkpoints_checked} signed checkpoints, "
            f"{report.tiles_checked} tiles checked; tree size {report.size}, root {_b64(report.root)}"
            + (", mirror checked" if report.mirror_checked else "")
        )
    if not report.ok:
        raise typer.Exit(1)


def _witness_keys(ledger_dir: Path, config: Path | None) -> list:  # -> list[Verifier]
    """The [[witness]] verifier keys of kfm.toml (none without a configuration file)."""
    from kfm_ledger.core.keys import Verifier

    from ..config import load_config, resolve_config_path

    return [Verifier.from_vkey(w.vkey) for w in load_config(resolve_config_path(config, ledger_dir)).witnesses]
def _verify_deep(out: Output, ledger_dir: Path, since: Path | None, vkey: Path | None, commit: str | None,
                 all_rows: bool, allow_unsupported: bool, configs_dir: Path | None, cache: Path | None,
                 config: Path | None, json_out: bool, quiet: bool) -> None:
    """``kfm verify --deep``: :func:`kfm_ledger.verify.deep.verify_deep`, printed."""
    from ..inputs import MAX_NOTE_FILE_BYTES, read_bounded
    from ..verify.deep import verify_deep

    if since is not None and commit is not None:
        raise out.fail("give at most one of --since and --commit", EXIT_USAGE)
    since_note = read_bounded(since, MAX_NOTE_FILE_BYTES, "checkpoint file") if since else None
    led = open_ledger(ledger_dir, vkey)
    cfg = load_kfm_config(config, ledger_dir)
    with progress_reporter("verify --deep", "rows", quiet=quiet) as progress:
        report = verify_deep(led, cfg, since=since_note, commit=commit, configs_dir=configs_dir, cache_dir=cache,
                             allow_unsupported=allow_unsupported, progress=progress)
    print_deep_report(out, report, all_rows=all_rows, json_out=json_out)


def _verify_failed_json(out: Output, where: str, message: str) -> NoReturn:
    """`verify --json` when verification could not start: still one JSON document, exit 1."""
    from ..verify import VerifyReport

    out.emit_json(aliased(VerifyReport.not_started_json(where, message), {"size": "tree_size"}), ok=False)
    raise out.fail(message)


@handle_errors
def checkpoint(
    ledger_dir: LedgerDir = Path("."),
    size: Annotated[int | None, typer.Option("--size", min=0, help="A stored checkpoint's tree size.")] = None,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Print the latest signed checkpoint (save it for `kfm verify --since`)."""
    led = open_ledger(ledger_dir)
    signed = led.stored_checkpoint(led.size if size is None else size)
    if json_out:
        out.emit_json(_checkpoint_json(signed))
    else:
        write_out(signed.note)


@handle_errors
def rebuild(
    ledger_dir: LedgerDir = Path("."), json_out: JsonFlag = False, quiet: QuietFlag = False, *, out: Output
) -> None:
    """Recreate the commit index and every tile from the JSONL; they must match the signed checkpoint."""
    led = open_ledger(ledger_dir)
    with progress_reporter("rebuild", "percent", quiet=quiet) as progress:
        rows = led.rebuild(progress=progress)
    if json_out:
        out.emit_json({"rows": rows, "tree_size": led.size, "size": led.size, "root": _b64(led.root)})
    else:
        what = "this machine's commit index" if getattr(led, "is_remote", False) else "the index and tiles"
        echo(f"rebuilt {what} from {rows} rows; root matches the signed checkpoint")


@handle_errors
def recover(ledger_dir: LedgerDir = Path("."), json_out: JsonFlag = False, *, out: Output) -> None:
    """Finish or undo an interrupted append (publish what the log signed, remove what it did not); never signs."""
    led = open_ledger(ledger_dir)
    report = led.recover()
    if json_out:
        out.emit_json(
            {
                "bytes_rolled_back": report.bytes_rolled_back,
                "rows_rolled_forward": report.rows_rolled_forward,
                "tree_size": report.size,
                "size": report.size,  # alias of tree_size, one release
                "temporaries_removed": list(report.temporaries_removed),
            }
        )
    else:
        echo(
            f"recovered: rolled back {report.bytes_rolled_back} byte(s) of an unsigned append, rolled forward "
            f"{report.rows_rolled_forward} row(s) of a signed one; "
            f"signed tree size {report.size}"
            + (
                f"; removed {len(report.temporaries_removed)} temporary file(s) left by interrupted writes"
                if report.temporaries_removed
                else ""
            )
        )


@handle_errors
def schema_cmd(
    json_out: Annotated[
        bool, typer.Option("--json", help="Accepted for symmetry: the schema is printed as JSON either way.")
    ] = False,
    *,
    out: Output,
) -> None:
    """Print the row's JSON Schema (draft 2020-12); it is JSON with or without --json."""
    from ..schema import row_json_schema

    out.emit_json(row_json_schema(), envelope=False)  # a JSON Schema document, not a kfm envelope


@handle_errors
def demo(
    directory: Annotated[
        Path | None, typer.Argument(help="Where to create the demo ledger (default: a new temporary directory).")
    ] = None,
    rows: Annotated[int, typer.Option("--rows", min=2, help="Sample rows to append (in two batches).")] = 100,
    json_out: JsonFlag = False,
    *,
    out: Output,
) -> None:
    """Create a ledger, append sample rows, prove and verify, and say what happened."""
    from ..demo import run_demo

    result = run_demo(directory, rows=rows, say=(lambda _: None) if json_out else typer.echo)
    if json_out:
        out.emit_json(aliased(result.to_json(), {"size": "tree_size"}), ok=result.report.ok)
    else:
        where = result.ledger
        echo(f"try: kfm get --ledger {where} --commit {result.proven_commit[:10]}")
        echo(f"     kfm verify-proof {result.proof_file} --vkey {where / 'log.vkey'} --entry {result.entry_file}")
    if not result.report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("keygen")(keygen)
    app.command("append")(append)
    app.command("get")(get)
    app.command("prove")(prove)
    app.command("verify-proof")(verify_proof)
    app.command("verify")(verify)
    app.command("checkpoint")(checkpoint)
    app.command("rebuild")(rebuild)
    app.command("recover")(recover)
    app.command("schema")(schema_cmd)
    app.command("demo")(demo)
