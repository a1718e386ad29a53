"""A local content cache keyed by SHA-256 (``--cache DIR``; docs/supply-chain.md, "Cache").

Layout: ``DIR/sha256/<first two hex digits>/<64 hex digits>``.  An entry is written to a
temporary file in the same directory while its bytes stream in and renamed to its digest's
name only once the digest is known, so a name always matches what was hashed.  The cache is
local disk, so it is not trusted either: an entry is re-hashed when used, and one whose bytes
no longer match its name is removed and treated as a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["ContentCache"]

_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class ContentCache:
    """Bytes by SHA-256 under ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, sha256_hex: str) -> Path:
        """Where the content with this digest is kept (whether or not it is there)."""
        if not _HEX.fullmatch(sha256_hex):
            raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
        return self.root / "sha256" / sha256_hex[:2] / sha256_hex

    def lookup(self, sha256_hex: str, max_bytes: int) -> Path | None:
        """The cached file for ``sha256_hex`` after re-hashing it (None: absent, not a regular
        file, larger than ``max_bytes``, or damaged, in which case it is removed)."""
        path = self.path_for(sha256_hex)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        import stat

        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != sha256_hex:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return path

    @contextlib.contextmanager
    def writer(self) -> Iterator[tuple[IO[bytes], list[str]]]:
        """A temporary file to stream new content into; append the content's hex digest to the
        yielded list before leaving the block to keep it (nothing appended: it is discarded)."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="fetch-")
        named: list[str] = []
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, named
                f.flush()
                os.fsync(f.fileno())
            if named:
                dest = self.path_for(named[0])
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
