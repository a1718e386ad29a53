"""A client of one witness's ``add-checkpoint`` (c2sp.org/tlog-witness), on the standard library's
:mod:`http.client` with a kept-alive connection ("Clients SHOULD use ... HTTP keep-alive").

Nothing the witness says is trusted unchecked: a 200 answer's cosignature lines are parsed
and every line from the configured witness key is verified over the checkpoint body
(:func:`~kfm_ledger.core.cosignature.verify_cosignature`); lines from other keys are ignored
(tlog-witness: "The client MUST ignore any cosignatures from unknown keys"); a 409 answer must
be ``text/x.tlog.size``.  Any other answer is a :class:`~kfm_ledger.errors.WitnessError`
carrying the status and the start of the body.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from kfm_ledger.core.cosignature import verify_cosignature
from kfm_ledger.core.keys import ALG_COSIGNATURE_V1, Verifier
from kfm_ledger.core.note import NoteSignature, parse_note
from kfm_ledger.errors import FormatError, KeyFormatError, NoteError, WitnessError
from kfm_ledger.net.http_client import TOTAL_TIMEOUT_FACTOR, read_body_before

from .protocol import (
    ADD_CHECKPOINT_PATH,
    CONTENT_TYPE_SIZE,
    MAX_RESPONSE_BYTES,
    format_add_checkpoint,
    parse_signature_lines,
    parse_tlog_size,
)

__all__ = ["Conflict", "Cosigned", "WitnessClient"]


@dataclass(frozen=True)
class Cosigned:
    """A 200 answer: the witness's verified cosignatures on the checkpoint (and their timestamps)."""

    cosignatures: tuple[NoteSignature, ...]
    timestamps: tuple[int, ...]


@dataclass(frozen=True)
class Conflict:
    """A 409 answer: the size of the latest checkpoint the witness cosigned for this log."""

    size: int


def _excerpt(body: bytes) -> str:
    text = body[:300].decode("utf-8", "replace").strip()
    return text + ("..." if len(body) > 300 else "")


class WitnessClient:
    """One witness: its URL (the submission prefix) and its cosigner key (type 0x04)."""

    def __init__(self, url: str, verifier: Verifier, *, timeout: float = 10.0) -> None:
        if verifier.alg != ALG_COSIGNATURE_V1:
            raise KeyFormatError(
                f"witness key {verifier.name}+{verifier.key_id.hex()} is of type 0x{verifier.alg:02x}, not a "
                "cosignature/v1 key (0x04): configure the witness's verifier key (`kfm witness init` prints it)",
                what="witness verifier key",
                field="key type",
                found=f"0x{verifier.alg:02x}",
            )
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WitnessError(f"witness URL {url!r} is not an http(s) URL", url=url)
        self.verifier = verifier
        self.url = url.rstrip("/") + ADD_CHECKPOINT_PATH
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + ADD_CHECKPOINT_PATH
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False  # abort() was called: no connection is made any more

    def _connection(self) -> http.client.HTTPConnection:
        if self._aborted:
            raise WitnessError(f"the request to witness {self.url} was cut off", url=self.url)
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def abort(self) -> None:
        """Cut off a request another thread is making (its read fails at once); for an interrupted
        push.  No request is made again (a retry would reconnect); the connection is closed by
        :meth:`close` afterwards."""
        self._aborted = True
        conn = self._conn
        sock = None if conn is None else conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> WitnessClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        """POST once; on a kept-alive connection the server closed meanwhile, reconnect and retry
        once (the request is idempotent for the witness: the same old size and checkpoint)."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
                response = conn.getresponse()
                within = self._timeout * TOTAL_TIMEOUT_FACTOR  # (the timeout bounds each read only)
                data = read_body_before(response, MAX_RESPONSE_BYTES, time.monotonic() + within)
                if data is None:
                    self.close()
                    raise WitnessError(
                        f"witness {self.url}: answer not complete after {within:g} s", url=self.url,
                        status=response.status,
                    )
                if len(data) > MAX_RESPONSE_BYTES:
                    self.close()
                    raise WitnessError(
                        f"witness {self.url} answered more than {MAX_RESPONSE_BYTES} bytes", url=self.url,
                        status=response.status,
                    )
                if response.will_close:
                    self.close()
                return response.status, response.getheader("Content-Type", "") or "", data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                if attempt == 2:
                    raise WitnessError(f"witness {self.url} closed the connection: {e}", url=self.url) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                why = "timed out" if isinstance(e, socket.timeout) else str(e) or type(e).__name__
                raise WitnessError(f"cannot reach witness {self.url}: {why}", url=self.url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> Cosigned | Conflict:
        """Send a signed checkpoint with a consistency proof from ``old_size``
        (tlog-witness §add-checkpoint).  Returns the verified cosignatures (200) or the witness's
        size (409); raises WitnessError for any other answer or a cosignature that fails."""
        status, content_type, data = self._post(format_add_checkpoint(old_size, proof, note))
        if status == 409:
            if content_type.split(";")[0].strip().lower() != CONTENT_TYPE_SIZE:
                raise WitnessError(
                    f"witness {self.url} answered 409 with content type {content_type!r}, not {CONTENT_TYPE_SIZE}",
                    url=self.url, status=status, found=_excerpt(data),
                )
            try:
                return Conflict(parse_tlog_size(data))
            except FormatError as e:
                raise WitnessError(f"witness {self.url} answered 409: {e}", url=self.url, status=status,
                                   found=_excerpt(data)) from None
        if status != 200:
            raise WitnessError(
                f"witness {self.url} refused the checkpoint: {status} {_excerpt(data)}",
                url=self.url, status=status, found=_excerpt(data),
            )
        return self._check_cosignatures(note, data)

    def _check_cosignatures(self, note: bytes, data: bytes) -> Cosigned:
        try:
            lines = parse_signature_lines(data)
        except FormatError as e:
            raise WitnessError(f"witness {self.url} answered 200 without valid signature lines: {e}",
                               url=self.url, status=200, found=_excerpt(data)) from None
        text = parse_note(note).text
        v = self.verifier
        mine = [s for s in lines if (s.name, s.key_id) == (v.name, v.key_id)]
        if not mine:
            raise WitnessError(
                f"witness {self.url} answered 200 but no cosignature is from its key {v.name}+{v.key_id.hex()}: "
                "is the configured verifier key the witness's?", url=self.url, status=200, found=_excerpt(data),
            )
        timestamps = []
        for sig in mine:
            try:
                timestamps.append(verify_cosignature(v, text, sig))
            except NoteError as e:
                raise WitnessError(f"witness {self.url} returned a cosignature that does not verify: {e}",
                                   url=self.url, status=200, found=_excerpt(data)) from None
        return Cosigned(cosignatures=tuple(mine), timestamps=tuple(timestamps))
