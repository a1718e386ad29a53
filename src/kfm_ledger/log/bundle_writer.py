"""A bulk append's entry bundles, written by a child process while the batch is validated.

The bundles (c2sp.org/tlog-tiles "Log entries": each entry a uint16 big-endian length and the
row) repeat every row of the batch: 811 MB for a million rows.  Cutting and writing them in
the appending process would hold Python's lock against the index inserts and the tiles; the
child forked here does it on its own core, from each chunk's rows once they are in the JSONL
(:meth:`BundleWriter.add`, told by the thread that copies them).  Rows canonical as given are
read from the row ring (``bulk._RowRing``): the very bytes a worker validated and hashed, in
a file with no name that only this append's descriptors reach.  Rows read back from the JSONL instead
(spooled ones, or the input's own bytes copied from the caller's file, which may change
meanwhile) are checked against the leaf hashes their validation computed first.  Each bundle goes to a
temporary file at once (:meth:`~kfm_ledger.storage.local.LocalStorage.write_once_stream`):
nothing is visible until the batch has passed every check and :meth:`BundleWriter.finish`
has the child make them durable and rename them, still before the checkpoint is signed, as
step 4 requires (docs/operations.md).  :meth:`BundleWriter.abort` (a refused batch, a
failure) has the child delete its temporary files; a crash leaves only temporary files
(swept) or bundles beyond the signed size (rolled back by recovery).

The child is forked before any thread or worker pool of the append starts, touches nothing
but the JSONL (reading) and the storage's folders (never the commit index's SQLite connection,
never the writer lock), dies with its parent (PR_SET_PDEATHSIG) and leaves by ``os._exit``.
It writes a ring slot's bundles straight from the ring (mapped read-only: the workers wrote the
rows there encoded as in a bundle too) and acknowledges once they are written, so that the slot
can be handed to a later chunk (:meth:`BundleWriter.add` waits for that).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from kfm_ledger.core import merkle
from kfm_ledger.errors import KfmError, StorageError
from kfm_ledger.storage.page_cache import WriteWindow

from .layout import ENTRIES_PREFIX, JSONL_KEY

if TYPE_CHECKING:
    from .ledger import Ledger
    from .tile_writer import RightEdge

__all__ = ["BundleWriter"]

_FRAME = struct.Struct(">I")


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = os.read(fd, n - got)
        if not part:
            raise EOFError("the other side closed the pipe")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _receive(fd: int) -> object:
    (length,) = _FRAME.unpack(_read_exactly(fd, _FRAME.size))
    return pickle.loads(_read_exactly(fd, length))


class _Aborted(Exception):
    """The parent called the batch off (the child deletes what it wrote)."""


class BundleWriter:
    """The child process writing one bulk append's entry bundles (see the module docstring).

    Create it (it forks) before the append starts threads or worker processes; hand it each
    chunk's JSONL range and leaf hashes in order once the rows are there (:meth:`add`); then
    :meth:`finish` with the batch's row count (the indexes of the bundles that became full) or
    :meth:`abort`.
    """

    def __init__(self, led: Ledger, old_size: int, edge: RightEdge | None, jsonl_fd: int, ring_fd: int = -1) -> None:
        """``ring_fd``: the row ring's file (``SpooledInput.ring_fd``), if :meth:`add` is to be
        given chunks there."""
        # Three pipes: commands to the child, its outcome back, and one byte for each ring chunk
        # whose bundles the child has written.  A pipe or the fork refused (EMFILE, EAGAIN):
        # the descriptors already made are closed, not left to leak.
        fds: list[int] = []
        try:
            for _ in range(3):
                fds += os.pipe()
            parent = os.getpid()
            pid = os.fork()
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        to_child_r, self._to_child, self._from_child, from_child_w, self._acks, acks_w = fds
        if pid == 0:  # pragma: no cover - the child (its work is checked through the parent)
            status = 1
            try:
                os.close(self._to_child)
                os.close(self._from_child)
                os.close(self._acks)
                from .bulk import _die_with_parent, _keep_freed_memory

                _die_with_parent(parent)
                # Several buffers of a chunk's size per chunk (the rows read, split, encoded, sliced):
                # reused, not mapped afresh each time (as in the validation workers).
                _keep_freed_memory()
                status = _child(led, old_size, edge, jsonl_fd, ring_fd, to_child_r, from_child_w, acks_w)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(to_child_r)
        os.close(from_child_w)
        os.close(acks_w)
        self._led = led
        self._pid = pid
        self._done = False
        self._lost = False  # the child stopped reading (it died): finish() reports it

    def add(self, offset: int, length: int, leaf_hashes: bytes, ring_offset: int | None = None) -> None:
        """The next chunk's rows, written to the JSONL at ``[offset, offset + length)``.

        With ``ring_offset`` they are also in the row ring from there (bulk.ring_slot_layout: the
        rows, then encoded, then their lengths): the child writes its bundles from the ring, and
        this returns once it has (the slot may then be reused).  Else the child reads them from
        the JSONL and checks each against its leaf hash (RFC 9162 §2.1.1) first.
        """
        if self._lost:
            return
        try:
            if ring_offset is None:
                _send(self._to_child, ("chunk", (offset, length), leaf_hashes))
                return
            _send(self._to_child, ("ring", (offset, length), (ring_offset, len(leaf_hashes) // merkle.HASH_SIZE)))
            if not os.read(self._acks, 1):  # the child died before it was done with them
                self._lost = True
        except OSError:  # EPIPE: the child is gone; the batch fails at finish(), with the reason
            self._lost = True

    def finish(self, count: int) -> tuple[int, ...]:
        """Every bundle durable under its name; the indexes of those that became full.

        ``count`` is the batch's row count (the child checks it read exactly that many rows).
        StorageError with the child's reason if it failed (nothing of it is visible then).
        """
        try:
            if not self._lost:
                with contextlib.suppress(OSError):  # the child stopped: its reason is read below
                    _send(self._to_child, ("finish", count))
            self._close_to_child()
            outcome = _receive(self._from_child)
        except (EOFError, OSError, pickle.UnpicklingError, struct.error):
            outcome = ("error", "the entry bundle writer process died")
        finally:
            self._reap()
        if not isinstance(outcome, tuple) or outcome[0] != "ok":
            reason = outcome[1] if isinstance(outcome, tuple) and len(outcome) > 1 else repr(outcome)
            raise StorageError(f"writing the entry bundles failed: {reason}; nothing was signed", key=JSONL_KEY)
        return tuple(outcome[1])

    def abort(self) -> None:
        """Call the batch off: the child deletes its temporary files and exits; waits for it."""
        if self._done:
            return
        if self._to_child >= 0 and not self._lost:
            try:
                _send(self._to_child, ("abort",))
            except OSError:  # the child is gone already
                pass
        self._reap()

    def _close_to_child(self) -> None:
        if self._to_child >= 0:
            os.close(self._to_child)
            self._to_child = -1

    def _reap(self) -> None:
        if self._done:
            return
        self._done = True
        self._close_to_child()
        os.close(self._from_child)
        os.close(self._acks)
        _, status = os.waitpid(self._pid, 0)
        if os.waitstatus_to_exitcode(status) < 0:
            # Killed (it deletes its own temporary files otherwise): sweep those of its pid, gone now.
            sweep = getattr(self._led.storage, "discard_stale_temporaries", None)
            if sweep is not None:
                with contextlib.suppress(OSError, KfmError):
                    sweep([ENTRIES_PREFIX], recursive=True)


def _child(  # pragma: no cover - runs in the forked child
    led: Ledger, old_size: int, edge: RightEdge | None, jsonl_fd: int, ring_fd: int, commands: int, results: int,
    acks: int,
) -> int:
    """The child's work: bundles from the rows as they reach the JSONL, then the outcome.  Rows
    read from the ring are the bytes validated; rows read back from the JSONL are checked against
    the leaf hashes their validation computed (they may have been copied from the caller's input
    file, which can change)."""
    import array
    import mmap

    from . import entries
    from .bulk import ring_slot_layout
    from .tile_writer import write_bundles

    # The row ring, read in place: its rows are already encoded as in a bundle, and a full bundle
    # goes to its file as a slice of the mapping, with no copy here (mapped at its first chunk,
    # inside the work: a failure is reported as the child's reason).
    ring: list[memoryview] = []
    # The rows read here are not read again by this append: once on the disk their pages are
    # dropped, so that they do not push other files' out of the page cache (storage.page_cache).
    window = WriteWindow()

    def pieces() -> Iterator[entries.Piece]:
        seen = 0
        in_slot = False  # a ring slot's rows were handed on: acknowledged once they are written
        while True:
            if in_slot:
                # Back here, every bundle of the last piece is written (a bundle it began is held
                # as a copy): its slot may take a later chunk.
                os.write(acks, b"\x01")
                in_slot = False
            message = _receive(commands)
            if not isinstance(message, tuple) or not message:
                raise _Aborted
            if message[0] == "ring" and ring_fd >= 0:
                if not ring:
                    ring.append(memoryview(mmap.mmap(ring_fd, 0, prot=mmap.PROT_READ)))
                (offset, length), (ring_offset, rows) = message[1], message[2]
                encoded_at, lengths_at, end = (ring_offset + k for k in ring_slot_layout(length, rows))
                lengths = array.array("I")
                lengths.frombytes(ring[0][lengths_at:end])
                window.add(jsonl_fd, offset, length)  # (the JSONL's pages, written by the parent)
                seen += rows
                in_slot = True
                # A memoryview of the ring: sliced and written as bytes are (buffer protocol).  Each
                # bundle cut from it is written before the next is asked for (write_once_stream),
                # so that once this generator is resumed the slot is no longer read.
                yield cast(bytes, ring[0][encoded_at:lengths_at]), lengths
            elif message[0] == "chunk":
                (offset, length), leaf_hashes = message[1], message[2]
                checked = _check_rows(_read_rows(jsonl_fd, offset, length), leaf_hashes, offset)
                window.add(jsonl_fd, offset, length)
                seen += len(checked)
                yield from entries.encode_pieces(checked)
            elif message[0] == "finish":
                entries.check_whole_rows(seen, int(message[1]))
                return
            else:
                raise _Aborted

    try:
        done = write_bundles(
            led, old_size, pieces(), led.storage.write_once_many, edge,
            write_stream=getattr(led.storage, "write_once_stream", None),
        )
    except _Aborted:
        return 0
    except BaseException as e:
        _send(results, ("error", str(e) or type(e).__name__))
        return 1
    _send(results, ("ok", done))
    return 0


def _read_rows(fd: int, offset: int, length: int) -> bytes:  # pragma: no cover - the child's
    parts, end = [], offset + length
    while offset < end:
        data = os.pread(fd, end - offset, offset)
        if not data:
            raise StorageError(f"{JSONL_KEY} ends at byte {offset}, {end - offset} bytes short of the batch's rows")
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


def _check_rows(data: bytes, leaf_hashes: bytes, offset: int) -> list[bytes]:  # pragma: no cover - the child's
    """The newline-terminated rows of ``data``, each checked to hash to its leaf hash (RFC 9162 §2.1.1)."""
    rows = data.split(b"\n")
    rows.pop()  # after the last newline (a partial row there leaves the hashes one short)
    found = merkle.joined_leaf_hashes(rows)
    if found != leaf_hashes:
        k = next(
            (i for i in range(len(rows)) if found[32 * i : 32 * i + 32] != leaf_hashes[32 * i : 32 * i + 32]), len(rows)
        )
        raise StorageError(
            f"the batch's rows in {JSONL_KEY} are not the rows that were checked (from byte {offset}, row {k + 1} "
            "of that chunk differs): the input file changed while it was appended; nothing was signed",
            key=JSONL_KEY,
        )
    return rows
