"""The client's memory of each log (``--state DIR``, default ``~/.local/state/kfm/``): the last
checkpoint it verified, per origin, and the evidence files of forks it saw.

Layout (docs/network.md, "State files")::

    <state>/<origin, percent-encoded>/checkpoint        the last verified signed checkpoint, verbatim
    <state>/<origin, percent-encoded>/monitor.sqlite    kfm monitor's progress (rows checked, commits seen)
    <state>/<origin, percent-encoded>/evidence/fork-<UTC time>-<size>-<size>.json
    <state>/<origin, percent-encoded>/.lock             held while a client or monitor updates the state

The stored checkpoint is a file on disk, so it is opened with the log's key again when it is
read (a state file that does not verify is an error naming it, never silently replaced).
Writes are atomic (temporary file, fsync, rename); the directory is created mode 0700.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kfm_ledger.core.signed_checkpoint import SignedCheckpoint
from kfm_ledger.errors import FormatError, KfmError

__all__ = ["DEFAULT_STATE_DIR", "MAX_STATE_CHECKPOINT_BYTES", "OriginState", "default_state_dir"]

DEFAULT_STATE_DIR = "~/.local/state/kfm"
MAX_STATE_CHECKPOINT_BYTES = 64 * 1024


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/kfm`` when set, else ``~/.local/state/kfm``."""
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg, "kfm") if xdg else Path(DEFAULT_STATE_DIR).expanduser()


def origin_dir_name(origin: str) -> str:
    """A file name for an origin: percent-encoded (``kfm.example/log`` -> ``kfm.example%2Flog``)."""
    name = urllib.parse.quote(origin, safe="")
    return name.replace(".", "%2E") if name in (".", "..") else name


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _write_atomic(path: Path, data: bytes) -> None:
    from kfm_ledger.outputs import write_file_atomic  # only when state changes: keeps the client's start-up lean

    write_file_atomic(path, lambda f: f.write(data), mode=0o600)


class OriginState:
    """The state kept for one log origin under a state directory."""

    def __init__(self, state_dir: str | os.PathLike[str], origin: str) -> None:
        self.origin = origin
        self.dir = Path(state_dir).expanduser() / origin_dir_name(origin)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def evidence_dir(self) -> Path:
        return self.dir / "evidence"

    def _ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this origin's state lock (one client or monitor updating it at a time)."""
        self._ensure_dir()
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self, opener: Callable[[bytes], SignedCheckpoint]) -> SignedCheckpoint | None:
        """The last verified checkpoint, opened again with ``opener`` (the log's key), or None
        when there is none yet.  A file that does not verify: FormatError naming it."""
        path = self.checkpoint_path
        try:
            with open(path, "rb") as f:
                note = f.read(MAX_STATE_CHECKPOINT_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(note) > MAX_STATE_CHECKPOINT_BYTES:
            message = f"state file {path} is larger than a checkpoint can be"
            raise FormatError(message, what="client state", found=str(path))
        try:
            return opener(note)
        except KfmError as err:
            raise FormatError(
                f"state file {path} does not hold a checkpoint of {self.origin!r} that verifies with the given key: "
                f"{err}; move it away to start again (trust on first use)",
                what="client state",
                found=str(path),
            ) from None

    def save(self, signed: SignedCheckpoint) -> None:
        """Remember ``signed`` (verified by the caller) as the last verified checkpoint."""
        self._ensure_dir()
        _write_atomic(self.checkpoint_path, signed.note)

    def write_evidence(self, doc: dict[str, Any]) -> Path:
        """Write a fork evidence document (docs/network.md, "Evidence files"); returns its path."""
        self.evidence_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sizes = "-".join(str(c["size"]) for c in doc.get("checkpoints", ()))
        path = self.evidence_dir / f"fork-{_utc_stamp()}-{sizes}.json"
        _write_atomic(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path
