"""``kfm init`` on an ``s3://`` ledger, and ``--key-out`` (a new signing key in a local file)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import EXIT_USAGE, Output, echo


def new_key_file(path: Path, origin: str) -> Path:
    """Generate an Ed25519 signing key named ``origin`` into a new file ``path`` (mode 0600); its path.

    Refuses (exit 1) an existing file: a key is never overwritten.
    """
    from kfm_ledger.core.keys import Signer
    from kfm_ledger.log.keys import write_private_key_file

    if os.path.lexists(path):
        raise Output().fail(f"{path} exists; refusing to overwrite a key file")
    write_private_key_file(path, Signer.generate(origin).private_key_text() + "\n")
    return path


def init_s3(url: str, origin: str, key: Path | None, key_out: Path | None, *, json_out: bool, out: Output) -> None:
    """Create an S3 ledger: the key stays local (``--key`` or a new ``--key-out`` file), the bucket gets the rest."""
    from kfm_ledger.config import load_config, resolve_config_path
    from kfm_ledger.log.keys import load_signer_file
    from kfm_ledger.log.remote import RemoteLedger
    from kfm_ledger.storage.s3 import S3Storage

    if key is None and key_out is None:
        raise out.fail(
            "an s3:// ledger needs --key FILE (an existing signing key) or --key-out FILE (a new one is written "
            "there, mode 0600): the signing key never goes to the bucket",
            EXIT_USAGE,
        )
    storage = S3Storage.from_url(url, load_config(resolve_config_path(None, None)).s3)
    created = key is None
    path = key if key is not None else new_key_file(key_out or Path(), origin)
    try:
        led = RemoteLedger.init(storage, origin=origin, signer=load_signer_file(path))
    except BaseException:
        if created:  # nothing signed with it: a fresh key that no ledger uses goes again
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    if json_out:
        from .ledger_cmds import _checkpoint_json

        out.emit_json({"ledger": url, "vkey": led.verifier.vkey_text(), "key_file": str(path),
                       "checkpoint": _checkpoint_json(led.checkpoint)})
    else:
        echo(f"created ledger {url} for origin {origin}")
        echo(f"verifier key: {led.verifier.vkey_text()} (also {url}/log.vkey)")
        echo(f"signing key: {path} (keep it off the bucket; pass it to writers with --key or KFM_KEY)")
    led.close()
