"""Running a witness: its key files, the logs it follows, and the uvicorn server.

``kfm witness init`` and ``kfm witness serve`` are thin wrappers over :func:`init_witness_key`,
:func:`load_log_keys`, :func:`load_cosigner` and :func:`serve`.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import ALG_ED25519, Verifier
from kfm_ledger.errors import KeyFormatError, KfmError, MissingExtraError
from kfm_ledger.inputs import MAX_KEY_FILE_BYTES, read_bounded

from .state import WitnessState

__all__ = ["WitnessKeyFiles", "init_witness_key", "load_cosigner", "load_log_keys", "parse_listen", "serve"]


@dataclass(frozen=True)
class WitnessKeyFiles:
    """What :func:`init_witness_key` wrote."""

    key_file: Path
    vkey_file: Path
    vkey: str


def init_witness_key(name: str, key_file: Path, vkey_file: Path | None = None) -> WitnessKeyFiles:
    """Generate the witness's Ed25519 cosigning key (c2sp.org/tlog-cosignature, type 0x04):
    ``key_file`` (mode 0600, ``PRIVATE+KEY+<name>+<id>+<base64(0x04 || seed)>``) and its verifier
    key ``<name>+<id>+<base64(0x04 || public key)>`` in ``vkey_file`` (default: ``key_file``
    with the suffix ``.vkey``).  Neither file may exist (FileExistsError)."""
    from kfm_ledger.log.keys import write_key_pair

    vkey_file = vkey_file if vkey_file is not None else key_file.with_suffix(".vkey")
    for path in (key_file, vkey_file):
        if os.path.lexists(path):
            raise FileExistsError(17, "exists; refusing to overwrite a key file", str(path))
    signer = CosignatureSigner.generate(name)
    vkey = signer.verifier().vkey_text()
    write_key_pair(key_file, vkey_file, signer.private_key_text(), vkey)
    return WitnessKeyFiles(key_file=key_file, vkey_file=vkey_file, vkey=vkey)


def load_cosigner(path: str | os.PathLike[str]) -> CosignatureSigner:
    """The witness's cosigning key from its file: a regular file only its owner may access
    (StorageError otherwise, as for the log's key), one ``PRIVATE+KEY+...`` line of type 0x04."""
    from kfm_ledger.log.keys import read_text_key
    from kfm_ledger.storage.local import check_private_mode, read_regular_file

    data, st = read_regular_file(path, follow=True, limit=MAX_KEY_FILE_BYTES)
    check_private_mode(st, os.fspath(path))
    return CosignatureSigner.from_private_key_text(read_text_key(data, os.fspath(path), kind="cosigner key"))


def load_log_keys(specs: Sequence[str]) -> dict[str, list[Verifier]]:
    """``ORIGIN=VKEYFILE`` pairs (``--log``, repeatable) -> origin -> the log's verifier keys.

    Each file holds one verifier key of type 0x01 named like the origin (a log's key name is its
    origin, c2sp.org/tlog-checkpoint); KeyFormatError naming the pair otherwise.  The same origin
    may be given several times (a log with several keys)."""
    from kfm_ledger.log.keys import read_text_key

    logs: dict[str, list[Verifier]] = {}
    for spec in specs:
        origin, sep, file = spec.partition("=")
        if not sep or not origin or not file:
            raise KeyFormatError(f"--log {spec!r}: expected ORIGIN=VKEYFILE", what="--log", found=spec)
        text = read_text_key(read_bounded(Path(file), MAX_KEY_FILE_BYTES, "log verifier key file"), file,
                             kind="verifier key")
        verifier = Verifier.from_vkey(text)
        if verifier.alg != ALG_ED25519 or verifier.name != origin:
            raise KeyFormatError(
                f"--log {origin}={file}: the key is {verifier.name!r} of type 0x{verifier.alg:02x}; a log key must "
                f"be an Ed25519 note key (type 0x01) named like the origin {origin!r}",
                what="--log",
                field="verifier key",
                found=verifier.vkey_text(),
            )
        keys = logs.setdefault(origin, [])
        if verifier not in keys:
            keys.append(verifier)
    return logs


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT (port 0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve(
    *,
    listen: str,
    state_dir: Path,
    logs: dict[str, list[Verifier]],
    signer: CosignatureSigner,
    announce: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the witness on ``listen`` until SIGINT or SIGTERM (uvicorn, one process, a small
    thread pool).  ``announce`` gets ``http://host:port`` once the socket is bound (port 0
    picks a free port: the announced one is the real one)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve", "kfm witness serve") from None
    from .asgi import WitnessApp
    from .service import WitnessService

    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise KfmError(str(e)) from None
    state = WitnessState(state_dir)
    try:
        service = WitnessService(signer, logs, state)
        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        if announce is not None:
            announce(f"http://{shown}:{bound}")
        config = uvicorn.Config(
            WitnessApp(service),
            log_level=log_level,
            access_log=False,
            server_header=False,
            date_header=True,
            lifespan="on",
            timeout_keep_alive=30,
            loop="auto",
            http="auto",
        )
        uvicorn.Server(config).run(sockets=[sock])
        sys.stdout.flush()
    finally:
        state.close()
