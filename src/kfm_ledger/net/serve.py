"""``kfm serve``: run :class:`~kfm_ledger.net.server.LogApp` under uvicorn (an ASGI server with
httptools and uvloop when installed: ``pip install 'kfm-ledger[serve]'``).

Several workers (``workers > 1``) are separate processes started by uvicorn; each imports
:func:`kfm_ledger.net.server.create_app`, which reads the ledger directory from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kfm_ledger.errors import FormatError, MissingExtraError

from .server import ENV_LEDGER, ENV_VKEY, LogApp

__all__ = ["DEFAULT_LISTEN", "ServeOptions", "parse_listen", "serve"]

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); FormatError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise FormatError(
            f"--listen {text!r}: want HOST:PORT (e.g. {DEFAULT_LISTEN})", what="listen address", found=text
        )
    return host, int(port_text)


@dataclass(frozen=True)
class ServeOptions:
    """What ``kfm serve`` was asked for."""

    ledger_dir: Path
    listen: str = DEFAULT_LISTEN
    workers: int = 1
    vkey: str | None = None
    access_log: bool = False


def serve(options: ServeOptions) -> None:
    """Serve the ledger until interrupted (the ledger's checkpoint signature is checked first,
    so a bad directory fails here, not in every worker)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve", "kfm serve") from None
    host, port = parse_listen(options.listen)
    app = LogApp(options.ledger_dir, vkey=options.vkey)
    app.ledger()  # fail early: NotALedgerError, a bad signature
    common = {"host": host, "port": port, "access_log": options.access_log, "log_level": "warning",
              "server_header": False, "date_header": True}
    if options.workers <= 1:
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    app.close()
    os.environ[ENV_LEDGER] = str(Path(options.ledger_dir).resolve())
    if options.vkey is not None:
        os.environ[ENV_VKEY] = options.vkey
    uvicorn.run("kfm_ledger.net.server:create_app", factory=True, workers=options.workers, **common)  # type: ignore[arg-type]
