"""Whether a served ledger's published checkpoint may have changed: one ``stat`` instead of a
read per request.

A writer publishes each signed checkpoint by renaming a new file over ``checkpoint``
(``storage/local.py``: ``write_once_and_publish``, ``write_atomic``), so a new checkpoint is a
new inode with a new change time.  :meth:`CheckpointWatch.refresh` re-reads the checkpoint
(``Ledger.refresh``: a read, and a signature check when the bytes differ) unless the file's
identity and times (inode, device, size, modification and change time, in nanoseconds) are
those seen at the last read *and* were already older than :data:`RACY_NS` at that read.  The
second condition is git's "racily clean" rule: a file's times have the file system's
granularity (often a clock tick), so a file replaced or edited within one tick of the last
read could show the same times; within ``RACY_NS`` of a change every request reads again, as
without the watch.  A storage without local files is re-read on every request.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from kfm_ledger.log.ledger import Ledger

__all__ = ["RACY_NS", "CheckpointWatch"]

#: How long after a change of the checkpoint file every request still reads it (2 s: far above
#: any local file system's timestamp granularity).
RACY_NS = 2_000_000_000


class CheckpointWatch:
    """Re-reads a ledger's latest signed checkpoint when its file (``path``; None: not a local
    file, always re-read) may have changed since the last read (see the module docstring)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._seen: tuple[int, int, int, int, int] | None = None  # the file's stat at the last read
        #: Reads of the checkpoint made (for tests and the curious).
        self.reads = 0

    def refresh(self, led: Ledger) -> None:
        """``led.refresh()`` unless the checkpoint file is certainly the one read last."""
        if self.path is None:
            self._read(led)
            return
        try:
            st = os.stat(self.path)
        except OSError:
            self._seen = None
            self._read(led)  # the ledger's own read names the problem
            return
        seen = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if seen == self._seen:
            return
        now = time.time_ns()
        self._seen = None
        self._read(led)
        if max(st.st_mtime_ns, st.st_ctime_ns) < now - RACY_NS:
            self._seen = seen  # old enough that a later change must show in the stat

    def _read(self, led: Ledger) -> None:
        self.reads += 1
        led.refresh()
