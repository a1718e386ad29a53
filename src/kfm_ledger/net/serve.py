"""``kfm serve``: run :class:`~kfm_ledger.net.server.LogApp` under uvicorn (an ASGI server with
httptools and uvloop when installed: ``pip install 'kfm-ledger[serve]'``).

Several workers (``workers > 1``) are separate processes started by uvicorn; each imports
:func:`kfm_ledger.net.server.create_app`, which reads the ledger directory from the environment.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfm_ledger.errors import FormatError, MissingExtraError

from .server import ENV_LEDGER, ENV_VKEY, LogApp, freeze_startup_objects

__all__ = ["DEFAULT_LISTEN", "ServeOptions", "http_protocol", "parse_listen", "serve", "uvicorn_options"]

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


def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol sending each response in one write
    (:class:`~kfm_ledger.net.coalesce.CoalescingHttpToolsProtocol`), or uvicorn's choice
    (``"auto"``) when httptools is not installed."""
    try:
        from .coalesce import CoalescingHttpToolsProtocol
    except ImportError:
        return "auto"
    return CoalescingHttpToolsProtocol


def uvicorn_options(*, access_log: bool = False) -> dict[str, Any]:
    """The ``uvicorn.Config`` options of ``kfm serve`` (besides the address and workers): HTTP/1.1
    through :func:`http_protocol`, no ``server`` header; the client address
    (what ``X-Forwarded-For`` may rewrite) is used by the access log only."""
    return {"access_log": access_log, "proxy_headers": access_log, "log_level": "warning", "server_header": False,
            "date_header": True, "http": http_protocol()}


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
    common = {"host": host, "port": port, **uvicorn_options(access_log=options.access_log)}
    if options.workers <= 1:
        freeze_startup_objects()
        uvicorn.run(app, **common)
        return
    app.close()
    os.environ[ENV_LEDGER] = str(Path(options.ledger_dir).resolve())
    if options.vkey is not None:
        os.environ[ENV_VKEY] = options.vkey
    uvicorn.run("kfm_ledger.net.server:create_app", factory=True, workers=options.workers, **common)
