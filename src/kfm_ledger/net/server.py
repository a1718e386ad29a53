"""The ASGI application of ``kfm serve``: a ledger's c2sp.org/tlog-tiles read API and its lookup API.

Routes (GET and HEAD only; docs/network.md has the full table):

* ``/checkpoint``: the latest signed checkpoint (tlog-tiles "Checkpoints":
  ``text/plain; charset=utf-8``, not cached beyond a few seconds).
* ``/tile/<L>/<N>[.p/<W>]``: hash tiles; ``/tile/entries/<N>[.p/<W>]``: entry bundles
  (tlog-tiles "Merkle Tree", "Log entries": ``application/octet-stream``, immutable).  A
  partial tile whose file is gone (a full tile replaced it) is served from the first ``W``
  hashes (entries) of the full tile or of a wider partial, which begin with the same bytes
  ("Partial Tiles").  A tile beyond the signed tree is 404: only what a signed checkpoint
  covers is served.
* ``/lookup/<commit-or-prefix>`` (JSON), ``/proof/<commit-or-prefix>`` (c2sp.org/tlog-proof
  text), ``/checkpoints/<size>`` (a checkpoint the log signed for that size).

Paths are parsed strictly (canonical tile paths, canonical decimal sizes, commit texts of
``[A-Za-z0-9._-]``); a storage key is only ever built from the parsed numbers, so no request
names a file of its own choosing.  Errors are JSON ``{"error": {"status", "type", "message",
...}}``: 400 malformed, 404 unknown, 405 method, 409 ambiguous prefix (with ``candidates``),
414 path too long, 500 a ledger whose stored data does not prove (``kfm verify`` says more).

Each worker process opens the ledger once; the signed checkpoint is re-read on every request
that depends on the tree size, unless one ``stat`` shows its file is the one read last
(:class:`~kfm_ledger.net.checkpoint_watch.CheckpointWatch`; ``Ledger.refresh``: a file read, and
a signature check only when it changed), so appends made by ``kfm append`` while the server
runs are served at once.
"""

from __future__ import annotations

import gc
import gzip
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kfm_ledger.core import tiles
from kfm_ledger.core.entry_bundle import encode_entry_bundle, iter_entry_bundle
from kfm_ledger.errors import (
    AmbiguousCommitError,
    CommitNotFoundError,
    CorruptLedgerError,
    FormatError,
    IndexOutOfRangeError,
    KfmError,
    NotALedgerError,
    ObjectNotFoundError,
)

from .checkpoint_watch import CheckpointWatch
from .lookup import MAX_CANDIDATES, Lookups

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from kfm_ledger.index import IndexLocation
    from kfm_ledger.log.ledger import Ledger

__all__ = [
    "CACHE_CHECKPOINT",
    "CACHE_IMMUTABLE",
    "MAX_PATH_BYTES",
    "LogApp",
    "Response",
    "create_app",
    "freeze_startup_objects",
]

log = logging.getLogger("kfm.serve")

#: Longest request path accepted (bytes, percent-encoded as sent); longer: 414.  The longest
#: valid path is a lookup of a 128-character commit (137 bytes) or a tile path (~50).
MAX_PATH_BYTES = 512
#: Full and partial tiles and entry bundles never change (tlog-tiles: "This endpoint is immutable").
CACHE_IMMUTABLE = b"public, max-age=31536000, immutable"
#: The checkpoint changes with every append (tlog-tiles: "SHOULD prevent caching beyond a few seconds").
CACHE_CHECKPOINT = b"public, max-age=2, must-revalidate"
#: Lookups and proofs are answered against the latest checkpoint.
CACHE_LOOKUP = b"no-cache"
#: A kept checkpoint's tree never changes, but a witness may add cosignature lines to it.
CACHE_KEPT_CHECKPOINT = b"public, max-age=60"

_TEXT = b"text/plain; charset=utf-8"
_BINARY = b"application/octet-stream"
_JSON = b"application/json"
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
#: Entry bundles above this many bytes are gzipped for clients that accept it (tlog-tiles
#: "Entry bundles SHOULD be compressed at the HTTP layer").
_GZIP_MIN_BYTES = 256
#: Gzipped entry bundles kept per worker (about 45 KB each for full bundles of 1.1 KB rows).
GZIP_CACHE_BUNDLES = 256

_STATUS_TYPES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 414: "URITooLong", 500: "ServerError"}


@dataclass
class Response:
    """One HTTP answer: status, headers (lower-case names), body."""

    status: int
    body: bytes
    content_type: bytes
    cache: bytes | None = None
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"access-control-allow-origin", b"*"),
        ]
        if self.cache is not None:
            out.append((b"cache-control", self.cache))
        return out + self.extra


def error_response(status: int, message: str, *, kind: str | None = None, **more: Any) -> Response:
    """A JSON error body: ``{"error": {"status", "type", "message", ...more}}``."""
    doc = {"error": {"status": status, "type": kind or _STATUS_TYPES.get(status, "Error"), "message": message, **more}}
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, _JSON, b"no-store")


def _accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether an ``Accept-Encoding`` value lists ``gzip`` (or ``*``) without ``q=0``."""
    for part in accept_encoding.decode("latin-1").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.replace(" ", "")
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


#: The SQLite page cache of a worker's connection to the commit index, in KiB (SQLite's default
#: is 2 MiB): a lookup then reads the index's B-tree pages from memory, not with a system call
#: each (at 1M rows, about a quarter less CPU for the query, in-process).  Allocated as pages are read.
INDEX_CACHE_KIB = 65536


class ServedIndexLocation:
    """The ledger's own commit index location (an :class:`~kfm_ledger.index.IndexLocation`),
    its connections given a page cache of :data:`INDEX_CACHE_KIB` (``PRAGMA cache_size``)."""

    def __init__(self, inner: IndexLocation) -> None:
        self.inner = inner

    def connect(self) -> sqlite3.Connection:
        conn = self.inner.connect()
        conn.execute(f"PRAGMA cache_size = -{INDEX_CACHE_KIB}")
        return conn

    def discard(self) -> None:
        self.inner.discard()


class LogApp:
    """The ASGI application serving one ledger directory (see the module docstring).

    ``handle(method, path, raw_path_len, accept_encoding)`` answers one request synchronously
    (reads are local and short); ``__call__`` is the ASGI entry point.  One instance per worker
    process; not for use from several threads at once.
    """

    def __init__(self, ledger_dir: str | os.PathLike[str], *, vkey: str | None = None) -> None:
        self.ledger_dir = os.fspath(ledger_dir)
        self.vkey = vkey
        self._led: Ledger | None = None
        self._lookups: Lookups | None = None
        self._watch = CheckpointWatch(None)
        self._gzipped: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # (index, width) -> gzip body

    # ------------------------------------------------------------ ledger
    def ledger(self) -> Ledger:
        """The ledger, opened on first use (its checkpoint signature checked)."""
        if self._led is None:
            from kfm_ledger.log.layout import CHECKPOINT_KEY
            from kfm_ledger.log.ledger import Ledger, index_location_for, open_storage
            from kfm_ledger.storage import local_path_of

            storage = open_storage(self.ledger_dir)
            index = ServedIndexLocation(index_location_for(storage))
            led = self._led = Ledger.open(storage, vkey=self.vkey, index=index)
            self._watch = CheckpointWatch(local_path_of(led.storage, CHECKPOINT_KEY))
            self._lookups = Lookups(led, self._refresh)
        return self._led

    def _refresh(self) -> None:
        """Re-read the latest signed checkpoint if its file may have changed (appends by others)."""
        self._watch.refresh(self.ledger())

    def lookups(self) -> Lookups:
        """The lookup API's answers (:class:`~kfm_ledger.net.lookup.Lookups`) for the ledger."""
        self.ledger()
        assert self._lookups is not None
        return self._lookups

    def close(self) -> None:
        if self._led is not None:
            self._led.close()
            self._led = None
            self._lookups = None

    def _size(self, refresh: bool) -> int:
        led = self.ledger()
        if refresh:
            self._refresh()
        return led.size

    # ------------------------------------------------------------ routes
    def handle(self, method: str, path: str, raw_path_len: int = 0, accept_encoding: bytes = b"") -> Response:
        """The answer to ``method path`` (``path`` percent-decoded, as ASGI gives it)."""
        if max(raw_path_len, len(path.encode("utf-8", "surrogatepass"))) > MAX_PATH_BYTES:
            return error_response(414, f"request path longer than {MAX_PATH_BYTES} bytes")
        if method not in ("GET", "HEAD"):
            resp = error_response(405, f"method {method} not allowed: this server answers GET and HEAD only")
            resp.extra.append((b"allow", b"GET, HEAD"))
            return resp
        try:
            return self._route(path, accept_encoding)
        except FormatError as err:
            return error_response(400, str(err), kind=type(err).__name__)
        except (CommitNotFoundError, IndexOutOfRangeError, ObjectNotFoundError) as err:
            return error_response(404, str(err), kind=type(err).__name__)
        except AmbiguousCommitError as err:
            return self._ambiguous(err)
        except NotALedgerError as err:
            return error_response(500, str(err), kind=type(err).__name__)
        except KfmError as err:
            log.error("%s %s: %s", method, path, err.diagnostics())
            return error_response(500, str(err), kind=type(err).__name__)
        except Exception:  # a bug: logged with its traceback, never sent to the client
            log.exception("%s %s failed", method, path)
            return error_response(500, "internal server error (logged by the server)")

    def _route(self, path: str, accept_encoding: bytes) -> Response:
        if path == "/checkpoint":
            self._size(refresh=True)
            return Response(200, self.ledger().checkpoint.note, _TEXT, CACHE_CHECKPOINT)
        if path.startswith("/tile/entries/"):
            return self._entries(path[1:], accept_encoding)
        if path.startswith("/tile/"):
            return self._tile(path[1:])
        if path.startswith("/lookup/"):
            found = self.lookups().lookup(path[len("/lookup/") :])
            return Response(200, found.to_json(), _JSON, CACHE_LOOKUP)
        if path.startswith("/proof/"):
            found = self.lookups().lookup(path[len("/proof/") :])
            return Response(200, found.tlog_proof, _TEXT, CACHE_LOOKUP)
        if path.startswith("/checkpoints/"):
            return self._kept_checkpoint(path[len("/checkpoints/") :])
        return error_response(404, f"no such resource: {path[:100]!r}")

    def _available(self, level: int, index: int, width: int) -> bool:
        """Whether tile (level, index) of ``width`` exists under the signed tree: a full tile
        once the tree covers it; a partial of width W while the tile holds at least W hashes."""
        for refresh in (False, True):  # a tile beyond the size known: re-read the checkpoint once
            have = tiles.tile_width(level, index, self._size(refresh))
            if have == tiles.TILE_WIDTH or (width < tiles.TILE_WIDTH and 0 < width <= have):
                return True
        return False

    def _tile(self, path: str) -> Response:
        level, index, width = tiles.parse_tile_path(path)
        if not self._available(level, index, width):
            return error_response(404, f"{path} is not part of the signed tree (size {self.ledger().size})")
        data = self.ledger().read_tile(level, index, width)
        want = width * 32
        if len(data) < want or (width == tiles.TILE_WIDTH and len(data) != want):
            message = f"stored tile for {path} is {len(data)} bytes, want {want}; run `kfm verify`"
            raise CorruptLedgerError(message, key=path)
        return Response(200, data[:want], _BINARY, CACHE_IMMUTABLE)

    def _entries(self, path: str, accept_encoding: bytes) -> Response:
        index, width = tiles.parse_entries_path(path)
        if not self._available(0, index, width):
            return error_response(404, f"{path} is not part of the signed tree (size {self.ledger().size})")
        extra = [(b"vary", b"accept-encoding")]
        if _accepts_gzip(accept_encoding):
            zipped = self._gzipped.get((index, width))
            if zipped is not None:
                self._gzipped.move_to_end((index, width))
                return Response(200, zipped, _BINARY, CACHE_IMMUTABLE, [*extra, (b"content-encoding", b"gzip")])
        body = self._bundle(index, width)
        if len(body) >= _GZIP_MIN_BYTES and _accepts_gzip(accept_encoding):
            # A bundle never changes: compress it once (5-15 ms for a full one), keep the last few.
            body = gzip.compress(body, compresslevel=5, mtime=0)
            self._gzipped[(index, width)] = body
            if len(self._gzipped) > GZIP_CACHE_BUNDLES:
                self._gzipped.popitem(last=False)
            extra.append((b"content-encoding", b"gzip"))
        return Response(200, body, _BINARY, CACHE_IMMUTABLE, extra)

    def _bundle(self, index: int, width: int) -> bytes:
        """Entry bundle ``index`` of ``width`` entries: the stored one, else the first ``width``
        entries of the full bundle or of a wider partial (the same entries, c2sp.org/tlog-tiles)."""
        storage = self.ledger().storage
        full = tiles.entries_path(index)
        keys = [tiles.entries_path(index, width)] if width < tiles.TILE_WIDTH else []
        keys.append(full)
        for key in keys:
            try:
                data = storage.read(key)
            except ObjectNotFoundError:
                continue
            return data if key == keys[0] else encode_entry_bundle(_first(data, width))
        wider = sorted(
            (int(k.rsplit("/", 1)[1]), k) for k in storage.list(full + ".p/") if k.rsplit("/", 1)[1].isdigit()
        )
        if wider and wider[-1][0] >= width:
            return encode_entry_bundle(_first(storage.read(wider[-1][1]), width))
        raise ObjectNotFoundError(tiles.entries_path(index, width))

    def _kept_checkpoint(self, text: str) -> Response:
        if not _SIZE_RE.fullmatch(text):
            message = f"{text[:40]!r} is not a tree size (canonical decimal)"
            raise FormatError(message, what="tree size", found=text[:40])
        self._size(refresh=True)
        signed = self.ledger().stored_checkpoint(int(text))
        return Response(200, signed.note, _TEXT, CACHE_KEPT_CHECKPOINT)

    def _ambiguous(self, err: AmbiguousCommitError) -> Response:
        found = self.ledger().find(err.prefix, limit=MAX_CANDIDATES)
        candidates = [{"lakefs_commit": e.lakefs_commit, "index": e.leaf} for e in found]
        return error_response(409, str(err), kind=type(err).__name__, candidates=candidates)

    # ------------------------------------------------------------ ASGI
    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":  # websockets: not served
            return
        accept = b""
        for name, value in scope.get("headers", ()):
            if name == b"accept-encoding":
                accept = value
                break
        raw_path = scope.get("raw_path") or b""
        resp = self.handle(scope["method"], scope["path"], len(raw_path), accept)
        await send({"type": "http.response.start", "status": resp.status, "headers": resp.headers()})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else resp.body})

    async def _lifespan(
        self,
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.ledger()
                except KfmError as err:
                    await send({"type": "lifespan.startup.failed", "message": err.diagnostics()})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _first(bundle: bytes, width: int) -> list[bytes]:
    """The first ``width`` entries of a stored bundle (FormatError if it holds fewer)."""
    out: list[bytes] = []
    for entry in iter_entry_bundle(bundle):
        out.append(entry)
        if len(out) == width:
            return out
    raise CorruptLedgerError(f"stored entry bundle holds {len(out)} entries, fewer than {width}; run `kfm verify`")


#: Environment variables through which ``kfm serve --workers N`` hands the ledger to each
#: worker process (uvicorn starts workers by importing :func:`create_app`).
ENV_LEDGER = "KFM_SERVE_LEDGER"
ENV_VKEY = "KFM_SERVE_VKEY"


def freeze_startup_objects() -> None:
    """Move every object alive after start-up (modules, the opened ledger) out of the cyclic
    garbage collector's reach (``gc.freeze``): a serving process collects only what requests
    leave behind, and a full collection no longer walks the whole program (a pause in the tail
    of the latency)."""
    gc.collect()
    gc.freeze()


def create_app() -> LogApp:
    """The application for a worker process, configured through :data:`ENV_LEDGER` and
    :data:`ENV_VKEY` (uvicorn's ``factory=True``): the ledger opened, the start-up objects
    frozen (:func:`freeze_startup_objects`)."""
    app = LogApp(os.environ[ENV_LEDGER], vkey=os.environ.get(ENV_VKEY) or None)
    try:
        app.ledger()
    except KfmError:
        return app  # the lifespan startup reports it (uvicorn stops the worker)
    freeze_startup_objects()
    return app
