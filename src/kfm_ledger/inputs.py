"""Bounded reads of the files a user names (docs/cli.md, "Limits").

Every file kfm reads because a user named it (a ``--since`` checkpoint, a ``--vkey``
file, a tlog-proof and its entry, a ``query --file``, an append input, a rollback
bundle) is opened through :func:`open_regular`: it must be a regular file, or ``-``
for standard input where the command takes it.  A FIFO, a device or a directory is
refused at once, never read (a FIFO with no writer would hang the reader; ``/dev/zero``
never ends).  :func:`read_bounded` also refuses more than a documented number of bytes,
reading at most one byte past the limit.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import BinaryIO

from .core.note import MAX_NOTE_SIZE
from .errors import KfmError

__all__ = [
    "MAX_ENTRY_FILE_BYTES",
    "MAX_KEY_FILE_BYTES",
    "MAX_NOTE_FILE_BYTES",
    "MAX_PROOF_FILE_BYTES",
    "MAX_QUERY_FILE_BYTES",
    "InputFileError",
    "open_regular",
    "read_bounded",
]

#: A checkpoint (signed note) file, as ``--since`` takes it: the note size limit.
MAX_NOTE_FILE_BYTES = MAX_NOTE_SIZE
#: A key file (``--vkey``): one line of text, well under this.
MAX_KEY_FILE_BYTES = 4096
#: A tlog-proof file (c2sp.org/tlog-proof): the parser's own limit.
MAX_PROOF_FILE_BYTES = 3 * MAX_NOTE_SIZE
#: An entry file of ``verify-proof``: one ledger line (65,535 bytes) and its newline.
MAX_ENTRY_FILE_BYTES = 65535 + 1
#: A ``kfm query --file`` (or ``-``) SQL text.
MAX_QUERY_FILE_BYTES = 1 << 20


class InputFileError(KfmError):
    """A file the user named was refused: not a regular file, or over its size limit."""

    evidence_fields = ("path", "limit")

    def __init__(self, message: str, *, path: str, limit: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.limit = limit


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """``path`` opened for reading, refused (:class:`InputFileError`) unless a regular file.

    Opened with ``O_NONBLOCK`` so that a FIFO cannot block the open itself, then checked
    with ``fstat`` on the open descriptor (no window between the check and the read).
    OSError as usual when it cannot be opened.
    """
    name = os.fspath(path)
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # reported like any file that cannot be read
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if not stat.S_ISREG(mode):
            raise InputFileError(f"{what} {name} is {_kind(mode)}; give a regular file", path=name)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(
    path: str | os.PathLike[str], limit: int, what: str, *, stdin: BinaryIO | None = None
) -> bytes:
    """The bytes of a file the user named (``-``: standard input), at most ``limit`` of them.

    Refuses (:class:`InputFileError`, naming the path and the limit) a file that is not a
    regular file and input longer than ``limit``; never reads more than ``limit + 1`` bytes.
    """
    name = os.fspath(path)
    if name == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        data = source.read(limit + 1)
    else:
        with open_regular(name, what) as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        shown = "standard input" if name == "-" else name
        raise InputFileError(
            f"{what} {shown} is larger than the limit of {limit:,} bytes (docs/cli.md, \"Limits\")",
            path=name,
            limit=limit,
        )
    return data
