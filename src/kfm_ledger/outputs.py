"""Files kfm writes where a user named them (``export --to``, ``mirror --out``, the client's state).

Written whole or not at all: a new temporary file beside the target (``O_EXCL`` under an
unpredictable name, never through a link), synced, renamed over the target, then the folder synced.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO, TypeVar

__all__ = ["write_file_atomic"]

T = TypeVar("T")


def write_file_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], T], *, mode: int | None = None) -> T:
    """Call ``write`` on a temporary file beside ``path``, then put it in ``path``'s place; its result.

    ``mode``: the file's permissions (default: the temporary file's, 0600).  On any error the
    temporary file is removed and ``path`` is left as it was.
    """
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(name)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return result
